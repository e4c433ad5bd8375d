"""Loss-landscape sharpness: top Hessian and neural-tangent-kernel eigenvalues.

"Sharpness" is the largest *algebraic* eigenvalue of the Hessian of the
training loss with respect to the trainable parameters.  It is computed
matrix-free: the Hessian is exposed as a :class:`scipy.sparse.linalg.LinearOperator`
whose ``matvec`` is an exact Hessian-vector product (HVP), and its top
eigenpairs are found with implicitly restarted Lanczos (ARPACK ``eigsh`` with
``which="LA"``).  Power iteration is deliberately not used: it converges to
the eigenvalue of largest *magnitude*, which is the wrong one whenever the
Hessian has a dominant negative direction (common early in training), and it
stalls when the top two eigenvalues are close.

Implementation notes and measurements
-------------------------------------
Measured on the reference case of the package (scikit-learn ``load_digits``,
1797 x 64 standardized, ``Sequential(Linear(64, 100), ReLU(), Linear(100, 10))``,
7510 float32 parameters, trained 20 epochs with batch-64 SGD, mean
cross-entropy) on the 2-core development VM; see
``benchmarks/bench_sharpness_kernels.py``.  With one torch thread (CPU time):

* Hessian-vector products (HVP), per product: building the gradient graph
  *once* (``torch.autograd.grad(create_graph=True)``, 1.6 ms) and
  differentiating it again for every vector with ``retain_graph=True``
  1.5-2.0 ms; double backward recomputing the forward pass and the gradient
  for every vector 1.8-1.9x that; reverse-over-reverse ``torch.func.vjp(grad)``
  2.2-2.4x; forward-over-reverse ``torch.func.jvp(grad)`` and
  ``torch.autograd.functional.hvp`` ~3x.  The retained graph is used whenever
  the data are processed as one chunk.  With ``batch_size`` the graphs of all
  chunks would have to stay alive, which defeats the purpose of chunking
  (bounding memory), so the chunked operator recomputes each chunk's forward
  and backward pass at every product.
* ARPACK tests convergence only once its Krylov basis of ``ncv`` vectors is
  full, so SciPy's default ``ncv = max(20, 2k + 1)`` costs at least 21
  products even when 10 would do.  Swept over ``ncv`` in 5..14 on the digits
  MLP at initialization, after 1, 3, 20 and 100 epochs, with lr 0.1 and 1 and
  a deeper variant (4 start vectors each), ``ncv = k + 7`` (8 for k=1) was
  among the cheapest: 9-13 products when the top eigenvalue is separated
  (relative gap >= 0.1), ~35 when the top two are within 1 % (at
  initialization; every ``ncv`` needed 31-45 there).
* ``tol`` bounds the relative Ritz residual ``||H v - theta v|| / |theta|``
  and hence the relative eigenvalue error; the actual relative error is of
  order ``tol**2 / relative_gap``.  On the trained digits MLP, ``k=1`` with
  ``tol=1e-3`` or ``1e-4`` takes 14 products (13 for Lanczos, 1 for the
  reported residual) and 25-27 ms in all, with a relative error of 2e-7 or
  less against a float64 ``tol=1e-10`` reference (the float32 noise floor);
  SciPy's default ``ncv`` takes 22 products and ~40 ms.  The 20-epoch fit
  itself takes 137-167 ms, so the sharpness costs 15-20 % of it.
* With the default two torch threads the same call takes ~20 ms (median)
  only because NumPy/SciPy BLAS is kept single-threaded inside ARPACK (see
  ``_SerialBlas``); without that, BLAS and torch's OpenMP workers fought over
  the two cores and the median was 116-128 ms.
"""

from __future__ import annotations

import contextlib
import numbers
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import (
    ArpackError,
    ArpackNoConvergence,
    LinearOperator,
    aslinearoperator,
    eigsh,
)
from torch.func import functional_call, jacrev, vmap

__all__ = [
    "EigenResult",
    "hessian_eigenvalues",
    "hessian_operator",
    "ntk_eigenvalues",
    "top_eigenvalues",
]

_TINY = np.finfo(np.float64).tiny


