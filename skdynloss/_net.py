"""skorch, made fast for small data through its own extension points.

skorch stays the engine (callbacks, history, checkpointing all keep working); three of
its defaults are replaced because they dominate the cost of training small networks:

* the DataLoader collates one sample at a time (about 10x a raw torch loop): data that
  are already tensors are batched by slicing/indexing them directly (``get_iterator``);
* ``History.__getitem__`` copies the whole per-epoch list on every access, so skorch's own
  ``history[-1]`` made each epoch cost O(epochs so far): :class:`FastHistory` indexes the
  list directly;
* ``step["loss"].item()`` after every batch synchronises a CUDA device once per batch:
  the batch losses are collected as tensors and read back once per epoch.

The rest trims the Python around each step, which dominates full-batch training of
small networks (one step per epoch): ``notify`` skips callbacks' inherited no-op hooks,
the net's own hooks write the history rows directly, ``train_step`` clears gradients
without the optimizer's profiler context. ``benchmarks/bench_calls.py`` counts the
calls per step.
"""

import dis
import functools
import math

import torch
from skorch import NeuralNetClassifier
from skorch.history import History


def _empty():
    """A function that does nothing, to recognise others that do nothing."""


def _does_nothing(fn):
    """Whether ``fn``'s bytecode is that of an empty function (``pass``, a docstring)."""
    return _empty_code(getattr(fn, "__func__", fn).__code__)


@functools.cache
def _empty_code(code):
    # Cached: every fit builds new hook lists, and disassembling is not free.
    listing = [(i.opname, i.argval) for i in dis.get_instructions(code)]
    return listing == [(i.opname, i.argval) for i in dis.get_instructions(_empty)]


class FastHistory(History):
    """A skorch History whose integer and slice indexing do not copy the whole list."""

    def __getitem__(self, i):
        # type() first: isinstance with a union is slower, and this runs several times
        # per optimizer step.
        if type(i) is int or type(i) is slice or isinstance(i, int | slice):
            return list.__getitem__(self, i)
        if isinstance(i, tuple) and i and isinstance(i[0], int):
            # history[-1, "key", ...]: resolve the epoch first, then only that row.
            row = History([list.__getitem__(self, i[0])])
            return row[(0, *i[1:])]
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


class TensorData(torch.utils.data.Dataset):
    """Features and encoded targets held as tensors (on the training device)."""

    def __init__(self, X, y=None):
        self.X = X
        self.y = y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i], (self.y[i] if self.y is not None else torch.zeros(()))


class TensorBatches:
    """Iterate over mini-batches of tensors by indexing, with seeded shuffling.

    Parameters
    ----------
    data : TensorData
    batch_size : int
        ``-1`` or at least ``len(data)`` yields the whole data as one batch, without a
        copy: full-batch gradient descent, the paper's regime.
    shuffle : bool
        Draw a new permutation from ``generator`` at every pass.
    generator : torch.Generator or None
        CPU generator owned by the estimator, so shuffling never touches torch's global
        RNG (parallel fits would race on it).
    """

    def __init__(self, data, batch_size, shuffle=False, generator=None):
        self.data = data
        n = len(data)
        self.batch_size = (
            n if batch_size in (-1, None) or batch_size >= n else batch_size
        )
        self.shuffle = shuffle
        self.generator = generator

    #: Largest X (bytes) shuffled as a whole per epoch, where the per-batch indexing it
    #: saves matters; larger data is gathered batch by batch, so that a shuffled copy
    #: of it never sits beside the original.
    permute_limit = 1 << 23

    def __len__(self):
        return max(1, math.ceil(len(self.data) / self.batch_size))

    def __iter__(self):
        X, y = self.data.X, self.data.y
        n, bs = X.shape[0], self.batch_size
        if y is None:
            y = torch.zeros(n, dtype=torch.long, device=X.device)
        if bs >= n:
            # Full batch: the data themselves, without a generator frame per epoch.
            return iter(((X, y),))
        return self._batches(X, y, n, bs)

    def _batches(self, X, y, n, bs):
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(X.device)
            if X.numel() * X.element_size() <= self.permute_limit:
                # Gather the epoch once, then yield views, all made by two split
                # calls: no per-batch indexing (same batches, same order).
                return zip(X[order].split(bs), y[order].split(bs), strict=True)
            return self._gathered(X, y, order, n, bs)
        return zip(X.split(bs), y.split(bs), strict=True)

    @staticmethod
    def _gathered(X, y, order, n, bs):
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            yield X[idx], y[idx]


