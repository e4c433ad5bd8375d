"""GridSearchCV on joblib's dask backend gives the sequential search's scores exactly.

Skipped where dask.distributed is not installed (``pip install skdynloss[distributed]``).
"""

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV

from skdynloss import DynamicalLossClassifier

distributed = pytest.importorskip("dask.distributed")

#: Candidates that score differently: a learning rate too small to learn anything in
#: three epochs, and one that learns; a dynamical loss and the plain cross-entropy.
GRID = {"lr": [1e-5, 3e-2], "amplitude": [1.0, 10.0]}


@pytest.fixture(scope="module")
def problem():
    return make_classification(
        n_samples=90,
        n_features=4,
        n_informative=3,
        n_redundant=0,
        n_classes=3,
        n_clusters_per_class=1,
        flip_y=0.1,
        random_state=0,
    )


def _search():
    clf = DynamicalLossClassifier(
        hidden_layer_sizes=(8,),
        max_epochs=3,
        period=1.0,
        batch_size=16,
        compute_sharpness=False,
        device="cpu",
        random_state=0,
    )
    return GridSearchCV(clf, GRID, cv=3, n_jobs=-1, error_score="raise")


def _compare(parallel, sequential):
    scores = sequential.cv_results_["mean_test_score"]
    assert len(np.unique(scores)) > 1, "the grid does not separate the candidates"
    for key in sequential.cv_results_:
        if key.endswith("_test_score"):
            np.testing.assert_array_equal(
                parallel.cv_results_[key], sequential.cv_results_[key], err_msg=key
            )
    assert parallel.cv_results_["params"] == sequential.cv_results_["params"]
    assert parallel.best_params_ == sequential.best_params_


def _run_on_dask(problem, *, processes):
    X, y = problem
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster),
        joblib.parallel_backend("dask"),
    ):
        backend = joblib.parallel.get_active_backend()[0]
        assert "Dask" in type(backend).__name__
        return _search().fit(X, y)


def test_grid_search_on_dask_matches_the_sequential_search(problem):
    X, y = problem
    with joblib.parallel_backend("sequential"):
        sequential = _search().fit(X, y)
    parallel = _run_on_dask(problem, processes=False)
    _compare(parallel, sequential)
    np.testing.assert_array_equal(
        parallel.predict_proba(X), sequential.predict_proba(X)
    )


@pytest.mark.slow
def test_grid_search_on_dask_worker_processes_matches_the_sequential_search(problem):
    # Worker processes: every candidate is pickled there and back.
    X, y = problem
    with joblib.parallel_backend("sequential"):
        sequential = _search().fit(X, y)
    parallel = _run_on_dask(problem, processes=True)
    _compare(parallel, sequential)


# ------------------------------------------------------- the lockstep searches

from scipy.stats import loguniform  # noqa: E402

from skdynloss import (  # noqa: E402
    LockstepGridSearchCV,
    LockstepHalvingGridSearchCV,
    LockstepHalvingRandomSearchCV,
    LockstepRandomizedSearchCV,
)


def _lockstep(cls):
    # Stacks of a few tenths of a second: long enough for the scheduler to hand them
    # to both workers (it steals queued work for an idle worker).
    clf = DynamicalLossClassifier(
        hidden_layer_sizes=(8,),
        max_epochs=20,
        period=1.0,
        batch_size=16,
        compute_sharpness=False,
        random_state=0,
    )
    # Small stacks: every search has several units of work to spread.
    kwargs = dict(cv=3, n_jobs=-1, max_stack_bytes=20_000, error_score="raise")
    grid = {"amplitude": [1.0, 5.0, 20.0], "random_state": [0, 1]}
    if cls is LockstepGridSearchCV:
        return cls(clf, grid, **kwargs)
    if cls is LockstepRandomizedSearchCV:
        space = {"amplitude": loguniform(1, 50), "lr": [1e-3, 3e-2]}
        return cls(clf, space, n_iter=6, random_state=0, **kwargs)
    halving = dict(resource="max_epochs", min_resources=2, max_resources=18)
    if cls is LockstepHalvingGridSearchCV:
        return cls(clf, grid, **halving, **kwargs)
    space = {"amplitude": loguniform(1, 50)}
    return cls(clf, space, n_candidates=6, random_state=0, **halving, **kwargs)


@pytest.mark.parametrize(
    "cls",
    [
        LockstepGridSearchCV,
        LockstepRandomizedSearchCV,
        LockstepHalvingGridSearchCV,
        LockstepHalvingRandomSearchCV,
    ],
    ids=lambda c: c.__name__,
)
def test_lockstep_search_spreads_its_stacks_over_a_dask_cluster(problem, cls):
    X, y = problem
    with joblib.parallel_config(backend="sequential"):
        serial = _lockstep(cls).fit(X, y)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
        joblib.parallel_config(backend="dask"),
        distributed.get_task_stream(client) as stream,
    ):
        spread = _lockstep(cls).fit(X, y)
    workers = {task["worker"] for task in stream.data}
    assert len(workers) == 2, workers
    _compare(spread, serial)
    for key in serial.cv_results_:
        if key.endswith("_score") and not key.startswith(("mean_", "std_", "rank_")):
            np.testing.assert_array_equal(
                spread.cv_results_[key], serial.cv_results_[key], err_msg=key
            )