@dataclass(frozen=True, eq=False)
class EigenResult:
    """Top eigenpairs of a symmetric operator, with convergence diagnostics.

    Immutable; compared by identity (``eq=False``: element-wise array equality
    has no single truth value).

    Attributes
    ----------
    eigenvalues : ndarray of shape (k,), dtype float64
        Largest algebraic eigenvalues, in descending order.  Entries that
        ARPACK could not converge within ``max_iter`` are NaN.

    eigenvectors : ndarray of shape (n, k), dtype float64, or None
        Unit-norm eigenvectors (columns), in the order of ``eigenvalues``, when
        requested; ``None`` otherwise.  For a Hessian, ``n`` is the number of
        trainable parameters, flattened in ``model.parameters()`` order.

    n_matvec : int
        Number of operator applications (Hessian-vector products) used,
        including the ``k`` products spent on computing ``residuals``.

    residuals : ndarray of shape (k,), dtype float64
        Relative residuals ``||A v - lambda v|| / max(|lambda|, tiny)``.

    converged : bool
        Whether ARPACK reported convergence of all ``k`` eigenpairs, or all
        residuals are at most ``tol``; always true for the (exact) dense
        solver used on tiny operators.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray | None
    n_matvec: int
    residuals: np.ndarray
    converged: bool


# --------------------------------------------------------------------------
# Eigensolver
# --------------------------------------------------------------------------


class _CountingOperator(LinearOperator):
    """Float64 view of a symmetric operator that counts its applications."""

    def __init__(self, operator: LinearOperator):
        super().__init__(dtype=np.dtype(np.float64), shape=operator.shape)
        self._operator = operator
        self.n_matvec = 0

    def _matvec(self, x):
        self.n_matvec += 1
        out = self._operator.matvec(np.asarray(x, dtype=np.float64).reshape(-1))
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def _adjoint(self):
        return self


class _SerialBlas:
    """Re-entrant, thread-safe scope in which NumPy/SciPy BLAS is single-threaded.

    ARPACK's BLAS calls work on ``n x ncv`` blocks (microseconds each), far too
    small to gain from threads, but every call wakes the BLAS thread pool.  With
    torch's OpenMP workers spinning on the same cores, each wake-up waited for a
    scheduler tick: on the 2-core development VM with default thread settings
    the digits-MLP sharpness took 116-120 ms (median) instead of 25 ms.  This
    follows scikit-learn's own practice (``threadpoolctl``); torch's threads are
    left alone, and concurrent callers are reference-counted so that only the
    outermost scope restores the user's settings.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._controller = None
        self._limiter = None

    def _limit(self):
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - a scikit-learn dependency
            return None
        if self._controller is None:  # scanning the loaded libraries is slow
            self._controller = ThreadpoolController()
        return self._controller.limit(limits=1, user_api="blas")

    def __enter__(self):
        with self._lock:
            if self._users == 0:
                self._limiter = self._limit()
            self._users += 1

    def __exit__(self, *exc_info):
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None


_serial_blas = _SerialBlas()


def _default_ncv(k: int, n: int) -> int:
    # Measured on the digits MLP (module docstring): ARPACK first checks
    # convergence after ncv products, so a small basis wins when the top
    # eigenvalue is separated and costs little when it is not.
    return min(n, max(2 * k + 1, k + 7))


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}.")
    return int(value)


def _residuals(operator, eigenvalues, eigenvectors) -> np.ndarray:
    """Relative residuals of eigenpairs (one operator application per pair)."""
    res = np.full(eigenvalues.shape, np.nan)
    for i, (lam, vec) in enumerate(zip(eigenvalues, eigenvectors.T, strict=True)):
        if np.isfinite(lam):
            r = operator.matvec(vec) - lam * vec
            res[i] = np.linalg.norm(r) / max(abs(lam), _TINY)
    return res


