"""Hostile conditions: Ctrl-C, failures mid-fit, numpy scalars, extreme values and
hyperparameters, broken custom modules, autograd contexts, bad callbacks and devices.

Every test states what the estimator must do, and checks it on tiny data.
"""

import copy
import math
import signal
import threading
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback, Checkpoint, EarlyStopping

from skdynloss import DynamicalLossClassifier, class_weights

N, C = 40, 3
BASE = {
    "hidden_layer_sizes": (8,),
    "max_epochs": 3,
    "period": 2.0,
    "lr": 1e-2,
    "compute_sharpness": False,
    "random_state": 0,
}


@pytest.fixture(scope="module")
def data():
    X, y = make_blobs(n_samples=N, centers=C, n_features=2, random_state=0)
    return StandardScaler().fit_transform(X), y


def make(**params):
    return DynamicalLossClassifier(**{**BASE, **params})


# ------------------------------------------------------------------ helpers


class CtrlC(Callback):
    """Counts training steps; at step ``at`` (counted over the net's life) it presses
    Ctrl-C ``times`` times, as a user would (a real SIGINT to this process)."""

    def __init__(self, at, times=1):
        self.at = at
        self.times = times

    def initialize(self):
        self.steps = 0
        return self

    def on_batch_end(self, net, training=False, **kwargs):
        if not training:
            return
        self.steps += 1
        if self.steps == self.at:
            for _ in range(self.times):
                signal.raise_signal(signal.SIGINT)


#: Shared across the deep copies the classifier makes of callbacks for every fit.
BOMB = {"at": None, "exc": RuntimeError, "steps": 0}


class Bomb(Callback):
    """Raises ``BOMB["exc"]`` at training step ``BOMB["at"]`` of a call (if armed)."""

    def on_train_begin(self, net, **kwargs):
        BOMB["steps"] = 0

    def on_batch_end(self, net, training=False, **kwargs):
        if not training:
            return
        BOMB["steps"] += 1
        if BOMB["at"] is not None and BOMB["steps"] == BOMB["at"]:
            raise BOMB["exc"]("boom from a callback")


@pytest.fixture
def bomb():
    BOMB.update(at=None, exc=RuntimeError, steps=0)
    yield BOMB
    BOMB.update(at=None, exc=RuntimeError, steps=0)


def live(clf, name):
    """The fitted net's copy of the user callback called ``name``."""
    return dict(clf.net_.callbacks_)[name]


def state_of(clf, X):
    """What a failed call must leave exactly as it was."""
    state = {
        "keys": sorted(vars(clf)),
        "vars": dict(vars(clf)),
        "params": clf.get_params(deep=False),
    }
    if not hasattr(clf, "net_"):
        return state
    net = clf.net_
    state.update(
        n_iter=clf.n_iter_,
        history=len(net.history),
        history_last=copy.deepcopy(dict(net.history[-1])),
        proba=clf.predict_proba(X),
        loss_curve=list(clf.loss_curve_),
        dynamics={k: np.array(v) for k, v in clf.dynamics_.items()},
        module={k: v.clone() for k, v in clf.module_.state_dict().items()},
        optimizer=copy.deepcopy(net.optimizer_.state_dict()),
        generator=net.generator.get_state().clone(),
        weights=net.criterion_.weights.clone(),
        net=net,
        classes=clf.classes_.copy(),
    )
    return state


def assert_same_state(after, before):
    assert after["keys"] == before["keys"]
    assert set(after) == set(before), "fitted in one state and not in the other"
    # The very objects of before (nothing replaced by a copy or a new one).
    for key, value in before["vars"].items():
        if key not in before["params"]:
            assert after["vars"][key] is value, key
    if "net" not in before:
        return
    assert after["net"] is before["net"]
    for key in ("n_iter", "history", "loss_curve", "history_last"):
        assert after[key] == before[key], key
    np.testing.assert_array_equal(after["classes"], before["classes"])
    np.testing.assert_array_equal(after["proba"], before["proba"])
    for key in before["dynamics"]:
        np.testing.assert_array_equal(after["dynamics"][key], before["dynamics"][key])
    for key, value in before["module"].items():
        torch.testing.assert_close(after["module"][key], value, rtol=0, atol=0)
    torch.testing.assert_close(
        after["optimizer"]["state"], before["optimizer"]["state"], rtol=0, atol=0
    )
    assert after["optimizer"]["param_groups"] == before["optimizer"]["param_groups"]
    assert torch.equal(after["generator"], before["generator"])
    assert torch.equal(after["weights"], before["weights"])


def assert_consistent(clf, X):
    """Every fitted attribute describes the same network and the same epochs."""
    n = clf.n_iter_
    assert n == len(clf.net_.history) == len(clf.loss_curve_)
    assert clf.class_weights_.shape == (n, len(clf.classes_))
    for key, values in clf.dynamics_.items():
        assert len(values) == n, key
    np.testing.assert_array_equal(clf.dynamics_["epoch"], np.arange(1, n + 1))
    assert np.all(np.diff(clf.dynamics_["time"]) > 0)
    assert np.isfinite(clf.dynamics_["loss"]).all()
    assert clf.module_ is clf.net_.module_
    X_t = torch.tensor(X, dtype=getattr(torch, clf.dtype))
    with torch.no_grad():
        clf.module_.eval()
        logits = clf.module_(X_t)
    np.testing.assert_array_equal(
        clf.predict(X), clf.classes_[logits.argmax(1).numpy()]
    )
    np.testing.assert_allclose(
        clf.predict_proba(X), torch.softmax(logits.double(), 1).numpy(), rtol=1e-6
    )


# -------------------------------------------------------------- 1. Ctrl-C


