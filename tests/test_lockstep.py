"""fit_lockstep: every model of a stack computes what its own fit computes."""

import io
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold
from skorch.callbacks import Callback

from skdynloss import DynamicalLossClassifier, fit_lockstep, make_spiral
from skdynloss._lockstep import (
    StackedMLP,
    class_major_losses,
    hyperparameter_key,
    model_bytes,
    unstackable_reason,
)
from skdynloss._losses import BASE_LOSSES as BASES
from skdynloss._losses import per_sample_losses


@pytest.fixture(scope="module")
def spiral():
    X, y = make_spiral(30)
    return X, y


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X, y = X[:200] / 16.0, y[:200]
    return X, y


def _fit_alone(estimators, X, y, rows=None, sample_weight=None):
    out = []
    for k, est in enumerate(estimators):
        r = slice(None) if rows is None else rows[k]
        w = None if sample_weight is None else sample_weight[r]
        out.append(clone(est).fit(X[r], y[r], sample_weight=w))
    return out


def _assert_same_fit(a, b, X, atol=1e-6, ordered=True):
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=atol)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert a.n_iter_ == b.n_iter_
    assert a.diverged_ == b.diverged_
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-9, atol=1e-12)
    for key in b.dynamics_:
        np.testing.assert_allclose(
            a.dynamics_[key], b.dynamics_[key], rtol=1e-9, atol=1e-12, err_msg=key
        )
    if np.isfinite(b.sharpness_):
        np.testing.assert_allclose(a.sharpness_, b.sharpness_, rtol=1e-6)
    ha, hb = a.net_.history, b.net_.history
    assert len(ha) == len(hb)
    for ra, rb in zip(ha, hb, strict=True):
        # The same keys, in the same order (a stack validates model k after its
        # training records are written, so only their set is the same then).
        assert list(ra) == list(rb) if ordered else ra.keys() == rb.keys()
        assert [list(x) for x in ra["batches"]] == [list(x) for x in rb["batches"]]
        assert [x.get("train_batch_size") for x in ra["batches"]] == [
            x.get("train_batch_size") for x in rb["batches"]
        ]
    assert torch.equal(a.net_.generator.get_state(), b.net_.generator.get_state())
    sa, sb = a.net_.optimizer_.state_dict(), b.net_.optimizer_.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for i in sb["state"]:
        assert sa["state"][i].keys() == sb["state"][i].keys()
        for key, value in sb["state"][i].items():
            torch.testing.assert_close(sa["state"][i][key], value, rtol=1e-7, atol=1e-9)
    assert a.net_.criterion_._clock == b.net_.criterion_._clock
    for name in ("loss_clock", "divergence_guard"):
        va = vars(dict(a.net_.callbacks_)[name])
        vb = vars(dict(b.net_.callbacks_)[name])
        assert va.keys() == vb.keys()
        for key, value in vb.items():
            if isinstance(value, float):
                assert va[key] == pytest.approx(value, rel=1e-9), key
            else:
                assert va[key] == value, key


GRID = [
    {"amplitude": 1.0, "period": 1.0, "random_state": 0},
    {"amplitude": 5.0, "period": 2.0, "random_state": 1, "shape": "sine"},
    {"amplitude": 20.0, "period": 0.5, "random_state": 2, "order": "random"},
    {"amplitude": 5.0, "period": 3.0, "random_state": 3, "static_last_period": False},
    {"amplitude": 5.0, "period": 1.0, "random_state": 4, "loss": "squared_error"},
]


def test_full_batch_gradient_descent_on_the_same_data(spiral):
    X, y = spiral
    base = DynamicalLossClassifier(
        hidden_layer_sizes=(8,),
        optimizer="sgd",
        lr=0.1,
        momentum=0.0,
        batch_size=-1,
        max_epochs=12,
        dtype="float64",
    )
    estimators = [clone(base).set_params(**g) for g in GRID]
    returned = fit_lockstep(estimators, X, y)
    assert returned == estimators
    for a, b in zip(estimators, _fit_alone(estimators, X, y), strict=True):
        _assert_same_fit(a, b, X)


def test_mini_batches_folds_of_different_sizes_and_momentum(digits):
    X, y = digits
    folds = [train for train, _ in StratifiedKFold(3).split(X, y)]
    folds.append(
        np.arange(0, 150, 2)
    )  # a fold of another size, rows not sorted by fold
    base = DynamicalLossClassifier(
        hidden_layer_sizes=(12, 6),
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-3,
        batch_size=32,
        max_epochs=3,
        dtype="float64",
    )
    estimators = [clone(base).set_params(**g) for g in GRID[:4]]
    fit_lockstep(estimators, X, y, rows=folds)
    alone = _fit_alone(estimators, X, y, rows=folds)
    for a, b in zip(estimators, alone, strict=True):
        _assert_same_fit(a, b, X)


