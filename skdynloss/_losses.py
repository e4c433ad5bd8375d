"""The dynamical loss: a pure function, and a thin torch module around it.

:func:`dynamical_loss` computes

.. math:: F(t) = \\frac{1}{P} \\sum_{\\mu} \\Gamma_{y_\\mu}(t)\\, \\ell(f(x_\\mu), y_\\mu)

from the network's outputs, the targets and the weights Gamma (which
:func:`~skdynloss.class_weights` computes), for a base loss ``ell``: cross-entropy (the
paper's), squared errors against one-hot targets (Lavin and Ruiz-Garcia, 2024,
:arxiv:`2410.10690`), or any callable returning per-sample losses. It is a plain mean
over samples (or, with sample weights ``s``, ``sum s Gamma ell / sum s``), never
torch's weight-normalised mean, which would divide the tilt out.

One base, ``"squared_error_per_output"``, weighs each output j of every sample by the
weight of class j instead of the whole sample by the weight of its label,

.. math:: F(t) = \\frac{1}{P} \\sum_{\\mu} \\sum_j \\Gamma_j(t)\\,
          (f_j(x_\\mu) - \\delta_{j, y_\\mu})^2 .

Its *terms* (:func:`loss_terms`) are per sample and output, of shape ``(..., P, C)``,
where a label-weighted base's terms are its per-sample losses, of shape ``(..., P)``;
:func:`weighted_mean` weighs either kind, so that the single fit, the stacks, the
per-epoch record and the sharpness share one formula.

:class:`DynamicalLoss` holds the schedule's parameters and a time, moved by
:meth:`~DynamicalLoss.set_time`; its forward pass is ``dynamical_loss(outputs, y,
class_weights(time))``. Nothing else is kept between calls.
"""

import inspect
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from ._schedules import ORDERS, SHAPES, class_weights

BASE_LOSSES = (
    "cross_entropy",
    "squared_error",
    "squared_error_sum",
    "squared_error_per_output",
)

#: Bases whose weights multiply each output's term (Gamma_j), not the sample's loss.
PER_OUTPUT_BASES = frozenset({"squared_error_per_output"})

#: Bases whose outputs estimate the one-hot targets (their probabilities are the
#: outputs clipped at 0 and normalised, see :func:`probabilities`).
SQUARED_ERROR_BASES = frozenset(
    {"squared_error", "squared_error_sum", "squared_error_per_output"}
)


def cross_entropy(outputs, y):
    """Per-sample cross-entropy of logits ``outputs`` (..., P, C) and targets (..., P)."""
    if outputs.ndim == 2:
        return F.cross_entropy(outputs, y, reduction="none")
    log_probs = torch.log_softmax(outputs, dim=-1)
    return -log_probs.gather(-1, y.unsqueeze(-1)).squeeze(-1)


def squared_errors(outputs, y):
    """The squared error of every output against the one-hot target,
    ``(f_j - delta_{j, y})^2``, of shape (..., P, C)."""
    one_hot = F.one_hot(y, outputs.shape[-1]).to(outputs.dtype)
    return (outputs - one_hot).square()


def squared_error(outputs, y):
    """Per-sample ``(1/C) sum_j (f_j - delta_{j, y})^2`` of outputs against one-hot y.

    With all weights 1 its mean over the batch is torch's ``mse_loss(outputs,
    one_hot(y))``.
    """
    return squared_errors(outputs, y).mean(dim=-1)


def squared_error_sum(outputs, y):
    """Per-sample ``sum_j (f_j - delta_{j, y})^2``: :func:`squared_error` without the
    ``1/C``, the per-sample error of Lavin and Ruiz-Garcia's squared errors."""
    return squared_errors(outputs, y).sum(dim=-1)


_BASES = {
    "cross_entropy": cross_entropy,
    "squared_error": squared_error,
    "squared_error_sum": squared_error_sum,
    # Unweighted, its terms summed over the outputs: the same per-sample loss.
    "squared_error_per_output": squared_error_sum,
}


def loss_terms(outputs, y, base="cross_entropy"):
    """The terms the class weights multiply: per sample (..., P) for a base weighted
    by each sample's label, per sample and output (..., P, C) for
    ``"squared_error_per_output"``."""
    if isinstance(base, str) and base in PER_OUTPUT_BASES:
        return squared_errors(outputs, y)
    return per_sample_losses(outputs, y, base)


