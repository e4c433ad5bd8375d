"""The oscillating class weights Gamma_i(t) of a dynamical loss: one pure function.

:func:`class_weights` is the only place in the package where the weights are computed:
the loss module, the clock callback, the sharpness tracker, the plots and the stacked
models all call it. It is pure (no state, no cache that changes a result) and
vectorised: over times of any shape, and over configurations (arrays of amplitudes,
periods, shapes, orders and seeds of shape (K,)), so that K models trained together
(a stack) get their K rows of weights from one call.

Time ``t`` is a float. One period of length ``period`` emphasises one class; the class in
focus moves to the next one every period, in the order of ``classes_`` (``order="cyclic"``)
or in a seeded random permutation drawn anew for each cycle through all classes
(``order="random"``). The formulas are those of Ruiz-Garcia et al. (ICML 2021,
:arxiv:`2102.03793`), as written out in the user guide.
"""

import inspect
import math
import numbers
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
    amplitude : float or ndarray
        The peak raw weight ``A >= 1`` (broadcast against ``phase``).

    Returns
    -------
    w : float or ndarray
        ``1 + 2 (A - 1) phase`` for ``phase < 1/2`` and ``2A - 1 - 2 (A - 1) phase``
        otherwise, written as ``1 + (A - 1) (1 - |2 phase - 1|)``: one expression for
        Python floats and arrays alike.
    """
    return 1.0 + (amplitude - 1.0) * (1.0 - abs(2.0 * phase - 1.0))


def sine_weight(phase, amplitude):
    """Raw weight of the focus class for a smooth bump ``1 + (A - 1) sin^2(pi phase)``.

    Parameters
    ----------
    phase : float or ndarray
        ``tau / T`` in ``[0, 1)``.
    amplitude : float or ndarray
        The peak raw weight ``A >= 1`` (broadcast against ``phase``).

    Returns
    -------
    w : float or ndarray
    """
    sin = math.sin if isinstance(phase, float) else np.sin
    return 1.0 + (amplitude - 1.0) * sin(math.pi * phase) ** 2


_RAW_WEIGHTS = {"triangle": triangle_weight, "sine": sine_weight}


def _check_shape(shape):
    if callable(shape) or (isinstance(shape, str) and shape in SHAPES):
        return shape
    raise ValueError(f"shape must be one of {SHAPES} or a callable, got {shape!r}.")


def check_shape_callable(shape, amplitude):
    """A user's ``shape``, called once as ``shape(0.5, amplitude)`` before training:
    a ValueError that names the parameter when it cannot be called with two arguments
    or does not return one positive, finite real number."""
    if not callable(shape):
        return
    try:
        inspect.signature(shape).bind(0.5, float(amplitude))
    except TypeError as exc:
        raise ValueError(
            f"The 'shape' callable {shape!r} must take two arguments, "
            f"shape(phase, amplitude): {exc}."
        ) from None
    except ValueError:
        pass  # no signature to inspect (some builtins): the call below tells
    try:
        w = shape(0.5, float(amplitude))
    except Exception as exc:
        raise ValueError(
            f"The 'shape' callable {shape!r} failed when called as shape(0.5, "
            f"{float(amplitude)!r}): {type(exc).__name__}: {exc}"
        ) from exc
    if isinstance(w, bool) or not (
        isinstance(w, numbers.Real)
        or (
            isinstance(w, np.generic | np.ndarray)
            and w.ndim == 0
            and w.dtype.kind in "iuf"
        )
    ):
        got = (
            f"an array of shape {w.shape}"
            if isinstance(w, np.ndarray)
            else f"{type(w).__name__} {w!r}"
        )
        raise ValueError(
            f"The 'shape' callable {shape!r} must return one real number, the raw "
            f"weight of the class in focus at one phase; shape(0.5, "
            f"{float(amplitude)!r}) returned {got}."
        )
    w = float(w)
    if not (math.isfinite(w) and w > 0):
        raise ValueError(
            f"The 'shape' callable {shape!r} returned {w!r} for shape(0.5, "
            f"{float(amplitude)!r}); raw weights must be positive and finite."
        )


def _check_order(order):
    if isinstance(order, str) and order in ORDERS:
        return order
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")


@lru_cache(maxsize=4096)
def _cycle_permutation(seed, n_classes, cycle):
    # Seeded by (seed, cycle) so that the order of any cycle is a pure function of t:
    # a resumed or warm-started fit sees exactly the classes it would have seen. (The
    # cache only saves recomputing a value that never changes.)
    return np.random.default_rng([seed, cycle]).permutation(n_classes)


def _period_index(t, period):
    """floor(t / T), as a float array (may exceed the range of int64)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.floor(t / period)


