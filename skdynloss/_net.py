"""The skorch net behind the classifier and its stacks, through skorch's hooks.

skorch stays the engine: its ``partial_fit``, ``fit_loop``, ``run_single_epoch``,
train step, callbacks and history run unchanged, for one model (the plain module) and
for a stack of K models (a module computing K models at once, ``members`` their own
nets). The hooks overridden, each for a reason measured on small data:

* ``get_dataset`` and ``get_iterator``: data that are already tensors on the device are
  batched by indexing them (seeded shuffling), instead of a DataLoader that collates one
  sample at a time (about 10x a raw torch loop); a stack's data are K index sets into
  one source, each model's permutation drawn from its own generator;
* ``get_loss``: the criterion is called with the batch's sample weights (skorch's own
  recipe: X is a dict that holds them) and without NeuralNetClassifier's NLLLoss check;
* ``train_step_single``: skorch's steps (train mode, infer, loss, backward), with the
  per-sample base losses computed once and returned in the step, so that the
  callbacks' ``on_batch_end`` gets them beside ``loss`` and ``y_pred`` (the record of
  plain loss and accuracy costs no second loss evaluation); for a stack, the sum of the
  K models' losses (each model's gradient is its own) and the K losses;
* ``initialize_history``: a History whose integer indexing does not copy the whole
  per-epoch list (skorch's copies it, which makes ``history[-1]`` cost O(epochs), and a
  long or many-call fit quadratic), and a stack's record of which models still train;
* ``run_single_epoch``: skorch's, called unchanged inside a ``try``: skorch's
  ``partial_fit`` ends training quietly on any KeyboardInterrupt, its signal to stop,
  and a KeyboardInterrupt raised by code in the middle of an epoch's steps (the module,
  the loss, a batch hook) leaves a step half done, so it must reach the caller as a
  failure; ``run_single_epoch`` is the one hook around the steps and batch hooks.
"""

import math
from collections.abc import Mapping

import torch
from skorch import NeuralNetClassifier
from skorch.dataset import unpack_data
from skorch.history import History

from ._losses import loss_terms, unweighted_losses, weighted_mean


class StopTraining(KeyboardInterrupt):
    """End training at the end of the current step (Ctrl-C, through the clock).

    A KeyboardInterrupt, which skorch's fit loop takes as its signal to end training
    quietly, as its EarlyStopping does at the end of an epoch."""


class InterruptedStep(BaseException):
    """A KeyboardInterrupt raised by code in the middle of a training step (in the
    module, the loss, the schedule or a batch hook): the step is broken, so the call
    fails instead of ending quietly. ``original`` is the KeyboardInterrupt."""

    def __init__(self, original):
        super().__init__(original)
        self.original = original


class FastHistory(History):
    """A skorch History whose integer and slice indexing do not copy the whole list."""

    def __getitem__(self, i):
        if isinstance(i, int | slice):
            return list.__getitem__(self, i)
        if isinstance(i, tuple) and i and isinstance(i[0], int):
            # history[-1, "key", ...]: resolve the epoch first, then only that row.
            return History([list.__getitem__(self, i[0])])[(0, *i[1:])]
        return super().__getitem__(i)

    # skorch's versions go through __getitem__; these run at every optimizer step.
    def new_batch(self):
        list.__getitem__(self, -1)["batches"].append({})

    def record(self, attr, value):
        if not self:
            raise ValueError("Call new_epoch before recording for the first time.")
        list.__getitem__(self, -1)[attr] = value

    def record_batch(self, attr, value):
        list.__getitem__(self, -1)["batches"][-1][attr] = value


def _is_dict(data):
    """Whether features are a dict of {"X", "sample_weight"} (the classifier builds a
    plain dict; ``type`` is checked because an ABC isinstance check costs a few
    Python calls at every step)."""
    return type(data) is dict or (
        type(data) is not torch.Tensor and isinstance(data, Mapping)
    )


def _take(data, index):
    """Rows ``index`` (a slice or index tensor) of a tensor or of a dict of tensors."""
    if _is_dict(data):
        return {key: value[index] for key, value in data.items()}
    return data[index]


def _n_rows(data):
    if _is_dict(data):
        return len(data["X"])
    return len(data)


class TensorData(torch.utils.data.Dataset):
    """Features (a tensor, or a dict with "X" and "sample_weight") and encoded targets."""

    def __init__(self, X, y=None):
        self.X = X
        self.y = y

    def __len__(self):
        return _n_rows(self.X)

    def __getitem__(self, i):
        return _take(self.X, i), (self.y[i] if self.y is not None else torch.zeros(()))


def batch_size_for(batch_size, n):
    """The rows per batch that ``batch_size`` gives on ``n`` rows (-1: all of them)."""
    return n if batch_size in (-1, None) or batch_size >= n else int(batch_size)


