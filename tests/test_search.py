"""LockstepGridSearchCV gives GridSearchCV's results."""

import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import FitFailedWarning
from sklearn.metrics import f1_score, make_scorer
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdynloss import DynamicalLossClassifier, LockstepGridSearchCV, make_spiral

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _assert_same_results(a, b):
    assert a.cv_results_.keys() == b.cv_results_.keys()
    for key, expected in b.cv_results_.items():
        got = a.cv_results_[key]
        if "time" in key:
            assert np.all(np.asarray(got) >= 0)
        elif key == "params":
            assert got == expected
        elif np.asarray(expected).dtype.kind == "f":
            np.testing.assert_allclose(
                got, expected, rtol=1e-9, atol=1e-12, err_msg=key
            )
        else:
            assert list(got) == list(expected), key
    for name in ("best_params_", "best_index_", "n_splits_", "multimetric_"):
        assert getattr(a, name) == getattr(b, name), name
    if hasattr(b, "best_score_"):
        assert a.best_score_ == pytest.approx(b.best_score_)
    assert (a.refit_time_ >= 0) == (b.refit_time_ >= 0)


def test_spiral_full_batch_equals_grid_search():
    X, y = make_spiral(40)
    clf = DynamicalLossClassifier(
        hidden_layer_sizes=(10,),
        optimizer="sgd",
        lr=0.3,
        momentum=0.0,
        batch_size=-1,
        max_epochs=30,
        dtype="float64",
        random_state=0,
        compute_sharpness=False,
    )
    grid = {"amplitude": [1, 5, 20], "period": [1, 3], "lr": [0.3, 0.5]}
    a = LockstepGridSearchCV(clf, grid, cv=4).fit(X, y)
    b = GridSearchCV(clf, grid, cv=4).fit(X, y)
    _assert_same_results(a, b)
    np.testing.assert_allclose(
        a.best_estimator_.predict_proba(X),
        b.best_estimator_.predict_proba(X),
        atol=1e-6,
    )


def test_digits_pipeline_dataframe_string_labels_and_multimetric():
    X, y = load_digits(return_X_y=True)
    X, y = X[:240], np.array(list("abcdefghij"))[y[:240]]
    X = pd.DataFrame(X, columns=[f"p{i}" for i in range(X.shape[1])])
    pipe = make_pipeline(
        StandardScaler(),
        DynamicalLossClassifier(
            hidden_layer_sizes=(16,),
            lr=0.01,
            batch_size=50,  # folds of 192 rows: a last batch of 42
            max_epochs=3,
            period=1,
            dtype="float64",
            random_state=0,
            compute_sharpness=False,
        ),
    )
    grid = {
        "dynamicallossclassifier__amplitude": [1, 10],
        "dynamicallossclassifier__random_state": [0, 1],
        "standardscaler__with_mean": [True, False],
    }
    scoring = {"acc": "accuracy", "f1": make_scorer(f1_score, average="macro")}
    kwargs = dict(scoring=scoring, refit="f1", cv=KFold(5), return_train_score=True)
    a = LockstepGridSearchCV(pipe, grid, **kwargs).fit(X, y)
    b = GridSearchCV(pipe, grid, **kwargs).fit(X, y)
    _assert_same_results(a, b)
    assert list(a.feature_names_in_) == list(X.columns)
    assert set(a.scorer_) == {"acc", "f1"}


def test_callable_scorer_error_score_and_unstackable_candidates(capsys):
    X, y = make_spiral(20)
    clf = DynamicalLossClassifier(
        hidden_layer_sizes=(6,),
        max_epochs=2,
        batch_size=-1,
        dtype="float64",
        random_state=0,
        compute_sharpness=False,
    )
    grid = [
        {"amplitude": [1, 5]},
        {"module": ["cnn"], "image_shape": [(1, 1, 2)]},  # a stack of CNNs
        {"hidden_layer_sizes": [(0,)]},  # fails to fit: error_score
    ]

    def scorer(est, X_, y_):
        return {"acc": est.score(X_, y_)}

    kwargs = dict(scoring=scorer, refit="acc", cv=3, error_score=-1.0)
    with pytest.warns(FitFailedWarning):
        a = LockstepGridSearchCV(clf, grid, verbose=1, **kwargs).fit(X, y)
    with pytest.warns(FitFailedWarning):
        b = GridSearchCV(clf, grid, **kwargs).fit(X, y)
    _assert_same_results(a, b)
    assert (a.cv_results_["mean_test_acc"] == -1.0).sum() == 1
    out = capsys.readouterr()
    assert "group 1/2: 6 fits (2 candidates x 3 folds)" in out.out
    assert "group 2/2: 3 fits (1 candidates x 3 folds)" in out.out
    assert "stack 1/1" in out.err


def test_error_score_raise():
    X, y = make_spiral(10)
    clf = DynamicalLossClassifier(hidden_layer_sizes=(4,), max_epochs=1)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        LockstepGridSearchCV(
            clf, {"hidden_layer_sizes": [(0,)]}, error_score="raise", cv=2
        ).fit(X, y)


def test_n_jobs_runs_groups_in_parallel():
    X, y = make_spiral(20)
    clf = DynamicalLossClassifier(
        hidden_layer_sizes=(6,),
        max_epochs=3,
        batch_size=16,
        dtype="float64",
        random_state=0,
        compute_sharpness=False,
    )
    grid = {"amplitude": [1, 5], "lr": [1e-3, 1e-2]}
    from joblib import parallel_config

    with parallel_config(backend="threading"):
        a = LockstepGridSearchCV(clf, grid, cv=3, n_jobs=2).fit(X, y)
    b = GridSearchCV(clf, grid, cv=3).fit(X, y)
    _assert_same_results(a, b)


def test_same_constructor_as_grid_search():
    import inspect

    ours = inspect.signature(LockstepGridSearchCV).parameters
    theirs = inspect.signature(GridSearchCV).parameters
    assert list(theirs) == list(ours)[: len(theirs)]
    assert list(ours)[len(theirs) :] == ["max_stack_bytes"]


def test_interrupt_stops_the_search_cleanly():
    X, y = make_spiral(20)
    clf = DynamicalLossClassifier(
        hidden_layer_sizes=(6,),
        max_epochs=100000,
        batch_size=-1,
        random_state=0,
        compute_sharpness=False,
    )
    search = LockstepGridSearchCV(clf, {"amplitude": [1, 5]}, cv=2)
    # Warm up, so that the signal arrives while the stack trains.
    clone(search).set_params(estimator__max_epochs=1).fit(X, y)
    before = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(2.0, signal.raise_signal, args=(signal.SIGINT,))
    timer.start()
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        search.fit(X, y)
    timer.cancel()
    assert time.perf_counter() - start < 60
    assert not hasattr(search, "cv_results_")
    assert signal.getsignal(signal.SIGINT) is before
