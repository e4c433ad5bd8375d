"""The engine: one preparation, one training path and one commit for K fits at once.

A fit is prepared (validation, labels, seeds, the model's own skorch net, its
tensors), trained, and committed (its fitted attributes, all at once). A single fit is
a stack of one: :func:`train` with one plan trains the model's own net through
skorch's ``partial_fit``, the plain module and every skorch callback as in skorch.
With K plans it builds one more :class:`~skdynloss._net.DynamicalNet` whose module
computes the K models at once (:func:`~skdynloss._modules.stack_modules`), whose
criterion holds their K schedules, whose iterator draws each model's batches from
its own generator, and whose callbacks (the clock and its record, the divergence
guard, the progress bar) are the same classes as a single fit's, run once for all K;
every other callback of a model runs with its own net
(:class:`~skdynloss._callbacks.MemberCallbacks`). That net trains through skorch's
unchanged ``partial_fit`` too, and at the end each model's net holds what its own fit
would hold: parameters, optimizer state, generator, history, callbacks' state.

What a stack needs its models to share (the optimizer and its settings, widths, batch
size, steps per epoch, epochs, dtype, device) is the key of
:func:`skdynloss._lockstep.stack_key`.
"""

import contextlib
import signal
import threading
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from skorch.helper import predefined_split

from ._callbacks import (
    DivergenceGuard,
    LossClock,
    MemberCallbacks,
    ProgressBar,
    _callback,
)
from ._losses import StackedDynamicalLoss
from ._modules import stack_modules
from ._net import DynamicalNet, InterruptedStep, StackData, TensorData


class _HardInterrupt(BaseException):
    """A second Ctrl-C: stop now. Not a KeyboardInterrupt, which skorch's fit loop
    swallows as its signal to end training; the caller rolls the call back and
    raises KeyboardInterrupt."""