def focus_class(t, *, n_classes, period, order="cyclic", seed=0):
    """Index of the class in focus at time ``t``.

    Parameters
    ----------
    t : float or ndarray
        Time(s), in the unit of ``period``.
    n_classes : int
        Number of classes C.
    period : float or ndarray
        Length T of one period (broadcast against ``t``).
    order : {"cyclic", "random"}, default="cyclic"
        ``"cyclic"`` visits 0, 1, ..., C-1, 0, ... as in the paper; ``"random"`` visits
        every class once per cycle of C periods, in an order drawn from ``seed``.
    seed : int or ndarray of int, default=0
        Seed of the random order (broadcast against ``t``).

    Returns
    -------
    c : int or ndarray of int
    """
    _check_order(order)
    t, period, seed = np.broadcast_arrays(
        np.asarray(t, dtype=float), np.asarray(period, dtype=float), np.asarray(seed)
    )
    k = _period_index(t, period)
    if not np.isfinite(k).all():
        raise ValueError(
            "The time divided by the period is not a finite number (period too small "
            "for the time reached); use a longer period."
        )
    if order == "cyclic":
        focus = np.mod(k, n_classes).astype(np.intp)
    else:
        cycle, position = np.divmod(k, n_classes)
        position = position.astype(np.intp)
        focus = np.empty(k.shape, dtype=np.intp)
        keys = np.stack([seed.astype(np.int64).ravel(), cycle.ravel()], axis=1)
        flat_focus, flat_position = focus.reshape(-1), position.reshape(-1)
        for s, c in np.unique(keys, axis=0).tolist():
            rows = (keys[:, 0] == s) & (keys[:, 1] == c)
            perm = _cycle_permutation(int(s), int(n_classes), int(c))
            flat_focus[rows] = perm[flat_position[rows]]
    return focus if focus.ndim else int(focus)


def focus_weight(t, *, amplitude, period, shape="triangle"):
    """Raw (unnormalised) weight of the focus class at time ``t``.

    Parameters
    ----------
    t : float or ndarray
        Time(s).
    amplitude : float or ndarray
        Peak raw weight A; 1 means no tilt (broadcast against ``t``).
    period : float or ndarray
        Length T of one period (broadcast against ``t``).
    shape : {"triangle", "sine"} or callable, default="triangle"
        A callable is called as ``shape(phase, amplitude)``, one phase at a time, with
        ``phase = tau / T`` in ``[0, 1)``, and must return a positive raw weight. It is
        not called where ``amplitude == 1``.

    Returns
    -------
    w : float or ndarray
    """
    _check_shape(shape)
    t, amplitude, period = np.broadcast_arrays(
        np.asarray(t, dtype=float),
        np.asarray(amplitude, dtype=float),
        np.asarray(period, dtype=float),
    )
    with np.errstate(invalid="ignore"):
        tau = np.fmod(t, period)
    tau = np.where(tau < 0, tau + period, tau)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        phase = np.clip(tau / period, 0.0, np.nextafter(1.0, 0.0))
    if callable(shape):
        # A user's shape is called with one phase at a time, as documented.
        w = np.ones(t.shape)
        for i in np.argwhere(amplitude != 1.0):
            i = tuple(i)
            w[i] = float(shape(float(phase[i]), float(amplitude[i])))
    else:
        w = np.asarray(_RAW_WEIGHTS[shape](phase, amplitude), dtype=float)
        # A = 1 is plain cross-entropy for every shape (exactly 1, whatever the phase).
        w = np.where(amplitude == 1.0, 1.0, w)
    bad = ~(np.isfinite(w) & (w > 0))
    if bad.any():
        i = np.argwhere(bad)[0]
        raise ValueError(
            f"The weight shape returned {w[tuple(i)]!r} at phase "
            f"{phase[tuple(i)]:.4g}; raw weights must be positive and finite (an "
            "amplitude too large for float64 gives inf)."
        )
    return w if w.ndim else float(w)


