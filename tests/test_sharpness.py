"""Tests of the Hessian / NTK spectra, against independently computed answers.

Reference values come from dense matrices built another way (``torch.func.jacrev``
twice over a flat parameter vector, closed-form softmax-regression Hessians, explicit
per-output Jacobians, synthetic matrices with a known spectrum), never from the
functions under test.
"""

import copy
import doctest
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import LinearOperator
from torch.func import functional_call

import skdynloss._sharpness as sharpness
from skdynloss import (
    EigenResult,
    hessian_eigenvalues,
    hessian_operator,
    ntk_eigenvalues,
    top_eigenvalues,
)

# ----------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------


def dense_hessian(model, loss_fn, X, y):
    """Hessian of ``loss_fn(model(X), y)`` over the flat trainable parameters.

    Reverse-over-reverse ``torch.func.jacrev`` of a function of one flat vector,
    in eval mode on a copy of the model (the caller's train/eval flags stay).
    """
    model = copy.deepcopy(model).eval()
    named = [(n, p.detach()) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    flat0 = torch.cat([p.reshape(-1) for _, p in named])

    def loss_of_flat(flat):
        chunks = flat.split(sizes)
        params = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        return loss_fn(functional_call(model, params, (X,)), y)

    hessian = torch.func.jacrev(torch.func.jacrev(loss_of_flat))
    return hessian(flat0).detach().double().numpy()


def explicit_jacobian(model, X):
    """Rows d f(x_n)_o / d theta, one ``autograd.grad`` call per output entry."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for x in X:
        out = model(x.unsqueeze(0)).reshape(-1)
        for o in range(out.numel()):
            grads = torch.autograd.grad(out[o], params, retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows).double().numpy()


def softmax_regression_hessian(W, b, X):
    """Closed-form Hessian of mean cross-entropy for logits ``X W^T + b``.

    ``H = 1/N sum_n (diag(p_n) - p_n p_n^T) kron (x~_n x~_n^T)`` with
    ``x~ = [x; 1]`` in class-major order (all of class 0's weights and bias,
    then class 1's, ...), permuted to torch's parameter order: the weight
    ``(C, D)`` row-major, then the bias ``(C,)``.
    """
    N, D = X.shape
    C = W.shape[0]
    logits = X @ W.T + b
    P = np.exp(logits - logits.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    Xt = np.hstack([X, np.ones((N, 1))])
    H = np.zeros((C * (D + 1), C * (D + 1)))
    for p, x in zip(P, Xt, strict=True):
        H += np.kron(np.diag(p) - np.outer(p, p), np.outer(x, x))
    H /= N
    # Position in torch order of class-major entry (c, d): weight c*D + d for
    # d < D, bias C*D + c for d == D.
    order = np.empty(C * (D + 1), dtype=int)
    for c in range(C):
        for d in range(D + 1):
            order[c * D + d if d < D else C * D + c] = c * (D + 1) + d
    return H[np.ix_(order, order)]


def top_k_dense(H, k):
    w, V = np.linalg.eigh(H)
    return w[::-1][:k], V[:, ::-1][:, :k]


def random_orthogonal(n, seed=0):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))[0]


def matrix_with_spectrum(eigenvalues, seed=0):
    Q = random_orthogonal(len(eigenvalues), seed)
    return (Q * np.asarray(eigenvalues)) @ Q.T


def mlp(sizes, activation, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return torch.nn.Sequential(*layers).to(dtype)


def classification_data(n, d, n_classes, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return X, y


# ----------------------------------------------------------------------------
# Hessian eigenvalues vs dense references
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("activation", [torch.nn.Tanh, torch.nn.ReLU])
def test_hessian_eigenpairs_match_dense_hessian(activation):
    model = mlp([3, 4, 3], activation)
    X, y = classification_data(20, 3, 3)
    H = dense_hessian(model, F.cross_entropy, X, y)
    ref_values, ref_vectors = top_k_dense(H, 3)
    assert np.all(np.diff(np.linalg.eigvalsh(H)[-4:]) > 1e-3 * abs(ref_values[0]))

    result = hessian_eigenvalues(
        model, F.cross_entropy, X, y, k=3, tol=1e-10, return_eigenvectors=True
    )

    assert isinstance(result, EigenResult)
    assert result.eigenvalues.dtype == np.float64
    np.testing.assert_allclose(result.eigenvalues, ref_values, rtol=1e-6)
    assert result.eigenvectors.shape == (H.shape[0], 3)
    overlaps = np.abs(np.sum(result.eigenvectors * ref_vectors, axis=0))
    np.testing.assert_allclose(overlaps, 1.0, atol=1e-6)
    assert result.converged
    assert np.all(result.residuals < 1e-8)


def test_hessian_operator_matches_dense_hessian_products():
    model = mlp([3, 4, 3], torch.nn.Tanh)
    X, y = classification_data(20, 3, 3)
    H = dense_hessian(model, F.cross_entropy, X, y)
    op = hessian_operator(model, F.cross_entropy, X, y)
    V = np.random.default_rng(0).standard_normal((H.shape[0], 3))

    assert op.shape == H.shape and op.dtype == np.float64
    np.testing.assert_allclose(op @ V[:, 0], H @ V[:, 0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(op.matmat(V), H @ V, rtol=1e-10, atol=1e-12)
    assert op.n_matvec == 4


def test_closed_form_softmax_regression_hessian():
    torch.manual_seed(3)
    N, D, C = 15, 3, 4
    model = torch.nn.Linear(D, C).double()
    X, y = classification_data(N, D, C, seed=4)
    W = model.weight.detach().numpy()
    b = model.bias.detach().numpy()
    H = softmax_regression_hessian(W, b, X.numpy())

    op = hessian_operator(model, F.cross_entropy, X, y)
    v = np.random.default_rng(1).standard_normal(H.shape[0])
    np.testing.assert_allclose(op @ v, H @ v, rtol=1e-10, atol=1e-12)

    ref = np.linalg.eigvalsh(H)[::-1]
    top = hessian_eigenvalues(model, F.cross_entropy, X, y, k=5, tol=1e-10)
    np.testing.assert_allclose(top.eigenvalues, ref[:5], rtol=1e-6)
    full = hessian_eigenvalues(model, F.cross_entropy, X, y, k=H.shape[0])
    np.testing.assert_allclose(full.eigenvalues, ref, rtol=1e-6, atol=1e-12)
    assert full.n_matvec >= H.shape[0]


def test_frozen_parameters_are_excluded():
    model = mlp([3, 4, 3], torch.nn.Tanh)
    X, y = classification_data(20, 3, 3)
    model[0].weight.requires_grad_(False)
    H = dense_hessian(model, F.cross_entropy, X, y)  # trainable parameters only

    result = hessian_eigenvalues(
        model, F.cross_entropy, X, y, k=2, tol=1e-10, return_eigenvectors=True
    )

    assert result.eigenvectors.shape[0] == H.shape[0] == 4 + 12 + 3
    np.testing.assert_allclose(result.eigenvalues, top_k_dense(H, 2)[0], rtol=1e-6)


def test_float32_model_and_numpy_inputs():
    model = mlp([3, 8, 3], torch.nn.Tanh, dtype=torch.float32)
    X, y = classification_data(40, 3, 3)
    model64 = copy.deepcopy(model).double()
    ref = top_k_dense(dense_hessian(model64, F.cross_entropy, X, y), 2)[0]

    result = hessian_eigenvalues(model, F.cross_entropy, X.numpy(), y.numpy(), k=2)

    np.testing.assert_allclose(result.eigenvalues, ref, rtol=1e-4)
    assert result.eigenvalues.dtype == np.float64
    assert result.converged


# ----------------------------------------------------------------------------
# The eigensolver on operators with a known spectrum
# ----------------------------------------------------------------------------


def test_largest_algebraic_not_largest_magnitude():
    spectrum = np.concatenate([[-10.0, 3.0, 2.9, 1.0], np.linspace(-0.5, 0.5, 46)])
    A = matrix_with_spectrum(spectrum)

    one = top_eigenvalues(A, k=1, tol=1e-8)
    two = top_eigenvalues(
        LinearOperator(A.shape, matvec=lambda v: A @ v, dtype=np.float64),
        k=2,
        tol=1e-8,
    )

    np.testing.assert_allclose(one.eigenvalues, [3.0], rtol=1e-7)
    np.testing.assert_allclose(two.eigenvalues, [3.0, 2.9], rtol=1e-7)
    assert one.converged and two.converged


def test_nearly_degenerate_top_pair_is_resolved():
    rng = np.random.default_rng(5)
    spectrum = np.concatenate([[3.0, 2.999], rng.uniform(-2.0, 2.0, 98)])
    Q = random_orthogonal(100, seed=6)
    A = (Q * spectrum) @ Q.T

    result = top_eigenvalues(A, k=2, tol=1e-10, return_eigenvectors=True)

    np.testing.assert_allclose(result.eigenvalues, [3.0, 2.999], rtol=1e-9)
    overlaps = np.abs(np.sum(result.eigenvectors * Q[:, :2], axis=0))
    np.testing.assert_allclose(overlaps, 1.0, atol=1e-6)


def test_eigenvectors_and_residuals():
    A = matrix_with_spectrum(np.linspace(-1.0, 5.0, 40), seed=2)

    without = top_eigenvalues(A, k=3)
    result = top_eigenvalues(A, k=3, return_eigenvectors=True)

    assert without.eigenvectors is None
    V, lam = result.eigenvectors, result.eigenvalues
    assert V.shape == (40, 3) and lam.shape == (3,) and result.residuals.shape == (3,)
    assert np.all(np.diff(lam) < 0)
    np.testing.assert_allclose(np.linalg.norm(V, axis=0), 1.0, rtol=1e-12)
    expected = np.linalg.norm(A @ V - V * lam, axis=0) / np.abs(lam)
    np.testing.assert_allclose(result.residuals, expected, rtol=1e-6, atol=1e-15)
    assert np.all(result.residuals <= 1e-4)


def test_deterministic_and_counts_products():
    model = mlp([3, 6, 3], torch.nn.Tanh)
    X, y = classification_data(25, 3, 3)

    calls = [
        hessian_eigenvalues(model, F.cross_entropy, X, y, k=2, return_eigenvectors=True)
        for _ in range(2)
    ]

    first, second = calls
    assert np.array_equal(first.eigenvalues, second.eigenvalues)
    assert np.array_equal(first.eigenvectors, second.eigenvectors)
    assert np.array_equal(first.residuals, second.residuals)
    assert first.n_matvec == second.n_matvec > 0
    assert first.converged
    other_seed = hessian_eigenvalues(model, F.cross_entropy, X, y, random_state=1)
    np.testing.assert_allclose(
        other_seed.eigenvalues[0], first.eigenvalues[0], rtol=1e-6
    )


def test_no_convergence_returns_partial_result():
    rng = np.random.default_rng(0)
    spectrum = np.concatenate([[10.0], rng.uniform(0.0, 1.0, 59)])
    A = matrix_with_spectrum(spectrum, seed=1)

    result = top_eigenvalues(A, k=3, tol=1e-12, max_iter=2)

    # The separated eigenvalue converges; the clustered ones cannot in 2 restarts.
    assert not result.converged
    assert result.eigenvalues.shape == (3,) and result.residuals.shape == (3,)
    np.testing.assert_allclose(result.eigenvalues[0], 10.0, rtol=1e-12)
    assert np.isnan(result.eigenvalues[1:]).all()
    assert result.n_matvec > 0


def test_tiny_and_zero_operators():
    A = np.array([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, -5.0]])
    result = top_eigenvalues(A, k=2, return_eigenvectors=True)
    np.testing.assert_allclose(result.eigenvalues, [3.0, 1.0], rtol=1e-12)
    assert result.n_matvec == 3 + 2  # columns, then one residual product each
    assert result.converged

    zero = top_eigenvalues(np.zeros((30, 30)), k=2, return_eigenvectors=True)
    np.testing.assert_array_equal(zero.eigenvalues, [0.0, 0.0])
    np.testing.assert_allclose(
        zero.eigenvectors.T @ zero.eigenvectors, np.eye(2), atol=1e-12
    )
    assert zero.converged


def test_blas_thread_limits_restored_after_concurrent_calls():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return [
            (info["filepath"], info["num_threads"])
            for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"
        ]

    A = matrix_with_spectrum(np.linspace(-1.0, 5.0, 60), seed=3)
    before = blas_threads()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: top_eigenvalues(A, k=2, tol=1e-10), range(8)))

    assert blas_threads() == before
    for result in results:
        np.testing.assert_allclose(result.eigenvalues, [5.0, 5.0 - 6.0 / 59], rtol=1e-8)


@pytest.mark.parametrize(
    "kwargs, error",
    [({"k": 0}, ValueError), ({"k": 6}, ValueError), ({"k": 1.5}, TypeError)],
)
def test_invalid_arguments(kwargs, error):
    with pytest.raises(error):
        top_eigenvalues(np.eye(5), **kwargs)


def test_non_square_and_non_scalar_loss_rejected():
    with pytest.raises(ValueError, match="square"):
        top_eigenvalues(np.ones((3, 4)))
    model = mlp([3, 3], torch.nn.Tanh)
    X, y = classification_data(5, 3, 3)
    with pytest.raises(ValueError, match="scalar"):
        hessian_operator(
            model, lambda out, t: F.cross_entropy(out, t, reduction="none"), X, y
        )
    with pytest.raises(ValueError, match="inconsistent"):
        hessian_operator(model, F.cross_entropy, X, y[:3])


# ----------------------------------------------------------------------------
# Chunking, modes and side effects
# ----------------------------------------------------------------------------


def test_batch_size_chunks_match_full_batch():
    model = mlp([3, 5, 3], torch.nn.Tanh)
    X, y = classification_data(30, 3, 3)
    H = dense_hessian(model, F.cross_entropy, X, y)
    v = np.random.default_rng(0).standard_normal(H.shape[0])

    chunked = hessian_operator(model, F.cross_entropy, X, y, batch_size=7)
    np.testing.assert_allclose(chunked @ v, H @ v, rtol=1e-10, atol=1e-12)

    full = hessian_eigenvalues(model, F.cross_entropy, X, y, k=2, tol=1e-10)
    parts = hessian_eigenvalues(
        model, F.cross_entropy, X, y, k=2, tol=1e-10, batch_size=7
    )
    np.testing.assert_allclose(parts.eigenvalues, full.eigenvalues, rtol=1e-9)


def test_eval_mode_used_and_restored_parameters_untouched():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 6),
        torch.nn.Tanh(),
        torch.nn.Dropout(0.5),
        torch.nn.BatchNorm1d(6),
        torch.nn.Linear(6, 3),
    ).double()
    X, y = classification_data(20, 3, 3)
    model.train()
    model(X)  # give BatchNorm non-trivial running statistics
    model[3].eval()  # a deliberately mixed state must survive the call
    before = copy.deepcopy(model.state_dict())
    modes = [m.training for m in model.modules()]
    H = dense_hessian(model, F.cross_entropy, X, y)  # evaluated in eval mode

    result = hessian_eigenvalues(model, F.cross_entropy, X, y, k=2, tol=1e-10)
    ntk = ntk_eigenvalues(model, X[:4], k=2)

    np.testing.assert_allclose(result.eigenvalues, top_k_dense(H, 2)[0], rtol=1e-6)
    assert ntk.shape == (2,)
    assert [m.training for m in model.modules()] == modes
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in model.parameters())


def test_works_under_no_grad():
    model = mlp([3, 4, 3], torch.nn.Tanh)
    X, y = classification_data(20, 3, 3)
    ref = top_k_dense(dense_hessian(model, F.cross_entropy, X, y), 1)[0]
    with torch.no_grad():
        result = hessian_eigenvalues(model, F.cross_entropy, X, y, tol=1e-10)
        chunked = hessian_eigenvalues(
            model, F.cross_entropy, X, y, tol=1e-10, batch_size=6
        )
    np.testing.assert_allclose(result.eigenvalues, ref, rtol=1e-6)
    np.testing.assert_allclose(chunked.eigenvalues, ref, rtol=1e-6)


# ----------------------------------------------------------------------------
# Neural tangent kernel
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("n_samples", [6, 20])  # J wide (12 x 32), tall (40 x 32)
@pytest.mark.parametrize("batch_size", [None, 7])
def test_ntk_matches_explicit_jacobian(n_samples, batch_size):
    model = mlp([3, 5, 2], torch.nn.Tanh)
    X, _ = classification_data(n_samples, 3, 2)
    J = explicit_jacobian(model, X)
    ref = np.linalg.eigvalsh(J @ J.T)[::-1]

    values = ntk_eigenvalues(model, X, batch_size=batch_size)

    assert values.shape == (n_samples * 2,) and values.dtype == np.float64
    np.testing.assert_allclose(values, ref, rtol=1e-8, atol=1e-10 * ref[0])
    np.testing.assert_allclose(
        ntk_eigenvalues(model, X.numpy(), k=3), ref[:3], rtol=1e-8
    )


def test_ntk_float32_and_invalid_k():
    model = mlp([3, 5, 2], torch.nn.ReLU, dtype=torch.float32)
    X, _ = classification_data(8, 3, 2, dtype=torch.float32)
    J = explicit_jacobian(copy.deepcopy(model).double(), X.double())
    ref = np.linalg.eigvalsh(J @ J.T)[::-1]

    np.testing.assert_allclose(ntk_eigenvalues(model, X, k=4), ref[:4], rtol=1e-4)
    with pytest.raises(ValueError):
        ntk_eigenvalues(model, X, k=17)


def test_docstring_examples():
    failures, _ = doctest.testmod(sharpness, optionflags=doctest.ELLIPSIS)
    assert failures == 0