@pytest.mark.parametrize(
    "batch_size, at, n_iter, time",
    [
        (-1, 2, 2, 2.0),  # full batch: a step is an epoch
        (8, 7, 2, 1.4),  # 5 steps an epoch: the second epoch is cut after 2 steps
        (8, 5, 1, 1.0),  # at the very end of an epoch
    ],
)
def test_ctrl_c_ends_training_at_the_end_of_the_step(
    data, batch_size, at, n_iter, time
):
    X, y = data
    handler = signal.getsignal(signal.SIGINT)
    clf = make(batch_size=batch_size, max_epochs=6, callbacks=[("ctrl_c", CtrlC(at))])
    with pytest.warns(UserWarning, match="(?i)interrupt"):
        clf.fit(X, y)
    # The step during which Ctrl-C came was the last one.
    assert live(clf, "ctrl_c").steps == at
    assert clf.n_iter_ == n_iter
    assert clf.dynamics_["time"][-1] == pytest.approx(time)
    assert_consistent(clf, X)
    assert not clf.diverged_
    # Ctrl-C works as before once fit has returned.
    assert signal.getsignal(signal.SIGINT) is handler


def test_ctrl_c_leaves_the_sharpness_of_the_final_network(data):
    X, y = data
    clf = make(
        batch_size=8,
        max_epochs=6,
        hidden_layer_sizes=(4,),
        dtype="float64",
        compute_sharpness=True,
        callbacks=[("ctrl_c", CtrlC(7))],
    )
    with pytest.warns(UserWarning, match="(?i)interrupt"):
        clf.fit(X, y)
    module = clf.module_.eval()
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    X_t, y_t = torch.tensor(X), torch.tensor(np.searchsorted(clf.classes_, y))

    def loss(p):
        out = torch.func.functional_call(module, p, (X_t,))
        return torch.nn.functional.cross_entropy(out, y_t)

    flat = torch.cat([v.reshape(-1) for v in params.values()])
    sizes = [v.numel() for v in params.values()]

    def loss_flat(f):
        parts = torch.split(f, sizes)
        return loss(
            {
                k: t.reshape(v.shape)
                for (k, v), t in zip(params.items(), parts, strict=True)
            }
        )

    top = torch.linalg.eigvalsh(torch.func.hessian(loss_flat)(flat)).max().item()
    assert clf.sharpness_ == pytest.approx(top, rel=1e-3)