def unweighted_losses(terms, y):
    """Per-sample losses (..., P) from :func:`loss_terms` (all weights 1)."""
    return terms if terms.ndim == y.ndim else terms.sum(dim=-1)


def probabilities(outputs, base="cross_entropy"):
    """Class probabilities from the outputs (..., C) of a network trained on ``base``.

    The softmax of the logits, except for the squared errors, whose outputs estimate
    the one-hot targets (the probabilities themselves, where the network fits well):
    there the outputs clipped at 0 and divided by their sum, and, for a row whose
    outputs are all <= 0, the softmax. Either way the largest probability is that of
    the largest output, the predicted class.
    """
    if not (isinstance(base, str) and base in SQUARED_ERROR_BASES):
        return torch.softmax(outputs, dim=-1)
    clipped = outputs.clamp_min(0)
    total = clipped.sum(dim=-1, keepdim=True)
    positive = total > 0
    return torch.where(
        positive,
        clipped / torch.where(positive, total, torch.ones_like(total)),
        torch.softmax(outputs, dim=-1),
    )


def base_loss_function(base):
    """The per-sample base loss ``(outputs, y) -> losses`` that ``base`` names."""
    if callable(base):
        return base
    try:
        return _BASES[base]
    except (KeyError, TypeError):
        raise ValueError(
            f"loss must be one of {BASE_LOSSES} or a callable, got {base!r}."
        ) from None


def check_loss_signature(base):
    """A callable ``loss`` that cannot be called as ``loss(outputs, y)``: a ValueError
    that names the parameter (checked before anything is built)."""
    if not callable(base):
        return
    try:
        inspect.signature(base).bind(None, None)
    except TypeError as exc:
        raise ValueError(
            f"The 'loss' callable {base!r} must take two arguments, loss(outputs, y) "
            f"(the network's outputs and the class indices): {exc}."
        ) from None
    except ValueError:
        pass  # no signature to inspect (some builtins): the first call tells