def _dense_eigenpairs(operator, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenpairs from the explicitly assembled matrix (tiny operators)."""
    n = operator.shape[0]
    matrix = np.column_stack([operator.matvec(e) for e in np.eye(n)])
    # Symmetrize so that rounding in the products cannot make eigh see a
    # (slightly) different lower triangle than the operator's action.
    eigenvalues, eigenvectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    return eigenvalues[::-1][:k].copy(), eigenvectors[:, ::-1][:, :k].copy()


def _arpack_eigenpairs(operator, k, *, tol, max_iter, ncv, v0):
    """Top-k eigenpairs by Lanczos; returns (values, vectors, converged)."""
    try:
        values, vectors = eigsh(
            operator,
            k=k,
            which="LA",
            v0=v0,
            ncv=ncv,
            tol=tol,
            maxiter=max_iter,
            return_eigenvectors=True,
        )
        converged = True
    except ArpackNoConvergence as exc:
        values = np.asarray(exc.eigenvalues, dtype=np.float64)
        vectors = np.asarray(exc.eigenvectors, dtype=np.float64)
        vectors = vectors.reshape(operator.shape[0], values.size)
        converged = False
    except ArpackError:
        # ARPACK cannot start a Krylov space from v0 when A v0 == 0, which for
        # a random v0 means A == 0 (e.g. a loss linear in the parameters).
        if np.any(operator.matvec(v0)):
            raise
        values = np.zeros(k)
        vectors = np.linalg.qr(np.column_stack([v0, np.eye(v0.size, k - 1)]))[0]
        converged = True
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    if values.size < k:  # pad the partial ARPACK result with NaN
        pad = k - values.size
        values = np.concatenate([values, np.full(pad, np.nan)])
        vectors = np.hstack([vectors, np.full((vectors.shape[0], pad), np.nan)])
    return values, vectors, converged


def top_eigenvalues(
    operator,
    *,
    k=1,
    tol=1e-4,
    max_iter=None,
    return_eigenvectors=False,
    random_state=0,
    ncv=None,
):
    """Largest algebraic eigenvalues of a symmetric operator by Lanczos.

    Parameters
    ----------
    operator : LinearOperator, ndarray or sparse matrix of shape (n, n)
        Symmetric (real) operator; anything accepted by
        :func:`scipy.sparse.linalg.aslinearoperator`.

    k : int, default=1
        Number of eigenpairs to compute.

    tol : float, default=1e-4
        Relative accuracy passed to ARPACK: each returned pair satisfies
        ``||A v - lambda v|| <= tol * |lambda|`` (as estimated by ARPACK),
        hence an eigenvalue of ``A`` lies within ``tol * |lambda|`` of each
        returned value.  ``0`` means machine precision.

    max_iter : int, default=None
        Maximum number of ARPACK restarts (``maxiter`` of
        :func:`~scipy.sparse.linalg.eigsh`); ``None`` uses ARPACK's ``10 n``.

    return_eigenvectors : bool, default=False
        Whether to return the eigenvectors in ``EigenResult.eigenvectors``.

    random_state : int, numpy.random.Generator or None, default=0
        Seed of the Lanczos start vector (passed to ``np.random.default_rng``).
        With an int the result is a deterministic function of the operator and
        the seed.

    ncv : int, default=None
        Size of the Lanczos basis; ``None`` uses ``min(n, max(2 k + 1, k + 7))``,
        tuned for few products when the top eigenvalue is separated (see
        Notes).

    Returns
    -------
    result : EigenResult
        Eigenvalues in descending order, optional eigenvectors, the number of
        operator applications, relative residuals and a convergence flag.

    Notes
    -----
    Uses :func:`scipy.sparse.linalg.eigsh` with ``which="LA"``.  If ARPACK
    does not converge within ``max_iter`` restarts, the converged part of the
    result is returned (missing entries are NaN) with ``converged=False``
    instead of raising.  Operators with ``n <= max(k + 1, ncv)`` are assembled
    column by column (``n`` products) and solved densely, which is exact and
    no more expensive than a single Lanczos cycle.

    ARPACK checks convergence only once its ``ncv``-dimensional Krylov basis
    is full, so SciPy's default ``ncv = max(20, 2 k + 1)`` costs at least 21
    products; ``k + 7`` converged in 9-13 products on trained networks.

    Examples
    --------
    The largest algebraic eigenvalue is found even when a negative eigenvalue
    dominates in magnitude:

    >>> import numpy as np
    >>> from skdynloss import top_eigenvalues
    >>> A = np.diag([-10.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0])
    >>> result = top_eigenvalues(A, k=2)
    >>> np.round(result.eigenvalues, 6)
    array([3., 2.])
    >>> bool(result.converged)
    True
    """
    k = _check_positive_int(k, "k")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}.")
    operator = aslinearoperator(operator)
    n, m = operator.shape
    if n != m:
        raise ValueError(f"operator must be square, got shape {operator.shape}.")
    if k > n:
        raise ValueError(f"k={k} exceeds the operator size n={n}.")
    ncv = _default_ncv(k, n) if ncv is None else _check_positive_int(ncv, "ncv")
    counted = _CountingOperator(operator)

    if n <= max(k + 1, ncv):
        eigenvalues, eigenvectors = _dense_eigenpairs(counted, k)
        solver_converged = True  # a dense symmetric eigensolver is exact
    else:
        v0 = np.random.default_rng(random_state).standard_normal(n)
        with _serial_blas:
            eigenvalues, eigenvectors, solver_converged = _arpack_eigenpairs(
                counted, k, tol=tol, max_iter=max_iter, ncv=ncv, v0=v0
            )
    residuals = _residuals(counted, eigenvalues, eigenvectors)
    converged = solver_converged or bool(np.all(residuals <= tol))
    return EigenResult(
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors if return_eigenvectors else None,
        n_matvec=counted.n_matvec,
        residuals=residuals,
        converged=converged,
    )


# --------------------------------------------------------------------------
# Hessian-vector products
# --------------------------------------------------------------------------


def _trainable_parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True).")
    return params


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Evaluate in eval mode, restoring every submodule's own flag afterwards.

    Flags are restored one by one (not with ``model.train(previous)``) so that
    a deliberately mixed state, e.g. frozen BatchNorm layers inside a model in
    training mode, survives the call.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def _to_tensor(a, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Move data to the model's device; floats to its dtype, integers to long."""
    t = torch.as_tensor(a)
    if t.is_floating_point():
        return t.to(device=device, dtype=dtype)
    if not t.is_complex() and t.dtype != torch.bool:
        return t.to(device=device, dtype=torch.long)
    return t.to(device=device)


def _num_samples(X: torch.Tensor, y: torch.Tensor | None = None) -> int:
    if X.ndim == 0 or X.shape[0] == 0:
        raise ValueError("X must contain at least one sample.")
    if y is not None and (y.ndim == 0 or y.shape[0] != X.shape[0]):
        raise ValueError(
            f"X and y have inconsistent numbers of samples: {X.shape[0]} "
            f"and {tuple(y.shape)[:1]}."
        )
    return int(X.shape[0])


def _chunks(n: int, batch_size: int | None) -> list[slice]:
    step = n if batch_size is None else batch_size
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


def _loss_gradient(model, loss_fn, X, y, params, weight: float):
    """Gradient of ``weight * loss`` with its graph kept for differentiation."""
    loss = loss_fn(model(X), y)
    if loss.ndim != 0:
        raise ValueError(
            f"loss_fn must return a scalar (mean) loss, got shape {tuple(loss.shape)}."
        )
    if weight != 1.0:
        loss = loss * weight
    grads = torch.autograd.grad(
        loss,
        params,
        create_graph=True,
        allow_unused=True,
        materialize_grads=True,
    )
    # Gradient entries that do not depend on the parameters (grad_fn is None)
    # have a zero Hessian row and are skipped in the second differentiation.
    return [g if g.requires_grad else None for g in grads]


def _grad_vector_product(grads, params, vectors, *, retain_graph: bool):
    """``d(grads . vectors) / d params``, i.e. the Hessian-vector product."""
    pairs = [(g, v) for g, v in zip(grads, vectors, strict=True) if g is not None]
    if not pairs:
        return [torch.zeros_like(p) for p in params]
    outputs, grad_outputs = zip(*pairs, strict=True)
    return torch.autograd.grad(
        outputs,
        params,
        grad_outputs=grad_outputs,
        retain_graph=retain_graph,
        allow_unused=True,
        materialize_grads=True,
    )


class _HessianOperator(LinearOperator):
    """Exact Hessian of a mean loss as a float64 :class:`LinearOperator`."""

    def __init__(self, model, loss_fn, X, y, params, chunks):
        n_params = sum(p.numel() for p in params)
        super().__init__(dtype=np.dtype(np.float64), shape=(n_params, n_params))
        self.n_matvec = 0
        self._model, self._loss_fn, self._X, self._y = model, loss_fn, X, y
        self._params = params
        self._chunks = chunks
        self._n_samples = X.shape[0]
        self._sizes = [p.numel() for p in params]
        self._grads = None
        if len(chunks) == 1:
            # Build the gradient graph once; each product then only runs the
            # second backward pass (~3x faster than recomputing, see module
            # docstring).
            with torch.enable_grad(), _eval_mode(model):
                self._grads = _loss_gradient(model, loss_fn, X, y, params, 1.0)

    def _vectors(self, x) -> list[torch.Tensor]:
        p0 = self._params[0]
        flat = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64).reshape(-1))
        flat = flat.to(device=p0.device, dtype=p0.dtype)
        return [
            c.view_as(p)
            for c, p in zip(flat.split(self._sizes), self._params, strict=True)
        ]

    def _hvp(self, vectors) -> list[torch.Tensor]:
        if self._grads is not None:
            with torch.enable_grad():
                return _grad_vector_product(
                    self._grads, self._params, vectors, retain_graph=True
                )
        total = [torch.zeros_like(p) for p in self._params]
        with torch.enable_grad(), _eval_mode(self._model):
            for chunk in self._chunks:
                # Mean over the chunk weighted by its share of the data gives
                # the Hessian of the full-data mean (loss_fn must be a mean).
                weight = (chunk.stop - chunk.start) / self._n_samples
                grads = _loss_gradient(
                    self._model,
                    self._loss_fn,
                    self._X[chunk],
                    self._y[chunk],
                    self._params,
                    weight,
                )
                hv = _grad_vector_product(
                    grads, self._params, vectors, retain_graph=False
                )
                for acc, h in zip(total, hv, strict=True):
                    acc.add_(h)
        return total

    def _matvec(self, x):
        self.n_matvec += 1
        hv = self._hvp(self._vectors(x))
        flat = torch.cat([h.reshape(-1) for h in hv])
        return flat.detach().to(device="cpu", dtype=torch.float64).numpy()

    def _adjoint(self):
        return self


