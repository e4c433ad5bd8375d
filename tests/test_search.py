"""The lockstep searches give their scikit-learn twins' results."""

import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
from scipy.stats import loguniform, uniform
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import FitFailedWarning
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.metrics import f1_score, make_scorer
from sklearn.model_selection import (
    GridSearchCV,
    HalvingGridSearchCV,
    HalvingRandomSearchCV,
    KFold,
    RandomizedSearchCV,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from skdynloss import (
    DynamicalLossClassifier,
    LockstepGridSearchCV,
    LockstepHalvingGridSearchCV,
    LockstepHalvingRandomSearchCV,
    LockstepRandomizedSearchCV,
    make_spiral,
)
from skdynloss._lockstep import balanced_chunks, default_max_stack_bytes, model_bytes
from skdynloss.app import reproduce

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


# ------------------------------------------------- the other searches, and n_jobs

TWINS = [
    (LockstepGridSearchCV, GridSearchCV),
    (LockstepRandomizedSearchCV, RandomizedSearchCV),
    (LockstepHalvingGridSearchCV, HalvingGridSearchCV),
    (LockstepHalvingRandomSearchCV, HalvingRandomSearchCV),
]


def _close_results(a, b, rtol=1e-6):
    """cv_results_ within 1e-6 (float64 fits, stacked against alone)."""
    assert a.cv_results_.keys() == b.cv_results_.keys()
    for key, expected in b.cv_results_.items():
        got = a.cv_results_[key]
        if "time" in key:
            assert np.all(np.asarray(got) >= 0), key
        elif key == "params":
            assert got == expected
        elif np.asarray(expected).dtype.kind == "f":
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-9, err_msg=key)
        else:
            assert list(got) == list(expected), key
    for name in ("best_params_", "best_index_", "n_splits_", "multimetric_"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("n_resources_", "n_candidates_", "n_iterations_", "min_resources_"):
        assert getattr(a, name, None) == getattr(b, name, None), name


def _digits(n=180):
    X, y = load_digits(return_X_y=True)
    return X[:n], y[:n]


def _mlp(**kw):
    params = dict(
        hidden_layer_sizes=(12,),
        lr=0.01,
        batch_size=40,
        max_epochs=3,
        period=1,
        dtype="float64",
        random_state=0,
        compute_sharpness=False,
    )
    return DynamicalLossClassifier(**{**params, **kw})


@pytest.mark.parametrize(("ours", "theirs"), TWINS, ids=lambda c: c.__name__)
def test_same_constructor_as_the_twin(ours, theirs):
    import inspect

    mine = list(inspect.signature(ours).parameters)
    twin = list(inspect.signature(theirs).parameters)
    assert mine == [*twin, "max_stack_bytes"]
    assert issubclass(ours, theirs)
    # The twin's candidate schedule, not a copy of it.
    assert ours._run_search is theirs._run_search


def test_randomized_pipeline_digits_scorer_list_equals_randomized_search():
    X, y = _digits()
    pipe = make_pipeline(StandardScaler(), _mlp())
    space = {
        "dynamicallossclassifier__amplitude": loguniform(1, 50),
        "dynamicallossclassifier__period": uniform(0.5, 2),
        "dynamicallossclassifier__lr": [0.01, 0.03],
        "standardscaler__with_std": [True, False],
    }
    kwargs = dict(
        n_iter=8,
        scoring=["accuracy", "neg_log_loss"],
        refit="neg_log_loss",
        cv=KFold(3),
        random_state=0,
        return_train_score=True,
    )
    a = LockstepRandomizedSearchCV(pipe, space, **kwargs).fit(X, y)
    b = RandomizedSearchCV(pipe, space, **kwargs).fit(X, y)
    _close_results(a, b)
    assert len(np.unique(a.cv_results_["mean_test_neg_log_loss"])) == 8
    np.testing.assert_allclose(
        a.predict_proba(X), b.predict_proba(X), rtol=1e-6, atol=1e-9
    )


def test_halving_grid_n_samples_equals_halving_grid_search():
    X, y = _digits(270)
    grid = {"amplitude": [1, 5, 20], "period": [0.5, 1, 2], "random_state": [0, 1]}
    kwargs = dict(factor=3, cv=KFold(3), min_resources=60, random_state=0)
    a = LockstepHalvingGridSearchCV(_mlp(), grid, **kwargs).fit(X, y)
    b = HalvingGridSearchCV(_mlp(), grid, **kwargs).fit(X, y)
    _close_results(a, b)
    assert a.n_resources_ == [60, 180]
    assert a.best_score_ == pytest.approx(b.best_score_)


def test_halving_random_max_epochs_equals_halving_random_search():
    X, y = make_spiral(40)
    space = {"amplitude": loguniform(1, 60), "period": uniform(0.5, 3)}
    kwargs = dict(
        n_candidates=9,
        resource="max_epochs",
        min_resources=2,
        max_resources=18,
        cv=3,
        random_state=0,
    )
    clf = _mlp(hidden_layer_sizes=(8,), lr=0.1, batch_size=-1)
    a = LockstepHalvingRandomSearchCV(clf, space, **kwargs).fit(X, y)
    b = HalvingRandomSearchCV(clf, space, **kwargs).fit(X, y)
    _close_results(a, b)
    assert a.n_resources_ == [2, 6, 18]
    assert a.best_estimator_.n_iter_ == 18


@pytest.mark.parametrize(("ours", "theirs"), TWINS, ids=lambda c: c.__name__)
def test_error_score_both_ways(ours, theirs):
    X, y = make_spiral(30)
    clf = _mlp(hidden_layer_sizes=(6,), batch_size=-1, max_epochs=2)
    space = {"amplitude": [1, 5, 20], "hidden_layer_sizes": [(6,), (0,)]}
    if "Halving" in ours.__name__:
        extra = dict(resource="max_epochs", min_resources=1, max_resources=3)
    else:
        extra = {}
    if "Random" in ours.__name__:
        extra["random_state" if "Halving" in ours.__name__ else "n_iter"] = (
            0 if "Halving" in ours.__name__ else 6
        )
    kwargs = dict(cv=3, error_score=-1.0, **extra)
    with pytest.warns(FitFailedWarning):
        a = ours(clf, space, **kwargs).fit(X, y)
    with pytest.warns(FitFailedWarning):
        b = theirs(clf, space, **kwargs).fit(X, y)
    _close_results(a, b)
    assert (a.cv_results_["mean_test_score"] == -1.0).any()
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        ours(clf, space, **{**kwargs, "error_score": "raise"}).fit(X, y)


def _shift(X, shift):
    return X + shift.mean()


def test_pipeline_groups_by_value_not_by_printed_form():
    # Two long arrays that print alike (numpy elides their middle): the earlier
    # step differs, and the two candidates must not share one fitted transformer.
    a1 = np.zeros(5000)
    a2 = a1.copy()
    a2[2500] = 5000.0  # mean 1: shifts every feature by 1
    assert repr({"shift": a1}) == repr({"shift": a2})
    pipe = make_pipeline(
        FunctionTransformer(_shift, kw_args={"shift": a1}),
        _mlp(hidden_layer_sizes=(6,), batch_size=-1, max_epochs=5, lr=0.3),
    )
    grid = {"functiontransformer__kw_args": [{"shift": a1}, {"shift": a2}]}
    X, y = make_spiral(30)
    a = LockstepGridSearchCV(pipe, grid, cv=3, scoring="neg_log_loss").fit(X, y)
    b = GridSearchCV(pipe, grid, cv=3, scoring="neg_log_loss").fit(X, y)
    scores = b.cv_results_["mean_test_score"]
    assert abs(scores[0] - scores[1]) > 1e-3
    np.testing.assert_allclose(a.cv_results_["mean_test_score"], scores, rtol=1e-9)


def test_n_jobs_splits_one_group_into_stacks_with_identical_results(capsys):
    X, y = make_spiral(30)
    clf = _mlp(hidden_layer_sizes=(6,), batch_size=-1, max_epochs=4, lr=0.3)
    grid = {"amplitude": [1, 5, 20], "period": [0.5, 2]}  # 18 fits, one group
    one = LockstepGridSearchCV(
        clf, grid, cv=3, n_jobs=1, max_stack_bytes=200_000, verbose=1
    ).fit(X, y)
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "group 1/1: 18 fits" in out
    assert "group 1/1 part 3/3" in out  # 8 models at most per stack: 6, 6 and 6
    two = LockstepGridSearchCV(clf, grid, cv=3, n_jobs=2, max_stack_bytes=200_000)
    two.fit(X, y)
    for key in ("mean_test_score", "split0_test_score", "split2_test_score"):
        np.testing.assert_array_equal(one.cv_results_[key], two.cv_results_[key])
    assert one.best_params_ == two.best_params_


def test_a_group_is_cut_into_balanced_stacks(capsys):
    X, y = make_spiral(30)
    clf = _mlp(hidden_layer_sizes=(6,), batch_size=-1, max_epochs=2)
    per_model = model_bytes(clf, len(X) * 2 // 3, 2, 3)
    search = LockstepGridSearchCV(
        clf, {"amplitude": [1, 5, 20]}, cv=3, max_stack_bytes=4 * per_model, verbose=1
    ).fit(X, y)
    err = capsys.readouterr().err
    # 9 fits at most 4 per stack: three stacks of 3 (not 4, 4 and 1).
    assert err.count("(3 models)") >= 3 and "(4 models)" not in err
    assert "group 1/1 part 3/3" in err
    assert len(search.cv_results_["params"]) == 3


def test_default_stack_bound_on_a_cpu_is_cache_sized_and_shared_with_reproduce(
    monkeypatch, capsys
):
    bound = default_max_stack_bytes("cpu")
    # A few caches' worth (megabytes), not a share of the machine's memory.
    assert 2**20 <= bound <= 2**28
    assert default_max_stack_bytes() == bound
    assert reproduce.STACK_BYTES == bound
    # The reproductions cut their stacks by the same rule by default.
    X, y = make_spiral(100)
    ests = [
        reproduce.paper_estimator(
            amplitude=a, max_epochs=2, sharpness_every=None, compute_sharpness=False
        )
        for a in range(1, 21)
    ]
    per_model = model_bytes(ests[0], len(X), 2, 3)
    units = reproduce._units(ests, [{"X": X, "y": y}] * 20, None)
    size = max(1, bound // per_model)
    assert [len(u) for u in units] == [len(c) for c in balanced_chunks(ests, size)]
    # So does a search: 80 fits of one group, cut into the stacks the bound allows.
    clf = DynamicalLossClassifier(
        hidden_layer_sizes=(30,), batch_size=-1, max_epochs=1, compute_sharpness=False
    )
    X, y = make_spiral()
    grid = {"amplitude": [1, 5, 20, 70], "period": [1, 3, 10, 30]}
    LockstepGridSearchCV(clf, grid, cv=5, verbose=1).fit(X, y)
    size = bound // model_bytes(clf, 240, 2, 3)
    n_stacks = -(-80 // size)
    err = capsys.readouterr().err
    if n_stacks > 1:
        assert f"part {n_stacks}/{n_stacks}" in err
    else:
        assert "part" not in err
    # On CUDA the bound is memory.
    monkeypatch.setattr(
        "skdynloss._classifier._available_memory", lambda device: 8 * 2**30
    )
    assert default_max_stack_bytes("cuda:0") == 2 * 2**30


def _maybe_fail(X, fail):
    if fail:
        raise ValueError("this transformer fails on purpose")
    return X


def test_failing_earlier_step_gives_error_scores_as_the_twin():
    X, y = make_spiral(30)
    pipe = make_pipeline(
        FunctionTransformer(_maybe_fail, kw_args={"fail": False}),
        _mlp(hidden_layer_sizes=(6,), batch_size=-1, max_epochs=3, lr=0.3),
    )
    grid = {
        "functiontransformer__kw_args": [{"fail": False}, {"fail": True}],
        "dynamicallossclassifier__amplitude": [1, 5],
    }
    kwargs = dict(cv=3, error_score=-1.0, max_stack_bytes=None)
    with pytest.warns(FitFailedWarning, match="fails on purpose"):
        a = LockstepGridSearchCV(pipe, grid, **kwargs).fit(X, y)
    kwargs.pop("max_stack_bytes")
    with pytest.warns(FitFailedWarning):
        b = GridSearchCV(pipe, grid, **kwargs).fit(X, y)
    _close_results(a, b)
    # ParameterGrid sorts the keys: the amplitude varies slowest.
    failed = list(a.cv_results_["mean_test_score"] == -1.0)
    assert failed == [False, True, False, True]
    with pytest.raises(ValueError, match="fails on purpose"):
        LockstepGridSearchCV(pipe, grid, cv=3, error_score="raise").fit(X, y)
