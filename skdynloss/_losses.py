"""The dynamical cross-entropy, a torch.nn.Module usable in any PyTorch or skorch loop."""

import numbers

import numpy as np
import torch
import torch.nn.functional as F

from ._schedules import ORDERS, SHAPES, class_weights, focus_class, focus_weight
from ._schedules import normalise_weights as _normalise


class DynamicalCrossEntropy(torch.nn.Module):
    """Cross-entropy with oscillating class weights (a dynamical loss function).

    At time ``t`` the loss of a batch of P samples is

    .. math:: F(t) = \\frac{1}{P} \\sum_{\\mu} \\Gamma_{y_\\mu}(t)\\, CE(f(x_\\mu), y_\\mu),

    a plain mean of the weighted per-sample losses, where the weights
    :math:`\\Gamma_i(t)` emphasise one class at a time and always sum to the number of
    classes C. This is *not* ``torch.nn.functional.cross_entropy(weight=...)`` with its
    default mean, which divides by the sum of the weights of the batch's targets and so
    cancels the tilt whenever a batch is dominated by one class.

    Parameters
    ----------
    n_classes : int
        Number of classes C (targets are class indices ``0 .. C-1``).
    amplitude : float, default=10.0
        Peak raw weight A >= 1 of the class in focus. ``amplitude=1`` is plain
        cross-entropy for every shape.
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

    Attributes
    ----------
    weights : torch.Tensor of shape (n_classes,)
        The weights Gamma_i at the current time (a registered buffer, so it follows the
        module to another device or dtype).
    time : float
        The current time set by :meth:`set_time`.
    static : bool
        When True the loss is plain cross-entropy (all weights 1) whatever the time.

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
        super().__init__()
        if not isinstance(n_classes, numbers.Integral) or n_classes < 1:
            raise ValueError(
                f"n_classes must be a positive integer, got {n_classes!r}."
            )
        if not (isinstance(amplitude, numbers.Real) and amplitude >= 1):
            raise ValueError(f"amplitude must be a number >= 1, got {amplitude!r}.")
        if not (isinstance(period, numbers.Real) and period > 0):
            raise ValueError(f"period must be a number > 0, got {period!r}.")
        if not callable(shape) and shape not in SHAPES:
            raise ValueError(
                f"shape must be one of {SHAPES} or a callable, got {shape!r}."
            )
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")
        self.n_classes = int(n_classes)
        self.amplitude = float(amplitude)
        self.period = float(period)
        self.shape = shape
        self.order = order
        self.random_state = int(random_state)
        # Hot-path state lives in a plain dict: nn.Module.__setattr__ costs microseconds,
        # and these change at every optimizer step.
        self._clock = {
            "time": 0.0,
            "static": False,
            "applied": None,
            "last_ce": None,
            "scaled": None,
        }
        self.register_buffer("weights", torch.ones(self.n_classes))

    @property
    def time(self):
        """The current time, as set by :meth:`set_time`."""
        return self._clock["time"]

    @property
    def static(self):
        """Whether the loss is currently plain cross-entropy (set by :meth:`set_time`)."""
        return self._clock["static"]

    @property
    def last_log_probs(self):
        """``(log_probs, target)`` of the last forward pass, detached (or None).

        Lets a training loop record plain cross-entropy and accuracy next to the
        weighted loss without a second forward pass.
        """
        return self._clock["last_ce"]

    def _weights_list(self, t, static=False):
        if static or self.amplitude == 1.0 or self.n_classes == 1:
            return [1.0] * self.n_classes
        c = focus_class(
            t,
            n_classes=self.n_classes,
            period=self.period,
            order=self.order,
            seed=self.random_state,
        )
        w = focus_weight(
            t, amplitude=self.amplitude, period=self.period, shape=self.shape
        )
        return _normalise(w, c, self.n_classes)

    def weights_at(self, t):
        """Return the weights Gamma_i(t) at time ``t`` (ignores ``static``).

        Parameters
        ----------
        t : float
            Time.

        Returns
        -------
        weights : torch.Tensor of shape (n_classes,)
            On the device and in the dtype of ``weights``; they sum to ``n_classes``.
        """
        return torch.tensor(
            self._weights_list(float(t)),
            dtype=self.weights.dtype,
            device=self.weights.device,
        )

    def set_time(self, t, *, static=None):
        """Set the clock to ``t`` and update ``weights`` in place.

        Parameters
        ----------
        t : float
            Time.
        static : bool, default=None
            When True, use plain cross-entropy (all weights 1) whatever the time; the
            classifier sets it for the last period of a fit, as in the paper. None keeps
            the current setting.

        Returns
        -------
        weights : list of float
            The weights now applied.
        """
        clock = self._clock
        clock["time"] = float(t)
        if static is not None:
            clock["static"] = bool(static)
        gamma = self._weights_list(clock["time"], clock["static"])
        # Copy only when the weights change: plain cross-entropy phases cost nothing.
        if gamma != clock["applied"]:
            weights = self._buffers["weights"]
            view = self._numpy_view(weights)
            if view is not None:
                # Write through numpy: no torch dispatch at every optimizer step.
                view[:] = gamma
            else:
                weights.copy_(
                    torch.tensor(gamma, dtype=weights.dtype), non_blocking=True
                )
            clock["applied"] = gamma
            clock["scaled"] = None
        return gamma

    def _numpy_view(self, weights):
        """A numpy view of the weights buffer on the CPU (cached), else None."""
        clock = self._clock
        # Keyed by the buffer's address: .to(), load_state_dict, deepcopy and
        # unpickling all give a new one.
        ptr = weights.data_ptr()
        if clock.get("view_ptr") != ptr:
            cpu = weights.device.type == "cpu" and not weights.requires_grad
            clock["view"] = weights.numpy() if cpu else None
            clock["view_ptr"] = ptr
        return clock["view"]

    def weights_table(self, times, static=None):
        """Weights at many times at once: what :meth:`set_time` would apply at each.

        Parameters
        ----------
        times : array-like of float, shape (K,)
        static : array-like of bool, shape (K,), default=None
            Times at which the loss is plain cross-entropy (weights 1).

        Returns
        -------
        table : ndarray of shape (K, n_classes), float64
        """
        times = np.asarray(times, dtype=float)
        if self.n_classes == 1:
            return np.ones((times.size, 1))
        table = class_weights(
            times,
            n_classes=self.n_classes,
            amplitude=self.amplitude,
            period=self.period,
            shape=self.shape,
            order=self.order,
            seed=self.random_state,
        ).reshape(times.size, self.n_classes)
        if static is not None:
            table[np.asarray(static, dtype=bool)] = 1.0
        return table

    def _set_scheduled(self, t, static, gamma, gamma_tensor, scaled, n):
        """Set the time with weights computed ahead (by a training loop).

        ``gamma`` is a numpy row of :meth:`weights_table` in the buffer's dtype,
        ``gamma_tensor`` the same row on the buffer's device (used off the CPU), and
        ``scaled`` the row divided by the coming batch size ``n``, in the loss's dtype:
        a tensor never written to afterwards, which forward uses as is.
        """
        clock = self._clock
        clock["time"] = t
        clock["static"] = static
        weights = self._buffers["weights"]
        view = self._numpy_view(weights)
        if view is not None:
            view[:] = gamma
        else:
            weights.copy_(gamma_tensor, non_blocking=True)
        clock["applied"] = None
        key = (n, scaled.dtype, weights.data_ptr(), _version(weights))
        clock["scaled"] = (key, scaled)

    def forward(self, logits, target):
        """Weighted cross-entropy: the plain mean of ``Gamma_y * CE`` over the batch.

        Parameters
        ----------
        logits : torch.Tensor of shape (P, n_classes)
            Unnormalised scores.
        target : torch.Tensor of shape (P,)
            Class indices.

        Returns
        -------
        loss : torch.Tensor
            A scalar.
        """
        log_probs = F.log_softmax(logits, dim=1)
        # Kept (detached) so that a training loop can record plain cross-entropy
        # without a second forward pass.
        self._clock["last_ce"] = (log_probs.detach(), target)
        # sum_mu (Gamma_{y_mu} / P) CE_mu: the plain mean of the weighted per-sample
        # losses in one fused kernel, with 1/P folded into the weights (no division
        # node in the graph). reduction="sum" does not normalise by the weights (only
        # reduction="mean" would divide by sum_mu Gamma_{y_mu}).
        return F.nll_loss(
            log_probs,
            target,
            weight=self._scaled_weights(target.shape[0], log_probs.dtype),
            reduction="sum",
        )

    def _scaled_weights(self, n, dtype):
        """``weights / n`` in ``dtype``, cached until the weights, n or dtype change."""
        weights = self._buffers["weights"]
        key = (n, dtype, weights.data_ptr(), _version(weights))
        clock = self._clock
        cached = clock["scaled"]
        if cached is None or cached[0] != key:
            # A new tensor every time, never updated in place: a graph built on the
            # previous one keeps the weights it was built with.
            view = self._numpy_view(weights)
            if view is not None:
                # CPU: divide the numpy view set_time writes through (no dispatch).
                scaled = torch.from_numpy(view / max(n, 1))
                if scaled.dtype != dtype:
                    scaled = scaled.to(dtype)
            else:
                scaled = weights.to(dtype) / max(n, 1)
            cached = (key, scaled)
            clock["scaled"] = cached
        return cached[1]

    def extra_repr(self):
        return (
            f"n_classes={self.n_classes}, amplitude={self.amplitude:g}, "
            f"period={self.period:g}, shape={self.shape!r}, order={self.order!r}"
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # The cache of applied weights is stale once a state dict overwrites the buffer.
        self._clock["applied"] = None
        self._clock["scaled"] = None


def _version(tensor):
    """The tensor's in-place version counter (0 for inference tensors, which have none
    and cannot be changed in place)."""
    try:
        return tensor._version
    except RuntimeError:
        return 0
