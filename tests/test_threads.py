"""The thread policy: torch's intra-op threads for a fit and a prediction."""

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback

from skdynloss import DynamicalLossClassifier
from skdynloss._threads import WORK_PER_THREAD, dense_macs, threads_for, torch_threads


@pytest.fixture
def four_threads():
    """torch set to 4 intra-op threads for the test (more than the work needs)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(4)
    yield 4
    torch.set_num_threads(previous)


class ThreadsSeen(Callback):
    """Records torch's thread count at every epoch's end."""

    def __init__(self):
        self.seen = []

    def on_epoch_end(self, net, **kwargs):
        self.seen.append(torch.get_num_threads())


def _data(n=120, n_features=4, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, n_features).astype(np.float32)
    return X, (X[:, 0] > 0).astype(int)


def test_dense_macs():
    assert dense_macs((4, 100, 3)) == 4 * 100 + 100 * 3
    assert dense_macs((10, 2)) == 20


def test_threads_for_small_work_is_one_thread():
    assert threads_for(64, dense_macs((4, 100, 3)), 8) == 1
    assert threads_for(64, dense_macs((40, 100, 3)), 8) == 1


def test_threads_for_grows_with_work_and_is_capped():
    macs = 1_000_000
    assert threads_for(2 * WORK_PER_THREAD // macs, macs, 8) == 2
    assert threads_for(5 * WORK_PER_THREAD // macs, macs, 8) == 5
    assert threads_for(100 * WORK_PER_THREAD // macs, macs, 8) == 8
    assert threads_for(100 * WORK_PER_THREAD // macs, macs, 1) == 1
    # A forward pass alone is a third of a training step.
    assert threads_for(3 * WORK_PER_THREAD // macs, macs, 8, training=False) == 1
    assert threads_for(6 * WORK_PER_THREAD // macs, macs, 8, training=False) == 2


def test_torch_threads_sets_and_restores(four_threads):
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 4
    with pytest.raises(RuntimeError, match="boom"), torch_threads(2):
        assert torch.get_num_threads() == 2
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 4
    with torch_threads(None):
        assert torch.get_num_threads() == 4


def test_fit_runs_small_work_on_one_thread_and_restores(four_threads):
    X, y = _data()
    seen = ThreadsSeen()
    clf = DynamicalLossClassifier(
        max_epochs=3, callbacks=[("seen", seen)], random_state=0
    ).fit(X, y)
    assert set(dict(clf.net_.callbacks_)["seen"].seen) == {1}
    assert torch.get_num_threads() == 4
    clf.partial_fit(X, y)
    assert dict(clf.net_.callbacks_)["seen"].seen[-1] == 1
    assert torch.get_num_threads() == 4


@pytest.mark.parametrize(("n_threads", "expected"), [(2, 2), (3, 3), (-1, 4)])
def test_n_threads_overrides_the_policy(four_threads, n_threads, expected):
    X, y = _data()
    clf = DynamicalLossClassifier(
        max_epochs=2,
        callbacks=[("seen", ThreadsSeen())],
        n_threads=n_threads,
        random_state=0,
    ).fit(X, y)
    assert set(dict(clf.net_.callbacks_)["seen"].seen) == {expected}
    assert torch.get_num_threads() == 4


def test_prediction_uses_the_policy_and_restores(four_threads):
    X, y = _data()
    clf = DynamicalLossClassifier(max_epochs=2, random_state=0).fit(X, y)
    seen = []
    clf.module_.register_forward_hook(
        lambda *args: seen.append(torch.get_num_threads())
    )
    clf.predict(X)
    clf.set_params(n_threads=3).predict_proba(X)
    assert seen == [1, 3]
    assert torch.get_num_threads() == 4


def test_large_batches_of_wide_layers_get_more_threads(four_threads):
    X, y = _data(n=4000, n_features=100)
    clf = DynamicalLossClassifier(hidden_layer_sizes=(256,), batch_size=-1)
    # 4000 rows x (100 x 256 + 256 x 2) multiply-adds: 1e8 (5 threads' worth), capped
    # at torch's 4.
    assert clf._threads(X, y) == 4
    assert clf.set_params(batch_size=64)._threads(X, y) == 1
    assert clf.set_params(n_threads=2)._threads(X, y) == 2
    # The convolutional networks count their convolutions.
    signals = DynamicalLossClassifier(module="cnn1d", batch_size=-1)
    assert signals._threads(X, y) == 4
    assert signals.set_params(batch_size=16)._threads(X, y) == 1
    images = DynamicalLossClassifier(module="cnn", batch_size=-1)
    assert images._threads(*_data(n=1000, n_features=64)) == 4
    assert images.set_params(batch_size=2)._threads(*_data(n=1000, n_features=64)) == 1
    # A callable module's work is unknown: torch's setting as it is.
    assert DynamicalLossClassifier(module=torch.nn.Linear)._threads(X, y) is None


def test_threads_restored_when_the_fit_fails(four_threads):
    X, y = _data()
    with pytest.raises(ValueError):
        DynamicalLossClassifier(max_epochs=1).fit(X, np.zeros(len(X)))
    assert torch.get_num_threads() == 4


@pytest.mark.parametrize("bad", [0, -2, 1.5, "auto"])
def test_bad_n_threads_is_a_clear_error(bad):
    X, y = _data()
    with pytest.raises(InvalidParameterError, match="n_threads"):
        DynamicalLossClassifier(max_epochs=1, n_threads=bad).fit(X, y)