def check_loss_callable(base, outputs, y):
    """A callable ``loss`` tried once on a small batch before training: it must return
    one floating-point loss per sample, attached to the outputs' autograd graph."""
    if not callable(base):
        return
    try:
        losses = base(outputs, y)
    except Exception as exc:
        raise ValueError(
            f"The 'loss' callable {base!r} failed on outputs of shape "
            f"{tuple(outputs.shape)} and class indices y of shape {tuple(y.shape)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    problem = None
    if not isinstance(losses, torch.Tensor):
        problem = f"returned a {type(losses).__name__}, not a tensor"
    elif losses.shape != y.shape:
        problem = f"returned shape {tuple(losses.shape)}, not {tuple(y.shape)}"
    elif not losses.is_floating_point():
        problem = f"returned {losses.dtype}, not a floating-point tensor"
    elif outputs.requires_grad and not losses.requires_grad:
        problem = (
            "returned a tensor that is not attached to the autograd graph of the "
            "outputs (detached, converted from numpy, or computed without gradients), "
            "so training could not compute gradients"
        )
    if problem:
        raise ValueError(
            f"The 'loss' callable {base!r} must return one loss per sample, a "
            f"floating-point tensor of shape {tuple(y.shape)} computed from the "
            f"outputs; it {problem}."
        )


def per_sample_losses(outputs, y, base="cross_entropy"):
    """The base loss of every sample, checked to have the shape of ``y``."""
    losses = base_loss_function(base)(outputs, y)
    if not isinstance(losses, torch.Tensor) or losses.shape != y.shape:
        raise ValueError(
            f"The loss callable {base!r} must return one loss per sample, a tensor of "
            f"shape {tuple(y.shape)}; got "
            f"{tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__}."
        )
    return losses


def dynamical_loss(outputs, y, gamma, *, base="cross_entropy", sample_weight=None):
    """The dynamical loss of a batch: the mean of ``Gamma_{y_mu} * loss_mu``.

    Parameters
    ----------
    outputs : torch.Tensor of shape (..., P, C)
        The network's outputs (logits for cross-entropy). Leading dimensions index
        models trained together.
    y : torch.Tensor of shape (..., P)
        Class indices.
    gamma : torch.Tensor of shape (..., C)
        Class weights (:func:`~skdynloss.class_weights`), on the device of ``outputs``.
    base : str or callable, default="cross_entropy"
        The base loss: ``"cross_entropy"``; ``"squared_error"``, ``(1/C) sum_j (f_j
        - delta_{j,y})^2`` weighted by ``Gamma_y``; ``"squared_error_sum"``, ``sum_j
        (f_j - delta_{j,y})^2`` weighted by ``Gamma_y``; ``"squared_error_per_output"``,
        ``sum_j Gamma_j (f_j - delta_{j,y})^2``; or a callable ``base(outputs, y)``
        returning per-sample losses of the shape of ``y`` (weighted by ``Gamma_y``).
    sample_weight : torch.Tensor of shape (..., P), default=None
        Non-negative sample weights: the loss is then ``sum s Gamma loss / sum s``, so
        that integer weights count as repeated rows.

    Returns
    -------
    loss : torch.Tensor of shape (...)
        A scalar for one model.
    """
    return weighted_mean(
        loss_terms(outputs, y, base), y, gamma, sample_weight=sample_weight
    )


def weigh(terms, y, gamma):
    """The weighted per-sample losses (..., P) of :func:`loss_terms`:
    ``Gamma_{y_mu} l_mu`` for per-sample terms, ``sum_j Gamma_j e_{mu j}`` for
    per-output terms; ``gamma`` (C,) or (..., C), None for all weights 1."""
    if terms.ndim == y.ndim + 1:
        if gamma is None:
            return terms.sum(dim=-1)
        # Gamma_j: the weight of each output's own class, the same for every sample.
        return (terms * gamma.unsqueeze(-2)).sum(dim=-1)
    if gamma is None:
        return terms
    # Gamma_{y_mu}: the weight of each sample's own class.
    if gamma.ndim == 1:
        return gamma[y] * terms
    return gamma.gather(-1, y) * terms


def weighted_mean(losses, y, gamma, *, sample_weight=None):
    """``mean_mu Gamma_{y_mu} losses_mu`` (with sample weights: ``sum s Gamma l / sum
    s``): the second half of :func:`dynamical_loss`, for terms computed already
    (:func:`loss_terms`). Per-output terms (..., P, C) are weighted by the weight of
    their output's class and summed over the outputs. ``gamma=None`` is the plain
    (sample-weighted) mean of the base loss."""
    weighted = weigh(losses, y, gamma)
    if sample_weight is None:
        # A plain mean over the P samples (not torch's mean normalised by the weights,
        # which would cancel the tilt).
        return weighted.mean(dim=-1)
    total = sample_weight.sum(dim=-1)
    # A batch whose weights are all zero contributes nothing (and no NaN).
    return (sample_weight * weighted).sum(dim=-1) / total.clamp_min(
        torch.finfo(total.dtype).tiny
    )


def _check_schedule(n_classes, amplitude, period, shape, order):
    if not isinstance(n_classes, numbers.Integral) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}.")
    if not (isinstance(amplitude, numbers.Real) and amplitude >= 1):
        raise ValueError(f"amplitude must be a number >= 1, got {amplitude!r}.")
    if not (isinstance(period, numbers.Real) and period > 0):
        raise ValueError(f"period must be a number > 0, got {period!r}.")
    if not callable(shape) and shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES} or a callable, got {shape!r}.")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")


