"""When and why a fit stops, and what it reports (MLPClassifier's habits).

The references below are written from MLPClassifier's loop and from the documented
rule, not from the package's callback: an epoch improves when it beats the best so
far by tol, and training stops once more than n_iter_no_change epochs follow the
last epoch that improved; with a tilt only the epoch in which a period ends is
judged, none of the plain last period, and not before two whole cycles.
"""

import io
import math
import pickle
import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback, EarlyStopping

import skdynloss
from skdynloss import DynamicalLossClassifier

MESSAGE = r"Maximum iterations \({}\) reached and the optimization hasn't converged yet"


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=120, centers=3, n_features=2, random_state=0)
    return StandardScaler().fit_transform(X), y


FAST = dict(hidden_layer_sizes=(16,), compute_sharpness=False, random_state=0)


def rule(clf):
    return dict(clf.net_.callbacks_)["early_stopping"]


def mlp_stop(values, n_iter_no_change, tol, *, lower_is_better):
    """The epoch (1-based) at which MLPClassifier's loop breaks, or None: its
    ``_update_no_improvement_count`` and ``_no_improvement_count >
    n_iter_no_change`` test, epoch by epoch."""
    best = math.inf if lower_is_better else -math.inf
    count = 0
    for epoch, value in enumerate(values, 1):
        if lower_is_better:
            count = count + 1 if value > best - tol else 0
            best = min(best, value)
        else:
            count = count + 1 if value < best + tol else 0
            best = max(best, value)
        if count > n_iter_no_change:
            return epoch
    return None


def cycle_stop(values, times, *, period, n_classes, plain_from, patience, tol, lower):
    """The documented rule with a tilt: judged at the epochs in which a period ends
    (at or before ``plain_from``), stopping not before two whole cycles. Returns
    (stop epoch or None, the judged epochs)."""
    best = math.inf if lower else -math.inf
    improved_at = 0
    judged = []
    before = 0.0
    for epoch, (value, end) in enumerate(zip(values, times, strict=True), 1):
        k, k0 = math.floor(end / period + 1e-9), math.floor(before / period + 1e-9)
        before = end
        if k == k0 or k * period > plain_from + 1e-9:
            continue
        judged.append(epoch)
        if (value <= best - tol) if lower else (value >= best + tol):
            improved_at = epoch
        best = min(best, value) if lower else max(best, value)
        if (
            k * period >= 2 * n_classes * period - 1e-9
            and epoch - improved_at > patience
        ):
            return epoch, judged
    return None, judged


def validation_accuracy(clf):
    """The accuracy of the fitted network on the rows held out for early stopping."""
    valid = clf.net_.train_split.keywords["valid_ds"]
    with torch.no_grad():
        out = clf.module_.eval()(valid.X)
    return (out.argmax(1) == valid.y).double().mean().item()