def hessian_operator(model, loss_fn, X, y, *, batch_size=None):
    """Hessian of a mean training loss as a matrix-free linear operator.

    Parameters
    ----------
    model : torch.nn.Module
        Network whose trainable parameters (``requires_grad=True``) are the
        variables of the Hessian.  Its forward pass is run in eval mode; the
        train/eval flags of all submodules are restored afterwards.

    loss_fn : callable
        ``loss_fn(output, y)`` returning the scalar *mean* loss over the batch,
        e.g. :func:`torch.nn.functional.cross_entropy`.

    X : torch.Tensor or ndarray of shape (n_samples, ...)
        Inputs.  Floating-point arrays are converted to the model's dtype and
        device.

    y : torch.Tensor or ndarray of shape (n_samples, ...)
        Targets.  Integer arrays are converted to ``torch.long``, floating
        arrays to the model's dtype, both on the model's device.

    batch_size : int, default=None
        If given, the data are processed in chunks of at most ``batch_size``
        samples and the chunk products are combined with weights
        ``len(chunk) / n_samples``.  This equals the Hessian of the full-data
        loss only when ``loss_fn`` is a per-sample mean (not a sum, and not a
        loss coupling the samples of a batch).

    Returns
    -------
    operator : LinearOperator of shape (n_params, n_params), dtype float64
        ``operator @ v`` is ``H v`` for a float64 vector ``v`` flattened in
        ``model.parameters()`` order (trainable parameters only).  Its
        attribute ``n_matvec`` counts the products computed so far.

    Notes
    -----
    Products are exact (not finite differences), computed by differentiating
    the gradient a second time in the model's own dtype and on its device;
    only the vectors are converted to and from float64 NumPy arrays.

    Without ``batch_size`` the gradient graph of the whole data set is built
    once, when the operator is created, and kept alive by the operator, so
    each product costs a single extra backward pass; memory is about twice
    that of a training step on all of ``X``.  The operator therefore
    represents the Hessian at the parameters of that moment: do not use it
    after modifying the parameters in place (autograd raises an error).  With
    ``batch_size`` every product recomputes the forward and first backward
    pass chunk by chunk (about 3x slower, memory of one chunk) at the current
    parameters.

    Examples
    --------
    For a linear model with squared error the Hessian is ``2 X^T X / N``:

    >>> import numpy as np
    >>> import torch
    >>> from skdynloss import hessian_operator
    >>> model = torch.nn.Linear(2, 1, bias=False)
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    >>> y = torch.zeros(2, 1)
    >>> H = hessian_operator(model, torch.nn.functional.mse_loss, X, y)
    >>> H @ np.array([1.0, 1.0])
    array([1., 4.])
    >>> H.n_matvec
    1
    """
    params = _trainable_parameters(model)
    dtype, device = params[0].dtype, params[0].device
    X = _to_tensor(X, dtype=dtype, device=device)
    y = _to_tensor(y, dtype=dtype, device=device)
    n_samples = _num_samples(X, y)
    if batch_size is not None:
        batch_size = _check_positive_int(batch_size, "batch_size")
    return _HessianOperator(
        model, loss_fn, X, y, params, _chunks(n_samples, batch_size)
    )


