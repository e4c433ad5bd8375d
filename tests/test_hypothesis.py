"""Property-based tests: whatever the data and the hyperparameters, a fit either works
(finite probabilities whose rows sum to one) or fails with a clear error.

A clear error is a ValueError or TypeError with a message, raised by this package or
by scikit-learn's validation; never a raw torch RuntimeError or IndexError, an ARPACK
error, or an error from deep inside torch or scipy. Examples are derandomized, so CI
sees the same ones on every run.
"""

import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import NotFittedError

from skdynloss import DynamicalLossClassifier

CLEAR_SOURCES = (os.sep + "skdynloss" + os.sep, os.sep + "sklearn" + os.sep)


def log_uniform(lo, hi):
    """Floats spread over the decades from ``lo`` to ``hi``."""
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda e: 10.0**e)


@st.composite
def problems(draw, *, max_rows=24, max_features=4, max_epochs=3, extreme=False):
    n = draw(st.integers(2, max_rows))
    p = draw(st.integers(1, max_features))
    dtype = draw(st.sampled_from(["float64", "float32", "int64", "bool"]))
    scale = draw(
        st.sampled_from(
            [1.0, 1.0, 1.0, 1e-30, 1e6, 1e30, 1e39, 1e300]
            if extreme
            else [1.0, 1.0, 1.0, 1e-30, 1e6, 1e39]
        )
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = rng.normal(size=(n, p)) * scale
    if draw(st.booleans()):
        X[:, 0] = 0.0  # a constant column
    if draw(st.integers(0, 9)) == 0:
        X[rng.integers(n), rng.integers(p)] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf])
        )
    if dtype == "int64":
        X = np.clip(np.nan_to_num(X), -(2.0**62), 2.0**62).astype(np.int64)
    elif dtype == "bool":
        X = np.nan_to_num(X) > 0
    elif dtype == "float32":
        with np.errstate(over="ignore"):
            X = X.astype(np.float32)

    n_classes = draw(st.integers(1, 4))
    codes = rng.integers(n_classes, size=n)
    kind = draw(st.sampled_from(["int", "str", "float", "bool"]))
    if kind == "str":
        y = np.array(["cat", "dog", "emu", "gnu"])[codes]
    elif kind == "float":
        y = np.array([-1.5, 0.0, 2.25, 1e9])[codes]
    elif kind == "bool":
        y = codes % 2 == 1
    else:
        y = codes * 7 - 3

    sample_weight = draw(
        st.sampled_from([None, None, "random", "zeros", "huge", "tiny"])
    )
    if sample_weight == "random":
        sample_weight = rng.uniform(0, 3, size=n)
    elif sample_weight == "zeros":
        sample_weight = np.zeros(n)
    elif sample_weight == "huge":
        sample_weight = np.ones(n)
        sample_weight[0] = 1e39
    elif sample_weight == "tiny":
        sample_weight = rng.uniform(0, 1e-40, size=n)

    optimizer = draw(st.sampled_from(["adam", "sgd"]))
    params = {
        "amplitude": draw(
            st.one_of(
                st.just(1.0),
                log_uniform(1.0, 1e308 if extreme else 1e6),
            )
        ),
        "period": draw(
            log_uniform(1e-300 if extreme else 1e-3, 1e300 if extreme else 1e3)
        ),
        "shape": draw(st.sampled_from(["triangle", "sine"])),
        "order": draw(st.sampled_from(["cyclic", "random"])),
        "static_last_period": draw(st.booleans()),
        "loss": draw(st.sampled_from(["cross_entropy", "squared_error"])),
        "module": draw(st.sampled_from(["mlp", "mlp", "mlp", "cnn"])),
        "hidden_layer_sizes": tuple(
            draw(st.lists(st.integers(1, 12), min_size=0, max_size=2))
        ),
        "optimizer": optimizer,
        "lr": draw(log_uniform(1e-8, 1e300 if extreme else 1e2)),
        "momentum": draw(st.floats(0.0, 0.999)),
        "weight_decay": draw(st.sampled_from([0.0, 1e-4, 1.0])),
        "batch_size": draw(st.sampled_from([-1, 1, 2, 5, 64])),
        "max_epochs": draw(st.integers(1, max_epochs)),
        "early_stopping": draw(st.booleans()),
        "validation_fraction": draw(st.none() | st.floats(0.05, 0.5)),
        "n_iter_no_change": draw(st.integers(1, 3)),
        "tol": draw(st.sampled_from([0.0, 1e-4, 0.5])),
        "dtype": draw(st.sampled_from(["float32", "float64"])),
        "compute_sharpness": draw(st.booleans()),
        "sharpness_every": draw(st.sampled_from([None, None, 1])),
        "sharpness_max_samples": draw(st.sampled_from([1, 3, 2048])),
        "random_state": draw(st.integers(0, 2**31 - 1)),
        "device": "cpu",
    }
    return X, y, sample_weight, params