def steps_per_epoch(batch_size, n):
    """Optimizer steps in one epoch over ``n`` rows."""
    return max(1, math.ceil(n / batch_size_for(batch_size, n)))


class TensorBatches:
    """Iterate over mini-batches of tensors by indexing, with seeded shuffling.

    Parameters
    ----------
    data : TensorData
    batch_size : int
        ``-1`` or at least ``len(data)`` yields the whole data as one batch, without a
        copy: full-batch gradient descent, the paper's regime.
    shuffle : bool
        Draw a new permutation from ``generator`` at every pass (not for one batch).
    generator : torch.Generator or None
        CPU generator owned by the estimator, so shuffling never touches torch's global
        RNG (parallel fits would race on it).
    """

    def __init__(self, data, batch_size, shuffle=False, generator=None):
        self.data = data
        self.batch_size = batch_size_for(batch_size, len(data))
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self):
        return steps_per_epoch(self.batch_size, len(self.data))

    def __iter__(self):
        X, y = self.data.X, self.data.y
        n, bs = len(self.data), self.batch_size
        if y is None:
            features = X["X"] if _is_dict(X) else X
            y = torch.zeros(n, dtype=torch.long, device=features.device)
        if bs >= n:
            # Full batch: the data themselves.
            yield X, y
            return
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(y.device)
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                yield _take(X, idx), y[idx]
        else:
            for start in range(0, n, bs):
                idx = slice(start, start + bs)
                yield _take(X, idx), y[idx]


class StackData(torch.utils.data.Dataset):
    """The training rows of K models: one source and K index tensors into it.

    Model k trains on rows ``rows[k]`` of (X, y, sample_weight), in that order: the
    data its own fit would get as ``X[rows[k]]``. Models that share data share the
    source, held once.
    """

    def __init__(self, X, y, sample_weight, rows):
        self.X = X
        self.y = y
        self.sample_weight = sample_weight
        self.rows = list(rows)
        self.n = [len(r) for r in self.rows]

    def __len__(self):
        return max(self.n)

    def __getitem__(self, i):
        raise TypeError("a stack's data are batched by StackBatches")


class StackBatches:
    """K models' mini-batches at once, each model's as :class:`TensorBatches` cuts it.

    At every pass model k draws its permutation of its ``n_k`` rows from its own
    generator (none in full batch), as its own fit draws it; only active models draw.
    Batch s holds rows ``s * B`` to ``(s + 1) * B`` of each model's order, padded with
    weight 0 where a model has fewer rows. Yields ``(X, y)`` with X of shape
    (K, B, ...) (or a dict that adds "sample_weight" of shape (K, B)) and y (K, B).
    """

    def __init__(self, data, batch_size, generators, active):
        self.data = data
        self.batch_size = batch_size_for(batch_size, len(data))
        self.generators = generators
        self.active = active
        self._full = None

    def __len__(self):
        return steps_per_epoch(self.batch_size, len(self.data))

    def _gather(self, idx, valid):
        data = self.data
        X, y = data.X[idx], data.y[idx]
        if data.sample_weight is None and bool(valid.all()):
            return X, y
        mask = valid.to(X.dtype)
        w = mask if data.sample_weight is None else data.sample_weight[idx] * mask
        return {"X": X, "sample_weight": w}, y

    def _table(self, width, order):
        data = self.data
        device = data.y.device
        table = torch.zeros(len(data.rows), width, dtype=torch.long, device=device)
        valid = torch.zeros(len(data.rows), width, dtype=torch.bool, device=device)
        for k, rows in enumerate(data.rows):
            n = data.n[k]
            table[k, :n] = rows if order is None else rows[order[k].to(device)]
            valid[k, :n] = True
        return table, valid

    def __iter__(self):
        data, bs = self.data, self.batch_size
        if bs >= len(data):
            # Full batch: no draw; the same padded batch at every step.
            if self._full is None:
                shared = all(r is data.rows[0] for r in data.rows)
                if shared and data.sample_weight is None:
                    rows = data.rows[0]
                    K = len(data.rows)
                    X = data.X[rows]
                    self._full = (
                        X.expand(K, *X.shape),
                        data.y[rows].expand(K, len(rows)),
                    )
                else:
                    self._full = self._gather(*self._table(len(data), None))
            yield self._full
            return
        # TensorBatches' draw for each model that still trains (a stopped model's
        # generator stays as it was when it stopped).
        order = [
            torch.randperm(n, generator=g) if active else torch.arange(n)
            for n, g, active in zip(data.n, self.generators, self.active, strict=True)
        ]
        table, valid = self._table(len(self) * bs, order)
        for start in range(0, len(self) * bs, bs):
            cols = slice(start, start + bs)
            yield self._gather(table[:, cols], valid[:, cols])


