"""The skorch extension points behind the fast data path keep skorch's behaviour."""

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback, EpochScoring, LRScheduler
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


class BatchAccuracy(Callback):
    """Reads the record at every epoch end and counts correct predictions itself."""

    def initialize(self):
        self.seen, self.accuracy = [], []
        return self

    def on_epoch_begin(self, net, **kwargs):
        self._correct = self._n = 0

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if training:
            self._correct += (y_pred.argmax(1) == batch[1]).sum().item()
            self._n += len(batch[1])

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        self.seen.append((row["train_cross_entropy"], row["train_accuracy"]))
        self.accuracy.append(self._correct / self._n)


@pytest.mark.parametrize("amplitude", [1.0, 30.0])
def test_record_is_what_a_user_callback_counts_in_the_same_forward_passes(
    data, amplitude
):
    # The record is complete at every epoch end, where a user's callback reads it, and
    # equals what that callback measures from the same forward passes; a user callback
    # changes nothing in the fit.
    X, y = data
    params = dict(
        max_epochs=6,
        amplitude=amplitude,
        period=2,
        batch_size=32,
        dtype="float64",
        compute_sharpness=False,
        random_state=0,
    )
    alone = DynamicalLossClassifier(**params).fit(X, y)
    watched = DynamicalLossClassifier(callbacks=[BatchAccuracy()], **params).fit(X, y)
    watcher = watched.net_.callbacks_[-1][1]
    seen = np.array(watcher.seen)
    assert len(seen) == 6
    np.testing.assert_allclose(seen[:, 0], watched.dynamics_["cross_entropy"])
    np.testing.assert_allclose(seen[:, 1], watched.dynamics_["accuracy"])
    np.testing.assert_allclose(watched.dynamics_["accuracy"], watcher.accuracy)
    for key in ("loss", "cross_entropy", "accuracy", "class_weights"):
        np.testing.assert_array_equal(alone.dynamics_[key], watched.dynamics_[key])
    if amplitude == 1.0:
        # Plain cross-entropy: the record's mean cross-entropy is skorch's train_loss.
        np.testing.assert_allclose(
            alone.dynamics_["cross_entropy"], alone.loss_curve_, rtol=1e-12
        )
    else:
        assert not np.allclose(
            alone.dynamics_["cross_entropy"], alone.loss_curve_, rtol=1e-3
        )


def test_verbose_shows_one_progress_bar_and_changes_nothing(data, capsys):
    X, y = data
    params = dict(max_epochs=30, period=1, batch_size=32, compute_sharpness=False)
    quiet = DynamicalLossClassifier(random_state=0, **params).fit(X, y)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # verbose=0 prints nothing
    loud = DynamicalLossClassifier(random_state=0, verbose=1, **params).fit(X, y)
    out = capsys.readouterr()
    assert out.out == ""
    assert "30/30" in out.err and "acc=" in out.err and "loss=" in out.err
    # A pipe or file gets a bounded number of updates (at most one per tenth of the fit
    # or ten seconds), not one per epoch.
    assert out.err.count("\r") + out.err.count("\n") <= 15
    for key in ("loss", "cross_entropy", "accuracy"):
        np.testing.assert_array_equal(loud.dynamics_[key], quiet.dynamics_[key])
    DynamicalLossClassifier(random_state=0, verbose=2, **params).fit(X, y)
    err = capsys.readouterr().err
    assert "epoch 30:" in err  # the last epoch is always logged
    assert err.count("epoch ") <= 5  # throttled to about one line a second


def test_every_implemented_hook_is_called(data):
    # notify skips the callbacks' inherited no-op hooks; whatever a callback
    # implements, in its class or on the instance, must still be called, once.
    X, y = data
    seen = []

    class Hooks(Callback):
        def on_train_begin(self, net, **kwargs):
            seen.append("train_begin")

        def on_batch_begin(self, net, training=False, **kwargs):
            seen.append("batch_begin")

    cb = Hooks()
    # On the instance (deep-copied with it for every fit).
    cb.on_epoch_end = lambda net, **kwargs: seen.append("epoch_end")
    clf = DynamicalLossClassifier(
        max_epochs=2,
        period=1,
        batch_size=32,
        compute_sharpness=False,
        callbacks=[cb],
    ).fit(X, y)
    assert seen.count("train_begin") == 1
    assert seen.count("batch_begin") == 2 * 3
    assert seen.count("epoch_end") == 2
    # Callbacks replaced after initialisation are seen too.
    clf.net_.callbacks_ = [*clf.net_.callbacks_, ("late", Hooks())]
    clf.net_.partial_fit(torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y))
    assert seen.count("train_begin") == 1 + 2  # the fit's copy and the late one