class DynamicalLoss(torch.nn.Module):
    """A loss with oscillating class weights (a dynamical loss function).

    At time ``t`` the loss of a batch of P samples is

    .. math:: F(t) = \\frac{1}{P} \\sum_{\\mu} \\Gamma_{y_\\mu}(t)\\, \\ell(f(x_\\mu), y_\\mu),

    a plain mean of the weighted per-sample losses of a base loss ``ell``, where the
    weights :math:`\\Gamma_i(t)` emphasise one class at a time and always sum to the
    number of classes C. This is *not* torch's ``cross_entropy(weight=...)`` with its
    default mean, which divides by the sum of the weights of the batch's targets and so
    cancels the tilt whenever a batch is dominated by one class.

    Parameters
    ----------
    n_classes : int
        Number of classes C (targets are class indices ``0 .. C-1``).
    amplitude : float, default=10.0
        Peak raw weight A >= 1 of the class in focus. ``amplitude=1`` is the plain base
        loss for every shape.
    period : float, default=10.0
        Length T of the time spent on each class, in the unit of :meth:`set_time`
        (epochs, when driven by :class:`~skdynloss.DynamicalLossClassifier`).
    shape : {"triangle", "sine"} or callable, default="triangle"
        Raw weight of the focus class over one period. ``"triangle"`` is the paper's
        ``1 -> A -> 1``; ``"sine"`` is ``1 + (A - 1) sin^2(pi tau / T)``; a callable is
        called as ``shape(tau / T, amplitude)`` and returns a positive raw weight. The
        raw weights (focus ``w``, others 1) are normalised to sum to C.
    order : {"cyclic", "random"}, default="cyclic"
        ``"cyclic"`` moves the focus through classes 0, 1, ..., C-1, 0, ... as in the
        paper; ``"random"`` visits every class once per cycle in a seeded random order.
    random_state : int, default=0
        Seed of ``order="random"``.
    base : str or callable, default="cross_entropy"
        The base loss, on the outputs: ``"cross_entropy"`` of the logits;
        ``"squared_error"``, ``(1/C) sum_j (f_j - delta_{j,y})^2``, and
        ``"squared_error_sum"``, ``sum_j (f_j - delta_{j,y})^2``, both weighted by the
        weight of the sample's class; ``"squared_error_per_output"``, ``sum_j Gamma_j
        (f_j - delta_{j,y})^2``, each output weighted by the weight of its class; a
        callable ``base(outputs, y)`` returns per-sample losses (weighted by the
        sample's class).

    Attributes
    ----------
    weights : torch.Tensor of shape (n_classes,)
        The weights Gamma_i at the current time (a registered buffer, so it follows the
        module to another device or dtype).
    time : float
        The current time set by :meth:`set_time`.
    static : bool
        When True the loss is the plain base loss (all weights 1) whatever the time.

    See Also
    --------
    DynamicalCrossEntropy : this loss with the cross-entropy base.
    dynamical_loss : the pure function behind :meth:`forward`.
    class_weights : the weights Gamma_i(t).

    References
    ----------
    Ruiz-Garcia, M., Zhang, G., Schoenholz, S. S. and Liu, A. J. "Tilting the playing
    field: Dynamical loss functions for machine learning", ICML 2021,
    :arxiv:`2102.03793`.
    """

    def __init__(
        self,
        n_classes,
        amplitude=10.0,
        period=10.0,
        shape="triangle",
        order="cyclic",
        random_state=0,
        base="cross_entropy",
    ):
        super().__init__()
        _check_schedule(n_classes, amplitude, period, shape, order)
        base_loss_function(base)
        self.n_classes = int(n_classes)
        self.amplitude = float(amplitude)
        self.period = float(period)
        self.shape = shape
        self.order = order
        self.random_state = int(random_state)
        self.base = base
        # The clock, in a plain dict: it changes at every optimizer step, and
        # nn.Module.__setattr__ costs microseconds.
        self._clock = {"time": 0.0, "static": False}
        self.register_buffer("weights", torch.ones(self.n_classes))

    @property
    def time(self):
        """The current time, as set by :meth:`set_time`."""
        return self._clock["time"]

    @time.setter
    def time(self, value):
        self._clock["time"] = float(value)

    @property
    def static(self):
        """Whether the loss is currently the plain base loss (set by :meth:`set_time`)."""
        return self._clock["static"]

    @static.setter
    def static(self, value):
        self._clock["static"] = bool(value)

    def weights_at(self, t, *, static=False):
        r"""Return the weights :math:`\Gamma_i(t)` at time ``t`` (the clock does not move).

        Parameters
        ----------
        t : float
            Time.
        static : bool, default=False
            When True, all ones (the plain base loss).

        Returns
        -------
        weights : torch.Tensor of shape (n_classes,)
            On the device and in the dtype of ``weights``; they sum to ``n_classes``.
        """
        gamma = self._gamma(float(t), bool(static))
        return torch.from_numpy(gamma).to(self.weights.dtype).to(self.weights.device)

    def _gamma(self, t, static):
        """Gamma at ``t`` in float64 (numpy), from the one function that computes it."""
        return class_weights(
            t,
            n_classes=self.n_classes,
            amplitude=self.amplitude,
            period=self.period,
            shape=self.shape,
            order=self.order,
            seed=self.random_state,
            static=static,
        )

    def weights_table(self, times, static=None):
        """Weights at many times at once: what :meth:`set_time` would apply at each.

        Parameters
        ----------
        times : array-like of float, shape (K,)
        static : array-like of bool, shape (K,), default=None
            Times at which the loss is the plain base loss (weights 1).

        Returns
        -------
        table : ndarray of shape (K, n_classes), float64
        """
        return class_weights(
            times,
            n_classes=self.n_classes,
            amplitude=self.amplitude,
            period=self.period,
            shape=self.shape,
            order=self.order,
            seed=self.random_state,
            static=False if static is None else static,
        ).reshape(-1, self.n_classes)

    def set_time(self, t, *, static=None):
        """Set the clock to ``t`` and update ``weights`` in place.

        Parameters
        ----------
        t : float
            Time.
        static : bool, default=None
            When True, use the plain base loss (all weights 1) whatever the time; the
            classifier sets it for the last period of a fit, as in the paper. None keeps
            the current setting.

        Returns
        -------
        weights : list of float
            The weights now applied.
        """
        clock = self._clock
        clock["time"] = t = float(t)
        if static is not None:
            clock["static"] = bool(static)
        gamma = self._gamma(t, clock["static"])
        # In place, so the buffer stays where .to() put it. A graph built before keeps
        # the weights it was built with: forward gathers Gamma_y into a new tensor.
        self.weights.copy_(torch.from_numpy(gamma))
        return gamma.tolist()

    def reduce(self, losses, target, sample_weight=None):
        """The dynamical loss from terms computed already (:func:`loss_terms`)."""
        return weighted_mean(
            losses, target, self.weights.to(losses.dtype), sample_weight=sample_weight
        )

    def forward(self, outputs, target, sample_weight=None):
        """The dynamical loss of a batch at the current time.

        Parameters
        ----------
        outputs : torch.Tensor of shape (P, n_classes)
            The network's outputs (logits for cross-entropy).
        target : torch.Tensor of shape (P,)
            Class indices.
        sample_weight : torch.Tensor of shape (P,), default=None
            Sample weights.

        Returns
        -------
        loss : torch.Tensor
            A scalar.
        """
        return dynamical_loss(
            outputs,
            target,
            self.weights.to(outputs.dtype),
            base=self.base,
            sample_weight=sample_weight,
        )

    def extra_repr(self):
        return (
            f"n_classes={self.n_classes}, amplitude={self.amplitude:g}, "
            f"period={self.period:g}, shape={self.shape!r}, order={self.order!r}, "
            f"base={self.base!r}"
        )