@contextlib.contextmanager
def deferred_sigint(is_set, request, second=KeyboardInterrupt):
    """Ctrl-C calls ``request()`` (training ends at the end of the current step); a
    second one, once ``is_set()``, raises ``second`` at once.

    Only the main thread receives signals; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if is_set():
            raise second
        request()

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Record:
    """The per-epoch record of all calls: lists that grow by appending.

    Arrays are built when asked for (and kept until the record grows), so a call adds
    the cost of its own epochs only: 3000 ``partial_fit`` calls stay linear.
    """

    KEYS = ("time", "loss", "base_loss", "accuracy", "class_weights")
    SHARPNESS = ("epoch", "dynamical", "base", "threshold")

    def __init__(self, n_classes, base):
        self.n_classes = n_classes
        self.base = base
        self.rows = {key: [] for key in self.KEYS}
        self.sharpness = {key: [] for key in self.SHARPNESS}
        self.validation = []
        self._arrays = None

    def __len__(self):
        return len(self.rows["time"])

    def sync(self, history):
        """Take the history's rows from ``len(self)`` on (truncating first if the
        history was cut back, as the divergence guard does)."""
        n = len(history)
        if n < len(self):
            self.truncate(n)
        for epoch in range(len(self), n):
            row = history[epoch]
            self.rows["time"].append(row["loss_time"])
            self.rows["loss"].append(row["train_loss"])
            self.rows["base_loss"].append(row["train_base_loss"])
            self.rows["accuracy"].append(row["train_accuracy"])
            self.rows["class_weights"].append(row["class_weights"])
            if "sharpness_dynamical" in row:
                for key, value in (
                    ("epoch", epoch + 1),
                    ("dynamical", row["sharpness_dynamical"]),
                    ("base", row["sharpness_base"]),
                    ("threshold", row["stability_threshold"]),
                ):
                    self.sharpness[key].append(value)
            if "valid_acc" in row:
                self.validation.append(row["valid_acc"])
        self._arrays = None

    def truncate(self, n):
        for values in self.rows.values():
            del values[n:]
        # One validation score per epoch (early stopping validates every epoch).
        del self.validation[n:]
        keep = sum(1 for e in self.sharpness["epoch"] if e <= n)
        for values in self.sharpness.values():
            del values[keep:]
        self._arrays = None

    def arrays(self):
        if self._arrays is None:
            n = len(self)
            dynamics = {"epoch": np.arange(1, n + 1)}
            for key in self.KEYS[:-1]:
                dynamics[key] = np.asarray(self.rows[key], dtype=float)
            dynamics["class_weights"] = np.asarray(
                self.rows["class_weights"], dtype=float
            ).reshape(n, self.n_classes)
            sharp = {
                "epoch": np.asarray(self.sharpness["epoch"], dtype=int),
                **{
                    k: np.asarray(self.sharpness[k], dtype=float)
                    for k in self.SHARPNESS[1:]
                },
            }
            if self.base == "cross_entropy":
                dynamics["cross_entropy"] = dynamics["base_loss"]
                sharp["cross_entropy"] = sharp["base"]
            self._arrays = (dynamics, sharp)
        return self._arrays

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state


class Plan:
    """One estimator's call, prepared: everything its training and commit need.

    Attributes
    ----------
    estimator : DynamicalLossClassifier
    before : dict
        The estimator's ``__dict__`` before the call (restored if the call fails).
    snapshot : dict or None
        What a continuing call changes in the net, to put back if it fails.
    net : DynamicalNet
        The model's own net (new, or the fitted one when continuing).
    data : tuple
        Training tensors ``(X, y, sample_weight or None)`` on the net's device.
    valid : tuple or None
        Validation tensors ``(X, y)`` (early stopping).
    classes_ : ndarray
    continuing : bool
    epochs : int
    """

    def __init__(self, estimator, before, snapshot, net, data, valid, classes_, **kw):
        self.estimator = estimator
        self.before = before
        self.snapshot = snapshot
        self.net = net
        self.data = data
        self.valid = valid
        self.classes_ = classes_
        self.continuing = kw["continuing"]
        self.epochs = kw["epochs"]
        self.dataset_key = kw.get("dataset_key")
        #: The estimator's position in the caller's list (fit_datasets).
        self.index = kw.get("index")
        self.interrupted = False

    def rollback(self):
        """The estimator as it was before the call."""
        est = self.estimator
        if self.snapshot is not None:
            est._restore(self.snapshot)
        est.__dict__.clear()
        est.__dict__.update(self.before)


def prepare(
    estimator,
    X,
    y,
    sample_weight,
    *,
    continuing,
    epochs,
    classes=None,
    cache=None,
    dataset_key=None,
):
    """validate -> encode labels -> build (or continue) the net -> tensors.

    ``cache`` (a dict) shares the tensors of estimators that train on the same data
    (the same ``dataset_key``). The estimator is left as it was if anything fails.
    """
    from ._classifier import _resolve_device

    est = estimator
    before = dict(est.__dict__)
    snapshot = None
    try:
        est._check_hyperparameters()
        dtype = est._network_dtype() if continuing else est.dtype
        X, y, sample_weight = est._validate_training_data(
            X, y, sample_weight, reset=not continuing, dtype=dtype
        )
        y_encoded, classes_ = est._encode_labels(
            y, continuing=continuing, classes=classes
        )
        device = est.device_ if continuing else _resolve_device(est.device)
        if continuing:
            snapshot = est._snapshot()
            est._update_built()
            net = est.net_
        else:
            net = est._build(X.shape[1], classes_, device)
        X_train, y_train, w_train, valid = est._split(X, y_encoded, sample_weight)
        key = None
        if cache is not None and dataset_key is not None and valid is None:
            key = (dataset_key, dtype, str(device), sample_weight is None)
        data = cache.get(key) if key is not None else None
        if data is None:
            data = est._to_tensors(X_train, y_train, w_train, device, dtype)
            if key is not None:
                cache[key] = data
        valid_t = None
        if valid is not None:
            valid_t = est._to_tensors(*valid, device, dtype)[:2]
            net.train_split = predefined_split(TensorData(*valid_t))
        if not continuing:
            est._check_module_output(net, data[0], len(classes_))
        est._check_time(net, epochs)
    except BaseException:
        if snapshot is not None:
            est._restore(snapshot)
        est.__dict__.clear()
        est.__dict__.update(before)
        raise
    return Plan(
        est,
        before,
        snapshot,
        net,
        data,
        valid_t,
        classes_,
        continuing=continuing,
        epochs=epochs,
        dataset_key=key if key is not None else ("own", id(est)),
    )


def _net_X(data):
    X, _, w = data
    return X if w is None else {"X": X, "sample_weight": w}


def _stop_on_interrupt(clock):
    """Ctrl-C ends the clock's training at the end of the current step."""
    return deferred_sigint(
        lambda: clock.stop_requested,
        lambda: setattr(clock, "stop_requested", True),
        _HardInterrupt,
    )


def _set_epochs(net, epochs):
    full = epochs > 1
    callbacks = dict(net.callbacks_)
    callbacks["loss_clock"].epochs = epochs if full else None
    callbacks["progress_bar"].epochs = epochs if full else None


@contextlib.contextmanager
def _training(net):
    """Autograd whatever the caller's context, and the clear error of a callback
    that needs a validation split it does not have."""
    try:
        with torch.enable_grad(), torch.inference_mode(False):
            yield
    except KeyError as exc:
        key = exc.args[0] if exc.args else ""
        if isinstance(key, str) and "valid" in key:
            raise ValueError(
                f"A callback needs {key!r}, which exists only with a validation "
                "split: set early_stopping=True (and validation_fraction not None)."
            ) from exc
        raise