class DynamicalNet(NeuralNetClassifier):
    """NeuralNetClassifier with the fast data path and a copy-free history.

    Used internally by :class:`~skdynloss.DynamicalLossClassifier`; it is ``clf.net_``.
    Behaves as skorch's NeuralNetClassifier except that tensors passed to ``fit`` are
    batched without a DataLoader, and ``train_loss`` is read back once per epoch.
    """

    def __init__(self, *args, generator=None, prediction_batch_size=16384, **kwargs):
        super().__init__(*args, **kwargs)
        self.generator = generator
        self.prediction_batch_size = prediction_batch_size

    @property
    def _default_callbacks(self):
        # The classifier passes the callbacks it needs (and PrintLog when verbose).
        return []

    # skorch's own hooks, writing the history rows directly (they run at every step
    # in full-batch training): the same rows as History.new_epoch/new_batch/record.
    # The batch row is appended by run_single_epoch itself.
    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        history = self.history_
        history.append({"batches": [], "epoch": len(history) + 1})

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        """skorch's hook appends the batch's history row; run_single_epoch appends it
        before notifying, so this one is empty and notify skips it."""

    def initialize_history(self):
        self.history_ = FastHistory()
        return self

    def get_dataset(self, X, y=None):
        if isinstance(X, torch.Tensor) and (y is None or isinstance(y, torch.Tensor)):
            return TensorData(X, y)
        return super().get_dataset(X, y)

    def get_iterator(self, dataset, training=False):
        if isinstance(dataset, TensorData):
            if training:
                return TensorBatches(
                    dataset, self.batch_size, shuffle=True, generator=self.generator
                )
            return TensorBatches(dataset, self.prediction_batch_size)
        return super().get_iterator(dataset, training=training)

    def _set_training(self, training=True):
        # skorch calls this at every step; nn.Module.train walks all submodules, so only
        # switch the modules that are not in the requested mode already.
        for name in self._modules + self._criteria:
            module = getattr(self, name + "_")
            if isinstance(module, torch.nn.Module) and module.training != training:
                module.train(training)

    def train_step(self, batch, **fit_params):
        optimizer = self.optimizer_
        if isinstance(optimizer, torch.optim.LBFGS):
            # Optimizers that re-evaluate the loss need skorch's closure.
            return super().train_step(batch, **fit_params)
        # Same sequence as skorch's train_step (zero grad, forward/backward,
        # on_grad_computed, step) without building a closure and a parameter
        # generator at every step.
        if type(optimizer) is self._plain_zero_grad:
            # What torch's Optimizer.zero_grad(set_to_none=True) does, without its
            # profiler context (as long as the optimizer step of a small network).
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
        else:
            optimizer.zero_grad(set_to_none=True)
        step = self.train_step_single(batch, **fit_params)
        if self._grad_callbacks:
            from skorch.utils import TeeGenerator

            self.notify(
                "on_grad_computed",
                named_parameters=TeeGenerator(self.get_all_learnable_params()),
                batch=batch,
                training=True,
            )
        optimizer.step()
        return step

    def train_step_single(self, batch, **fit_params):
        if fit_params or type(batch) is not tuple:
            return super().train_step_single(batch, **fit_params)
        # Batches from TensorBatches are (X, y) tensors already on the device: skip
        # skorch's unpack_data, to_tensor (twice) and get_loss's NLLLoss check. The
        # steps are skorch's: train mode, forward, criterion, backward.
        self._set_training(True)
        Xi, yi = batch
        y_pred = self.module_(Xi)
        loss = self.criterion_(y_pred, yi)
        # An explicit seed gradient: saves the ones_like that backward() would run.
        one = getattr(self, "_seed_grad", None)
        if one is None or one.dtype != loss.dtype or one.device != loss.device:
            one = self._seed_grad = torch.ones((), dtype=loss.dtype, device=loss.device)
        torch.autograd.backward(loss, one)  # Tensor.backward, one call less
        return {"loss": loss, "y_pred": y_pred}

    def initialize_optimizer(self, *args, **kwargs):
        super().initialize_optimizer(*args, **kwargs)
        # train_step clears gradients itself when the optimizer's zero_grad is torch's
        # (the type is kept, not the optimizer: a replaced optimizer_ is checked anew).
        kind = type(self.optimizer_)
        plain = (
            issubclass(kind, torch.optim.Optimizer)
            and kind.zero_grad is torch.optim.Optimizer.zero_grad
        )
        self._plain_zero_grad = kind if plain else None
        return self

    def __getstate__(self):
        state = super().__getstate__()
        # A device tensor outside skorch's cuda-dependent attributes would not unpickle
        # on a machine without that device; it is rebuilt at the next step.
        state.pop("_seed_grad", None)
        state.pop("_hook_cache", None)  # bound methods, rebuilt on first use
        return state

    def notify(self, method_name, **cb_kwargs):
        # skorch calls the hook on the net and on every callback, most of which
        # inherit skorch's no-op Callback methods: with full-batch training that is a
        # dozen empty calls per step. Only the hooks a callback implements (in its
        # class or on the instance) are called. They are looked up once per list of
        # callbacks, which the cache keeps alive so that its identity is not reused.
        callbacks = self.callbacks_
        cache = self.__dict__.get("_hook_cache")
        if cache is None:
            cache = self.__dict__["_hook_cache"] = {}
        entry = cache.get(method_name)
        if entry is None or entry[0] is not callbacks or entry[1] != len(callbacks):
            entry = (callbacks, len(callbacks), self._implemented_hooks(method_name))
            cache[method_name] = entry
        for hook in entry[2]:
            hook(self, **cb_kwargs)

    def _implemented_hooks(self, method_name):
        """The hooks ``notify`` calls: the net's own, unless its body is empty (as
        skorch's ``on_batch_end`` is), then the callbacks' that are not inherited."""
        from skorch.callbacks import Callback

        own = getattr(self, method_name)
        base = getattr(Callback, method_name)
        return ([] if _does_nothing(own) else [own]) + [
            getattr(cb, method_name)
            for _, cb in self.callbacks_
            if getattr(type(cb), method_name, None) is not base
            or method_name in getattr(cb, "__dict__", {})
        ]

    def initialize_callbacks(self):
        self.__dict__.pop("_hook_cache", None)
        super().initialize_callbacks()
        # Only notify on_grad_computed when some callback actually implements it.
        from skorch.callbacks import Callback

        self._grad_callbacks = [
            cb
            for _, cb in self.callbacks_
            if type(cb).on_grad_computed is not Callback.on_grad_computed
        ]
        return self

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        if iterator is None:
            return
        losses, sizes = [], []
        history = self.history
        # The epoch's row: the net's on_epoch_begin appended it, and on_batch_begin
        # appends each batch's row to its "batches".
        row = list.__getitem__(history, -1)
        batch_rows = row["batches"]
        size_key = prefix + "_batch_size"
        for batch in iterator:
            # What skorch's on_batch_begin does (history.new_batch).
            batch_rows.append({})
            self.notify("on_batch_begin", batch=batch, training=training)
            step = step_fn(batch, **fit_params)
            losses.append(step["loss"])
            # shape[0], not len(): Tensor.__len__ is a Python-level wrapper.
            size = batch[0].shape[0]
            sizes.append(size)
            batch_rows[-1][size_key] = size  # history.record_batch
            self.notify("on_batch_end", batch=batch, training=training, **step)
        if len(losses) == 1:
            # One batch (full-batch training, one step per epoch): the records below,
            # without the lists.
            value, size = losses[0].item(), sizes[0]
            row["batches"][-1][prefix + "_loss"] = value
            row[prefix + "_batch_count"] = 1
            row[prefix + "_loss"] = value * size / size
            return
        # One device synchronisation per epoch instead of one per batch.
        with torch.no_grad():  # instead of a detach per step
            values = torch.stack(losses).tolist()
        for batch_row, value in zip(
            row["batches"][-len(values) :], values, strict=True
        ):
            batch_row[prefix + "_loss"] = value
        row[prefix + "_batch_count"] = len(values)
        # The epoch's loss: the mean over batches weighted by their size, as skorch's
        # PassthroughScoring computes it.
        total = sum(v * s for v, s in zip(values, sizes, strict=True))
        row[prefix + "_loss"] = total / sum(sizes)
