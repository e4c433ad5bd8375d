"""The oscillating class weights Gamma_i(t) of a dynamical loss.

Everything here is pure numpy/Python so that it can be evaluated cheaply at every
optimizer step, vectorised over time for plots, and tested against the formulas of
Ruiz-Garcia et al. (ICML 2021, :arxiv:`2102.03793`) written out by hand.

Time ``t`` is a float. One period of length ``period`` emphasises one class; the class in
focus moves to the next one every period, in the order of ``classes_`` (``order="cyclic"``)
or in a seeded random permutation drawn anew for each cycle through all classes
(``order="random"``).
"""

import math
from functools import lru_cache

import numpy as np

SHAPES = ("triangle", "sine")
ORDERS = ("cyclic", "random")


def triangle_weight(phase, amplitude):
    """Raw weight of the focus class for the paper's triangle 1 -> A -> 1.

    Parameters
    ----------
    phase : float or ndarray
        ``tau / T`` in ``[0, 1)``.
    amplitude : float
        The peak raw weight ``A >= 1``.

    Returns
    -------
    w : float or ndarray
        ``1 + 2 (A - 1) phase`` for ``phase < 1/2`` and ``2A - 1 - 2 (A - 1) phase``
        otherwise.
    """
    if isinstance(phase, float):
        # Scalar fast path: called at every optimizer step.
        if phase < 0.5:
            return 1.0 + 2.0 * (amplitude - 1.0) * phase
        return 2.0 * amplitude - 1.0 - 2.0 * (amplitude - 1.0) * phase
    phase = np.asarray(phase, dtype=float)
    rising = 1.0 + 2.0 * (amplitude - 1.0) * phase
    falling = 2.0 * amplitude - 1.0 - 2.0 * (amplitude - 1.0) * phase
    w = np.where(phase < 0.5, rising, falling)
    return w if w.ndim else float(w)


def sine_weight(phase, amplitude):
    """Raw weight of the focus class for a smooth bump ``1 + (A - 1) sin^2(pi phase)``.

    Parameters
    ----------
    phase : float or ndarray
        ``tau / T`` in ``[0, 1)``.
    amplitude : float
        The peak raw weight ``A >= 1``.

    Returns
    -------
    w : float or ndarray
    """
    if isinstance(phase, float):
        return 1.0 + (amplitude - 1.0) * math.sin(math.pi * phase) ** 2
    w = 1.0 + (amplitude - 1.0) * np.sin(np.pi * np.asarray(phase, dtype=float)) ** 2
    return w if w.ndim else float(w)


_RAW_WEIGHTS = {"triangle": triangle_weight, "sine": sine_weight}


def _raw_weight_function(shape):
    if callable(shape):
        return shape
    try:
        return _RAW_WEIGHTS[shape]
    except (KeyError, TypeError):
        raise ValueError(
            f"shape must be one of {SHAPES} or a callable, got {shape!r}."
        ) from None


@lru_cache(maxsize=4096)
def _cycle_permutation(seed, n_classes, cycle):
    # Seeded by (seed, cycle) so that the order of any cycle is a pure function of t:
    # a resumed or warm-started fit sees exactly the classes it would have seen.
    return tuple(np.random.default_rng([seed, cycle]).permutation(n_classes).tolist())


def focus_class(t, *, n_classes, period, order="cyclic", seed=0):
    """Index of the class in focus at time ``t``.

    Parameters
    ----------
    t : float
        Time, in the unit of ``period``.
    n_classes : int
        Number of classes C.
    period : float
        Length T of one period.
    order : {"cyclic", "random"}, default="cyclic"
        ``"cyclic"`` visits 0, 1, ..., C-1, 0, ... as in the paper; ``"random"`` visits
        every class once per cycle of C periods, in an order drawn from ``seed``.
    seed : int, default=0
        Seed of the random order.

    Returns
    -------
    c : int
    """
    k = math.floor(t / period)
    if order == "cyclic":
        return k % n_classes
    if order == "random":
        cycle, position = divmod(k, n_classes)
        return _cycle_permutation(int(seed), int(n_classes), int(cycle))[position]
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")


