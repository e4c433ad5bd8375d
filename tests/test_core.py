"""The pure core: class weights over configurations, the loss for every base, sample
weights and early stopping, each against the formula written out by hand."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _reference import by_hand, dense_top_eigenvalue
from sklearn.datasets import make_blobs
from sklearn.preprocessing import StandardScaler

from skdynloss import DynamicalLoss, DynamicalLossClassifier, class_weights
from skdynloss import dynamical_loss as pure_loss


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=90, centers=3, n_features=4, random_state=1)
    return StandardScaler().fit_transform(X), y


# ------------------------------------------------------------- class weights


def test_class_weights_broadcast_over_times_and_configurations():
    amplitudes = np.array([1.0, 5.0, 70.0, 12.5])
    periods = np.array([2.0, 3.0, 5.0, 0.7])
    t = np.linspace(0, 20, 37).reshape(37, 1, 1)  # any shape of times
    gamma = class_weights(t, n_classes=3, amplitude=amplitudes, period=periods)
    assert gamma.shape == (37, 1, 1, 4, 3)
    for i, ti in enumerate(t.ravel()):
        for k in range(4):
            np.testing.assert_allclose(
                gamma[i, 0, 0, k], by_hand(ti, 3, amplitudes[k], periods[k]), rtol=1e-12
            )


def test_class_weights_mixed_shapes_orders_and_seeds_per_configuration():
    t = np.arange(0, 12, 0.25)
    shapes = ["triangle", "sine", lambda p, a: 1 + (a - 1) * p]
    orders = ["cyclic", "random", "random"]
    seeds = [0, 3, 4]
    gamma = class_weights(
        t,
        n_classes=4,
        amplitude=[9.0, 9.0, 9.0],
        period=1.5,
        shape=shapes,
        order=orders,
        seed=seeds,
    )
    assert gamma.shape == (len(t), 3, 4)
    for k in range(3):
        alone = class_weights(
            t,
            n_classes=4,
            amplitude=9.0,
            period=1.5,
            shape=shapes[k],
            order=orders[k],
            seed=seeds[k],
        )
        np.testing.assert_array_equal(gamma[:, k], alone)


def test_class_weights_static_and_mismatched_lengths():
    gamma = class_weights(
        [1.0, 2.5], n_classes=3, amplitude=70, period=5, static=[False, True]
    )
    np.testing.assert_array_equal(gamma[1], np.ones(3))
    assert gamma[0, 0] != 1.0
    stacked = class_weights(
        [1.0, 2.5],
        n_classes=3,
        amplitude=[70, 9],
        period=5,
        static=[[False, True], [True, False]],
    )
    np.testing.assert_array_equal(stacked[0, 1], np.ones(3))
    np.testing.assert_array_equal(stacked[1, 0], np.ones(3))
    assert stacked[0, 0, 0] != 1.0 and stacked[1, 1, 0] != 1.0
    with pytest.raises(ValueError, match="same number K"):
        class_weights(0.0, n_classes=3, amplitude=[2, 3], period=[1, 2, 3])


def test_extreme_amplitude_stays_finite_and_normalised():
    gamma = class_weights(2.5, n_classes=3, amplitude=1e308, period=5.0)
    assert np.isfinite(gamma).all()
    assert gamma.sum() == pytest.approx(3.0)


def test_a_period_too_small_for_the_time_is_a_clear_error():
    with pytest.raises(ValueError, match="period"):
        class_weights(1e10, n_classes=3, amplitude=5, period=5e-324)


# ------------------------------------------------------------------ the loss


def hand_loss(outputs, y, gamma, base, sample_weight=None):
    outputs, y = outputs.tolist(), y.tolist()
    C = len(outputs[0])
    s = [1.0] * len(y) if sample_weight is None else sample_weight.tolist()
    total = 0.0
    for row, label, weight in zip(outputs, y, s, strict=True):
        if base == "cross_entropy":
            value = math.log(sum(math.exp(v) for v in row)) - row[label]
        else:
            value = sum((v - (j == label)) ** 2 for j, v in enumerate(row)) / C
        total += weight * gamma[label] * value
    return total / sum(s)


@pytest.mark.parametrize("base", ["cross_entropy", "squared_error"])
@pytest.mark.parametrize("weighted", [False, True])
def test_pure_loss_is_the_formula(base, weighted):
    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(13, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (13,), generator=g)
    gamma = torch.tensor([2.5, 0.5, 0.5, 0.5], dtype=torch.float64)
    w = torch.rand(13, generator=g, dtype=torch.float64) if weighted else None
    value = pure_loss(outputs, y, gamma, base=base, sample_weight=w).item()
    assert value == pytest.approx(
        hand_loss(outputs, y, gamma.tolist(), base, w), rel=1e-12
    )


def test_squared_error_with_unit_weights_is_torch_mse_against_one_hot():
    g = torch.Generator().manual_seed(1)
    outputs = torch.randn(9, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (9,), generator=g)
    ones = torch.ones(3, dtype=torch.float64)
    torch.testing.assert_close(
        pure_loss(outputs, y, ones, base="squared_error"),
        F.mse_loss(outputs, F.one_hot(y, 3).double()),
    )


def test_pure_loss_over_a_stack_of_models_is_each_models_loss():
    g = torch.Generator().manual_seed(2)
    K, P, C = 4, 7, 3
    outputs = torch.randn(K, P, C, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (K, P), generator=g)
    gamma = torch.as_tensor(
        class_weights(1.3, n_classes=C, amplitude=[1, 4, 9, 70], period=2.0)
    )
    w = torch.rand(K, P, generator=g, dtype=torch.float64)
    for base in ("cross_entropy", "squared_error"):
        stacked = pure_loss(outputs, y, gamma, base=base, sample_weight=w)
        assert stacked.shape == (K,)
        for k in range(K):
            torch.testing.assert_close(
                stacked[k],
                pure_loss(outputs[k], y[k], gamma[k], base=base, sample_weight=w[k]),
            )


def test_callable_base_is_weighted_by_the_package_and_checked():
    def hinge(outputs, y):
        own = outputs.gather(1, y[:, None]).squeeze(1)
        return torch.relu(1 - own)

    g = torch.Generator().manual_seed(3)
    outputs = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=g)
    loss = DynamicalLoss(3, amplitude=70, period=5, base=hinge).double()
    gamma = loss.set_time(2.5)
    expected = np.mean(
        [
            gamma[label] * max(0.0, 1 - row[label])
            for row, label in zip(outputs.tolist(), y.tolist(), strict=True)
        ]
    )
    assert loss(outputs, y).item() == pytest.approx(expected, rel=1e-12)
    bad = DynamicalLoss(3, base=lambda outputs, y: outputs.sum())
    with pytest.raises(ValueError, match="one loss per sample"):
        bad(outputs.float(), y)


# ------------------------------------------------------- the classifier's bases

TINY = dict(
    hidden_layer_sizes=(5,),
    dtype="float64",
    optimizer="sgd",
    momentum=0.0,
    lr=0.3,
    batch_size=-1,
    amplitude=8.0,
    period=3.0,
    max_epochs=12,
    random_state=0,
)


def squared(outputs, y):
    return ((outputs - F.one_hot(y, outputs.shape[1]).to(outputs.dtype)) ** 2).mean(1)


@pytest.mark.parametrize(
    "loss, per_sample",
    [
        ("cross_entropy", lambda o, y: F.cross_entropy(o, y, reduction="none")),
        ("squared_error", squared),
        (squared, squared),
    ],
)
def test_every_base_trains_records_and_reports_its_own_sharpness(
    blobs, loss, per_sample
):
    X, y = blobs
    clf = DynamicalLossClassifier(loss=loss, **TINY).fit(X, y)
    # The record's base loss is the unweighted base loss of the epoch's forward passes;
    # the last epoch ran at the parameters before the last step.
    assert np.isfinite(clf.dynamics_["base_loss"]).all()
    assert ("cross_entropy" in clf.dynamics_) == (loss == "cross_entropy")
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert (proba >= 0).all()
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], clf.predict(X))
    expected = dense_top_eigenvalue(clf.module_, X, y, per_sample=per_sample)
    assert clf.sharpness_ == pytest.approx(expected, rel=1e-6)


def test_squared_error_record_is_the_formula_at_the_first_epoch(blobs):
    X, y = blobs
    clf = DynamicalLossClassifier(loss="squared_error", **{**TINY, "max_epochs": 1})
    clf.set_params(lr=1e-12)  # the parameters barely move: the record is at init
    clf.fit(X, y)
    outputs = clf.module_(torch.tensor(X)).detach()
    base = squared(outputs, torch.tensor(y)).mean().item()
    assert clf.dynamics_["base_loss"][0] == pytest.approx(base, rel=1e-9)


# ------------------------------------------------------------ sample weights


def test_integer_sample_weights_train_exactly_as_repeated_rows(blobs):
    X, y = blobs
    rng = np.random.default_rng(0)
    w = rng.integers(0, 4, len(X))
    w[:3] = [1, 2, 3]
    repeated = DynamicalLossClassifier(**TINY).fit(np.repeat(X, w, 0), np.repeat(y, w))
    weighted = DynamicalLossClassifier(**TINY).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(
        weighted.predict_proba(X), repeated.predict_proba(X), rtol=1e-10, atol=1e-12
    )
    for key in ("loss", "base_loss", "accuracy"):
        np.testing.assert_allclose(
            weighted.dynamics_[key], repeated.dynamics_[key], rtol=1e-10
        )
    assert weighted.sharpness_ == pytest.approx(repeated.sharpness_, rel=1e-7)


def test_unit_sample_weights_are_no_weights_and_the_input_is_checked(blobs):
    X, y = blobs
    params = {**TINY, "batch_size": 16, "dtype": "float32"}
    plain = DynamicalLossClassifier(**params).fit(X, y)
    ones = DynamicalLossClassifier(**params).fit(X, y, sample_weight=np.ones(len(X)))
    np.testing.assert_array_equal(plain.predict_proba(X), ones.predict_proba(X))
    with pytest.raises(ValueError, match="Negative"):
        DynamicalLossClassifier(**params).fit(X, y, sample_weight=-np.ones(len(X)))
    with pytest.raises(ValueError):
        DynamicalLossClassifier(**params).fit(X, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="non-zero"):
        DynamicalLossClassifier(**params).fit(X, y, sample_weight=np.zeros(len(X)))


def test_partial_fit_takes_sample_weights(blobs):
    X, y = blobs
    w = np.r_[np.full(45, 2.0), np.full(45, 0.5)]
    clf = DynamicalLossClassifier(**TINY)
    for _ in range(3):
        clf.partial_fit(X, y, classes=np.unique(y), sample_weight=w)
    assert clf.n_iter_ == 3


# ------------------------------------------------------------ early stopping


def test_early_stopping_holds_out_validation_data_and_keeps_the_best_epoch(blobs):
    X, y = blobs
    clf = DynamicalLossClassifier(
        amplitude=1.0,  # no tilt: judged at every epoch, as in MLPClassifier
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=3,
        max_epochs=200,
        lr=0.05,
        batch_size=16,
        compute_sharpness=False,
        random_state=0,
    ).fit(X, y)
    scores = clf.validation_scores_
    assert len(scores) == clf.n_iter_ < 200  # it stopped early
    assert clf.best_validation_score_ == max(scores)
    # Stopped at the first epoch more than n_iter_no_change epochs after the last one
    # that beat the best by tol (MLPClassifier's count).
    best = int(np.argmax(scores))
    assert clf.n_iter_ - 1 - best == 3 + 1
    assert clf.net_.history[-1, "valid_acc"] == scores[-1]
    without = DynamicalLossClassifier(compute_sharpness=False, max_epochs=2, period=1)
    without.fit(X, y)
    assert without.validation_scores_ is None


def test_skorch_callbacks_that_need_validation(blobs):
    from skorch.callbacks import EarlyStopping

    X, y = blobs
    with pytest.raises(ValueError, match="validation split"):
        DynamicalLossClassifier(callbacks=[EarlyStopping()], max_epochs=2).fit(X, y)
    clf = DynamicalLossClassifier(
        callbacks=[("stop", EarlyStopping(patience=2, sink=lambda *a: None))],
        early_stopping=True,
        n_iter_no_change=1000,
        max_epochs=300,
        lr=0.05,
        compute_sharpness=False,
        random_state=0,
    ).fit(X, y)
    assert clf.n_iter_ < 300  # skorch's EarlyStopping on valid_loss stopped it
    assert "valid_loss" in clf.net_.history[-1]