def test_adam_with_sample_weights_and_string_labels(spiral):
    X, y = spiral
    labels = np.array(["left", "middle", "right"])[y]
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    rows = [np.arange(len(y)), np.arange(10, len(y))]
    base = DynamicalLossClassifier(
        hidden_layer_sizes=(8,), lr=0.01, batch_size=16, max_epochs=4, dtype="float64"
    )
    estimators = [clone(base).set_params(**g) for g in GRID[:2]]
    fit_lockstep(estimators, X, labels, rows=rows, sample_weight=w)
    alone = _fit_alone(estimators, X, labels, rows=rows, sample_weight=w)
    for a, b in zip(estimators, alone, strict=True):
        assert a.classes_.tolist() == ["left", "middle", "right"]
        _assert_same_fit(a, b, X)


class _PlainCallback(Callback):
    """A skorch callback that does not declare itself stack-aware."""

    def on_epoch_end(self, net, **kwargs):
        net.history.record("plain_seen", len(net.history))


def test_groups_that_cannot_share_a_stack_and_fallback(spiral):
    X, y = spiral
    base = DynamicalLossClassifier(
        hidden_layer_sizes=(6,),
        lr=0.01,
        batch_size=-1,
        max_epochs=3,
        dtype="float64",
        random_state=0,
    )
    estimators = [
        clone(base),
        clone(base).set_params(lr=0.02),  # another group
        clone(base).set_params(hidden_layer_sizes=(4,)),  # another group
        # A plain skorch callback: a stack of one, where skorch's protocol holds.
        clone(base).set_params(callbacks=[("plain", _PlainCallback())]),
    ]
    assert unstackable_reason(estimators[3]) is not None
    assert hyperparameter_key(estimators[0]) != hyperparameter_key(estimators[1])
    fit_lockstep(estimators, X, y)
    for a, b in zip(estimators, _fit_alone(estimators, X, y), strict=True):
        _assert_same_fit(a, b, X)


def test_stacks_split_by_memory_bound(spiral):
    X, y = spiral
    base = DynamicalLossClassifier(
        hidden_layer_sizes=(6,), lr=0.01, batch_size=-1, max_epochs=3, dtype="float64"
    )
    estimators = [clone(base).set_params(random_state=s) for s in range(5)]
    per_model = model_bytes(estimators[0], len(X), 2, 3)
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(out):
        fit_lockstep(estimators, X, y, max_stack_bytes=2 * per_model, verbose=1)
    assert "stack 3/3 (1 models)" in out.getvalue()
    for a, b in zip(estimators, _fit_alone(estimators, X, y), strict=True):
        _assert_same_fit(a, b, X)


@pytest.mark.parametrize(
    "hidden, lr, dtype, cause",
    [
        ((), 1e38, "float32", "parameters became infinite or NaN"),
        # Finite parameters of about 1e155 whose product overflows the outputs.
        ((1,), 1e155, "float64", "outputs on the training data became infinite"),
    ],
)
def test_a_last_step_that_overflows_is_rolled_back(hidden, lr, dtype, cause):
    """The last epoch's finite loss vouches for the parameters it started from; a
    last step that overflows them or the outputs (Adam at a huge lr) is a divergence,
    in a stack as in a fit of its own: the estimator predicts finite probabilities.
    (Found by tests/test_hypothesis.py.)"""
    X = np.array([[0.12573022], [-0.13210486], [0.5], [-0.4]])
    y = np.array([4, -3, 4, -3])
    base = DynamicalLossClassifier(
        hidden_layer_sizes=hidden,
        optimizer="adam",
        lr=lr,
        dtype=dtype,
        max_epochs=1,
        batch_size=-1,
        amplitude=1.0,
        compute_sharpness=False,
    )
    estimators = [clone(base).set_params(random_state=s) for s in range(2)]
    estimators.append(clone(base).set_params(lr=1e-3, random_state=0))
    with pytest.warns(RuntimeWarning, match=cause):
        alone = _fit_alone(estimators, X, y)
    assert alone[0].diverged_ and not alone[2].diverged_
    assert np.isfinite(alone[0].predict_proba(X)).all()
    with pytest.warns(RuntimeWarning, match=cause):
        fit_lockstep(estimators, X, y)
    for a, b in zip(estimators, alone, strict=True):
        _assert_same_fit(a, b, X)