def fit_quietly(clf, X, y):
    """Fit, returning the warnings raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(X, y)
    return [w for w in caught if not issubclass(w.category, DeprecationWarning)]


# ------------------------------------------------ A. early stopping and the cycle


def test_early_stopping_with_the_defaults_trains_two_cycles_then_the_plain_period(
    digits,
):
    X, y = digits
    # The estimator's defaults (only the sharpness after the fit, which does not
    # change training, is skipped).
    clf = DynamicalLossClassifier(
        early_stopping=True, compute_sharpness=False, random_state=0
    )
    caught = fit_quietly(clf, X, y)
    C, T = 10, 100 / 21
    assert clf.period_ == pytest.approx(T)
    times = clf.dynamics_["time"]
    weights = clf.class_weights_
    assert clf.n_iter_ == len(times) == len(clf.validation_scores_) == 100
    assert len(clf.loss_curve_) == len(clf.base_loss_curve_) == clf.n_iter_
    # Two whole cycles ran: every class was in focus twice, in order.
    tilted = weights[times <= 2 * C * T]
    focus = weights.argmax(axis=1)[(times <= 2 * C * T) & (weights.max(axis=1) > 1.5)]
    runs = [f for i, f in enumerate(focus) if i == 0 or f != focus[i - 1]]
    assert runs == list(range(C)) * 2
    assert tilted.max() > 3
    # The rule was judged where the 20th period ends (inside epoch 96), held
    # there, and the plain last period followed: epochs 97-100 have all weights 1,
    # epoch 96 is part tilted, part plain.
    assert rule(clf).stopped_epoch_ == math.ceil(2 * C * T) == 96
    assert rule(clf).converged_
    np.testing.assert_array_equal(weights[96:], 1.0)
    assert not np.allclose(weights[95], 1.0)
    assert times[95] > 2 * C * T > times[94]
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    # The last epochs are plain: the dynamical loss is the base loss there.
    assert clf.loss_ == clf.loss_curve_[-1]
    assert clf.loss_ == pytest.approx(clf.base_loss_curve_[-1], rel=1e-5)
    assert clf.best_loss_ is None  # a validation split: best_validation_score_
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_a_fixed_period_lets_early_stopping_shorten_the_fit(digits):
    X, y = digits
    clf = DynamicalLossClassifier(
        period=1.5,  # periods end inside epochs: 1.5, 3, 4.5, ...
        max_epochs=300,
        early_stopping=True,
        n_iter_no_change=4,
        compute_sharpness=False,
        random_state=0,
    )
    caught = fit_quietly(clf, X, y)
    times = clf.dynamics_["time"]
    stop, judged = cycle_stop(
        clf.validation_scores_,
        times,
        period=1.5,
        n_classes=10,
        plain_from=300 - 1.5,
        patience=4,
        tol=1e-4,
        lower=False,
    )
    assert judged[:6] == [2, 3, 5, 6, 8, 9]
    assert stop is not None and stop >= 30  # two cycles of 10 periods of 1.5
    assert rule(clf).stopped_epoch_ == stop
    # Then one period of plain epochs, rounded up to whole epochs, and the end.
    assert clf.n_iter_ == stop + 2 < 300
    np.testing.assert_array_equal(clf.class_weights_[stop:], 1.0)
    assert clf.class_weights_[stop - 1].max() > 1.01
    assert not caught
    # The fitted network is the one at the end of the plain period.
    assert clf.validation_scores_[-1] == pytest.approx(validation_accuracy(clf))


def test_the_plain_period_after_stopping_is_the_plain_period_of_a_shorter_fit(blobs):
    # With an integer period, stopping at epoch s and training `period` plain epochs
    # is exactly a fit of s + period epochs (its plain period starts at s): the same
    # seeds, batches and clock, bit for bit. The training-loss rule holds out nothing.
    X, y = blobs
    params = dict(FAST, amplitude=5.0, period=2.0, optimizer="sgd", lr=0.05)
    clf = DynamicalLossClassifier(
        **params,
        max_epochs=400,
        early_stopping=True,
        validation_fraction=None,
        n_iter_no_change=3,
        tol=1e-3,
    )
    assert not fit_quietly(clf, X, y)
    stop, _ = cycle_stop(
        clf.base_loss_curve_,
        clf.dynamics_["time"],
        period=2.0,
        n_classes=3,
        plain_from=400 - 2.0,
        patience=3,
        tol=1e-3,
        lower=True,
    )
    assert stop is not None and rule(clf).stopped_epoch_ == stop >= 12
    assert clf.n_iter_ == stop + 2
    short = DynamicalLossClassifier(**params, max_epochs=stop + 2).fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), short.predict_proba(X))
    np.testing.assert_array_equal(clf.loss_curve_, short.loss_curve_)
    np.testing.assert_array_equal(clf.class_weights_, short.class_weights_)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    assert clf.best_loss_ == min(clf.loss_curve_)


def test_without_a_static_last_period_it_stops_at_a_period_end_keeping_the_best(
    blobs,
):
    X, y = blobs
    clf = DynamicalLossClassifier(
        **FAST,
        amplitude=20.0,
        period=1.0,
        static_last_period=False,
        optimizer="sgd",
        lr=0.1,
        batch_size=16,
        max_epochs=300,
        early_stopping=True,
        validation_fraction=0.25,
        n_iter_no_change=2,
    )
    assert not fit_quietly(clf, X, y)
    stop, judged = cycle_stop(
        clf.validation_scores_,
        clf.dynamics_["time"],
        period=1.0,
        n_classes=3,
        plain_from=math.inf,
        patience=2,
        tol=1e-4,
        lower=False,
    )
    assert clf.n_iter_ == stop >= 6
    # The parameters kept are those of the best judged epoch.
    best = max(clf.validation_scores_[e - 1] for e in judged)
    assert rule(clf).best_ == best
    assert validation_accuracy(clf) == pytest.approx(best)


def test_amplitude_1_stops_where_mlp_classifiers_loop_stops(blobs):
    X, y = blobs
    common = dict(FAST, amplitude=1.0, optimizer="sgd", lr=0.05, batch_size=16)
    # On the validation accuracy: the best epoch's parameters are kept.
    clf = DynamicalLossClassifier(
        **common,
        max_epochs=200,
        early_stopping=True,
        validation_fraction=0.25,
        n_iter_no_change=3,
        tol=0.0,
    )
    assert not fit_quietly(clf, X, y)
    expected = mlp_stop(clf.validation_scores_, 3, 0.0, lower_is_better=False)
    assert clf.n_iter_ == expected < 200
    assert validation_accuracy(clf) == pytest.approx(clf.best_validation_score_)
    # On the training loss (validation_fraction=None): nothing is restored, the fit is
    # a plain fit of as many epochs.
    clf = DynamicalLossClassifier(
        **common,
        max_epochs=200,
        early_stopping=True,
        validation_fraction=None,
        n_iter_no_change=2,
        tol=1e-3,
    )
    assert not fit_quietly(clf, X, y)
    expected = mlp_stop(clf.base_loss_curve_, 2, 1e-3, lower_is_better=True)
    assert clf.n_iter_ == expected < 200
    plain = DynamicalLossClassifier(**common, max_epochs=expected).fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), plain.predict_proba(X))
    assert clf.loss_ == clf.loss_curve_[-1] == plain.loss_
    assert clf.best_loss_ == min(clf.loss_curve_)
    np.testing.assert_allclose(clf.base_loss_curve_, clf.loss_curve_, rtol=1e-5)


def test_each_warm_started_fit_is_judged_afresh(blobs):
    X, y = blobs
    clf = DynamicalLossClassifier(
        **FAST,
        amplitude=5.0,
        period=1.0,
        optimizer="sgd",
        lr=0.05,
        batch_size=16,
        max_epochs=100,
        early_stopping=True,
        validation_fraction=None,
        n_iter_no_change=2,
        tol=1e-2,
        warm_start=True,
    )
    assert not fit_quietly(clf, X, y)
    first = clf.n_iter_
    assert rule(clf).stopped_epoch_ >= 6 and first == rule(clf).stopped_epoch_ + 1
    assert not fit_quietly(clf, X, y)
    again = rule(clf)
    assert again.start_epoch_ == first
    # Two new cycles (6 epochs of period 1 through 3 classes) before it may stop.
    assert again.stopped_epoch_ >= first + 6
    assert clf.n_iter_ == again.stopped_epoch_ + 1
    np.testing.assert_array_equal(clf.class_weights_[first - 1], 1.0)
    np.testing.assert_array_equal(clf.class_weights_[-1], 1.0)
    assert len(clf.loss_curve_) == clf.n_iter_
    assert clf.best_loss_ == min(clf.loss_curve_)


def test_partial_fit_refuses_early_stopping_of_either_kind(blobs):
    X, y = blobs
    for fraction in (0.1, None):
        clf = DynamicalLossClassifier(
            **FAST, early_stopping=True, validation_fraction=fraction
        )
        with pytest.raises(ValueError, match="early_stopping=True"):
            clf.partial_fit(X, y, classes=[0, 1, 2])
        assert not hasattr(clf, "net_")


def test_a_callback_that_needs_validation_needs_a_validation_fraction(blobs):
    X, y = blobs
    clf = DynamicalLossClassifier(
        **FAST,
        max_epochs=2,
        early_stopping=True,
        validation_fraction=None,
        callbacks=[EarlyStopping()],
    )
    with pytest.raises(ValueError, match="validation_fraction not None"):
        clf.fit(X, y)


# ------------------------------------------------- B. loss_, warnings, defaults


def test_the_default_fit_has_no_stopping_rule_and_no_warning(blobs):
    X, y = blobs
    # A tol no epoch can meet: MLPClassifier would stop; the default trains all.
    clf = DynamicalLossClassifier(**FAST, amplitude=1.0, max_epochs=15, tol=10.0)
    assert not fit_quietly(clf, X, y)
    assert clf.n_iter_ == 15
    assert "early_stopping" not in dict(clf.net_.callbacks_)
    assert clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None


@pytest.mark.parametrize("max_epochs, warns", [(2, True), (3, False), (5, False)])
def test_convergence_warning_when_max_epochs_ends_the_fit_first(
    blobs, max_epochs, warns
):
    X, y = blobs
    # tol=1: only the first epoch improves; MLPClassifier's count passes
    # n_iter_no_change=1 at epoch 3, which stops the fit there (no warning, also
    # when epoch 3 is the last).
    clf = DynamicalLossClassifier(
        **FAST,
        amplitude=1.0,
        max_epochs=max_epochs,
        early_stopping=True,
        validation_fraction=None,
        n_iter_no_change=1,
        tol=1.0,
    )
    caught = fit_quietly(clf, X, y)
    assert clf.n_iter_ == min(max_epochs, 3)
    if warns:
        assert [w.category for w in caught] == [ConvergenceWarning]
        assert re.match(MESSAGE.format(2), str(caught[0].message))
    else:
        assert not caught


def test_the_convergence_warning_is_what_a_filter_on_sklearn_catches(blobs):
    X, y = blobs
    clf = DynamicalLossClassifier(
        **FAST, amplitude=1.0, max_epochs=2, early_stopping=True, n_iter_no_change=5
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=ConvergenceWarning, module="sklearn")
        clf.fit(X, y)
    assert not caught
    with pytest.warns(ConvergenceWarning, match=MESSAGE.format(2)):
        clf.fit(X, y)


def test_a_tilted_fit_whose_rule_never_held_warns(blobs):
    X, y = blobs
    # period="auto" (1 epoch here): the rule's one chance is where the two cycles
    # end, at epoch 6 of 7. With tol=1 only epoch 1 improves: 5 epochs later is not
    # more than n_iter_no_change=10 epochs later...
    clf = DynamicalLossClassifier(
        **FAST, max_epochs=7, early_stopping=True, validation_fraction=None, tol=1.0
    )
    with pytest.warns(ConvergenceWarning, match="ends of periods"):
        clf.fit(X, y)
    assert clf.n_iter_ == 7 and not rule(clf).converged_
    # ... but it is more than 1: the rule holds there, and the fit's own plain last
    # period follows as planned.
    clf.set_params(n_iter_no_change=1)
    assert not fit_quietly(clf, X, y)
    assert clf.n_iter_ == 7 and rule(clf).converged_
    assert rule(clf).stopped_epoch_ == 6


def test_new_attributes_survive_save_load_and_pickle(blobs, tmp_path):
    X, y = blobs
    for fraction in (0.25, None):
        clf = DynamicalLossClassifier(
            **FAST,
            amplitude=5.0,
            period=1.0,
            max_epochs=60,
            early_stopping=True,
            validation_fraction=fraction,
            n_iter_no_change=2,
            tol=1e-2,
        )
        fit_quietly(clf, X, y)
        path = tmp_path / f"clf-{fraction}.skdl"
        skdynloss.save(clf, path)
        for copy in (skdynloss.load(path), pickle.loads(pickle.dumps(clf))):
            assert copy.loss_ == clf.loss_
            assert copy.best_loss_ == clf.best_loss_
            assert copy.base_loss_curve_ == clf.base_loss_curve_
            assert copy.validation_scores_ == clf.validation_scores_
            assert copy.get_params()["validation_fraction"] == fraction
            kept = {k: v for k, v in vars(rule(clf)).items() if k != "_best_weights"}
            assert {k: vars(rule(copy))[k] for k in kept} == kept
            np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))


# ------------------------------------ scikit-learn's training-curves example


class InvScaling(Callback):
    """MLPClassifier's learning_rate="invscaling": after each epoch the rate is
    ``learning_rate_init / (samples seen + 1) ** power_t``."""

    def __init__(self, lr, power_t=0.5):
        self.lr = lr
        self.power_t = power_t

    def on_train_begin(self, net, X=None, **kwargs):
        self.n_ = len(X["X"]) if isinstance(X, dict) else len(X)

    def on_epoch_begin(self, net, **kwargs):
        seen = (len(net.history) - 1) * self.n_
        for group in net.optimizer_.param_groups:
            group["lr"] = self.lr / (seen + 1) ** self.power_t


class NesterovSGD(torch.optim.SGD):
    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0):
        super().__init__(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True
        )


def mlp_style(
    *,
    solver="adam",
    learning_rate="constant",
    learning_rate_init=1e-3,
    momentum=0.9,
    nesterovs_momentum=True,
    power_t=0.5,
    max_iter=200,
    batch_size=200,
    **params,
):
    """DynamicalLossClassifier under MLPClassifier's parameter names (those the
    example passes), with MLPClassifier's stopping rule on the training loss."""
    optimizer = solver
    if solver == "sgd" and nesterovs_momentum and momentum > 0:
        optimizer = NesterovSGD
    callbacks = None
    if learning_rate == "invscaling":
        callbacks = [("invscaling", InvScaling(learning_rate_init, power_t))]
    return DynamicalLossClassifier(
        optimizer=optimizer,
        lr=learning_rate_init,
        momentum=momentum,
        max_epochs=max_iter,
        batch_size=batch_size,
        early_stopping=True,
        validation_fraction=None,
        callbacks=callbacks,
        **params,
    )