def hessian_eigenvalues(
    model,
    loss_fn,
    X,
    y,
    *,
    k=1,
    tol=1e-4,
    max_iter=None,
    batch_size=None,
    return_eigenvectors=False,
    random_state=0,
    ncv=None,
):
    """Top eigenvalues of the loss Hessian (sharpness) of a torch model.

    Parameters
    ----------
    model : torch.nn.Module
        Network evaluated in eval mode at its current parameters; the
        train/eval flags of its submodules are restored afterwards and the
        parameters (and their ``.grad``) are left untouched.

    loss_fn : callable
        ``loss_fn(output, y)`` returning the scalar mean loss over the batch.

    X : torch.Tensor or ndarray of shape (n_samples, ...)
        Inputs (converted to the model's dtype and device if floating).

    y : torch.Tensor or ndarray of shape (n_samples, ...)
        Targets (integer arrays become ``torch.long``).

    k : int, default=1
        Number of top eigenvalues.

    tol : float, default=1e-4
        Relative residual tolerance of the Lanczos iteration; bounds the
        relative eigenvalue error (see :func:`top_eigenvalues`), which is
        typically of order ``tol**2 / relative_gap``, far smaller.  With
        float32 models, residuals do not go below ~1e-7 (float32 rounding in
        the products).

    max_iter : int, default=None
        Maximum number of ARPACK restarts.

    batch_size : int, default=None
        Chunk size bounding memory; see :func:`hessian_operator`.

    return_eigenvectors : bool, default=False
        Whether to return eigenvectors (flattened in ``model.parameters()``
        order of the trainable parameters).

    random_state : int, numpy.random.Generator or None, default=0
        Seed of the Lanczos start vector.

    ncv : int, default=None
        Lanczos basis size; see :func:`top_eigenvalues`.

    Returns
    -------
    result : EigenResult
        ``result.eigenvalues[0]`` is the sharpness.

    Notes
    -----
    Dynamical loss functions [1]_ are analysed through the evolution of this
    quantity during training; it is also compared with the gradient-descent
    stability threshold ``2 / learning_rate`` [2]_.  The
    largest *algebraic* eigenvalue is returned, not the one of largest
    magnitude, because Hessians of non-convex losses can have negative
    eigenvalues that dominate in magnitude.

    References
    ----------
    .. [1] M. Ruiz-Garcia, G. Zhang, S. S. Schoenholz and A. J. Liu, "Tilting
       the playing field: Dynamical loss functions for machine learning",
       ICML 2021, :arxiv:`2102.03793`.
    .. [2] J. M. Cohen, S. Kaur, Y. Li, J. Z. Kolter and A. Talwalkar,
       "Gradient Descent on Neural Networks Typically Occurs at the Edge of
       Stability", ICLR 2021, :arxiv:`2103.00065`.
    .. [3] B. A. Pearlmutter, "Fast Exact Multiplication by the Hessian",
       Neural Computation 6(1), 1994.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skdynloss import hessian_eigenvalues
    >>> model = torch.nn.Linear(2, 1, bias=False)
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    >>> y = torch.zeros(2, 1)
    >>> result = hessian_eigenvalues(model, torch.nn.functional.mse_loss, X, y)
    >>> np.round(result.eigenvalues, 5)
    array([4.])
    """
    with _eval_mode(model):
        operator = hessian_operator(model, loss_fn, X, y, batch_size=batch_size)
        return top_eigenvalues(
            operator,
            k=k,
            tol=tol,
            max_iter=max_iter,
            return_eigenvectors=return_eigenvectors,
            random_state=random_state,
            ncv=ncv,
        )