def test_balanced_chunks():
    from skdynloss._lockstep import balanced_chunks

    sizes = [len(c) for c in balanced_chunks(list(range(17)), 16)]
    assert sizes == [9, 8]
    assert [len(c) for c in balanced_chunks(list(range(5)), 2)] == [2, 2, 1]
    assert balanced_chunks([1, 2, 3], 8) == [[1, 2, 3]]
    chunks = balanced_chunks(list(range(10)), 3)
    assert [len(c) for c in chunks] == [3, 3, 2, 2]
    assert sum(chunks, []) == list(range(10))


def test_divergence_stops_only_the_diverging_model(spiral):
    X, y = spiral
    base = DynamicalLossClassifier(
        hidden_layer_sizes=(8,),
        optimizer="sgd",
        lr=1e5,
        momentum=0.9,
        batch_size=-1,
        max_epochs=40,
        period=1.0,
        dtype="float64",
        random_state=0,
        compute_sharpness=False,
    )
    # The squared error diverges at this learning rate; the cross-entropy does not.
    estimators = [clone(base), clone(base).set_params(loss="squared_error")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_lockstep(estimators, X, y)
    alone = _fit_alone(estimators, X, y)
    assert alone[1].diverged_ and not alone[0].diverged_
    assert any("diverged" in str(w.message) for w in caught)
    for a, b in zip(estimators, alone, strict=True):
        _assert_same_fit(a, b, X)


def test_pickles_like_a_fit_alone(spiral, tmp_path):
    X, y = spiral
    est = DynamicalLossClassifier(
        hidden_layer_sizes=(5,), max_epochs=2, batch_size=32, random_state=0
    )
    (fitted,) = fit_lockstep([est], X, y)
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    assert again.sharpness_ == fitted.sharpness_
    # It continues training as a fitted estimator does.
    again.partial_fit(X, y)
    assert again.n_iter_ == 3


def test_a_failing_estimator_is_left_unchanged(spiral):
    X, y = spiral
    good = DynamicalLossClassifier(hidden_layer_sizes=(5,), max_epochs=2)
    bad = DynamicalLossClassifier(hidden_layer_sizes=(5,), max_epochs=2, lr=-1.0)
    with pytest.raises(ValueError, match="lr"):
        fit_lockstep([good, bad], X, y)
    assert not hasattr(good, "net_") and not hasattr(bad, "net_")
    with pytest.raises(ValueError, match="rows"):
        fit_lockstep([good], X, y, rows=[])


def test_stacked_module_and_losses_match_the_single_ones(rng):
    torch.manual_seed(0)
    from skdynloss._modules import MLP

    modules = [MLP(3, 4, (5, 6)).double() for _ in range(3)]
    stack = StackedMLP(modules)
    x = torch.tensor(rng.normal(size=(3, 7, 3)))
    out = stack(x)
    y = torch.tensor(rng.integers(0, 4, size=(3, 7)))
    for k, m in enumerate(modules):
        torch.testing.assert_close(out[k].T, m(x[k]))
        for base in BASES:
            torch.testing.assert_close(
                class_major_losses(out, y, base)[k],
                per_sample_losses(m(x[k]), y[k], base),
            )


def test_interrupt_keeps_the_models_as_they_were(spiral):
    import signal
    import threading

    X, y = spiral
    base = DynamicalLossClassifier(
        hidden_layer_sizes=(6,),
        batch_size=16,
        max_epochs=100000,
        random_state=0,
        compute_sharpness=False,
    )
    estimators = [clone(base), clone(base).set_params(amplitude=3)]
    # Warm up (the first optimizer step imports torch's compiler, seconds under load),
    # so that the signal arrives while the stack trains.
    fit_lockstep([clone(base).set_params(max_epochs=1)], X, y)
    before = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(2.0, signal.raise_signal, args=(signal.SIGINT,))
    timer.start()
    with pytest.warns(UserWarning, match="interrupted"):
        fit_lockstep(estimators, X, y)
    timer.cancel()
    assert signal.getsignal(signal.SIGINT) is before
    for est in estimators:
        assert 0 < est.n_iter_ < 100000
        assert len(est.loss_curve_) == est.n_iter_
        assert est.predict(X).shape == y.shape
        # Every row is its own epoch's (one cut short records the steps that ran):
        # the clock at the end of epoch e is at most e, and the last row's time is
        # where the model's clock stopped.
        history = est.net_.history
        for row in history:
            assert row["epoch"] - 1 < row["loss_time"] <= row["epoch"] + 1e-9
            assert row["train_batch_count"] == len(row["batches"])
        clock = dict(est.net_.callbacks_)["loss_clock"]
        assert history[-1]["loss_time"] == pytest.approx(clock.time_)


# ------------------------------------------------ what a stack does like a fit


class _Recorder(Callback):
    """A stack-aware user callback: records what it sees of its own model."""

    stack_aware = True

    def on_train_begin(self, net, **kwargs):
        self.seen = []

    def on_batch_end(self, net, batch=None, training=False, loss=None, **kwargs):
        if training:
            X, y = batch
            self.seen.append(("batch", int(len(y)), float(loss)))

    def on_epoch_end(self, net, **kwargs):
        first = next(net.module_.parameters())
        self.seen.append(("epoch", len(net.history), float(first.sum())))
        net.history.record("recorded", len(self.seen))


def _user_record(est):
    return dict(est.net_.callbacks_)["rec"].seen


def _per_sample_ce(outputs, y):
    return torch.nn.functional.cross_entropy(outputs, y, reduction="none")


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"module": "cnn", "image_shape": (1, 8, 8)}, id="cnn"),
        pytest.param({"loss": _per_sample_ce}, id="callable-loss"),
        pytest.param({"sharpness_every": 2}, id="sharpness_every"),
        pytest.param({"callbacks": [("rec", _Recorder())]}, id="user-callback"),
    ],
)
def test_a_stack_does_what_each_fit_does(digits, params):
    X, y = digits
    X, y = X[:90], y[:90]
    base = DynamicalLossClassifier(
        hidden_layer_sizes=(8,),
        optimizer="sgd",
        lr=0.05,
        batch_size=32,
        max_epochs=4,
        dtype="float64",
        **params,
    )
    estimators = [
        clone(base).set_params(amplitude=a, period=p, random_state=s)
        for a, p, s in ((1.0, 1.0, 0), (5.0, 2.0, 1), (20.0, 0.5, 2))
    ]
    assert unstackable_reason(estimators[0]) is None
    fit_lockstep(estimators, X, y)
    for a, b in zip(estimators, _fit_alone(estimators, X, y), strict=True):
        _assert_same_fit(a, b, X)
        if "sharpness_every" in params:
            assert len(b.sharpness_history_["epoch"]) == 2
            for key in b.sharpness_history_:
                np.testing.assert_allclose(
                    a.sharpness_history_[key], b.sharpness_history_[key], rtol=1e-6
                )
        if "callbacks" in params:
            ra, rb = _user_record(a), _user_record(b)
            assert [r[:2] for r in ra] == [r[:2] for r in rb]
            np.testing.assert_allclose(
                [r[2] for r in ra], [r[2] for r in rb], rtol=1e-9
            )