class DynamicalCrossEntropy(DynamicalLoss):
    """Cross-entropy with oscillating class weights (a dynamical loss function).

    At time ``t`` the loss of a batch of P samples is

    .. math:: F(t) = \\frac{1}{P} \\sum_{\\mu} \\Gamma_{y_\\mu}(t)\\, CE(f(x_\\mu), y_\\mu),

    the paper's loss: :class:`DynamicalLoss` with the cross-entropy base. See
    :class:`DynamicalLoss` for the parameters and attributes.

    Parameters
    ----------
    n_classes : int
        Number of classes C (targets are class indices ``0 .. C-1``).
    amplitude : float, default=10.0
        Peak raw weight A >= 1 of the class in focus; 1 is plain cross-entropy.
    period : float, default=10.0
        Length T of the time spent on each class.
    shape : {"triangle", "sine"} or callable, default="triangle"
        Raw weight of the focus class over one period.
    order : {"cyclic", "random"}, default="cyclic"
        Order in which the classes take the focus.
    random_state : int, default=0
        Seed of ``order="random"``.

    See Also
    --------
    DynamicalLossClassifier : a scikit-learn classifier trained with this loss.

    References
    ----------
    Ruiz-Garcia, M., Zhang, G., Schoenholz, S. S. and Liu, A. J. "Tilting the playing
    field: Dynamical loss functions for machine learning", ICML 2021,
    :arxiv:`2102.03793`.

    Examples
    --------
    >>> import torch
    >>> from skdynloss import DynamicalCrossEntropy
    >>> loss = DynamicalCrossEntropy(3, amplitude=70, period=5)
    >>> loss.weights_at(2.5)
    tensor([2.9167, 0.0417, 0.0417])
    >>> _ = loss.set_time(2.5)
    >>> logits, target = torch.zeros(4, 3), torch.tensor([0, 0, 1, 2])
    >>> round(loss(logits, target).item(), 4)  # ln(3) * (2 * 2.9167 + 2 * 0.0417) / 4
    1.6251
    """

    def __init__(
        self,
        n_classes,
        amplitude=10.0,
        period=10.0,
        shape="triangle",
        order="cyclic",
        random_state=0,
    ):
        super().__init__(
            n_classes,
            amplitude=amplitude,
            period=period,
            shape=shape,
            order=order,
            random_state=random_state,
            base="cross_entropy",
        )


