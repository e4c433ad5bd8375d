"""Train many DynamicalLossClassifier configurations at once, as stacks.

Estimators that differ only in what the loss does with their outputs (``amplitude``,
``period``, ``shape``, ``order``, ``static_last_period``, the base ``loss``), in their
``random_state``, their callbacks' settings and their training rows train in lockstep
through the engine (:mod:`skdynloss._engine`): one skorch net whose module computes
the K models at once, trained by one torch optimizer. The optimizers stacked (SGD,
Adam, AdamW) update every parameter elementwise, and the gradient of a sum of
independent losses is each model's own gradient, so model k computes what its own
``fit`` computes: the same initialisation (its own ``_build``, from its own seeds),
the same batches in the same order (drawn from its own generator), the same clock.

What cannot share a stack (another ``lr``, optimizer, widths, batch size or number of
steps per epoch, epochs, dtype or device) goes in another one: :func:`stack_units`
groups the fits, the one grouping that :func:`fit_lockstep`, the lockstep searches
and the reproductions use. What cannot be stacked at all trains as a stack of one,
through the same engine (see :func:`unstackable_reason`).
"""

import math
import numbers
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import _safe_indexing
from sklearn.utils.validation import _num_samples

from ._callbacks import stack_aware
from ._classifier import DynamicalLossClassifier, _hidden_sizes, _resolve_device
from ._engine import (
    _HardInterrupt,
    commit,
    convergence_warning,
    deferred_sigint,
    prepare,
    train,
)
from ._losses import class_major_losses  # noqa: F401 (its home before)
from ._modules import MLP, StackedMLP, stack_modules  # noqa: F401 (StackedMLP: idem)
from ._net import InterruptedStep, batch_size_for, steps_per_epoch
from ._threads import threads_for, torch_threads

#: Hyperparameters in which the models of one stack may differ.
STACKED_PARAMS = (
    "amplitude",
    "period",
    "shape",
    "order",
    "static_last_period",
    "loss",
    "random_state",
)

#: Hyperparameters that do not affect training (used after it, or only for display).
#: Hyperparameters that only each model's own callbacks or its commit use (they
#: may differ too; the validation split's size shows in the steps per epoch).
_PER_MODEL = (
    "verbose",
    "compute_sharpness",
    "sharpness_every",
    "sharpness_max_samples",
    "callbacks",
    "early_stopping",
    "validation_fraction",
    "n_iter_no_change",
    "tol",
    "warm_start",
)

_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def unstackable_reason(estimator):
    """Why ``estimator`` cannot share a stack (None when it can).

    It then trains as a stack of one, through the same engine: every skorch
    callback, optimizer and module behaves there as in skorch.
    """
    if type(estimator) is not DynamicalLossClassifier:
        return f"{type(estimator).__name__} is not a DynamicalLossClassifier"
    opt = estimator.optimizer
    if not (opt in ("sgd", "adam") or opt in _OPTIMIZERS):
        return (
            f"optimizer={opt!r} (only SGD, Adam and AdamW are stacked: their updates "
            "are elementwise, so K models stepped at once stay independent)"
        )
    for cb in estimator.callbacks or []:
        callback = cb[1] if isinstance(cb, tuple) else cb
        if not stack_aware(callback):
            return (
                f"the callback {type(callback).__name__} is not stack-aware (its "
                "class does not set stack_aware = True)"
            )
    return None


def _continuation(estimator):
    """What continuing models of one stack must share: their epochs so far, their
    clock and their optimizer's step count (None for a new fit)."""
    if not (estimator.warm_start and hasattr(estimator, "net_")):
        return None
    net = estimator.net_
    history = net.history
    steps = [
        float(state["step"]) if "step" in state else len(state)
        for state in net.optimizer_.state.values()
    ]
    return (
        len(history),
        history[-1].get("loss_time", 0.0) if len(history) else 0.0,
        tuple(steps),
    )


def _freeze(value):
    """A hashable, comparable stand-in for a hyperparameter value."""
    if isinstance(value, list | tuple | np.ndarray):
        return (
            "seq",
            tuple(_freeze(v) for v in np.asarray(value, dtype=object).ravel()),
        )
    if isinstance(value, float | int | str | bool | type(None)):
        return value
    return ("obj", id(value), repr(value))