@pytest.mark.parametrize("fraction", [0.1, None], ids=["validation", "train-loss"])
def test_early_stopping_stops_each_model_alone(digits, fraction):
    X, y = digits
    base = DynamicalLossClassifier(
        hidden_layer_sizes=(8,),
        optimizer="sgd",
        lr=0.05,
        batch_size=32,
        max_epochs=60,
        dtype="float64",
        early_stopping=True,
        validation_fraction=fraction,
        n_iter_no_change=3,
        tol=1e-4 if fraction else 1e-3,
        compute_sharpness=False,
    )
    # No tilt (judged every epoch), and tilted models of different periods: judged at
    # period ends after two cycles, then each trains its own plain period.
    estimators = [
        clone(base).set_params(amplitude=a, period=p, random_state=s)
        for a, p, s in ((1.0, 1.0, 0), (30.0, 1.0, 1), (5.0, 0.5, 2), (5.0, 1.5, 3))
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # each stops: no ConvergenceWarning
        fit_lockstep(estimators, X, y)
        alone = _fit_alone(estimators, X, y)
    # The models stop at different epochs, each where its own fit stops.
    assert len({b.n_iter_ for b in alone}) == 4
    for a, b in zip(estimators, alone, strict=True):
        assert a.n_iter_ == b.n_iter_ < 60
        _assert_same_fit(a, b, X, ordered=False)
        assert a.validation_scores_ == pytest.approx(b.validation_scores_, rel=1e-9)
        assert a.best_validation_score_ == b.best_validation_score_
        assert a.loss_ == pytest.approx(b.loss_, rel=1e-9)
        if fraction is None:
            assert a.best_loss_ == pytest.approx(b.best_loss_, rel=1e-9)
            assert b.best_loss_ == min(b.loss_curve_)
        else:
            assert a.best_loss_ is b.best_loss_ is None
        np.testing.assert_allclose(
            a.base_loss_curve_, b.base_loss_curve_, rtol=1e-9, atol=1e-12
        )
        ra_, rb_ = (dict(e.net_.callbacks_)["early_stopping"] for e in (a, b))
        assert vars(ra_).keys() == vars(rb_).keys()
        for key, value in vars(rb_).items():
            # The judged base loss is summed in another order in a stack.
            assert vars(ra_)[key] == pytest.approx(value, rel=1e-12), key
        for ra, rb in zip(a.net_.history, b.net_.history, strict=True):
            assert ra.keys() == rb.keys()
            for key in ("valid_loss", "valid_acc", "train_loss"):
                assert ra.get(key) == pytest.approx(rb.get(key), rel=1e-9)
    for b in alone[1:]:
        # A tilted model ends with its own plain period, whole epochs of weights 1.
        rule = dict(b.net_.callbacks_)["early_stopping"]
        plain = b.n_iter_ - rule.stopped_epoch_
        assert plain == np.ceil(b.period_)
        np.testing.assert_array_equal(b.class_weights_[-plain:], 1.0)
        assert not np.allclose(b.class_weights_[rule.stopped_epoch_ - 1], 1.0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_warm_start_continues_each_model_in_a_stack(spiral, optimizer):
    X, y = spiral
    base = DynamicalLossClassifier(
        hidden_layer_sizes=(8,),
        optimizer=optimizer,
        lr=0.05,
        batch_size=16,
        max_epochs=3,
        dtype="float64",
        warm_start=True,
        compute_sharpness=False,
    )
    estimators = [
        clone(base).set_params(amplitude=a, random_state=s)
        for a, s in ((1.0, 0), (5.0, 1), (20.0, 2))
    ]
    twins = [clone(e) for e in estimators]
    fit_lockstep(estimators, X, y)
    for t in twins:
        t.fit(X, y)
    # Continue: the second call stacks the three fitted models.
    assert unstackable_reason(estimators[0]) is None
    for est in (*estimators, *twins):
        est.set_params(max_epochs=4, amplitude=est.amplitude * 2)
    fit_lockstep(estimators, X, y)
    for t in twins:
        t.fit(X, y)
    for a, b in zip(estimators, twins, strict=True):
        assert a.n_iter_ == b.n_iter_ == 7
        _assert_same_fit(a, b, X)


class _DropoutNet(torch.nn.Module):
    def __init__(self, n_features, n_classes):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(n_features, 8),
            torch.nn.Dropout(0.5),
            torch.nn.Linear(8, n_classes),
        )

    def forward(self, x):
        return self.layers(x)


def test_a_module_a_stack_cannot_map_trains_alone(spiral):
    X, y = spiral
    base = DynamicalLossClassifier(
        module=_DropoutNet, max_epochs=3, batch_size=16, compute_sharpness=False
    )
    estimators = [clone(base).set_params(random_state=s) for s in range(2)]
    # Dropout draws from torch's global generator: the same draws on both sides.
    torch.manual_seed(0)
    fit_lockstep(estimators, X, y)
    torch.manual_seed(0)
    alone = _fit_alone(estimators, X, y)
    for a, b in zip(estimators, alone, strict=True):
        _assert_same_fit(a, b, X)


def test_fit_lockstep_refuses_bad_arguments_clearly(spiral):
    X, y = spiral
    est = DynamicalLossClassifier(hidden_layer_sizes=(4,), max_epochs=1)
    with pytest.raises(ValueError, match=r"rows\[0\] holds row indices .* outside"):
        fit_lockstep([est], X, y, rows=[np.array([0, len(X)])])
    with pytest.raises(ValueError, match=r"rows\[0\] must be a 1-d array of integer"):
        fit_lockstep([est], X, y, rows=[np.array([0.5, 1.0])])
    with pytest.raises(TypeError, match="max_stack_bytes must be None or a positive"):
        fit_lockstep([est], X, y, max_stack_bytes="8 MiB")
    with pytest.raises(ValueError, match="max_stack_bytes must be None or a positive"):
        fit_lockstep([est], X, y, max_stack_bytes=-1)
    with pytest.raises(TypeError, match=r"estimators\[1\] is str"):
        fit_lockstep([est, "mlp"], X, y)
    with pytest.raises(TypeError, match="estimators must be a list"):
        fit_lockstep(est, X, y)
    assert not hasattr(est, "net_")