def normalise_weights(w, focus, n_classes):
    """Normalise raw weights (``w`` for ``focus``, 1 elsewhere) to sum to ``n_classes``.

    ``Gamma_focus = C w / (w + C - 1)`` and ``Gamma_other = C / (w + C - 1)``. The weights
    sum to C, so with balanced classes the scale of the loss stays that of cross-entropy.

    Parameters
    ----------
    w : float or ndarray
        Raw weight(s) of the focus class.
    focus : int or ndarray of int
        Index of the focus class (same shape as ``w``).
    n_classes : int
        Number of classes C.

    Returns
    -------
    gamma : ndarray of shape ``np.shape(w) + (n_classes,)``
    """
    w = np.asarray(w, dtype=float)
    scale = n_classes / (w + n_classes - 1.0)
    gamma = np.repeat(scale[..., None], n_classes, axis=-1)
    np.put_along_axis(
        gamma, np.asarray(focus, dtype=np.intp)[..., None], (w * scale)[..., None], -1
    )
    return gamma


_SCALARS = (int, float, str, bool)


def _is_many(value):
    """Whether a configuration argument holds one value per configuration."""
    if type(value) in _SCALARS:
        return False
    return isinstance(value, list | tuple | np.ndarray) and np.ndim(value) == 1


def class_weights(
    t,
    *,
    n_classes,
    amplitude,
    period,
    shape="triangle",
    order="cyclic",
    seed=0,
    static=False,
):
    r"""Class weights :math:`\Gamma_i(t)` of the dynamical loss (Ruiz-Garcia et al., 2021).

    The one function that computes the weights, for the built-in shapes and for
    callables, vectorised over times and over configurations.

    Parameters
    ----------
    t : float or array-like of float
        Time(s), in the unit of ``period``, of any shape.
    n_classes : int
        Number of classes C.
    amplitude : float or array-like of shape (K,)
        Peak raw weight A >= 1 of the focus class. ``amplitude=1`` gives all ones
        (plain cross-entropy).
    period : float or array-like of shape (K,)
        Length T of the period spent on each class.
    shape : {"triangle", "sine"}, callable, or sequence of K of them, default="triangle"
        Raw weight of the focus class over one period: ``triangle`` rises linearly
        from 1 to A and back, ``sine`` is ``1 + (A - 1) sin^2(pi tau / T)``, a
        callable is called as ``shape(tau / T, amplitude)``, one phase at a time.
    order : {"cyclic", "random"} or sequence of K of them, default="cyclic"
        Order in which the classes take the focus.
    seed : int or array-like of shape (K,), default=0
        Seed of ``order="random"``.
    static : bool or array-like of bool, default=False
        Where True, the weights are all 1 (plain cross-entropy), whatever the time.
        Broadcast against ``np.shape(t)``, or against ``np.shape(t) + (K,)`` with K
        configurations (one flag per time and configuration; one per time only is
        ``static[..., None]``).

    Returns
    -------
    gamma : ndarray of shape ``np.shape(t) + (n_classes,)``, or ``np.shape(t) + (K, n_classes)``
        Non-negative weights that sum to ``n_classes`` at every time. The second form
        when any of ``amplitude``, ``period``, ``shape``, ``order`` or ``seed`` holds one
        value per configuration (K of them).

    Examples
    --------
    >>> from skdynloss import class_weights
    >>> class_weights(2.5, n_classes=3, amplitude=70, period=5).round(4)
    array([2.9167, 0.0417, 0.0417])
    >>> class_weights([0.0, 2.5], n_classes=2, amplitude=[1, 9], period=5).shape
    (2, 2, 2)
    """
    if (
        type(t) is float
        and type(amplitude) is float
        and type(period) is float
        and type(seed) is int
        and type(static) is bool
        and type(shape) is str
        and type(order) is str
    ):
        # One time, one configuration, plain Python numbers: what the training loop
        # asks at every step (the checks below cost more than the arithmetic).
        _check_shape(shape)
        _check_order(order)
        return np.array(
            _scalar(t, int(n_classes), amplitude, period, shape, order, seed, static)
        )
    n_classes = int(n_classes)
    t = np.asarray(t, dtype=float)
    configs = [amplitude, period, shape, order, seed]
    many = [_is_many(v) for v in configs]
    if not any(many):
        return _one_configuration(
            t, n_classes, amplitude, period, shape, order, seed, static
        )
    k = {len(v) for v, m in zip(configs, many, strict=True) if m}
    if len(k) != 1:
        raise ValueError(
            "amplitude, period, shape, order and seed must hold one value or the same "
            f"number K of values (one per configuration); got lengths {sorted(k)}."
        )
    (k,) = k
    columns = [list(v) if m else [v] * k for v, m in zip(configs, many, strict=True)]
    # One flag per (time, configuration): numpy broadcasting against t.shape + (K,)
    # (a flag per time only is static[..., None]).
    static = np.broadcast_to(np.asarray(static, dtype=bool), t.shape + (k,))
    out = np.empty(t.shape + (k, n_classes))
    # Configurations of the same shape and order are computed together, broadcast over
    # their amplitudes, periods and seeds.
    groups = {}
    for i, (s, o) in enumerate(zip(columns[2], columns[3], strict=True)):
        groups.setdefault((id(s) if callable(s) else s, o), []).append(i)
    for rows in groups.values():
        idx = np.asarray(rows)
        out[..., idx, :] = _one_configuration(
            t[..., None],
            n_classes,
            np.asarray(columns[0], dtype=float)[idx],
            np.asarray(columns[1], dtype=float)[idx],
            columns[2][rows[0]],
            columns[3][rows[0]],
            np.asarray(columns[4])[idx],
            static[..., idx],
        )
    return out