def test_scikit_learns_training_curves_example_runs_with_the_estimator():
    """The logic of scikit-learn's examples/neural_networks/plot_mlp_training_curves.py
    with the estimator in MLPClassifier's place (fewer iterations)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn import datasets
    from sklearn.preprocessing import MinMaxScaler

    MLPClassifier = mlp_style
    # The example's learning strategies.
    params = [
        {"solver": "sgd", "learning_rate": "constant", "momentum": 0,
         "learning_rate_init": 0.2},
        {"solver": "sgd", "learning_rate": "constant", "momentum": 0.9,
         "nesterovs_momentum": False, "learning_rate_init": 0.2},
        {"solver": "sgd", "learning_rate": "constant", "momentum": 0.9,
         "nesterovs_momentum": True, "learning_rate_init": 0.2},
        {"solver": "sgd", "learning_rate": "invscaling", "momentum": 0,
         "learning_rate_init": 0.2},
        {"solver": "sgd", "learning_rate": "invscaling", "momentum": 0.9,
         "nesterovs_momentum": False, "learning_rate_init": 0.2},
        {"solver": "sgd", "learning_rate": "invscaling", "momentum": 0.9,
         "nesterovs_momentum": True, "learning_rate_init": 0.2},
        {"solver": "adam", "learning_rate_init": 0.01},
    ]  # fmt: skip
    data_sets = [
        datasets.load_iris(return_X_y=True),
        datasets.load_digits(return_X_y=True),
        datasets.make_circles(noise=0.2, factor=0.5, random_state=1),
        datasets.make_moons(noise=0.3, random_state=0),
    ]
    fig, axes = plt.subplots(2, 2)
    escaped, filtered = [], []
    out = io.StringIO()
    for ax, (X, y), name in zip(
        axes.ravel(), data_sets, ["iris", "digits", "circles", "moons"], strict=True
    ):
        X = MinMaxScaler().fit_transform(X)
        max_iter = 3 if name == "digits" else 12
        for param in params:
            mlp = MLPClassifier(verbose=0, random_state=0, max_iter=max_iter, **param)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                # The example's filter.
                warnings.filterwarnings(
                    "ignore", category=ConvergenceWarning, module="sklearn"
                )
                mlp.fit(X, y)
            escaped.extend(caught)
            print(f"Training set score: {mlp.score(X, y):f}", file=out)
            print(f"Training set loss: {mlp.loss_:f}", file=out)
            assert mlp.loss_ == mlp.loss_curve_[-1]
            assert 1 <= len(mlp.loss_curve_) <= max_iter
            ax.plot(mlp.loss_curve_)
            # Without the filter, what it filters is the ConvergenceWarning.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                mlp.fit(X, y)
            filtered.extend(w.category for w in caught)
    plt.close(fig)
    assert not escaped, [str(w.message) for w in escaped]
    assert filtered and set(filtered) == {ConvergenceWarning}
    assert out.getvalue().count("Training set loss") == 28


def test_a_file_cannot_give_validation_scores_to_a_fit_without_a_split(blobs, tmp_path):
    from test_persistence import forge

    X, y = blobs
    clf = DynamicalLossClassifier(
        **FAST, max_epochs=3, early_stopping=True, validation_fraction=None
    )
    fit_quietly(clf, X, y)
    path = tmp_path / "model.skdl"
    skdynloss.save(clf, path)
    forge(path, lambda m: m["classifier"]["record_validation"].append(0.5))
    with pytest.raises(ValueError, match="validation record"):
        skdynloss.load(path)