def train(plans, *, epochs, on_stack=None):
    """Train the plans' models for ``epochs`` epochs, as one stack.

    One plan trains its own net (the plain module); K plans train as one stacked net
    (see the module's docstring). ``on_stack`` is called with the stacked net's loss
    clock before training starts (the caller's Ctrl-C handler sets its
    ``stop_requested``). Returns whether Ctrl-C ended training early.
    """
    if len(plans) == 1:
        return _train_one(plans[0], epochs)
    return _fit_stacked_net(plans, epochs, on_stack)


def _train_one(plan, epochs):
    net = plan.net
    X_t, y_t, w_t = plan.data
    plan.estimator._warn_if_static(net.criterion_.period, epochs)
    _set_epochs(net, epochs)
    clock = _callback(net, "loss_clock")
    tracker = dict(net.callbacks_).get("sharpness_tracker")
    if tracker is not None:
        tracker.set_data(X_t, y_t, w_t)
    try:
        with _training(net), _stop_on_interrupt(clock):
            net.partial_fit(_net_X(plan.data), y_t, epochs=epochs)
    finally:
        if tracker is not None:
            tracker.set_data(None, None)
    plan.interrupted = clock.stop_requested
    return plan.interrupted


def _stack_source(plans):
    """One source of training rows for the stack, and each model's rows in it.

    Models that train on the same tensors share them (held once)."""
    distinct, rows = {}, []
    start = 0
    for p in plans:
        X = p.data[0]
        if id(X) not in distinct:
            distinct[id(X)] = (start, p.data)
            start += len(X)
        offset = distinct[id(X)][0]
        rows.append(torch.arange(offset, offset + len(X), device=X.device))
    sources = [d for _, d in distinct.values()]
    if len(sources) == 1:
        X, y, w = sources[0]
    else:
        X = torch.cat([d[0] for d in sources])
        y = torch.cat([d[1] for d in sources])
        weighted = any(d[2] is not None for d in sources)
        w = (
            torch.cat(
                [
                    d[2]
                    if d[2] is not None
                    else torch.ones_like(d[1], dtype=d[0].dtype)
                    for d in sources
                ]
            )
            if weighted
            else None
        )
    if len(sources) == 1:
        rows = [rows[0]] * len(plans)  # one index tensor for all: no padding
    return StackData(X, y, w, rows)


