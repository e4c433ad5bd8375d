"""sharpness_ and sharpness_history_ of the estimator, against dense Hessians."""

import numpy as np
import pytest
from _reference import dense_top_eigenvalue
from sklearn.datasets import make_blobs

from skdynloss import DynamicalLossClassifier, class_weights


@pytest.fixture(scope="module")
def data():
    X, y = make_blobs(
        n_samples=60, centers=3, n_features=2, cluster_std=2.0, random_state=0
    )
    return X, y


TINY = dict(
    hidden_layer_sizes=(4,),
    dtype="float64",
    optimizer="sgd",
    momentum=0.0,
    lr=0.5,
    batch_size=-1,
    amplitude=8.0,
    period=2.0,
    random_state=0,
)


def test_sharpness_is_top_eigenvalue_of_unweighted_cross_entropy(data):
    X, y = data
    clf = DynamicalLossClassifier(max_epochs=7, **TINY).fit(X, y)
    expected = dense_top_eigenvalue(clf.module_, X, y)
    assert clf.sharpness_ == pytest.approx(expected, rel=1e-6)
    info = clf.sharpness_info_
    assert info["n_samples"] == len(X)
    assert info["converged"] and info["n_matvec"] > 0 and info["residual"] < 1e-4


def test_sharpness_is_deterministic_and_can_be_turned_off(data):
    X, y = data
    a = DynamicalLossClassifier(max_epochs=3, **TINY).fit(X, y).sharpness_
    b = DynamicalLossClassifier(max_epochs=3, **TINY).fit(X, y).sharpness_
    assert a == b
    off = DynamicalLossClassifier(max_epochs=3, compute_sharpness=False, **TINY)
    off.fit(X, y)
    assert np.isnan(off.sharpness_)
    assert off.sharpness_info_ == {}


def test_sharpness_subsample(data):
    X, y = data
    clf = DynamicalLossClassifier(max_epochs=3, sharpness_max_samples=25, **TINY)
    clf.fit(X, y)
    assert clf.sharpness_info_["n_samples"] == 25
    again = DynamicalLossClassifier(max_epochs=3, sharpness_max_samples=25, **TINY)
    assert again.fit(X, y).sharpness_ == clf.sharpness_
    # A subsample's Hessian differs from the full one.
    assert (
        clf.sharpness_
        != DynamicalLossClassifier(max_epochs=3, **TINY).fit(X, y).sharpness_
    )


def test_history_tracks_the_dynamical_loss_and_cross_entropy(data):
    X, y = data
    clf = DynamicalLossClassifier(
        max_epochs=9, sharpness_every=3, static_last_period=False, **TINY
    ).fit(X, y)
    h = clf.sharpness_history_
    np.testing.assert_array_equal(h["epoch"], [3, 6, 9])
    np.testing.assert_allclose(h["threshold"], 2 / TINY["lr"])
    # The last record was taken at the final parameters: check both eigenvalues there.
    gamma = class_weights(9.0, n_classes=3, amplitude=8.0, period=2.0)
    assert h["cross_entropy"][-1] == pytest.approx(
        dense_top_eigenvalue(clf.module_, X, y), rel=1e-6
    )
    assert h["dynamical"][-1] == pytest.approx(
        dense_top_eigenvalue(clf.module_, X, y, gamma), rel=1e-6
    )
    # Tracking reads, never writes: the fit is the same as without it.
    plain = DynamicalLossClassifier(max_epochs=9, static_last_period=False, **TINY)
    np.testing.assert_array_equal(
        plain.fit(X, y).predict_proba(X), clf.predict_proba(X)
    )


@pytest.mark.parametrize(
    "params, threshold",
    [
        ({"optimizer": "sgd", "momentum": 0.0, "lr": 0.5}, 4.0),
        ({"optimizer": "sgd", "momentum": 0.9, "lr": 0.1}, 38.0),
        ({"optimizer": "adam", "lr": 0.01}, np.nan),
    ],
)
def test_stability_threshold(data, params, threshold):
    X, y = data
    clf = DynamicalLossClassifier(
        **{**TINY, **params, "period": 0.5}, max_epochs=2, sharpness_every=1
    ).fit(X, y)
    np.testing.assert_allclose(clf.sharpness_history_["threshold"], threshold)


def test_no_tracking_gives_empty_history(data):
    X, y = data
    clf = DynamicalLossClassifier(max_epochs=4, **TINY).fit(X, y)
    assert all(len(v) == 0 for v in clf.sharpness_history_.values())
