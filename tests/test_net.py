"""The skorch extension points behind the fast data path keep skorch's behaviour."""

import numpy as np
import pytest
import torch
from skorch.callbacks import EpochScoring, LRScheduler
from skorch.history import History

from skdynloss import DynamicalLossClassifier
from skdynloss._net import FastHistory, TensorBatches, TensorData


def make_history(cls):
    h = cls()
    for epoch in range(1, 5):
        h.new_epoch()
        h.record("epoch", epoch)
        h.record("train_loss", 1.0 / epoch)
        for b in range(3):
            h.new_batch()
            h.record_batch("train_loss", epoch + b / 10)
    return h


@pytest.mark.parametrize(
    "index",
    [
        -1,
        0,
        slice(1, 3),
        (-1, "train_loss"),
        (0, "batches"),
        (-1, "batches", -1),
        (-1, "batches", slice(None), "train_loss"),
        (slice(None), "train_loss"),
        (slice(None), ("epoch", "train_loss")),
        (slice(None), "batches", -1, "train_loss"),
    ],
)
def test_fast_history_indexes_like_skorch_history(index):
    assert make_history(FastHistory)[index] == make_history(History)[index]


def test_fast_history_missing_key_raises_like_skorch():
    with pytest.raises(KeyError):
        make_history(FastHistory)[-1, "nope"]


def test_tensor_batches_cover_every_row_once_per_epoch_and_are_seeded():
    X = torch.arange(23, dtype=torch.float32)[:, None]
    y = torch.arange(23)
    data = TensorData(X, y)
    batches = TensorBatches(
        data, 5, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    assert len(batches) == 5
    epoch1 = torch.cat([b[1] for b in batches])
    epoch2 = torch.cat([b[1] for b in batches])
    assert sorted(epoch1.tolist()) == list(range(23))
    assert sorted(epoch2.tolist()) == list(range(23))
    assert not torch.equal(epoch1, epoch2)  # reshuffled every epoch
    for xb, yb in batches:
        assert torch.equal(xb[:, 0].long(), yb)  # rows stay paired
    again = TensorBatches(
        data, 5, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(torch.cat([b[1] for b in again]), epoch1)


def test_full_batch_yields_the_data_itself():
    X, y = torch.randn(7, 2), torch.arange(7)
    ((xb, yb),) = list(TensorBatches(TensorData(X, y), -1, shuffle=True))
    assert xb is X and yb is y


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    return X, y


def test_history_has_skorchs_columns(data):
    X, y = data
    clf = DynamicalLossClassifier(
        max_epochs=4, period=1, batch_size=32, compute_sharpness=False, random_state=0
    ).fit(X, y)
    h = clf.net_.history
    assert h[:, "epoch"] == [1, 2, 3, 4]
    assert h[-1, "train_batch_count"] == 3
    assert [b["train_batch_size"] for b in h[-1, "batches"]] == [32, 32, 26]
    # The epoch loss is the size-weighted mean of the batch losses, as in skorch.
    batch_losses = h[-1, "batches", :, "train_loss"]
    expected = np.average(batch_losses, weights=[32, 32, 26])
    assert h[-1, "train_loss"] == pytest.approx(expected)
    assert clf.loss_curve_ == h[:, "train_loss"]


def test_skorch_callbacks_work_through_the_estimator(data):
    X, y = data
    # A cyclical learning rate, a baseline the paper compares with.
    cyclic = LRScheduler(
        policy=torch.optim.lr_scheduler.CyclicLR,
        base_lr=1e-3,
        max_lr=1e-2,
        step_size_up=3,
        step_every="batch",
        cycle_momentum=False,
    )
    scoring = EpochScoring("accuracy", on_train=True, name="train_acc")
    clf = DynamicalLossClassifier(
        max_epochs=3,
        period=1,
        batch_size=32,
        compute_sharpness=False,
        random_state=0,
        callbacks=[("cyclic_lr", cyclic), scoring],
    ).fit(X, y)
    h = clf.net_.history
    assert len(h[:, "train_acc"]) == 3
    lrs = h[:, "batches", :, "event_lr"]
    flat = [lr for epoch in lrs for lr in epoch]
    assert min(flat) == pytest.approx(1e-3) and max(flat) > 5e-3