@pytest.mark.parametrize("batch_size, at", [(-1, 2), (8, 7)])
def test_warm_start_after_ctrl_c_continues_the_clock(data, batch_size, at):
    X, y = data
    clf = make(
        batch_size=batch_size,
        max_epochs=4,
        period=1.5,
        static_last_period=False,
        warm_start=True,
        callbacks=[("ctrl_c", CtrlC(at))],
    )
    with pytest.warns(UserWarning, match="(?i)interrupt"):
        clf.fit(X, y)
    n_cut, t_cut = clf.n_iter_, clf.dynamics_["time"][-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second interruption, no warning
        clf.fit(X, y)
    assert clf.n_iter_ == n_cut + 4
    np.testing.assert_allclose(clf.dynamics_["time"][n_cut:], t_cut + np.arange(1, 5))
    assert_consistent(clf, X)
    if batch_size == -1:
        # One step an epoch: the weights of epoch e are those of time e - 1, the
        # interrupted fit and its continuation alike.
        expected = class_weights(
            np.arange(clf.n_iter_), n_classes=C, amplitude=10.0, period=1.5
        )
        np.testing.assert_allclose(clf.class_weights_, expected, rtol=1e-6)


def _twice_fitted(X, y, **params):
    clf = make(**params).fit(X, y)
    return clf, state_of(clf, X)


@pytest.mark.parametrize("batch_size", [-1, 8])
@pytest.mark.parametrize("how", ["fresh", "refit", "warm_start", "partial_fit"])
def test_a_second_ctrl_c_stops_at_once_and_undoes_the_call(data, batch_size, how):
    X, y = data
    params = {"batch_size": batch_size, "max_epochs": 4}
    # Ctrl-C twice in a row at the second step of the call (not in the first fit of
    # a warm start or of partial_fit, which share the callback: armed below).
    continuing = how in ("warm_start", "partial_fit")
    cb = ("ctrl_c", CtrlC(None if continuing else 2, times=2))
    handler = signal.getsignal(signal.SIGINT)
    if how == "fresh":
        clf = make(**params, callbacks=[cb])
    else:
        # A refit builds a new net: the first fit must not press Ctrl-C itself.
        first = None if how == "refit" else [cb]
        clf = make(**params, callbacks=first, warm_start=how == "warm_start")
        if how == "partial_fit":
            clf.partial_fit(X, y, classes=np.unique(y))
        else:
            clf.fit(X, y)
        if how == "refit":
            clf.set_params(callbacks=[cb])
        else:
            # Counted over the net's life: fire at the first step of the next call
            # (a refit builds a new net, which fires at its second step).
            live(clf, "ctrl_c").at = live(clf, "ctrl_c").steps + 1
    before = state_of(clf, X)
    with pytest.raises(KeyboardInterrupt):
        if how == "partial_fit":
            clf.partial_fit(X, y)
        else:
            clf.fit(X, y)
    assert signal.getsignal(signal.SIGINT) is handler
    assert_same_state(state_of(clf, X), before)
    if how == "fresh":
        with pytest.raises(NotFittedError):
            clf.predict(X)


def test_ctrl_c_with_early_stopping_keeps_a_consistent_estimator(data):
    X, y = data
    clf = make(
        batch_size=8,
        max_epochs=6,
        early_stopping=True,
        validation_fraction=0.25,
        n_iter_no_change=6,
        callbacks=[("ctrl_c", CtrlC(9))],  # 4 steps an epoch on 30 rows
    )
    with pytest.warns(UserWarning, match="(?i)interrupt"):
        clf.fit(X, y)
    assert clf.n_iter_ == 3
    assert clf.dynamics_["time"][-1] == pytest.approx(9 / 4)
    assert_consistent(clf, X)
    # The cut epoch never reached its validation pass.
    assert len(clf.validation_scores_) == 2
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert _validation_accuracy(clf) == pytest.approx(clf.best_validation_score_)


def test_ctrl_c_in_a_thread_fit_is_not_intercepted(data):
    # Only the main thread gets signals: a fit in another thread installs nothing and
    # trains all its epochs.
    X, y = data
    handler = signal.getsignal(signal.SIGINT)
    result = {}

    def work():
        try:
            result["clf"] = make(batch_size=8).fit(X, y)
        except BaseException as exc:  # pragma: no cover - reported below
            result["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert "error" not in result, result.get("error")
    assert result["clf"].n_iter_ == BASE["max_epochs"]
    assert signal.getsignal(signal.SIGINT) is handler


# --------------------------------------------------- 2. failures mid-training


def _failing_call(clf, X, y, how):
    if how == "partial_fit":
        return clf.partial_fit(X, y)
    return clf.fit(X, y)


FAILURES = [RuntimeError, ValueError, KeyboardInterrupt, MemoryError]


@pytest.mark.parametrize("exc", FAILURES)
@pytest.mark.parametrize("batch_size", [-1, 8])
def test_a_fresh_fit_that_fails_mid_training_leaves_the_estimator_unfitted(
    data, bomb, exc, batch_size
):
    X, y = data
    clf = make(batch_size=batch_size, callbacks=[("bomb", Bomb())])
    before = state_of(clf, X)
    bomb.update(at=2, exc=exc)
    with pytest.raises(exc):
        clf.fit(X, y)
    assert bomb["steps"] == 2
    assert_same_state(state_of(clf, X), before)
    with pytest.raises(NotFittedError):
        clf.predict(X)
    assert not hasattr(clf, "n_features_in_")


@pytest.mark.parametrize("exc", FAILURES)
@pytest.mark.parametrize("batch_size", [-1, 8])
@pytest.mark.parametrize("how", ["refit", "warm_start", "partial_fit"])
def test_a_call_that_fails_mid_training_leaves_the_fitted_estimator_as_it_was(
    data, bomb, exc, batch_size, how
):
    X, y = data
    params = {
        "batch_size": batch_size,
        "callbacks": [("bomb", Bomb())],
        "warm_start": how == "warm_start",
    }
    clf, twin = make(**params), make(**params)
    for est in (clf, twin):
        if how == "partial_fit":
            est.partial_fit(X, y, classes=np.unique(y))
        else:
            est.fit(X, y)
    before = state_of(clf, X)
    # A full-batch partial_fit is one step.
    bomb.update(at=1 if how == "partial_fit" and batch_size == -1 else 3, exc=exc)
    with pytest.raises(exc):
        _failing_call(clf, X, y, how)
    assert bomb["steps"] == bomb["at"]
    assert_same_state(state_of(clf, X), before)
    # Continuing afterwards is exactly as if the failed call had never happened.
    bomb.update(at=None)
    _failing_call(clf, X, y, how)
    _failing_call(twin, X, y, how)
    np.testing.assert_array_equal(clf.predict_proba(X), twin.predict_proba(X))
    np.testing.assert_array_equal(clf.dynamics_["time"], twin.dynamics_["time"])
    assert clf.n_iter_ == twin.n_iter_


class _ShapeBomb:
    """A shape callable that raises on its ``at``-th call (a mid-training failure)."""

    def __init__(self, at, exc):
        self.at, self.exc, self.calls = at, exc, 0

    def __call__(self, phase, amplitude):
        self.calls += 1
        if self.calls >= self.at:
            raise self.exc("shape callable failed")
        return 1.0 + (amplitude - 1.0) * (1.0 - abs(2.0 * phase - 1.0))


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("how", ["fresh", "refit", "warm_start", "partial_fit"])
def test_a_shape_callable_that_fails_mid_training(data, exc, how):
    X, y = data
    params = {"batch_size": 8, "warm_start": how == "warm_start"}
    clf, twin = make(**params), make(**params)
    if how != "fresh":
        for est in (clf, twin):
            if how == "partial_fit":
                est.partial_fit(X, y, classes=np.unique(y))
            else:
                est.fit(X, y)
    before = state_of(clf, X)
    clf.set_params(shape=_ShapeBomb(at=4, exc=exc))
    # The callable's own error, or a ValueError that wraps it (never for Ctrl-C).
    with pytest.raises(exc if exc is KeyboardInterrupt else (exc, ValueError)):
        _failing_call(clf, X, y, how)
    clf.set_params(shape="triangle")
    assert_same_state(state_of(clf, X), before)
    if how != "fresh":
        _failing_call(clf, X, y, how)
        _failing_call(twin, X, y, how)
        np.testing.assert_array_equal(clf.predict_proba(X), twin.predict_proba(X))


class _ForwardBomb(torch.nn.Module):
    """A network whose forward raises on its ``FORWARD["at"]``-th training call."""

    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, n_classes)

    def forward(self, x):
        if self.training:
            FORWARD["calls"] += 1
            if FORWARD["at"] is not None and FORWARD["calls"] == FORWARD["at"]:
                raise FORWARD["exc"]("forward failed")
        return self.linear(x)


FORWARD = {"at": None, "calls": 0, "exc": RuntimeError}


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_a_module_that_fails_mid_training_on_a_warm_start(data, exc):
    X, y = data
    FORWARD.update(at=None, calls=0, exc=exc)
    try:
        clf = make(module=_ForwardBomb, batch_size=8, warm_start=True).fit(X, y)
        twin = make(module=_ForwardBomb, batch_size=8, warm_start=True).fit(X, y)
        before = state_of(clf, X)
        FORWARD.update(at=FORWARD["calls"] + 6)
        with pytest.raises(exc):
            clf.fit(X, y)
        assert_same_state(state_of(clf, X), before)
        FORWARD.update(at=None)
        clf.fit(X, y)
        twin.fit(X, y)
        np.testing.assert_array_equal(clf.predict_proba(X), twin.predict_proba(X))
    finally:
        FORWARD.update(at=None, calls=0, exc=RuntimeError)


# ------------------------------------------------------ 3. numpy scalars


NUMPY_SCALARS = [
    {"batch_size": np.int64(8)},
    {"batch_size": np.int32(-1)},
    {"max_epochs": np.int64(2)},
    {"max_epochs": np.uint8(2)},
    {"period": np.float64(1.5)},
    {"period": np.float32(1.5)},
    {"period": np.int64(2)},
    {"amplitude": np.float32(5.0)},
    {"amplitude": np.int64(5)},
    {"lr": np.float64(1e-2)},
    {"lr": np.float32(1e-2)},
    {"momentum": np.float32(0.5), "optimizer": "sgd"},
    {"weight_decay": np.float64(1e-4)},
    {"hidden_layer_sizes": (np.int64(8),)},
    {"hidden_layer_sizes": np.int64(8)},
    {"hidden_layer_sizes": np.array([8, 4])},
    {"hidden_layer_sizes": [np.int32(8), 4]},
    {"sharpness_every": np.int64(1)},
    {"sharpness_max_samples": np.int64(16), "compute_sharpness": True},
    {"random_state": np.int64(0)},
    {"verbose": np.int64(0)},
    {
        "early_stopping": True,
        "validation_fraction": np.float64(0.25),
        "n_iter_no_change": np.int64(2),
        "tol": np.float32(1e-3),
    },
    {"early_stopping": np.bool_(False), "static_last_period": np.bool_(True)},
]


@pytest.mark.parametrize("params", NUMPY_SCALARS, ids=lambda p: ",".join(p))
def test_numpy_scalars_work_as_python_scalars(data, params):
    X, y = data

    def plain(value):
        if isinstance(value, np.ndarray):
            return tuple(value.tolist())
        if isinstance(value, list | tuple):
            return tuple(plain(v) for v in value)
        return value.item() if isinstance(value, np.generic) else value

    python = {k: plain(v) for k, v in params.items()}
    numpy_fit = make(**params).fit(X, y)
    python_fit = make(**python).fit(X, y)
    np.testing.assert_array_equal(
        numpy_fit.predict_proba(X), python_fit.predict_proba(X)
    )
    assert numpy_fit.n_iter_ == python_fit.n_iter_
    # A warm start with the same numpy values is no change of what was built.
    numpy_fit.set_params(warm_start=True).fit(X, y)
    assert numpy_fit.n_iter_ == 2 * python_fit.n_iter_


def test_numpy_image_shape_for_the_cnn():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(12, 16)), np.arange(12) % 2
    shape = (np.int64(1), np.int64(4), np.int64(4))
    clf = make(module="cnn", image_shape=shape, max_epochs=1).fit(X, y)
    assert np.isfinite(clf.predict_proba(X)).all()


