"""The skorch extension points behind the fast data path keep skorch's behaviour."""

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback, EpochScoring, LRScheduler
from skorch.history import History

from skdynloss import DynamicalLossClassifier
from skdynloss._callbacks import LossClock
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


def test_shuffling_the_whole_epoch_or_each_batch_gives_the_same_batches(monkeypatch):
    # Small data are permuted once per epoch and sliced; data above permute_limit are
    # gathered batch by batch. The batches must not depend on which.
    X = torch.randn(23, 2)
    y = torch.arange(23)

    def epochs(limit):
        monkeypatch.setattr(TensorBatches, "permute_limit", limit)
        batches = TensorBatches(
            TensorData(X, y),
            5,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
        )
        return [[(xb.clone(), yb.clone()) for xb, yb in batches] for _ in range(3)]

    whole, per_batch = epochs(1 << 28), epochs(0)
    for a_epoch, b_epoch in zip(whole, per_batch, strict=True):
        for (xa, ya), (xb, yb) in zip(a_epoch, b_epoch, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


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
def test_record_is_the_same_whether_reduced_per_epoch_or_deferred(
    data, monkeypatch, amplitude
):
    # With only the package's callbacks the clock reduces the record of many epochs at
    # once; a user callback makes it complete every row at its epoch's end; a tiny
    # pending limit makes it reduce in the middle of epochs. All three must agree, and
    # agree with what the user's callback measured from the same forward passes.
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
    deferred = DynamicalLossClassifier(**params).fit(X, y)
    watcher = BatchAccuracy()
    per_epoch = DynamicalLossClassifier(callbacks=[watcher], **params).fit(X, y)
    monkeypatch.setattr(LossClock, "pending_limit", 100)  # about one batch
    split = DynamicalLossClassifier(**params).fit(X, y)

    seen = np.array(per_epoch.net_.callbacks_[-1][1].seen)
    assert len(seen) == 6  # complete at every epoch end, where the user reads it
    np.testing.assert_allclose(seen[:, 0], per_epoch.dynamics_["cross_entropy"])
    np.testing.assert_allclose(seen[:, 1], per_epoch.dynamics_["accuracy"])
    np.testing.assert_allclose(
        per_epoch.dynamics_["accuracy"], per_epoch.net_.callbacks_[-1][1].accuracy
    )
    for other in (deferred, split):
        for key in ("loss", "cross_entropy", "accuracy"):
            np.testing.assert_allclose(
                other.dynamics_[key], per_epoch.dynamics_[key], rtol=1e-12
            )
    if amplitude == 1.0:
        # Plain cross-entropy: the record's mean cross-entropy is skorch's train_loss.
        np.testing.assert_allclose(
            deferred.dynamics_["cross_entropy"], deferred.loss_curve_, rtol=1e-12
        )
    else:
        assert not np.allclose(
            deferred.dynamics_["cross_entropy"], deferred.loss_curve_, rtol=1e-3
        )


def test_verbose_prints_every_epochs_record_as_it_ends(data, capsys):
    # verbose adds skorch's PrintLog, which prints each row at its epoch's end: the
    # record must be complete there, and the same as in a quiet fit.
    X, y = data
    params = dict(max_epochs=3, period=1, batch_size=32, compute_sharpness=False)
    quiet = DynamicalLossClassifier(random_state=0, **params).fit(X, y)
    capsys.readouterr()
    loud = DynamicalLossClassifier(random_state=0, verbose=1, **params).fit(X, y)
    out = capsys.readouterr().out
    assert "train_accuracy" in out and "train_cross_entropy" in out
    for value in loud.dynamics_["accuracy"]:
        assert f"{value:.4f}" in out
    for key in ("loss", "cross_entropy", "accuracy"):
        np.testing.assert_allclose(loud.dynamics_[key], quiet.dynamics_[key])


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


def test_the_nets_own_hooks_are_skipped_only_when_empty(data):
    # notify leaves out the net's hooks whose body is empty (skorch's on_batch_end,
    # on_epoch_end, ...); a net whose hook does something gets it called.
    from skdynloss._net import DynamicalNet, _does_nothing

    def documented_pass(self, net, **kwargs):
        """Nothing."""

    assert _does_nothing(documented_pass)
    assert _does_nothing(DynamicalNet.on_batch_end)
    assert _does_nothing(DynamicalNet.on_batch_begin)  # run_single_epoch does its work
    assert not _does_nothing(DynamicalNet.on_epoch_begin)
    assert not _does_nothing(lambda self, net, **kwargs: print("x"))

    X, y = data
    clf = DynamicalLossClassifier(
        max_epochs=1, period=1, batch_size=32, compute_sharpness=False
    ).fit(X, y)
    net = clf.net_
    seen = []
    net.on_batch_end = lambda net, **kwargs: seen.append("batch_end")
    net.__dict__.pop("_hook_cache", None)  # as initialize_callbacks does
    net.partial_fit(torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y))
    assert seen == ["batch_end"] * 3