# --------------------------------------------------------------------------
# Empirical neural tangent kernel
# --------------------------------------------------------------------------


def _jacobian_rows(model, params: dict, X: torch.Tensor) -> torch.Tensor:
    """Per-sample Jacobians of the flattened output, shape (len(X) * O, P)."""

    def output(p, x):
        return functional_call(model, p, (x.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(output), in_dims=(None, 0))(params, X)
    blocks = [jac[name].flatten(start_dim=2) for name in params]  # (N, O, p_i)
    J = torch.cat(blocks, dim=2)
    return J.reshape(-1, J.shape[2])


def ntk_eigenvalues(model, X, *, k=None, batch_size=None):
    """Eigenvalues of the empirical neural tangent kernel of a torch model.

    Parameters
    ----------
    model : torch.nn.Module
        Network ``f``, evaluated in eval mode (flags restored afterwards) at
        its current parameters; only trainable parameters enter the kernel.

    X : torch.Tensor or ndarray of shape (n_samples, ...)
        Inputs (converted to the model's dtype and device if floating).

    k : int, default=None
        Number of top eigenvalues; ``None`` returns all ``n_samples *
        n_outputs`` of them.

    batch_size : int, default=None
        Number of samples whose Jacobians are computed together; ``None``
        computes all at once.

    Returns
    -------
    eigenvalues : ndarray of shape (k,), dtype float64
        Eigenvalues of ``Theta = J J^T`` in descending order, where
        ``J = d f(X) / d theta`` has shape ``(n_samples * n_outputs, n_params)``
        (rows ordered sample-major).

    Notes
    -----
    Per-sample Jacobians are computed with ``torch.func`` (``vmap`` of
    ``jacrev`` over a ``functional_call``) in the model's dtype, and the Gram
    matrix is formed in float64.  Memory: the Jacobian holds
    ``n_samples * n_outputs * n_params`` numbers and the kernel
    ``(n_samples * n_outputs) ** 2``, with an eigendecomposition costing
    ``(n_samples * n_outputs) ** 3`` operations, so subsample ``X`` (e.g. 100
    samples of a 10-class problem give a 1000 x 1000 kernel).  When
    ``n_samples * n_outputs > n_params`` the equivalent ``n_params ** 2``
    matrix ``J^T J`` is accumulated chunk by chunk instead (without storing
    ``J``) and the remaining eigenvalues are exactly zero.

    References
    ----------
    .. [1] A. Jacot, F. Gabriel and C. Hongler, "Neural Tangent Kernel:
       Convergence and Generalization in Neural Networks", NeurIPS 2018,
       :arxiv:`1806.07572`.
    .. [2] M. Ruiz-Garcia, G. Zhang, S. S. Schoenholz and A. J. Liu, "Tilting
       the playing field: Dynamical loss functions for machine learning",
       ICML 2021, :arxiv:`2102.03793`.

    Examples
    --------
    For a linear model ``f(x) = w . x`` the kernel is ``X X^T``:

    >>> import numpy as np
    >>> import torch
    >>> from skdynloss import ntk_eigenvalues
    >>> model = torch.nn.Linear(2, 1, bias=False)
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> np.round(ntk_eigenvalues(model, X), 5)
    array([4., 1.])
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model has no trainable parameters (requires_grad=True).")
    dtype, device = named[0][1].dtype, named[0][1].device
    X = _to_tensor(X, dtype=dtype, device=device)
    n_samples = _num_samples(X)
    if batch_size is not None:
        batch_size = _check_positive_int(batch_size, "batch_size")
    if k is not None:
        k = _check_positive_int(k, "k")
    params = {name: p.detach() for name, p in named}
    n_params = sum(p.numel() for p in params.values())

    tall = False  # more kernel rows than parameters: use J^T J instead
    blocks, gram = [], None
    with _eval_mode(model):
        for i, chunk in enumerate(_chunks(n_samples, batch_size)):
            J = _jacobian_rows(model, params, X[chunk]).to(torch.float64)
            if i == 0:
                n_outputs = J.shape[0] // (chunk.stop - chunk.start)
                n_rows = n_samples * n_outputs
                tall = n_rows > n_params
            if not tall:
                blocks.append(J)
            elif gram is None:
                gram = J.T @ J
            else:
                gram.addmm_(J.T, J)
    if not tall:
        J = torch.cat(blocks)
        gram = J @ J.T
    k = n_rows if k is None else k
    if k > n_rows:
        raise ValueError(f"k={k} exceeds n_samples * n_outputs = {n_rows}.")
    gram = gram.cpu().numpy()
    eigenvalues = np.linalg.eigvalsh(0.5 * (gram + gram.T))[::-1]
    # J^T J has the nonzero eigenvalues of J J^T; the other n_rows - n_params
    # eigenvalues of the kernel are exactly zero.
    eigenvalues = np.concatenate([eigenvalues, np.zeros(n_rows - eigenvalues.size)])
    return eigenvalues[:k].copy()