def test_grid_search_over_np_arange_grids(data):
    X, y = data
    grid = {
        "batch_size": np.arange(8, 17, 8),
        "max_epochs": np.arange(1, 3),
        "period": np.arange(1.0, 2.5, 1.0),
        "lr": np.geomspace(1e-2, 1e-2, 1),
        "hidden_layer_sizes": [np.arange(4, 6)],
    }
    search = GridSearchCV(make(), grid, cv=2, error_score="raise").fit(X, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert len(search.cv_results_["params"]) == 8


# ----------------------------------------------- 4. beyond float32's range


@pytest.mark.parametrize("value", [1e39, -1e39, 3.5e38])
def test_values_beyond_float32_are_a_clear_error(data, value):
    X, y = data
    X_big = X.copy()
    X_big[3, 1] = value
    for call in (
        lambda clf: clf.fit(X_big, y),
        lambda clf: clf.partial_fit(X_big, y, classes=np.unique(y)),
    ):
        clf = make(dtype="float32")
        with pytest.raises(ValueError, match="float32"):
            call(clf)
        assert not hasattr(clf, "net_")
    fitted = make(dtype="float32").fit(X, y)
    for method in (fitted.predict, fitted.predict_proba, fitted.score):
        with pytest.raises(ValueError, match="float32"):
            method(X_big, *([y] if method == fitted.score else []))
    # In float64 they are ordinary numbers.
    assert np.isfinite(make(dtype="float64").fit(X_big, y).predict_proba(X_big)).all()


def test_sample_weights_beyond_float32_train_as_their_ratios(data):
    # The loss divides by the batch's total weight, so only the ratios of the weights
    # matter: 1e39 (beyond float32) trains as the same weights scaled to at most 1.
    X, y = data
    w = np.ones(len(y))
    w[0] = 1e39
    for params in ({}, {"compute_sharpness": True}, {"sharpness_every": 1}):
        clf = make(dtype="float32", **params).fit(X, y, sample_weight=w)
        scaled = make(dtype="float32", **params).fit(X, y, sample_weight=w / 1e39)
        assert not clf.diverged_
        assert np.isfinite(clf.loss_curve_).all()
        np.testing.assert_array_equal(clf.predict_proba(X), scaled.predict_proba(X))
        clf = make(dtype="float32", **params)
        clf.partial_fit(X, y, classes=np.unique(y), sample_weight=w)
        assert np.isfinite(clf.predict_proba(X)).all()


@pytest.mark.parametrize("scale", [1e-42, 1e-300])
@pytest.mark.parametrize("compute_sharpness", [False, True])
def test_sample_weights_that_underflow_float32(data, scale, compute_sharpness):
    # Positive in float64, zero or subnormal in float32: a clear error, or the fit of
    # the same weights at a usable scale (the loss divides by the batch's weight).
    X, y = data
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=len(y))
    params = {"dtype": "float32", "compute_sharpness": compute_sharpness}
    clf = make(**params)
    try:
        clf.fit(X, y, sample_weight=w * scale)
    except ValueError as exc:
        assert "sample_weight" in str(exc)
        assert not hasattr(clf, "net_")
        return
    assert not clf.diverged_
    assert clf.n_iter_ == BASE["max_epochs"]
    assert np.isfinite(clf.loss_curve_).all()
    assert np.isfinite(clf.predict_proba(X)).all()
    if compute_sharpness:
        assert np.isfinite(clf.sharpness_)
    reference = make(**params).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(
        clf.predict_proba(X), reference.predict_proba(X), rtol=1e-4, atol=1e-6
    )