def class_major_terms(outputs, y, base):
    """:func:`loss_terms` of class-major outputs (K, C, B): per sample (K, B), or per
    output (K, C, B) for ``"squared_error_per_output"``.

    The formulas of :func:`cross_entropy` and the squared errors, reduced over the
    class axis 1 (the stacked MLP's layout, where a reduction over a non-innermost
    axis of a few classes is an order of magnitude faster than over the innermost).
    """
    if base == "cross_entropy":
        log_probs = torch.log_softmax(outputs, dim=1)
        return -log_probs.gather(1, y.unsqueeze(1)).squeeze(1)
    if base in SQUARED_ERROR_BASES:
        one_hot = F.one_hot(y, outputs.shape[1]).to(outputs.dtype)
        errors = (outputs - one_hot.transpose(1, 2)).square()
        if base == "squared_error":
            return errors.mean(dim=1)
        if base == "squared_error_sum":
            return errors.sum(dim=1)
        return errors
    raise ValueError(f"the base loss {base!r} has no class-major form")


def class_major_losses(outputs, y, base):
    """Per-sample base losses (K, B) of class-major outputs (K, C, B), all weights 1."""
    terms = class_major_terms(outputs, y, base)
    return terms if terms.ndim == y.ndim else terms.sum(dim=1)


def stacked_losses(outputs, y, bases, *, class_dim):
    """Per-sample base losses (K, B) of K models' outputs (all weights 1); see
    :func:`stacked_weighted_losses`."""
    return _stacked(outputs, y, bases, None, class_dim)[1]


def stacked_weighted_losses(outputs, y, bases, gamma, *, class_dim):
    """The weighted and the plain per-sample losses, both (K, B), of K models' outputs.

    ``outputs`` is (K, C, B) (``class_dim=1``) or (K, B, C) (``class_dim=-1``) and
    ``gamma`` (K, C) the models' weights; model k's base loss is ``bases[k]``: a named
    one, computed for all models that share it at once, or a callable, called on
    model k's own (B, C) outputs as in a single fit. The weighted losses are
    :func:`weigh` of each model's :func:`loss_terms`, so that models of both kinds of
    base (weighted by label or by output) share a stack.
    """
    return _stacked(outputs, y, bases, gamma, class_dim)


def _stacked(outputs, y, bases, gamma, class_dim):
    groups = {}
    for k, base in enumerate(bases):
        groups.setdefault(base if not callable(base) else ("callable", k), []).append(k)
    if len(groups) == 1 and not callable(bases[0]):
        return _named_stacked(outputs, y, bases[0], gamma, class_dim)
    weighted = outputs.new_empty(y.shape)
    plain = outputs.new_empty(y.shape)
    for key, ks in groups.items():
        if isinstance(key, tuple):  # a callable: model k's own outputs
            (k,) = ks
            out = outputs[k] if class_dim == -1 else outputs[k].transpose(0, 1)
            plain[k] = losses = per_sample_losses(out, y[k], bases[k])
            weighted[k] = losses if gamma is None else weigh(losses, y[k], gamma[k])
        else:
            ix = torch.tensor(ks, device=outputs.device)
            g = None if gamma is None else gamma[ix]
            weighted[ix], plain[ix] = _named_stacked(
                outputs[ix], y[ix], key, g, class_dim
            )
    return weighted, plain


def _named_stacked(outputs, y, base, gamma, class_dim):
    """(weighted, plain) per-sample losses of models that share the named ``base``."""
    if class_dim == 1:
        terms = class_major_terms(outputs, y, base)
        if terms.ndim == y.ndim:
            plain = terms
            weighted = plain if gamma is None else gamma.gather(-1, y) * plain
        else:  # per output, (K, C, B): Gamma_j of each output, summed over the classes
            plain = terms.sum(dim=1)
            weighted = plain if gamma is None else (terms * gamma.unsqueeze(-1)).sum(1)
        return weighted, plain
    terms = loss_terms(outputs, y, base)
    plain = unweighted_losses(terms, y)
    return (plain if gamma is None else weigh(terms, y, gamma)), plain