def hyperparameter_key(estimator):
    """What models of one stack must share, from the hyperparameters alone.

    The data add the number of features, of classes and of steps per epoch (see
    :func:`fit_lockstep`). None for an estimator that cannot be stacked.
    """
    if unstackable_reason(estimator) is not None:
        return None
    params = estimator.get_params(deep=False)
    key = []
    for name in sorted(params):
        if name in STACKED_PARAMS or name in _PER_MODEL:
            continue
        value = params[name]
        if name == "hidden_layer_sizes":
            value = _hidden_sizes(value)
        elif name == "device":
            value = _resolve_device(value)
        elif name == "optimizer":
            value = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}.get(value, value)
            value = value.__name__
        key.append((name, _freeze(value)))
    return tuple(key)


def model_bytes(estimator, n_rows, n_features, n_classes):
    """Bytes one model of a stack needs while it trains (an upper estimate).

    Parameters, gradient, up to two optimizer moments and the divergence guard's two
    copies (6 P numbers); activations of a batch (input, and per layer the
    pre-activation, activation and their gradients: about ``B (F + 4 sum widths +
    4 C)`` numbers); and the model's own full-batch input when its rows are gathered
    (``n F``).
    """
    itemsize = 8 if estimator.dtype == "float64" else 4
    hidden = _hidden_sizes(estimator.hidden_layer_sizes)
    n_params = MLP.n_parameters(n_features, n_classes, hidden)
    batch = batch_size_for(int(estimator.batch_size), n_rows)
    activations = batch * (n_features + 4 * sum(hidden) + 4 * n_classes + 4)
    data = n_rows * (n_features + 2) if batch >= n_rows else 0
    return itemsize * (6 * n_params + activations + data)