def _one_configuration(t, n_classes, amplitude, period, shape, order, seed, static):
    """Gamma for times ``t`` broadcast against per-configuration arrays (one shape and
    one order), of shape ``broadcast(t, amplitude, ...) + (n_classes,)``."""
    _check_shape(shape)
    _check_order(order)
    if t.ndim == 0 and all(
        type(v) in _SCALARS or isinstance(v, np.integer | np.floating | np.bool_)
        for v in (amplitude, period, seed, static)
    ):
        return np.array(
            _scalar(
                float(t), n_classes, amplitude, period, shape, order, seed, bool(static)
            )
        )
    w = focus_weight(t, amplitude=amplitude, period=period, shape=shape)
    focus = focus_class(t, n_classes=n_classes, period=period, order=order, seed=seed)
    gamma = normalise_weights(w, np.broadcast_to(focus, np.shape(w)), n_classes)
    static = np.asarray(static, dtype=bool)
    if static.any():
        gamma[np.broadcast_to(static, gamma.shape[:-1])] = 1.0
    return gamma


def _scalar(t, n_classes, amplitude, period, shape, order, seed, static):
    """One time, one configuration: the steps of the array path in Python floats.

    The training loop asks for the weights of one step at a time; numpy's per-call
    overhead would cost about 50 us of a 200 us full-batch step. Every step below is
    the array path's, in the same order (tested equal, bit for bit for the triangle).
    """
    if amplitude == 1.0 or static:
        return [1.0] * n_classes
    k = math.floor(t / period) if math.isfinite(t / period) else math.inf
    if not math.isfinite(k):
        # The array path raises the error.
        return class_weights(
            np.asarray([t]),
            n_classes=n_classes,
            amplitude=[amplitude],
            period=period,
            shape=shape,
            order=order,
            seed=seed,
        )[0, 0]
    tau = math.fmod(t, period)
    if tau < 0:
        tau += period
    phase = min(max(tau / period, 0.0), math.nextafter(1.0, 0.0))
    if callable(shape):
        w = float(shape(phase, float(amplitude)))
    else:
        w = _RAW_WEIGHTS[shape](phase, float(amplitude))
    if not (math.isfinite(w) and w > 0):
        focus_weight(np.asarray([t]), amplitude=amplitude, period=period, shape=shape)
    if order == "cyclic":
        focus = int(k % n_classes)
    else:
        cycle, position = divmod(int(k), n_classes)
        focus = int(_cycle_permutation(int(seed), n_classes, cycle)[position])
    scale = n_classes / (w + n_classes - 1.0)
    gamma = [scale] * n_classes
    gamma[focus] = w * scale
    return gamma