def _raised_in(exc):
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename


def check_fit(X, y, sample_weight, params):
    clf = DynamicalLossClassifier(**params)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(X, y, sample_weight=sample_weight)
    except (ValueError, TypeError) as exc:
        where = _raised_in(exc)
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        assert any(source in where for source in CLEAR_SOURCES), (
            f"{type(exc).__name__} raised in {where}, not by skdynloss or "
            f"scikit-learn's validation: {exc}"
        )
        assert not hasattr(clf, "net_"), "a failed fit left a fitted estimator"
        with pytest.raises(NotFittedError):
            clf.predict(X)
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proba = clf.predict_proba(X)
        labels = clf.predict(X)
    assert proba.shape == (len(X), len(clf.classes_))
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
    assert np.isin(labels, np.unique(y)).all()
    np.testing.assert_array_equal(labels, clf.classes_[proba.argmax(axis=1)])
    assert clf.n_iter_ >= 1 or clf.diverged_
    assert len(clf.loss_curve_) == clf.n_iter_
    assert np.isfinite(clf.loss_curve_).all()
    assert clf.class_weights_.shape == (clf.n_iter_, len(clf.classes_))
    if params["compute_sharpness"]:
        assert isinstance(clf.sharpness_, float)
    if clf.n_iter_:
        assert clf.loss_ == clf.loss_curve_[-1]
    assert len(clf.base_loss_curve_) == clf.n_iter_
    if params["early_stopping"] and params["validation_fraction"] is not None:
        assert len(clf.validation_scores_) == clf.n_iter_
        assert clf.best_loss_ is None
    else:
        assert clf.validation_scores_ is None
        assert clf.best_loss_ == min(clf.loss_curve_, default=math.inf)
    return clf


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(problems())
def test_any_fit_works_or_fails_clearly(problem):
    check_fit(*problem)


@pytest.mark.slow
@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(problems(max_rows=60, max_features=9, max_epochs=6, extreme=True))
def test_any_fit_works_or_fails_clearly_extremes(problem):
    check_fit(*problem)


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(problems(), st.integers(1, 3), st.booleans())
def test_partial_fit_and_warm_start_work_or_fail_clearly(problem, calls, warm):
    """Later calls on new rows of the same classes: they work, or fail clearly and
    leave the estimator as it was."""
    X, y, sample_weight, params = problem
    clf = check_fit(X, y, sample_weight, params)
    if clf is None:
        return
    clf.set_params(warm_start=warm)
    rng = np.random.default_rng(params["random_state"])
    for _ in range(calls):
        rows = rng.permutation(len(X))
        before = clf.predict_proba(X), clf.n_iter_
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if warm:
                    clf.fit(X[rows], y[rows])
                else:
                    clf.partial_fit(X[rows], y[rows])
        except (ValueError, TypeError) as exc:
            assert str(exc).strip()
            assert any(source in _raised_in(exc) for source in CLEAR_SOURCES), exc
            np.testing.assert_array_equal(clf.predict_proba(X), before[0])
            assert clf.n_iter_ == before[1]
            continue
        proba = clf.predict_proba(X)
        assert np.isfinite(proba).all()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
        assert len(clf.loss_curve_) == clf.n_iter_ >= before[1]