def _fit_stacked_net(plans, epochs, on_stack):
    members = [p.net for p in plans]
    first = plans[0].estimator
    for p in plans:
        p.estimator._warn_if_static(p.net.criterion_.period, epochs)
    data = _stack_source(plans)
    for p in plans:
        net = p.net
        _set_epochs(net, epochs)
        tracker = dict(net.callbacks_).get("sharpness_tracker")
        if tracker is not None:
            tracker.set_data(*p.data)
        X_t, y_t, _ = p.data
        # What its own fit loop checks first (skorch infers its classes there).
        net.check_data(_net_X(p.data), y_t)
        valid = p.valid
        net.stack_datasets_ = {
            "dataset_train": TensorData(_net_X(p.data), y_t),
            "dataset_valid": None if valid is None else TensorData(*valid),
        }
        net.valid_iterator_ = (
            None
            if valid is None
            else net.get_iterator(net.stack_datasets_["dataset_valid"], training=False)
        )
        _notify_quietly(net, "on_train_begin", X=_net_X(p.data), y=y_t)
    spe = len(
        members[0].get_iterator(
            members[0].stack_datasets_["dataset_train"], training=True
        )
    )
    optimizer, kwargs = first._optimizer_spec(members[0].device)
    stack = DynamicalNet(
        module=stack_modules([m.module_ for m in members]),
        criterion=StackedDynamicalLoss([m.criterion_ for m in members], spe),
        optimizer=optimizer,
        lr=float(first.lr),
        batch_size=int(first.batch_size),
        max_epochs=int(epochs),
        train_split=None,
        callbacks=[
            ("loss_clock", LossClock()),
            ("divergence_guard", DivergenceGuard()),
            (
                "progress_bar",
                ProgressBar(
                    verbose=max(int(p.estimator.verbose) for p in plans),
                    epochs=epochs if epochs > 1 else None,
                ),
            ),
            ("members", MemberCallbacks()),
        ],
        device=members[0].device,
        members=members,
        verbose=0,
        callbacks__epoch_timer=None,
        callbacks__print_log=None,
        callbacks__train_loss=None,
        callbacks__valid_loss=None,
        callbacks__valid_acc=None,
        **kwargs,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        stack.initialize()
    _stack_optimizer_state(stack, members)
    clock = _callback(stack, "loss_clock")
    if on_stack is not None:
        on_stack(clock)
    try:
        with _training(stack), _stop_on_interrupt(clock):
            stack.partial_fit(data, None, epochs=epochs)
        for p in plans:
            _notify_quietly(p.net, "on_train_end", X=_net_X(p.data), y=p.data[1])
    finally:
        for p in plans:
            tracker = dict(p.net.callbacks_).get("sharpness_tracker")
            if tracker is not None:
                tracker.set_data(None, None)
            for name in ("stack_datasets_", "valid_iterator_"):
                p.net.__dict__.pop(name, None)
    for p in plans:
        p.interrupted = clock.stop_requested
    return clock.stop_requested


def _stack_optimizer_state(stack, members):
    """Continuing models (a warm start) bring their optimizer's state into the stack:
    row k of each per-parameter tensor is model k's, shared scalars (Adam's step
    count, equal within a stack) are model 0's."""
    own = [list(m.module_.parameters()) for m in members]
    for j, stacked in enumerate(stack.module_.parameters()):
        states = [
            m.optimizer_.state.get(params[j])
            for m, params in zip(members, own, strict=True)
        ]
        if not states[0]:
            continue
        merged = {}
        for key, value in states[0].items():
            if isinstance(value, torch.Tensor) and value.shape == own[0][j].shape:
                merged[key] = torch.stack([s[key] for s in states])
            elif isinstance(value, torch.Tensor):
                merged[key] = value.clone()
            else:
                merged[key] = value
        stack.optimizer_.state[stacked] = merged


def _notify_quietly(net, hook, **kwargs):
    """A model's own notification, with its progress bar silent (the stack shows
    one for all)."""
    bar = _callback(net, "progress_bar")
    verbose, bar.verbose = bar.verbose, 0
    try:
        net.notify(hook, **kwargs)
    finally:
        bar.verbose = verbose


def commit(plan):
    """The call's fitted attributes, set on the estimator at once; returns it.

    Raises (leaving the estimator as it was before the call) if they cannot be
    computed.
    """
    est = plan.estimator
    try:
        state = est._fitted_state(
            plan.net, plan.data, plan.classes_, continuing=plan.continuing
        )
    except BaseException:
        plan.rollback()
        raise
    if not plan.continuing:
        # A new fit replaces every fitted attribute of the last one (validate_data
        # has just set n_features_in_ and feature_names_in_ for this one).
        kept = ("n_features_in_", "feature_names_in_")
        for key in [k for k in plan.before if k.endswith("_") and k not in kept]:
            if key not in state:
                est.__dict__.pop(key, None)
    est.__dict__.update(state)
    return est


def interrupted_warning(estimator, stacklevel):
    warnings.warn(
        f"Training interrupted by user after {estimator.n_iter_} epochs; the "
        "estimator holds the network as it was at the end of the last step.",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


def convergence_warning(plan, stacklevel):
    """MLPClassifier's ConvergenceWarning, when the call's stopping rule
    (``early_stopping``) did not end a ``fit`` before ``max_epochs`` did."""
    net = plan.net
    rule = dict(net.callbacks_).get("early_stopping")
    if (
        rule is None
        or rule.converged_
        or plan.interrupted
        or plan.estimator.diverged_
        or len(net.history) - rule.start_epoch_ < plan.epochs
    ):
        return
    what = (
        "validation accuracy"
        if rule.monitor == "valid_acc"
        else "plain base loss of the training data"
    )
    where = (
        f" (judged at the ends of periods, after {rule.min_cycles} whole cycles)"
        if rule._tilted(net)
        else ""
    )
    warnings.warn(
        f"Maximum iterations ({plan.epochs}) reached and the optimization hasn't "
        f"converged yet: the {what} still improved by tol={rule.tol:g} within "
        f"n_iter_no_change={rule.patience} epochs{where}.",
        ConvergenceWarning,
        stacklevel=stacklevel + 1,
    )


def fit_one(estimator, X, y, sample_weight, *, continuing, epochs, classes=None):
    """A single fit: a stack of one, prepared, trained and committed."""
    plan = prepare(
        estimator,
        X,
        y,
        sample_weight,
        continuing=continuing,
        epochs=epochs,
        classes=classes,
    )
    try:
        interrupted = train([plan], epochs=epochs)
    except BaseException as exc:
        plan.rollback()
        if isinstance(exc, _HardInterrupt):
            raise KeyboardInterrupt(
                "Training interrupted twice: stopped at once; the estimator is as "
                "it was before the call."
            ) from None
        if isinstance(exc, InterruptedStep):
            raise exc.original from None
        raise
    commit(plan)
    if interrupted:
        interrupted_warning(estimator, stacklevel=4)
    # Attributed to the caller of fit, as the interruption's warning: for a fit that
    # is scikit-learn's fit wrapper (_fit_context), so that a filter on
    # module="sklearn" catches it as it catches MLPClassifier's.
    convergence_warning(plan, stacklevel=4)
    return estimator