class DynamicalNet(NeuralNetClassifier):
    """NeuralNetClassifier with tensor batches, sample weights and a copy-free history.

    Used internally by :class:`~skdynloss.DynamicalLossClassifier`; it is ``clf.net_``.
    Behaves as skorch's NeuralNetClassifier except that tensors passed to ``fit`` are
    batched without a DataLoader (seeded by ``generator``), and X may be a dict of
    ``{"X": features, "sample_weight": weights}`` whose weights reach the criterion.
    """

    def __init__(
        self,
        *args,
        generator=None,
        prediction_batch_size=16384,
        members=None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.generator = generator
        self.prediction_batch_size = prediction_batch_size
        self.members = members

    @property
    def n_models(self):
        """K, the number of models the net trains (1 for a plain module)."""
        return 1 if self.members is None else len(self.members)

    def initialize_history(self):
        self.history_ = FastHistory()
        # A stack's record of which models still train (all, at the start).
        self.active_ = [True] * self.n_models
        self.active_index_ = None
        return self

    def get_dataset(self, X, y=None):
        if isinstance(X, StackData):
            return X
        if isinstance(X, torch.Tensor | Mapping) and (
            y is None or isinstance(y, torch.Tensor)
        ):
            return TensorData(X, y)
        return super().get_dataset(X, y)

    def get_iterator(self, dataset, training=False):
        if isinstance(dataset, StackData):
            return StackBatches(
                dataset,
                self.batch_size,
                [m.generator for m in self.members],
                self.active_,
            )
        if isinstance(dataset, TensorData):
            if training:
                return TensorBatches(
                    dataset, self.batch_size, shuffle=True, generator=self.generator
                )
            return TensorBatches(dataset, self.prediction_batch_size)
        return super().get_iterator(dataset, training=training)

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        # skorch ends training quietly on any KeyboardInterrupt; one raised inside a
        # step (not a StopTraining at a step's end) leaves the step half done, so it
        # must reach the classifier as a failure.
        try:
            super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)
        except StopTraining:
            raise
        except KeyboardInterrupt as exc:
            raise InterruptedStep(exc) from exc

    def get_loss(self, y_pred, y_true, X=None, training=False):
        sample_weight = X.get("sample_weight") if _is_dict(X) else None
        return self.criterion_(y_pred, y_true, sample_weight=sample_weight)

    def train_step_single(self, batch, **fit_params):
        if not (self.module_.training and self.criterion_.training):
            # skorch switches the modules back to train mode after evaluation steps
            # (which switch them to eval); walking every submodule again at each
            # training step costs a tenth of a small full-batch step.
            self._set_training(True)
        Xi, yi = unpack_data(batch)
        # A dict X holds the batch's sample weights beside its features.
        sample_weight = Xi.get("sample_weight") if _is_dict(Xi) else None
        y_pred = self.infer(Xi["X"] if _is_dict(Xi) else Xi, **fit_params)
        criterion = self.criterion_
        if self.members is None:
            terms = loss_terms(y_pred, yi, criterion.base)
            loss = criterion.reduce(terms, yi, sample_weight=sample_weight)
            loss.backward()
            losses = unweighted_losses(terms, yi)
            return {"loss": loss, "y_pred": y_pred, "base_losses": losses.detach()}
        # K models: the gradient of the sum of their losses is, for the parameters of
        # model k, the gradient of model k's own loss (the models share nothing).
        weighted, losses = criterion.losses(
            y_pred, yi, class_dim=self.module_.class_dim
        )
        per_model = weighted_mean(weighted, yi, None, sample_weight=sample_weight)
        index = self.active_index_
        loss = (per_model if index is None else per_model[index]).sum()
        loss.backward()
        return {
            "loss": loss,
            "y_pred": y_pred,
            "base_losses": losses.detach(),
            "losses": per_model.detach(),
        }

    def stop_model(self, k):
        """Model k of the stack stops: its loss leaves the sum, its rows stop being
        drawn; whatever of it should be kept has been written into its own net."""
        active = list(self.active_)
        active[k] = False
        self.set_active(active)

    def export_model(self, k):
        """Model k's parameters and optimizer state, out of the stack into its own net
        (what its own fit would hold now)."""
        member = self.members[k]
        opt = member.optimizer_
        with torch.no_grad():
            for own, stacked in zip(
                member.module_.parameters(), self.module_.parameters(), strict=True
            ):
                own.copy_(stacked[k])
                state = self.optimizer_.state.get(stacked)
                if not state:
                    continue
                mine = {}
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and value.shape == stacked.shape:
                        mine[key] = value[k].clone()
                    elif isinstance(value, torch.Tensor):
                        mine[key] = value.clone()  # Adam's step count, shared by all
                    else:
                        mine[key] = value
                opt.state[own] = mine

    def set_active(self, active):
        """Which of the K models still train (a stopped model's loss leaves the sum)."""
        self.active_[:] = active
        self.active_index_ = (
            None
            if all(self.active_)
            else torch.tensor(
                [k for k, a in enumerate(self.active_) if a],
                dtype=torch.long,
                device=self.device,
            )
        )