# ----------------------------------------------------------- save and load

import io  # noqa: E402
import json  # noqa: E402

import torch  # noqa: E402

from skdynloss import _persistence, load, save  # noqa: E402

OPTIMIZERS = ["adam", "sgd", "AdamW", "RMSprop", "Adagrad", "LBFGS"]


def _copy(clf):
    file = io.BytesIO()
    save(clf, file)
    file.seek(0)
    return load(file)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(problems(), st.sampled_from(OPTIMIZERS))
def test_any_fitted_model_saves_loads_and_continues_as_the_original(problem, name):
    """Whatever was fitted with whichever optimizer, the loaded copy predicts and
    continues training exactly as the original (or both refuse, alike)."""
    X, y, sample_weight, params = problem
    optimizer = name if name in ("adam", "sgd") else getattr(torch.optim, name)
    clf = check_fit(X, y, sample_weight, {**params, "optimizer": optimizer})
    if clf is None:
        return
    copy = _copy(clf)
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    outcomes = []
    for estimator in (clf, copy):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if params["early_stopping"]:
                    estimator.set_params(warm_start=True, max_epochs=1).fit(X, y)
                else:
                    estimator.partial_fit(X, y)
        except (ValueError, TypeError) as exc:
            outcomes.append(type(exc))
        else:
            outcomes.append(None)
    assert outcomes[0] == outcomes[1]
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    assert copy.n_iter_ == clf.n_iter_
    np.testing.assert_array_equal(copy.loss_curve_, clf.loss_curve_)


@pytest.fixture(scope="module")
def saved_bytes():
    X, y = np.random.default_rng(0).normal(size=(30, 3)), np.arange(30) % 3
    clf = DynamicalLossClassifier(
        hidden_layer_sizes=(4,),
        max_epochs=2,
        period=1.0,
        compute_sharpness=False,
        early_stopping=True,
        validation_fraction=0.3,
        random_state=3,
        device="cpu",
    ).fit(X, y)
    file = io.BytesIO()
    save(clf, file)
    return file.getvalue(), clf, X


def _loads(data):
    """load's verdict on bytes: the estimator, or the ValueError (nothing else)."""
    try:
        return load(io.BytesIO(data))
    except ValueError as exc:
        assert str(exc).strip()
        return exc


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_damaged_files_are_refused_or_load_the_same_model(saved_bytes, data):
    original, clf, X = saved_bytes
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = data.draw(st.integers(0, len(damaged) - 1))
        if kind == "flip":
            damaged[at] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del damaged[at:]
        elif kind == "insert":
            damaged[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        else:
            del damaged[at : at + data.draw(st.integers(1, 16))]
        if not damaged:
            break
    result = _loads(bytes(damaged))
    if not isinstance(result, ValueError):
        np.testing.assert_array_equal(result.predict_proba(X), clf.predict_proba(X))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["<U536870911", "|O", "__tuple__", "adam", "LBFGS"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["__ndarray__", "__tuple__", "shape", "values", "x", "lr"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=8,
)


def _paths(value, path=()):
    """Every place in the JSON text a value can be replaced."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*path, i))


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_forged_json_loads_a_consistent_model_or_is_refused(saved_bytes, data):
    """An edited JSON text with a recomputed checksum: load refuses it with a
    ValueError, or gives an estimator that predicts and that save accepts again."""
    original, clf, X = saved_bytes
    payload = torch.load(io.BytesIO(original), weights_only=True)
    meta = json.loads(payload["meta"])
    paths = [p for p in _paths(meta["classifier"], ("classifier",)) if len(p) > 1]
    path = data.draw(st.sampled_from(paths))
    value = data.draw(json_values)
    target = meta
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    payload.update(meta=text, sha256=_persistence.checksum(text, payload["tensors"]))
    file = io.BytesIO()
    torch.save(payload, file)
    result = _loads(file.getvalue())
    if isinstance(result, ValueError):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proba = result.predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
    _copy(result)