class StackedDynamicalLoss(torch.nn.Module):
    """The dynamical losses of K models trained as one stack.

    Holds the K models' own :class:`DynamicalLoss` criteria (their schedules and base
    losses) and the weights of all of them at the current time, a (K, C) buffer that
    :meth:`set_time` moves. Gamma comes from one :func:`~skdynloss.class_weights` call
    per block of steps for all K configurations (the array path, which computes what
    the scalar path of a single model's criterion computes).

    Parameters
    ----------
    criteria : list of DynamicalLoss
        One per model, of the same number of classes.
    steps_per_epoch : int
        Optimizer steps per epoch (times are ``step / steps_per_epoch``).
    """

    #: Weights computed ahead per call of class_weights (about a million numbers).
    table_numbers = 2**20

    def __init__(self, criteria, steps_per_epoch):
        super().__init__()
        self.criteria = list(criteria)
        self.n_classes = self.criteria[0].n_classes
        self.bases = [c.base for c in self.criteria]
        self.steps_per_epoch = int(steps_per_epoch)
        self._config = {
            "n_classes": self.n_classes,
            "amplitude": [c.amplitude for c in self.criteria],
            "period": [c.period for c in self.criteria],
            "shape": [c.shape for c in self.criteria],
            "order": [c.order for c in self.criteria],
            "seed": [c.random_state for c in self.criteria],
        }
        self._table = None
        self._table_start = 0
        self._clock = {"time": 0.0, "static": np.zeros(len(self.criteria), bool)}
        dtype = self.criteria[0].weights.dtype
        self.register_buffer(
            "weights", torch.ones(len(self.criteria), self.n_classes, dtype=dtype)
        )

    @property
    def period(self):
        """The K periods (array)."""
        return np.asarray(self._config["period"], dtype=float)

    @property
    def time(self):
        return self._clock["time"]

    @property
    def static(self):
        return self._clock["static"]

    def weights_at(self, t, *, static=False):
        """The (K, C) weights at time ``t`` (the clock does not move)."""
        gamma = class_weights(float(t), static=static, **self._config)
        return torch.from_numpy(np.asarray(gamma)).to(self.weights)

    def set_time(self, t, *, static=None):
        """Set the clock to ``t`` (with one static flag per model) and the weights.

        Returns the (K, C) weights as a numpy array (float64).
        """
        clock = self._clock
        clock["time"] = t = float(t)
        if static is not None:
            clock["static"] = np.broadcast_to(
                np.asarray(static, dtype=bool), (len(self.criteria),)
            )
        step = round(t * self.steps_per_epoch)
        table, start = self._table, self._table_start
        if table is None or not (0 <= step - start < len(table[0])):
            count = max(1, self.table_numbers // (len(self.criteria) * self.n_classes))
            times = np.arange(step, step + count) / self.steps_per_epoch
            gamma = class_weights(times, **self._config)  # (count, K, C)
            self._table = table = (gamma, torch.from_numpy(gamma).to(self.weights))
            self._table_start = start = step
        row = step - start
        gamma_np, gamma = table[0][row], table[1][row]
        static = clock["static"]
        if static.any():
            gamma_np = gamma_np.copy()
            gamma_np[static] = 1.0
            gamma = torch.from_numpy(gamma_np).to(self.weights)
        # The (K, C) weights of the step, without an in-place copy per step.
        self.weights = gamma
        return gamma_np

    def losses(self, outputs, target, *, class_dim=-1):
        """The weighted and the plain per-sample losses (K, B) at the current time."""
        return stacked_weighted_losses(
            outputs,
            target,
            self.bases,
            self.weights.to(outputs.dtype),
            class_dim=class_dim,
        )

    def forward(self, outputs, target, sample_weight=None, *, class_dim=-1):
        """The K losses, shape (K,)."""
        weighted, _ = self.losses(outputs, target, class_dim=class_dim)
        return weighted_mean(weighted, target, None, sample_weight=sample_weight)