def test_float32_input_for_a_float64_network_is_not_rounded(data):
    # The other direction is fine: float32 values are exactly representable.
    X, y = data
    X32 = X.astype(np.float32)
    a = make(dtype="float64").fit(X32, y)
    b = make(dtype="float64").fit(X32.astype(np.float64), y)
    np.testing.assert_array_equal(a.predict_proba(X32), b.predict_proba(X32))


# ---------------------------------------------------- 5. hidden_layer_sizes


@pytest.mark.parametrize(
    "sizes",
    [
        0.5,
        10.5,
        (10.5,),
        -1,
        0,
        (8, 0),
        (8, -3),
        ((8,),),
        [[8, 4]],
        "8",
        "abc",
        ("8",),
        True,
        (True,),
        (8, False),
        (np.bool_(True),),
        None,
        (8, None),
        np.array([[8]]),
        float("nan"),
        (float("inf"),),
    ],
    ids=repr,
)
def test_bad_hidden_layer_sizes_are_an_invalid_parameter_error(data, sizes):
    X, y = data
    clf = make(hidden_layer_sizes=sizes)
    with pytest.raises(InvalidParameterError, match="hidden_layer_sizes"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


@pytest.mark.parametrize("sizes", [(10**9,), (10**5, 10**5), (2**62,), (10**30,)])
def test_a_network_too_large_for_memory_is_a_clear_error(data, sizes):
    X, y = data
    clf = make(hidden_layer_sizes=sizes)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


# ------------------------------------------------- 6. broken custom modules


def _module(forward, *, params=True):
    class Broken(torch.nn.Module):
        def __init__(self, n_features, n_classes):
            super().__init__()
            self.n_classes = n_classes
            self.linear = torch.nn.Linear(n_features, n_classes)
            if not params:
                self.linear.requires_grad_(False)

        def forward(self, x):
            return forward(self, x)

    return Broken


def _raise(self, x):
    raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")


BROKEN = {
    "wrong_width": lambda self, x: torch.cat([self.linear(x), self.linear(x)], 1),
    "one_d": lambda self, x: self.linear(x).sum(1),
    "tuple": lambda self, x: (self.linear(x), x),
    "integer": lambda self, x: self.linear(x).round().long(),
    "detached": lambda self, x: self.linear(x).detach(),
    "no_grad_inside": lambda self, x: torch.no_grad()(self.linear)(x),
    "nan": lambda self, x: self.linear(x) * float("nan"),
    "inf": lambda self, x: self.linear(x) + float("inf"),
    "numpy": lambda self, x: self.linear(x).detach().numpy(),
    "none": lambda self, x: None,
    "raises": _raise,
    "rows_dropped": lambda self, x: self.linear(x)[:1],
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_a_broken_custom_module_is_a_value_error_naming_it(data, kind):
    X, y = data
    clf = make(module=_module(BROKEN[kind]))
    with pytest.raises(ValueError, match="Broken"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


def test_a_module_without_trainable_parameters_is_a_value_error(data):
    X, y = data

    class Frozen(torch.nn.Module):
        def __init__(self, n_features, n_classes):
            super().__init__()
            self.n_classes = n_classes

        def forward(self, x):
            return x[:, :1].repeat(1, self.n_classes)

    for module in (Frozen, _module(lambda self, x: self.linear(x), params=False)):
        with pytest.raises(ValueError, match=module.__name__):
            make(module=module).fit(X, y)


def test_module_instances_and_factories_of_non_modules_are_type_errors(data):
    X, y = data
    with pytest.raises(TypeError, match="instance"):
        make(module=torch.nn.Linear(2, 3)).fit(X, y)
    with pytest.raises(TypeError, match="Module"):
        make(module=lambda n_features, n_classes: "not a module").fit(X, y)


def test_a_module_with_a_wrong_signature_is_a_clear_error(data):
    X, y = data

    class NoKeywords(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.linear = torch.nn.Linear(2, 3)

        def forward(self, x):
            return self.linear(x)

    with pytest.raises((TypeError, ValueError), match="NoKeywords|n_features"):
        make(module=NoKeywords).fit(X, y)


# ------------------------------------------------ 7. autograd contexts


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("batch_size", [-1, 8])
def test_fit_inside_no_grad_and_inference_mode(data, context, batch_size):
    X, y = data
    params = {"batch_size": batch_size, "compute_sharpness": True, "sharpness_every": 1}
    reference = make(**params).fit(X, y)
    with context():
        clf = make(**params).fit(X, y)
        proba = clf.predict_proba(X)
        clf.partial_fit(X, y)
        clf.set_params(warm_start=True).fit(X, y)
    np.testing.assert_array_equal(proba, reference.predict_proba(X))
    assert np.isfinite(clf.predict_proba(X)).all()
    assert np.isfinite(reference.sharpness_)
    assert clf.n_iter_ == 2 * BASE["max_epochs"] + 1
    # Outside the context the network trains as usual.
    clf.fit(X, y)
    assert clf.n_iter_ == 3 * BASE["max_epochs"] + 1


# -------------------------------------------- 8. in-place edits of the input


class _EditsInput(torch.nn.Module):
    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, n_classes)

    def forward(self, x):
        x.mul_(-3.0).add_(1.0)
        return self.linear(x)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_size", [-1, 8])
def test_a_module_that_edits_its_input_leaves_the_callers_array(
    data, dtype, batch_size
):
    X, y = data
    X = np.ascontiguousarray(X, dtype=dtype)
    original = X.copy()
    clf = make(module=_EditsInput, dtype=dtype, batch_size=batch_size).fit(X, y)
    np.testing.assert_array_equal(X, original)
    clf.partial_fit(X, y)
    clf.predict(X)
    clf.predict_proba(X)
    clf.score(X, y)
    np.testing.assert_array_equal(X, original)
    # Fortran order and non-contiguous views too.
    for view in (np.asfortranarray(X), X[::1, :], np.repeat(X, 2, axis=0)[::2]):
        copy_ = view.copy()
        make(module=_EditsInput, dtype=dtype, batch_size=batch_size).fit(view, y)
        np.testing.assert_array_equal(view, copy_)


# ----------------------------------------------- 9. extreme hyperparameters

#: Shared by the copies of the step counter of each fit.
STEPS = {"n": 0}


class StepCounter(Callback):
    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            STEPS["n"] += 1


def _error_before_training_or_a_working_model(clf, X, y):
    STEPS["n"] = 0
    clf.set_params(callbacks=[("steps", StepCounter())])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            clf.fit(X, y)
    except (ValueError, TypeError) as exc:
        assert str(exc), "an error without a message"
        assert STEPS["n"] == 0, "the error came after training had started"
        assert not hasattr(clf, "net_")
        return None
    proba = clf.predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-9)
    assert clf.predict(X).shape == y.shape
    return clf


@pytest.mark.parametrize(
    "params",
    [
        {"period": 5e-324},
        {"period": 5e-324, "batch_size": 8},
        {"period": 1e-300, "order": "random"},
        {"period": 1e-300, "order": "random", "batch_size": 8},
        {"period": 1e300},
        {"period": 1e300, "static_last_period": False},
        {"amplitude": 1e308},
        {"amplitude": 1e308, "shape": "sine"},
        {"amplitude": 1e308, "dtype": "float64"},
        {"amplitude": 1.0 + 1e-15},
        {"lr": 5e-324},
        {"weight_decay": 1e300, "optimizer": "sgd", "momentum": 0.0},
        {"momentum": 1.0 - 1e-16, "optimizer": "sgd"},
        {"tol": 1e300, "early_stopping": True, "validation_fraction": 0.25},
    ],
    ids=repr,
)
def test_extreme_hyperparameters_give_an_early_error_or_a_working_model(data, params):
    X, y = data
    clf = _error_before_training_or_a_working_model(make(**params), X, y)
    if clf is not None and "lr" not in params and "weight_decay" not in params:
        weights = clf.class_weights_
        assert np.isfinite(weights).all()
        np.testing.assert_allclose(weights.sum(1), C, rtol=1e-5)
        assert not clf.diverged_


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("batch_size", [-1, 8])
def test_a_huge_learning_rate_diverges_with_finite_predictions(
    data, optimizer, batch_size, early_stopping
):
    X, y = data
    clf = make(
        lr=1e300,
        optimizer=optimizer,
        batch_size=batch_size,
        max_epochs=5,
        early_stopping=early_stopping,
        validation_fraction=0.25,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        clf.fit(X, y)
    if optimizer == "sgd":
        assert clf.diverged_
    proba = clf.predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-9)
    assert_consistent(clf, X)


@pytest.mark.parametrize(
    "sharpness", [{"compute_sharpness": True}, {"sharpness_every": 1}]
)
def test_curvature_beyond_float32_is_not_an_arpack_error(data, sharpness):
    # Squared error on inputs of 1e30: Hessian entries of 1e60 overflow float32. The fit
    # works (the sharpness may be infinite or NaN), or it is a clear ValueError.
    X, y = data
    clf = make(loss="squared_error", dtype="float32", **sharpness)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(X * 1e30, y)
    except ValueError as exc:
        assert "sharpness" in str(exc) or "float32" in str(exc)
        assert not hasattr(clf, "net_")
        return
    assert np.isfinite(clf.predict_proba(X * 1e30)).all()
    assert isinstance(clf.sharpness_, float)


@pytest.mark.parametrize(
    "name, value",
    [
        ("period", math.inf),
        ("period", math.nan),
        ("amplitude", math.inf),
        ("amplitude", math.nan),
        ("lr", math.inf),
        ("lr", math.nan),
        ("weight_decay", math.inf),
        ("momentum", math.nan),
        ("tol", math.nan),
        ("validation_fraction", math.nan),
    ],
)
def test_non_finite_hyperparameters_are_invalid(data, name, value):
    X, y = data
    with pytest.raises(InvalidParameterError, match=name):
        make(**{name: value}).fit(X, y)


# ------------------------------------------------------------ 10. partial_fit


def test_partial_fit_refuses_changed_classes(data):
    X, y = data
    clf = make().partial_fit(X, y, classes=[0, 1, 2])
    before = state_of(clf, X)
    for classes in ([0, 1], [0, 1, 2, 3], [1, 2, 3], ["a", "b", "c"], [0, 1, np.nan]):
        with pytest.raises(ValueError, match="classes"):
            clf.partial_fit(X, y, classes=classes)
    assert_same_state(state_of(clf, X), before)
    # The same classes in another order or type are the same classes.
    clf.partial_fit(X, y, classes=np.array([2, 0, 1]))
    clf.partial_fit(X, y, classes=(0.0, 1.0, 2.0))
    assert clf.n_iter_ == 3


@pytest.mark.parametrize(
    "classes", [[0, 1, np.nan], [np.nan, np.nan], np.array([0.0, np.nan, 2.0])]
)
def test_partial_fit_refuses_nan_as_a_class(data, classes):
    X, y = data
    clf = make()
    with pytest.raises(ValueError, match="(?i)nan"):
        clf.partial_fit(X, y, classes=classes)
    assert not hasattr(clf, "net_")


def test_nan_in_y_is_a_clear_error(data):
    X, y = data
    y_nan = y.astype(float)
    y_nan[0] = np.nan
    with pytest.raises(ValueError, match="(?i)nan"):
        make().fit(X, y_nan)
    with pytest.raises(ValueError, match="(?i)nan"):
        make().partial_fit(X, y_nan, classes=[0.0, 1.0, 2.0])


def test_partial_fit_with_a_label_outside_classes(data):
    X, y = data
    with pytest.raises(ValueError, match="classes"):
        make().partial_fit(X, y, classes=[0, 1])
    clf = make().partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, np.where(y == 0, 7, y))


# ---------------------------------------- 11. callbacks that need validation


@pytest.mark.parametrize(
    "callback",
    [
        EarlyStopping(),
        EarlyStopping(monitor="valid_acc", lower_is_better=False),
        Checkpoint(),
    ],
    ids=["EarlyStopping", "EarlyStopping(valid_acc)", "Checkpoint"],
)
def test_callbacks_that_need_a_validation_split(data, tmp_path, callback):
    X, y = data
    if isinstance(callback, Checkpoint):
        callback = Checkpoint(dirname=str(tmp_path))
    clf = make(callbacks=[callback])
    with pytest.raises(ValueError, match="early_stopping=True"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")
    clf.set_params(early_stopping=True, validation_fraction=0.25, max_epochs=4)
    clf.fit(X, y)
    assert 1 <= clf.n_iter_ <= 4
    assert len(clf.validation_scores_) == clf.n_iter_
    assert all(0 <= s <= 1 for s in clf.validation_scores_)
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert_consistent(clf, X)


def _validation_accuracy(clf):
    """The accuracy of the fitted network on the rows held out for early stopping."""
    valid = clf.net_.train_split.keywords["valid_ds"]
    with torch.no_grad():
        out = clf.module_.eval()(valid.X)
    return (out.argmax(1) == valid.y).double().mean().item()


@pytest.mark.parametrize("tol", [0.0, 1.0])
def test_early_stopping_like_mlp_classifier(data, tol):
    X, y = data
    clf = make(
        amplitude=1.0,  # no tilt: every epoch is judged, as in MLPClassifier
        early_stopping=True,
        validation_fraction=0.25,
        n_iter_no_change=2,
        tol=tol,
        max_epochs=30,
        lr=3e-2,
        batch_size=8,
    ).fit(X, y)
    scores = clf.validation_scores_
    assert isinstance(scores, list) and len(scores) == clf.n_iter_
    assert clf.best_validation_score_ == max(scores)
    if tol == 1.0:
        # No epoch can improve by tol=1.0 on the first: MLPClassifier's count passes
        # n_iter_no_change=2 at the 3rd epoch after it.
        assert clf.n_iter_ == 4
    # The network kept is the one of the best validation score, as MLPClassifier's.
    assert _validation_accuracy(clf) == pytest.approx(clf.best_validation_score_)
    assert make().fit(X, y).validation_scores_ is None


@pytest.mark.parametrize(
    "device", ["meta", "tpu", "xla", "nonsense", "cuda:99", "ipu", torch.device("meta")]
)
def test_unusable_devices_are_a_clear_value_error(data, device):
    X, y = data
    clf = make(device=device)
    with pytest.raises(ValueError, match="device"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


def test_mps_where_unavailable_is_a_clear_value_error(data):
    if torch.backends.mps.is_available():
        pytest.skip("MPS is available here")
    with pytest.raises(ValueError, match="MPS"):
        make(device="mps").fit(*data)


@pytest.mark.parametrize(
    "callbacks, error",
    [
        ([lambda net: None], InvalidParameterError),
        (["print_log"], InvalidParameterError),
        ([None], InvalidParameterError),
        ([("name",)], InvalidParameterError),
        ([("name", "not a callback")], InvalidParameterError),
        ([Callback], InvalidParameterError),  # the class, not an instance
        ([(3, StepCounter())], ValueError),
        ([("loss_clock", StepCounter())], ValueError),
        ([("train_loss", StepCounter())], ValueError),
        ([("print_log", StepCounter())], ValueError),
        ([("a", StepCounter()), ("a", StepCounter())], ValueError),
    ],
    ids=repr,
)
def test_bad_callbacks_are_a_clear_error(data, callbacks, error):
    X, y = data
    clf = make(callbacks=callbacks)
    with pytest.raises(error, match="callback"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


class _HoldsALock(Callback):
    def __init__(self):
        self.lock = threading.Lock()


class _RefusesCopies(Callback):
    def __deepcopy__(self, memo):
        raise RuntimeError("no copies")


@pytest.mark.parametrize("callback", [_HoldsALock(), _RefusesCopies()], ids=type)
def test_callbacks_that_cannot_be_deep_copied(data, callback):
    X, y = data
    with pytest.raises(ValueError, match="deep-copied"):
        make(callbacks=[callback]).fit(X, y)


def test_clone_keeps_the_new_parameters(data):
    clf = make(early_stopping=True, validation_fraction=np.float64(0.3), tol=0.0)
    params = clone(clf).get_params()
    assert params["early_stopping"] is True
    assert params["validation_fraction"] == 0.3


# ---------------------------------------------------------------- optimizers

OPTIMIZERS = [
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.LBFGS,
]


def _settings(clf):
    """The optimizer's settings (its param groups without the parameters)."""
    return [
        {k: v for k, v in group.items() if k != "params"}
        for group in clf.net_.optimizer_.param_groups
    ]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: o.__name__)
def test_every_optimizer_continues_through_warm_start_partial_fit_and_load(
    data, optimizer, tmp_path
):
    from skdynloss import load, save

    X, y = data
    clf = make(optimizer=optimizer, max_epochs=2, batch_size=16).fit(X, y)
    built = _settings(clf)
    # A warm start with new hyperparameters passes the optimizer only those it has
    # (RMSprop keeps its own momentum setting, Adagrad has none).
    clf.set_params(warm_start=True, lr=5e-3, momentum=0.5)
    clf.fit(X, y)
    clf.partial_fit(X, y)
    for group, before in zip(_settings(clf), built, strict=True):
        assert group.keys() == before.keys()
        assert group["lr"] == 5e-3
        if "momentum" in group:
            expected = 0.5 if optimizer is torch.optim.SGD else before["momentum"]
            assert group["momentum"] == expected
    assert clf.n_iter_ == 5
    # Saved and loaded, it continues exactly as the original does.
    save(clf, tmp_path / "model.skdl")
    loaded = load(tmp_path / "model.skdl")
    assert _settings(loaded) == _settings(clf)
    for estimator in (clf, loaded):
        estimator.partial_fit(X, y)
        estimator.set_params(max_epochs=1).fit(X, y)
    assert loaded.n_iter_ == clf.n_iter_ == 7
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    state, loaded_state = (
        _plainly(e.net_.optimizer_.state_dict()["state"]) for e in (clf, loaded)
    )
    assert state and loaded_state == state


def _plainly(value):
    """Tensors (also in dicts and lists) as lists of numbers, to compare with ==."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plainly(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plainly(v) for v in value]
    return value


def test_an_optimizer_for_sparse_gradients_is_refused(data):
    clf = make(optimizer=torch.optim.SparseAdam)
    with pytest.raises(InvalidParameterError, match="'optimizer'.*sparse"):
        clf.fit(*data)
    assert not hasattr(clf, "net_")


# ------------------------------------------------- early stopping, partial_fit


def test_partial_fit_with_early_stopping_is_refused_as_by_mlp_classifier(data):
    from sklearn.neural_network import MLPClassifier

    X, y = data
    with pytest.raises(ValueError) as sklearn_error:
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=np.unique(y))
    clf = make(early_stopping=True)
    with pytest.raises(ValueError) as error:
        clf.partial_fit(X, y, classes=np.unique(y))
    assert str(error.value) == str(sklearn_error.value)
    assert not hasattr(clf, "net_")
    # Also after a fit with early stopping: the fitted model is left as it was.
    clf.fit(X, y)
    before = clf.predict_proba(X), clf.n_iter_
    with pytest.raises(ValueError, match="early_stopping=True"):
        clf.partial_fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), before[0])
    assert clf.n_iter_ == before[1]
    # Without early stopping partial_fit continues the same model.
    clf.set_params(early_stopping=False)
    with pytest.raises(ValueError, match="early_stopping changed"):
        clf.partial_fit(X, y)


# ------------------------------------------------ callables: clear errors


def _ce(outputs, y):
    return torch.nn.functional.cross_entropy(outputs, y, reduction="none")


@pytest.mark.parametrize(
    "params, match",
    [
        ({"loss": lambda o, y: _ce(o, y).detach()}, "'loss'.*not attached"),
        ({"loss": lambda o, y: (o.argmax(1) != y).long()}, "'loss'.*torch.int64"),
        ({"loss": lambda o, y: o.argmax(1) != y}, "'loss'.*torch.bool"),
        ({"loss": lambda o: o.sum(1)}, "'loss'.*two arguments"),
        ({"loss": lambda o, y, z: _ce(o, y)}, "'loss'.*two arguments"),
        ({"loss": lambda o, y: _ce(o, y).mean()}, r"'loss'.*shape \(\)"),
        ({"loss": lambda o, y: np.zeros(len(y))}, "'loss'.*ndarray"),
        ({"loss": lambda o, y: o[:, 5]}, "'loss'.*failed.*IndexError"),
        ({"shape": lambda p, a: np.array([1.0, 2.0])}, "'shape'.*array of shape"),
        ({"shape": lambda p, a: np.array([2.0])}, r"'shape'.*array of shape \(1,\)"),
        ({"shape": lambda p, a: "2"}, "'shape'.*one real number"),
        ({"shape": lambda p, a: 1j}, "'shape'.*one real number"),
        ({"shape": lambda p: 2.0}, "'shape'.*two arguments"),
        ({"shape": lambda p, a: -1.0}, "'shape'.*positive"),
        ({"shape": lambda p, a: [][1]}, "'shape'.*failed.*IndexError"),
    ],
)
def test_broken_loss_and_shape_callables_are_clear_errors(data, params, match):
    clf = make(**params)
    with pytest.raises(ValueError, match=match):
        clf.fit(*data)
    assert not hasattr(clf, "net_")


@pytest.mark.parametrize(
    "params",
    [
        {"loss": _ce},
        {"loss": lambda outputs, y, *rest: _ce(outputs, y).double()},
        {"shape": lambda p, a: np.float32(1 + (a - 1) * p)},
        {"shape": lambda p, a, *rest: np.asarray(2.0)},
        {"shape": lambda p, a: 3},
    ],
)
def test_working_loss_and_shape_callables_pass_the_checks(data, params):
    clf = make(**params).fit(*data)
    assert clf.n_iter_ == BASE["max_epochs"]