def default_max_stack_bytes(device="cpu"):
    """The default bound of one stack's memory (as :func:`model_bytes` counts it).

    On CUDA (any device but the CPU), a quarter of the device's free memory (1 GiB
    when unknown): one stack of many small models costs about one launch-bound step.
    On a CPU, one core's share of the last-level cache (its size over the cores that
    share it; 16 MiB when unknown), the stack size measured fastest per model and step
    (``benchmarks/bench_lockstep.py --part stacks``): smaller stacks pay the per-step
    overhead with fewer models, larger ones spill out of the cache (an MLP 2-100-3 in
    full batch on the spiral in float64, about 1 MiB per model, cost 2.2 times as much
    per model and step in a stack of 32 as in one of 12 to 24, on a 32 MiB L3 shared
    by 2 cores). Each worker of a parallel search holds one stack at a time, so each
    core's share keeps them all in the cache.
    """
    device = str(device)
    if not device.startswith("cpu"):
        from ._classifier import _available_memory

        available = _available_memory(device)
        return available // 4 if available else 2**30
    import glob
    import os

    def read(path):
        with open(path) as f:
            return f.read().strip()

    best = None
    try:
        for index in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
            if read(os.path.join(index, "type")) not in ("Unified", "Data"):
                continue
            level = int(read(os.path.join(index, "level")))
            text = read(os.path.join(index, "size")).upper()
            size = int(text.rstrip("KMB")) * {"K": 2**10, "M": 2**20}.get(text[-1], 1)
            cores = 0
            for part in read(os.path.join(index, "shared_cpu_list")).split(","):
                first, _, last = part.partition("-")
                cores += int(last or first) - int(first) + 1
            if best is None or level > best[0]:
                best = (level, size // max(cores, 1))
    except (OSError, ValueError):
        best = None
    return best[1] if best and best[1] > 0 else 16 * 2**20


def balanced_chunks(items, size):
    """``items`` cut into the fewest chunks of at most ``size``, of equal sizes.

    Sizes differ by at most one (17 models at most 16 per stack are stacks of 9 and 8,
    not 16 and 1: a stack costs per step about what its largest member does, so a
    leftover stack of one model would cost nearly as much as a full one).
    """
    n_chunks = -(-len(items) // size)
    base, extra = divmod(len(items), n_chunks)
    chunks, start = [], 0
    for i in range(n_chunks):
        stop = start + base + (i < extra)
        chunks.append(items[start:stop])
        start = stop
    return chunks


def _training_rows(estimator, n):
    """Rows a fit on ``n`` rows trains on (early stopping holds some out)."""
    if not estimator.early_stopping or estimator.validation_fraction is None:
        return n
    return n - math.ceil(float(estimator.validation_fraction) * n)


def stack_units(estimators, datasets, *, max_stack_bytes=None, extra_keys=None):
    """The fits as units of work: balanced stacks of fits that can share one, and
    fits alone.

    The one grouping of fits into stacks. Fits share a stack when their
    :func:`hyperparameter_key`, number of features and classes, steps per epoch (and
    ``extra_keys``, when given) agree; a group larger than ``max_stack_bytes`` (by
    :func:`model_bytes`) is cut into stacks of equal size (:func:`balanced_chunks`).
    The units do not depend on how they are run, so neither do the results.

    Parameters
    ----------
    estimators : list of estimators
    datasets : list of (X, y, sample_weight, key)
    max_stack_bytes : int, default=None
        None: :func:`default_max_stack_bytes` of the estimators' device.
    extra_keys : list, default=None
        One more hashable per fit that must agree within a stack.

    Returns
    -------
    units : list of list of int
        Indices into ``estimators``; stacks first, then fits alone (one each).
    """
    groups, alone = {}, []
    for i, (est, (X, y, _, _)) in enumerate(zip(estimators, datasets, strict=True)):
        key = hyperparameter_key(est)
        try:
            n, n_features = np.shape(X)[0], int(np.prod(np.shape(X)[1:]))
            n_classes = len(np.unique(np.asarray(y)))
            spe = steps_per_epoch(int(est.batch_size), _training_rows(est, n))
        except Exception:  # invalid data: its own fit reports it
            key = None
        if key is None:
            alone.append([i])
            continue
        extra = None if extra_keys is None else extra_keys[i]
        extra = (extra, _continuation(est))
        groups.setdefault((key, n_features, n_classes, spe, extra), []).append(i)
    units = []
    for (_, n_features, n_classes, _, _), members in groups.items():
        est = estimators[members[0]]
        limit = max_stack_bytes or default_max_stack_bytes(_resolve_device(est.device))
        n_rows = max(len(datasets[i][1]) for i in members)
        per_model = max(
            model_bytes(estimators[i], n_rows, n_features, n_classes) for i in members
        )
        size = max(1, int(limit // max(per_model, 1)))
        units.extend(balanced_chunks(members, size))
    return units + alone


def _warn_static(estimator, y):
    """The single fit's warning when the whole fit would be the plain base loss."""
    n_classes = len(np.unique(np.asarray(y)))
    estimator._warn_if_static(estimator._period(n_classes), estimator.max_epochs)


def _stackable_modules(plans):
    """Whether the plans' modules can be computed as one stack (see stack_modules):
    one training-mode forward pass of a stack of two on two rows, which fails for a
    module that torch.vmap cannot map (random operations such as dropout, buffers,
    data-dependent Python)."""
    modules = [p.net.module_ for p in plans[:2]]
    X = plans[0].data[0][:2]
    try:
        with torch.no_grad():
            stack = stack_modules(modules).train()
            stack(X.expand(len(modules), *X.shape))
    except Exception:
        return False
    return True


def _stack_threads(plans):
    """torch's intra-op threads for a stack: the estimators' thread policy applied to
    the work of one stacked step (K models' batches), as a single fit applies it to
    its own (None: torch's setting as it is)."""
    est = plans[0].estimator
    if est.n_threads is not None:
        return None if est.n_threads == -1 else int(est.n_threads)
    X = plans[0].data[0]
    macs = est._macs_per_row(
        int(np.prod(X.shape[1:])), len(plans[0].classes_), fitted=False
    )
    if macs is None:
        return None
    rows = len(plans) * batch_size_for(
        int(est.batch_size), max(len(p.data[0]) for p in plans)
    )
    return threads_for(rows, macs, torch.get_num_threads())


class _Progress:
    """A line when a stack starts and when it ends (the stack's own bar between)."""

    def __init__(self, verbose, label, file=None):
        self.verbose = verbose
        self.label = label
        self.file = file if file is not None else sys.stderr

    def start(self, index, n_stacks, plans, epochs):
        self.t0 = time.perf_counter()
        if self.verbose:
            est = plans[0].estimator
            print(
                f"[lockstep] {self.label}stack {index}/{n_stacks} ({len(plans)} "
                f"models): {est.optimizer} lr={est.lr:g}, hidden="
                f"{_hidden_sizes(est.hidden_layer_sizes)}, batch_size="
                f"{est.batch_size}, {epochs} epochs",
                file=self.file,
            )

    def end(self, index, n_stacks, plans):
        elapsed = time.perf_counter() - self.t0
        if self.verbose:
            diverged = sum(bool(p.estimator.__dict__.get("diverged_")) for p in plans)
            print(
                f"[lockstep] {self.label}stack {index}/{n_stacks}: {len(plans)} models "
                f"trained in {elapsed:.2f}s"
                + (f" ({diverged} diverged)" if diverged else ""),
                file=self.file,
            )
        return elapsed


def check_max_stack_bytes(value):
    """``max_stack_bytes``: None or a positive number of bytes (a clear error)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"max_stack_bytes must be None or a positive number of bytes, got "
            f"{type(value).__name__} {value!r:.40}."
        )
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"max_stack_bytes must be None or a positive number of bytes, got {value!r}."
        )
    return value


def fit_datasets(
    estimators,
    datasets,
    *,
    errors="raise",
    interrupt="warn",
    verbose=0,
    max_stack_bytes=None,
    label="",
):
    """Fit each estimator on its own data set, in stacks where possible.

    Parameters
    ----------
    estimators : list of estimators
    datasets : list of (X, y, sample_weight, key)
        One per estimator; estimators whose ``key`` is the same (and not None) train
        on the same data, which their stack then holds once.
    errors : {"raise", "return"}
        What a failure of one estimator's fit does: raise, or be returned in its slot.
    interrupt : {"warn", "raise"}
        What Ctrl-C does: end training after the current step and warn (as a fit
        does), or raise KeyboardInterrupt once every estimator is restored.

    Returns
    -------
    errors : list of (Exception or None)
    fit_times : list of float
        Seconds per estimator (its preparation and record, and its share of its stack).
    """
    check_max_stack_bytes(max_stack_bytes)
    n = len(estimators)
    if len(datasets) != n:
        raise ValueError(f"{len(datasets)} data sets for {n} estimators.")
    failures = [None] * n
    times = [0.0] * n
    units = stack_units(estimators, datasets, max_stack_bytes=max_stack_bytes)
    state = {"stop": False, "clock": None}

    def request():
        state["stop"] = True
        if state["clock"] is not None:
            state["clock"].stop_requested = True

    def on_stack(clock):
        state["clock"] = clock
        clock.stop_requested = state["stop"]

    progress = _Progress(verbose, label)
    committed = []  # plans fitted, to restore if the whole call is interrupted
    cache = {}
    untrained = 0
    with deferred_sigint(lambda: state["stop"], request, _HardInterrupt):
        for index, unit in enumerate(units, 1):
            if state["stop"]:
                untrained += len(unit)
                continue
            plans = []
            for k in unit:
                t0 = time.perf_counter()
                est = estimators[k]
                X, y, w, key = datasets[k]
                try:
                    # What fit's _fit_context checks first.
                    est._validate_params()
                    if len(unit) > 1:
                        _warn_static(est, y)
                    plans.append(
                        prepare(
                            est,
                            X,
                            y,
                            w,
                            continuing=est.warm_start and hasattr(est, "net_"),
                            epochs=int(est.max_epochs),
                            cache=cache,
                            dataset_key=None if key is None else ("key", key),
                        )
                    )
                    plans[-1].index = k
                except Exception as exc:
                    if errors == "raise":
                        _restore(committed + plans)
                        raise
                    failures[k] = exc
                times[k] += time.perf_counter() - t0
            if not plans:
                continue
            epochs = int(plans[0].epochs)
            stackable = len(plans) == 1 or _stackable_modules(plans)
            groups = [plans] if stackable else [[p] for p in plans]
            for group in groups:
                progress.start(index, len(units), group, epochs)
                try:
                    with torch_threads(_stack_threads(group)):
                        interrupted = train(group, epochs=epochs, on_stack=on_stack)
                except BaseException as exc:
                    for p in group:
                        p.rollback()
                    state["clock"] = None
                    if isinstance(exc, _HardInterrupt | KeyboardInterrupt):
                        _restore(committed + plans)
                        raise KeyboardInterrupt(
                            "Training interrupted twice: stopped at once; the "
                            "estimators are as they were before the call."
                        ) from None
                    if isinstance(exc, InterruptedStep):
                        exc = exc.original
                    if errors == "raise" or not isinstance(exc, Exception):
                        _restore(committed + plans)
                        raise exc from None
                    for p in group:
                        failures[p.index] = exc
                    continue
                state["clock"] = None
                # The stack's own handler took the Ctrl-C: the whole call stops.
                state["stop"] = state["stop"] or interrupted
                elapsed = progress.end(index, len(units), group)
                for p in group:
                    t0 = time.perf_counter()
                    try:
                        commit(p)
                        committed.append(p)
                    except Exception as exc:
                        if errors == "raise":
                            _restore(committed + plans)
                            raise
                        failures[p.index] = exc
                    times[p.index] += elapsed / len(group) + time.perf_counter() - t0
                    if interrupted:
                        warnings.warn(
                            f"Training interrupted by user after "
                            f"{p.estimator.n_iter_} epochs; the estimator holds the "
                            "network as it was at the end of the last step.",
                            UserWarning,
                            stacklevel=3,
                        )
                    elif failures[p.index] is None:
                        convergence_warning(p, stacklevel=3)
    if state["stop"]:
        if interrupt == "raise":
            _restore(committed)
            raise KeyboardInterrupt
        if untrained:
            warnings.warn(
                f"Training interrupted by user: {untrained} estimator(s) whose "
                "stack had not started were not fitted.",
                UserWarning,
                stacklevel=3,
            )
    return failures, times


def _restore(plans):
    """Every estimator of ``plans`` as it was before the call."""
    for p in reversed(plans):
        p.rollback()


def fit_lockstep(
    estimators, X, y, *, rows=None, sample_weight=None, verbose=0, max_stack_bytes=None
):
    """Fit many DynamicalLossClassifier configurations at once.

    Estimators that differ only in what can be stacked (``amplitude``, ``period``,
    ``shape``, ``order``, ``static_last_period``, the ``loss``, ``random_state``)
    and their rows train together as one stacked network; the others form further
    stacks, one after another. Each estimator ends as if fitted alone: it predicts,
    reports ``loss_curve_``, ``dynamics_`` and ``sharpness_``, and pickles as its own
    ``fit`` would leave it. Stacks take the CNN and custom modules, callable losses,
    ``sharpness_every``, ``early_stopping`` and stack-aware callbacks; what cannot
    share a stack (another optimizer than SGD, Adam or AdamW, ``warm_start`` on a
    fitted estimator, a callback that is not stack-aware) trains as a stack of one,
    through the same engine.

    Parameters
    ----------
    estimators : list of DynamicalLossClassifier
        Fitted in place (each as a new fit).
    X : array-like of shape (n_samples, n_features)
        Training data, shared by all.
    y : array-like of shape (n_samples,)
        Labels.
    rows : list of array-like of int, default=None
        One index array per estimator: the rows of (X, y) it trains on, in that
        order (cross-validation folds). None trains every estimator on all rows.
    sample_weight : array-like of shape (n_samples,), default=None
        Weights of the samples (indexed by ``rows`` with them).
    verbose : int, default=0
        1 prints a line per stack and shows a progress bar over its epochs.
    max_stack_bytes : int, default=None
        Most memory one stack may use, estimated by :func:`model_bytes` per model;
        a larger group of models is split into several stacks. None is a quarter of
        the memory of the device (its free memory on CUDA).

    Returns
    -------
    estimators : list of DynamicalLossClassifier
        The same estimators, fitted.

    Examples
    --------
    >>> from skdynloss import DynamicalLossClassifier, fit_lockstep, make_spiral
    >>> X, y = make_spiral(30)
    >>> models = [
    ...     DynamicalLossClassifier(amplitude=a, period=2, max_epochs=10,
    ...                             hidden_layer_sizes=(8,), random_state=0)
    ...     for a in (1, 5, 20)
    ... ]
    >>> [len(m.loss_curve_) for m in fit_lockstep(models, X, y)]
    [10, 10, 10]
    """
    if isinstance(estimators, str | BaseEstimator) or not hasattr(
        estimators, "__iter__"
    ):
        raise TypeError(
            "estimators must be a list of DynamicalLossClassifier, got "
            f"{type(estimators).__name__}."
        )
    estimators = list(estimators)
    for i, est in enumerate(estimators):
        if not isinstance(est, BaseEstimator) or not hasattr(est, "fit"):
            raise TypeError(
                f"estimators[{i}] is {type(est).__name__} ({est!r:.60}), not an "
                "estimator: pass a list of DynamicalLossClassifier."
            )
    check_max_stack_bytes(max_stack_bytes)
    if rows is not None and len(rows) != len(estimators):
        raise ValueError(
            f"rows holds {len(rows)} index arrays for {len(estimators)} estimators."
        )
    n_rows = _num_samples(X)
    datasets = []
    for k in range(len(estimators)):
        if rows is None:
            datasets.append((X, y, sample_weight, "all"))
            continue
        r = np.asarray(rows[k])
        if r.ndim != 1 or not (np.issubdtype(r.dtype, np.integer) or r.size == 0):
            raise ValueError(
                f"rows[{k}] must be a 1-d array of integer row indices, got an array "
                f"of shape {r.shape} and dtype {r.dtype}."
            )
        if r.size and (r.min() < -n_rows or r.max() >= n_rows):
            raise ValueError(
                f"rows[{k}] holds row indices from {r.min()} to {r.max()}, outside "
                f"the {n_rows} rows of X."
            )
        datasets.append(
            (
                _safe_indexing(X, r),
                _safe_indexing(y, r),
                None if sample_weight is None else _safe_indexing(sample_weight, r),
                r.tobytes(),
            )
        )
    fit_datasets(estimators, datasets, verbose=verbose, max_stack_bytes=max_stack_bytes)
    return estimators