def focus_weight(t, *, amplitude, period, shape="triangle"):
    """Raw (unnormalised) weight of the focus class at time ``t``.

    Parameters
    ----------
    t : float
        Time.
    amplitude : float
        Peak raw weight A; 1 means no tilt.
    period : float
        Length T of one period.
    shape : {"triangle", "sine"} or callable, default="triangle"
        A callable is called as ``shape(phase, amplitude)`` with ``phase = tau / T`` in
        ``[0, 1)`` and must return a positive raw weight. It is not called when
        ``amplitude == 1``.

    Returns
    -------
    w : float
    """
    if amplitude == 1.0:
        # A = 1 is plain cross-entropy for every shape, a user's callable included.
        return 1.0
    tau = math.fmod(t, period)
    if tau < 0:
        tau += period
    w = float(_raw_weight_function(shape)(tau / period, amplitude))
    if not (math.isfinite(w) and w > 0):
        raise ValueError(
            f"The weight shape returned {w!r} at phase {tau / period:.4g}; "
            "raw weights must be positive and finite."
        )
    return w


def normalise_weights(w, focus, n_classes):
    """Normalise raw weights (``w`` for ``focus``, 1 elsewhere) to sum to ``n_classes``.

    ``Gamma_focus = C w / (w + C - 1)`` and ``Gamma_other = C / (w + C - 1)``. The weights
    sum to C, so with balanced classes the scale of the loss stays that of cross-entropy.

    Returns
    -------
    gamma : list of float, length ``n_classes``
    """
    scale = n_classes / (w + n_classes - 1.0)
    gamma = [scale] * n_classes
    gamma[focus] = w * scale
    return gamma


def class_weights(
    t,
    *,
    n_classes,
    amplitude,
    period,
    shape="triangle",
    order="cyclic",
    seed=0,
):
    """Class weights Gamma_i(t) of the dynamical loss (Ruiz-Garcia et al., 2021).

    Parameters
    ----------
    t : float or array-like of float
        Time(s), in the unit of ``period``.
    n_classes : int
        Number of classes C.
    amplitude : float
        Peak raw weight A >= 1 of the focus class. ``amplitude=1`` gives all ones
        (plain cross-entropy).
    period : float
        Length T of the period spent on each class.
    shape : {"triangle", "sine"} or callable, default="triangle"
        Raw weight of the focus class over one period: ``triangle`` rises linearly
        from 1 to A and back, ``sine`` is ``1 + (A - 1) sin^2(pi tau / T)``, a
        callable is called as ``shape(tau / T, amplitude)``.
    order : {"cyclic", "random"}, default="cyclic"
        Order in which the classes take the focus.
    seed : int, default=0
        Seed of ``order="random"``.

    Returns
    -------
    gamma : ndarray of shape (n_classes,) or (len(t), n_classes)
        Non-negative weights that sum to ``n_classes`` at every time.

    Examples
    --------
    >>> from skdynloss import class_weights
    >>> class_weights(2.5, n_classes=3, amplitude=70, period=5).round(4)
    array([2.9167, 0.0417, 0.0417])
    """
    scalar = np.ndim(t) == 0
    times = np.atleast_1d(np.asarray(t, dtype=float)).ravel()
    if callable(shape) and amplitude != 1.0:
        # A user's shape is called with one phase at a time, as documented.
        out = np.empty((times.size, n_classes))
        for i, ti in enumerate(times):
            c = focus_class(
                ti, n_classes=n_classes, period=period, order=order, seed=seed
            )
            w = focus_weight(ti, amplitude=amplitude, period=period, shape=shape)
            out[i] = normalise_weights(w, c, n_classes)
    else:
        out = _class_weights_array(
            times, n_classes, float(amplitude), float(period), shape, order, seed
        )
    return out[0] if scalar else out


def _class_weights_array(times, n_classes, amplitude, period, shape, order, seed):
    # The scalar functions above, one numpy operation at a time over all times (the
    # same floating point operations, so the same values).
    if amplitude == 1.0:
        return np.ones((times.size, n_classes))
    k = np.floor(times / period)
    if order == "cyclic":
        focus = np.mod(k, n_classes).astype(np.intp)
    elif order == "random":
        cycle, position = np.divmod(k, n_classes)
        cycle, position = cycle.astype(np.int64), position.astype(np.intp)
        focus = np.empty(times.size, dtype=np.intp)
        for c in np.unique(cycle).tolist():
            rows = cycle == c
            perm = np.asarray(_cycle_permutation(int(seed), int(n_classes), c))
            focus[rows] = perm[position[rows]]
    else:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")
    tau = np.fmod(times, period)
    tau = np.where(tau < 0, tau + period, tau)
    w = np.asarray(_raw_weight_function(shape)(tau / period, amplitude), dtype=float)
    scale = n_classes / (w + n_classes - 1.0)
    out = np.repeat(scale[:, None], n_classes, axis=1)
    out[np.arange(times.size), focus] = w * scale
    return out
