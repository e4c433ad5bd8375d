"""Train many DynamicalLossClassifier configurations at once, as one stacked network.

K MLPs that differ only in what the loss does with their outputs (``amplitude``,
``period``, ``shape``, ``order``, ``static_last_period``, the base ``loss``), in their
``random_state`` and in their training rows are trained in lockstep: their parameters
are stacked into tensors of shape (K, ...), each layer is one batched matrix product
(``torch.baddbmm``), the K per-model losses are summed and one torch optimizer steps
them all. The optimizers used (SGD, Adam, AdamW) update every parameter elementwise, and
the gradient of a sum of independent losses is each model's own gradient, so model k
computes what its own ``fit`` computes:

* the same initialisation: each model is built by its estimator's own ``_build``, from
  its own seeds, and the stack starts from those parameters;
* the same batches in the same order: model k's permutation of its rows is drawn from
  its own net's generator each epoch, exactly as :class:`~skdynloss._net.TensorBatches`
  draws it (none in full batch);
* the same clock: step s of epoch e runs at time ``(e * spe + s) / spe`` for every model,
  with its own static last period, and the K rows of class weights come from one call
  of :func:`~skdynloss.class_weights`.

Models whose steps per epoch differ cannot share a stack (an idle Adam step still moves
parameters), nor models with different ``lr``, optimizer, widths, batch size, epochs,
dtype or device; :func:`fit_lockstep` groups them. At the end each model's parameters,
optimizer state, generator state and per-epoch history are written into its own
estimator's net, and the estimator's own code computes the fitted attributes, so each
estimator is an ordinary fitted one.
"""

import math
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.utils import _safe_indexing

from ._callbacks import divergence_message, non_finite_cause
from ._classifier import (
    DynamicalLossClassifier,
    _hidden_sizes,
    _resolve_device,
    deferred_sigint,
)
from ._losses import weighted_mean
from ._modules import MLP
from ._net import batch_size_for, steps_per_epoch
from ._schedules import class_weights

#: Hyperparameters in which the models of one stack may differ.
STACKED_PARAMS = (
    "amplitude",
    "period",
    "shape",
    "order",
    "static_last_period",
    "loss",
    "random_state",
)

#: Hyperparameters that do not affect training (used after it, or only for display).
_AFTER_TRAINING = ("verbose", "compute_sharpness", "sharpness_max_samples")

_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def unstackable_reason(estimator):
    """Why ``estimator`` cannot be trained in a stack (None when it can)."""
    if type(estimator) is not DynamicalLossClassifier:
        return f"{type(estimator).__name__} is not a DynamicalLossClassifier"
    if not (isinstance(estimator.module, str) and estimator.module == "mlp"):
        return f"module={estimator.module!r} (only the MLP is stacked)"
    opt = estimator.optimizer
    if not (opt in ("sgd", "adam") or opt in _OPTIMIZERS):
        return f"optimizer={opt!r} (only SGD, Adam and AdamW are stacked)"
    if callable(estimator.loss):
        return "a callable loss"
    if estimator.callbacks:
        return "user callbacks"
    if estimator.sharpness_every is not None:
        return "sharpness_every"
    if estimator.early_stopping:
        return "early_stopping"
    if estimator.warm_start and hasattr(estimator, "net_"):
        return "warm_start on a fitted estimator"
    return None


def _freeze(value):
    """A hashable, comparable stand-in for a hyperparameter value."""
    if isinstance(value, list | tuple | np.ndarray):
        return (
            "seq",
            tuple(_freeze(v) for v in np.asarray(value, dtype=object).ravel()),
        )
    if isinstance(value, float | int | str | bool | type(None)):
        return value
    return ("obj", id(value), repr(value))


def hyperparameter_key(estimator):
    """What models of one stack must share, from the hyperparameters alone.

    The data add the number of features, of classes and of steps per epoch (see
    :func:`fit_lockstep`). None for an estimator that cannot be stacked.
    """
    if unstackable_reason(estimator) is not None:
        return None
    params = estimator.get_params(deep=False)
    key = []
    for name in sorted(params):
        if name in STACKED_PARAMS or name in _AFTER_TRAINING:
            continue
        value = params[name]
        if name == "hidden_layer_sizes":
            value = _hidden_sizes(value)
        elif name == "device":
            value = _resolve_device(value)
        elif name == "optimizer":
            value = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}.get(value, value)
            value = value.__name__
        elif name in ("validation_fraction", "n_iter_no_change", "tol", "image_shape"):
            continue  # unused without early stopping or a CNN
        key.append((name, _freeze(value)))
    return tuple(key)


# ----------------------------------------------------------------- the stacked MLP


class StackedMLP(torch.nn.Module):
    """K MLPs of the same widths as one module, computed class-major.

    ``forward`` maps inputs of shape (K, F, B) (model k's batch, transposed) to outputs
    of shape (K, C, B). Every layer is one batched product ``W_k a_k + b_k``: the
    transpose of what torch.nn.Linear computes for one model, in a layout where the
    softmax over classes reduces over a non-innermost axis (measured about 40x faster
    than over an innermost axis of three classes, on the CPU).

    Its parameters are the K models' parameters stacked, in the order of each model's
    ``parameters()`` (weight, bias of every layer), so that the stack's parameter j,
    row k, is model k's parameter j.
    """

    def __init__(self, modules):
        super().__init__()
        layers = [
            [m for m in module if isinstance(m, torch.nn.Linear)] for module in modules
        ]
        params = []
        for depth in range(len(layers[0])):
            for name in ("weight", "bias"):
                tensors = [getattr(model[depth], name).detach() for model in layers]
                params.append(torch.nn.Parameter(torch.stack(tensors)))
        self.stacked = torch.nn.ParameterList(params)

    def forward(self, x):
        params = list(self.stacked)
        last = len(params) // 2 - 1
        for depth in range(last + 1):
            weight, bias = params[2 * depth], params[2 * depth + 1]
            x = torch.baddbmm(bias.unsqueeze(2), weight, x)
            if depth < last:
                x = torch.relu(x)
        return x


def class_major_losses(outputs, y, base):
    """Per-sample base losses (K, B) of class-major outputs (K, C, B).

    The formulas of :func:`skdynloss._losses.cross_entropy` and
    :func:`~skdynloss._losses.squared_error`, reduced over the class axis 1.
    """
    if base == "cross_entropy":
        log_probs = torch.log_softmax(outputs, dim=1)
        return -log_probs.gather(1, y.unsqueeze(1)).squeeze(1)
    if base == "squared_error":
        one_hot = torch.nn.functional.one_hot(y, outputs.shape[1]).to(outputs.dtype)
        return (outputs - one_hot.transpose(1, 2)).square().mean(dim=1)
    raise ValueError(f"the base loss {base!r} cannot be stacked")


def _is_plain_mlp(module):
    return type(module) is MLP and all(
        isinstance(m, torch.nn.Linear | torch.nn.ReLU) for m in module
    )


# ------------------------------------------------------------------ preparation


class _Model:
    """One estimator of a stack: its net, training tensors and bookkeeping."""

    def __init__(self, estimator, before, net, data, classes_, dataset_key):
        self.estimator = estimator
        self.before = before
        self.net = net
        self.data = data
        self.classes_ = classes_
        self.dataset_key = dataset_key
        self.history_rows = []
        self.diverged = False
        self.active = True
        self.last_time = 0.0
        self.last_static = False
        self.end_step = 0
        n = len(data[0])
        bs = batch_size_for(int(estimator.batch_size), n)
        # Rows of each batch of an epoch, as TensorBatches cuts them.
        self.batch_sizes = [min(bs, n - start) for start in range(0, n, bs)]


def _prepare(estimator, X, y, sample_weight, dataset_key, cache):
    """The steps of the estimator's own ``fit`` up to training, for a new fit.

    Returns a _Model; the estimator is left as it was if anything fails.
    """
    before = dict(estimator.__dict__)
    try:
        estimator._validate_params()
        estimator._check_hyperparameters()
        dtype = estimator.dtype
        X, y, sample_weight = estimator._validate_training_data(
            X, y, sample_weight, reset=True, dtype=dtype
        )
        y_encoded, classes_ = estimator._encode_labels(
            y, continuing=False, classes=None
        )
        device = _resolve_device(estimator.device)
        net = estimator._build(X.shape[1], classes_, device)
        key = (dataset_key, dtype, device, sample_weight is None)
        data = cache.get(key)
        if data is None:
            data = estimator._to_tensors(X, y_encoded, sample_weight, device, dtype)
            cache[key] = data
        estimator._check_module_output(net, data[0], len(classes_))
        estimator._check_time(net, estimator.max_epochs)
        if not _is_plain_mlp(net.module_):
            raise TypeError("only the package's MLP can be stacked")
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(before)
        raise
    return _Model(estimator, before, net, data, classes_, key)


def _stack_key(model):
    est, data = model.estimator, model.data
    n = len(data[0])
    return (
        hyperparameter_key(est),
        data[0].shape[1],
        len(model.classes_),
        steps_per_epoch(int(est.batch_size), n),
        str(data[0].device),
        data[0].dtype,
    )


def model_bytes(estimator, n_rows, n_features, n_classes):
    """Bytes one model of a stack needs while it trains (an upper estimate).

    Parameters, gradient, up to two optimizer moments and the divergence guard's two
    copies (6 P numbers); activations of a batch (input, and per layer the
    pre-activation, activation and their gradients: about ``B (F + 4 sum widths +
    4 C)`` numbers); and the model's own full-batch input when its rows are gathered
    (``n F``).
    """
    itemsize = 8 if estimator.dtype == "float64" else 4
    hidden = _hidden_sizes(estimator.hidden_layer_sizes)
    n_params = MLP.n_parameters(n_features, n_classes, hidden)
    batch = batch_size_for(int(estimator.batch_size), n_rows)
    activations = batch * (n_features + 4 * sum(hidden) + 4 * n_classes + 4)
    data = n_rows * (n_features + 2) if batch >= n_rows else 0
    return itemsize * (6 * n_params + activations + data)


def default_max_stack_bytes(device="cpu"):
    """The default bound of one stack's memory (as :func:`model_bytes` counts it).

    On CUDA (any device but the CPU), a quarter of the device's free memory (1 GiB
    when unknown): one stack of many small models costs about one launch-bound step.
    On a CPU, one core's share of the last-level cache (its size over the cores that
    share it; 16 MiB when unknown), the stack size measured fastest per model and step
    (``benchmarks/bench_lockstep.py --part stacks``): smaller stacks pay the per-step
    overhead with fewer models, larger ones spill out of the cache (an MLP 2-100-3 in
    full batch on the spiral in float64, about 1 MiB per model, cost 2.2 times as much
    per model and step in a stack of 32 as in one of 12 to 24, on a 32 MiB L3 shared
    by 2 cores). Each worker of a parallel search holds one stack at a time, so each
    core's share keeps them all in the cache.
    """
    device = str(device)
    if not device.startswith("cpu"):
        from ._classifier import _available_memory

        available = _available_memory(device)
        return available // 4 if available else 2**30
    import glob
    import os

    def read(path):
        with open(path) as f:
            return f.read().strip()

    best = None
    try:
        for index in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
            if read(os.path.join(index, "type")) not in ("Unified", "Data"):
                continue
            level = int(read(os.path.join(index, "level")))
            text = read(os.path.join(index, "size")).upper()
            size = int(text.rstrip("KMB")) * {"K": 2**10, "M": 2**20}.get(text[-1], 1)
            cores = 0
            for part in read(os.path.join(index, "shared_cpu_list")).split(","):
                first, _, last = part.partition("-")
                cores += int(last or first) - int(first) + 1
            if best is None or level > best[0]:
                best = (level, size // max(cores, 1))
    except (OSError, ValueError):
        best = None
    return best[1] if best and best[1] > 0 else 16 * 2**20


def _split_stacks(models, max_bytes):
    """Chunks of ``models`` (one group) that each fit in ``max_bytes``."""
    m = models[0]
    per_model = model_bytes(
        m.estimator,
        max(len(x.data[0]) for x in models),
        m.data[0].shape[1],
        len(m.classes_),
    )
    return balanced_chunks(models, max(1, int(max_bytes // max(per_model, 1))))


def balanced_chunks(items, size):
    """``items`` cut into the fewest chunks of at most ``size``, of equal sizes.

    Sizes differ by at most one (17 models at most 16 per stack are stacks of 9 and 8,
    not 16 and 1: a stack costs per step about what its largest member does, so a
    leftover stack of one model would cost nearly as much as a full one).
    """
    n_chunks = -(-len(items) // size)
    base, extra = divmod(len(items), n_chunks)
    chunks, start = [], 0
    for i in range(n_chunks):
        stop = start + base + (i < extra)
        chunks.append(items[start:stop])
        start = stop
    return chunks


# --------------------------------------------------------------------- training


def _interrupt_flag(state):
    """Ctrl-C sets ``state["stop"]`` (training ends after the step); a second raises."""
    return deferred_sigint(
        lambda: state["stop"], lambda: state.__setitem__("stop", True)
    )


def _optimizer(models, params):
    est = models[0].estimator
    cls, kwargs = est._optimizer_spec(models[0].net.device)
    kwargs = {k.removeprefix("optimizer__"): v for k, v in kwargs.items()}
    # The same class and kernel (fused or foreach) as the single fit, so that the
    # elementwise arithmetic of every update is the same.
    return cls(params, lr=float(est.lr), **kwargs)


class _Data:
    """The stack's training rows: one source tensor and per-model index tables.

    Models that train on the same data share its tensors; the rows of model k are
    ``offsets[k] + i`` for ``i < n[k]`` in the source.
    """

    def __init__(self, models):
        distinct, offsets = {}, []
        for m in models:
            if m.dataset_key not in distinct:
                start = sum(len(d[0]) for d in distinct.values())
                distinct[m.dataset_key] = m.data
                offsets.append(start)
            else:
                keys = list(distinct)
                position = keys.index(m.dataset_key)
                offsets.append(sum(len(distinct[k][0]) for k in keys[:position]))
        sources = list(distinct.values())
        first = sources[0]
        self.shared = len(sources) == 1
        self.X = first[0] if self.shared else torch.cat([d[0] for d in sources])
        self.y = first[1] if self.shared else torch.cat([d[1] for d in sources])
        self.weighted = any(d[2] is not None for d in sources)
        self.w = None
        if self.weighted:
            self.w = torch.cat(
                [
                    d[2] if d[2] is not None else torch.ones_like(d[0][:, 0])
                    for d in sources
                ]
            )
        self.device = self.X.device
        self.offsets = torch.tensor(offsets, device=self.device)
        self.n = [len(m.data[0]) for m in models]
        self.K = len(models)
        # Same steps per epoch for all: either every model is full batch, or all have
        # batches of batch_size rows (the last one of each epoch shorter).
        self.batch_size = batch_size_for(
            int(models[0].estimator.batch_size), max(self.n)
        )
        self.spe = steps_per_epoch(self.batch_size, max(self.n))

    def gather(self, idx, valid):
        """X, y and row weights (None when all rows count once) of rows ``idx``."""
        X, y = self.X[idx], self.y[idx]
        if self.w is None and bool(valid.all()):
            return X, y, None
        mask = valid.to(X.dtype)
        return X, y, (mask if self.w is None else self.w[idx] * mask)

    def full_batch(self):
        """Every model's rows, padded to the longest: (K, N, F), (K, N), weights."""
        K, N = self.K, max(self.n)
        if self.shared and not self.weighted:
            # One data set for all: a view, no copy.
            return self.X.expand(K, *self.X.shape), self.y.expand(K, N), None
        cols = torch.arange(N, device=self.device)
        n = torch.tensor(self.n, device=self.device)
        valid = cols < n.unsqueeze(1)
        idx = torch.where(
            valid, self.offsets.unsqueeze(1) + cols, self.offsets.unsqueeze(1)
        )
        return self.gather(idx, valid)

    def epoch_table(self, models):
        """Rows of every active model for one epoch, in its own shuffled order."""
        width = self.spe * self.batch_size
        table = torch.zeros(self.K, width, dtype=torch.long)
        valid = torch.zeros(self.K, width, dtype=torch.bool)
        for k, m in enumerate(models):
            if m.active:
                n = self.n[k]
                # TensorBatches' draw: one permutation per epoch from the model's own
                # generator, on the CPU.
                table[k, :n] = torch.randperm(n, generator=m.net.generator)
                valid[k, :n] = True
        table = table.to(self.device) + self.offsets.unsqueeze(1)
        return table, valid.to(self.device)


def _net_X(data):
    X, _, w = data
    return X if w is None else {"X": X, "sample_weight": w}


def _begin(models, epochs):
    """The models' own callbacks' on_train_begin, as their own fit would call it."""
    full = epochs > 1
    for m in models:
        callbacks = dict(m.net.callbacks_)
        callbacks["loss_clock"].epochs = epochs if full else None
        bar = callbacks["progress_bar"]
        bar.epochs = epochs if full else None
        verbose, bar.verbose = bar.verbose, 0  # the stack shows one bar for all
        m.net.notify("on_train_begin", X=_net_X(m.data), y=m.data[1])
        bar.verbose = verbose


def _train_stack(models, *, epochs, state, progress=None):
    """Train the models of one stack for ``epochs`` epochs, recording per model."""
    K = len(models)
    data = _Data(models)
    spe = data.spe
    stack = StackedMLP([m.net.module_ for m in models])
    params = list(stack.parameters())
    optimizer = _optimizer(models, params)
    n_classes = len(models[0].classes_)
    full = epochs > 1
    crits = [m.net.criterion_ for m in models]
    schedule = {
        "n_classes": n_classes,
        "amplitude": np.array([c.amplitude for c in crits]),
        "period": np.array([c.period for c in crits]),
        "shape": [c.shape for c in crits],
        "order": [c.order for c in crits],
        "seed": np.array([c.random_state for c in crits]),
    }
    # LossClock: the last period of a fit trains with the plain base loss.
    static_from = np.array(
        [
            epochs - c.period if (m.estimator.static_last_period and full) else math.inf
            for m, c in zip(models, crits, strict=True)
        ]
    )
    groups = {}
    for k, c in enumerate(crits):
        groups.setdefault(c.base, []).append(k)
    groups = {b: torch.tensor(ix, device=data.device) for b, ix in groups.items()}

    def per_sample(outputs, y):
        if len(groups) == 1:
            return class_major_losses(outputs, y, crits[0].base)
        losses = outputs.new_empty(y.shape)
        for base, ix in groups.items():
            losses[ix] = class_major_losses(outputs[ix], y[ix], base)
        return losses

    f64 = torch.float64
    full_batch = data.full_batch() if spe == 1 else None
    # DivergenceGuard's schedule: copy the parameters at the start of every
    # ceil(16 / spe)-th epoch, keep the copy once that epoch's loss proved finite.
    every = max(1, math.ceil(16 / spe))
    good = [p.detach().clone() for p in params]
    start = [p.detach().clone() for p in params]
    good_epoch, next_copy, copied = 0, every, False
    best = [math.inf] * K
    active, active_index = list(range(K)), None
    step = 0
    table_start, gammas_np = 0, ()
    with torch.enable_grad(), torch.inference_mode(False):
        for epoch in range(epochs):
            if epoch >= next_copy:
                with torch.no_grad():
                    for c, p in zip(start, params, strict=True):
                        c.copy_(p)
                copied = True
            if full_batch is None:
                table, valid = data.epoch_table(models)
            stats = torch.zeros(K, 4, dtype=f64, device=data.device)
            gamma_sum = np.zeros((K, n_classes))
            batch_losses = []
            n_steps = 0
            for s in range(spe):
                t = step / spe
                row = step - table_start
                if row >= len(gammas_np):
                    table_start, row = step, 0
                    gammas_np, gammas, statics = _weights_table(
                        step, spe * epochs, spe, schedule, static_from, data
                    )
                gamma_np, gamma, static = gammas_np[row], gammas[row], statics[row]
                if full_batch is not None:
                    xb, yb, wb = full_batch
                else:
                    cols = slice(s * data.batch_size, (s + 1) * data.batch_size)
                    xb, yb, wb = data.gather(table[:, cols], valid[:, cols])
                optimizer.zero_grad()
                outputs = stack(xb.transpose(1, 2))
                losses = per_sample(outputs, yb)
                loss = weighted_mean(losses, yb, gamma, sample_weight=wb)
                # Model k's gradient of the sum is that of its own loss.
                (loss if active_index is None else loss[active_index]).sum().backward()
                optimizer.step()
                with torch.no_grad():
                    # LossClock's record of the step: loss, base loss and accuracy of
                    # the batch, weighted by its rows (or sample weights).
                    # max(dim=1) gives argmax's indices (the first maximum, NaN first) and is
                    # an order of magnitude faster over the class axis of (K, C, B).
                    correct = outputs.detach().max(dim=1).indices == yb
                    losses = losses.detach()
                    if wb is None:
                        total = torch.full((K,), float(yb.shape[1]), dtype=f64)
                        total = total.to(data.device)
                        parts = [
                            loss.detach().to(f64) * total,
                            losses.sum(dim=-1, dtype=f64),
                            correct.sum(dim=-1, dtype=f64),
                            total,
                        ]
                    else:
                        total = wb.sum(dim=-1, dtype=f64)
                        parts = [
                            loss.detach().to(f64) * total,
                            (wb * losses).sum(dim=-1, dtype=f64),
                            (wb * correct).sum(dim=-1, dtype=f64),
                            total,
                        ]
                    stats += torch.stack(parts, dim=1)
                    batch_losses.append(loss.detach())
                gamma_sum += gamma_np
                n_steps += 1
                step += 1
                for k in active:
                    models[k].last_time, models[k].last_static = t, bool(static[k])
                if state["stop"]:
                    break
            _write_rows(
                models,
                active,
                stats,
                gamma_sum,
                n_steps,
                step / spe,
                batch_losses,
                best,
            )
            for k in active:
                models[k].end_step = step
            if state["stop"]:
                break
            bad = [
                k
                for k in active
                if not math.isfinite(models[k].history_rows[-1]["train_loss"])
            ]
            for k in bad:
                _diverge(models[k], k, good, good_epoch)
                # Its guard stops where it stood when the model diverged.
                models[k].guard = {
                    "_good_epoch": good_epoch,
                    "_next_copy": next_copy,
                    "_every": every,
                    "_copied": copied,
                }
            if bad:
                active = [k for k in active if k not in bad]
                active_index = torch.tensor(
                    active, dtype=torch.long, device=data.device
                )
            if copied and active:
                good, start = start, good
                good_epoch, next_copy, copied = epoch, epoch + every, False
            if progress is not None:
                progress(epoch + 1, len(active))
            if not active:
                break
    for k in active:
        _extract(models[k], k, params, optimizer)
        # DivergenceGuard's check at the end: the last step may have overflowed the
        # parameters (or the outputs) that the last finite loss had vouched for.
        cause = non_finite_cause(models[k].net, models[k].data[0])
        if cause is not None:
            _diverge(models[k], k, good, good_epoch, cause)
    guard = {
        "_good_epoch": good_epoch,
        "_next_copy": next_copy,
        "_every": every,
        "_copied": copied,
    }
    for k, m in enumerate(models):
        _end(m, guard, spe, best[k], state["stop"])


def _weights_table(first, n_steps, spe, schedule, static_from, data):
    """Gamma of every model at the times of steps ``first, first + 1, ...``.

    One call of class_weights for many steps at once (at most about a million weights):
    the times ``step / spe`` are those the clock sets, and the array path computes
    what the scalar one computes for each (the schedules' tests check it).
    """
    k, c = len(static_from), schedule["n_classes"]
    count = min(n_steps - first, max(1, 2**20 // (k * c)))
    times = np.arange(first, first + count) / spe
    gammas = class_weights(times, **schedule)  # (count, K, C)
    statics = times[:, None] >= static_from[None, :] - 1e-9
    # The static last period: weights 1 (class_weights takes one static flag per
    # time, not one per configuration).
    gammas[statics] = 1.0
    return gammas, torch.from_numpy(gammas).to(data.device, data.X.dtype), statics


def _write_rows(models, active, stats, gamma_sum, n_steps, time_, batch_losses, best):
    """One history row per active model, with the keys and arithmetic of LossClock."""
    if not n_steps:
        return
    values = stats.tolist()
    losses = torch.stack(batch_losses, dim=1).tolist()
    for k in active:
        m = models[k]
        v = values[k]
        total = v[3]
        sizes = m.batch_sizes
        row = {
            "batches": [
                {"train_loss": losses[k][i], "train_batch_size": sizes[i]}
                for i in range(n_steps)
            ],
            "epoch": len(m.history_rows) + 1,
            "train_batch_count": n_steps,
            "loss_time": time_,
            "class_weights": (gamma_sum[k] / n_steps).tolist(),
        }
        loss = v[0] / total if total else math.nan
        row["train_loss"] = loss
        row["train_loss_best"] = loss < best[k]
        best[k] = min(best[k], loss)
        base = v[1] / total if total else math.nan
        row["train_base_loss"] = base
        if m.net.criterion_.base == "cross_entropy":
            row["train_cross_entropy"] = base
        row["train_accuracy"] = v[2] / total if total else math.nan
        m.history_rows.append(row)


def _diverge(model, k, good, good_epoch, cause=None):
    """DivergenceGuard for model k: restore its last good parameters and stop it."""
    if cause is None:
        cause = f"the loss became {model.history_rows[-1]['train_loss']}"
    diverged_at = len(model.history_rows)
    with torch.no_grad():
        for p, g in zip(model.net.module_.parameters(), good, strict=True):
            p.copy_(g[k])
    # Its optimizer never stepped: its state is empty, as the guard leaves it.
    model.net.optimizer_.state.clear()
    del model.history_rows[good_epoch:]
    model.diverged = True
    model.active = False
    warnings.warn(
        divergence_message(cause, diverged_at, good_epoch),
        RuntimeWarning,
        stacklevel=4,
    )


def _extract(model, k, params, optimizer):
    """Model k's parameters and optimizer state, out of the stack into its own net."""
    own = list(model.net.module_.parameters())
    opt = model.net.optimizer_
    with torch.no_grad():
        for p, stacked in zip(own, params, strict=True):
            p.copy_(stacked[k])
            state = optimizer.state.get(stacked)
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
            opt.state[p] = mine


def _end(model, guard, spe, best, stopped):
    """Write the model's history and its callbacks' end-of-training state."""
    net = model.net
    for row in model.history_rows:
        net.history.append(row)
    callbacks = dict(net.callbacks_)
    clock = callbacks["loss_clock"]
    end_step = getattr(model, "end_step", 0)
    clock._step = end_step
    clock.time_ = end_step / spe
    clock._best_loss = best
    clock.stop_requested = bool(stopped)
    divergence = callbacks["divergence_guard"]
    for key, value in getattr(model, "guard", guard).items():
        setattr(divergence, key, value)
    divergence.diverged_ = model.diverged
    # The stack made the guard's end-of-training check (_train_stack); the guard's own
    # copies are of the initial parameters, not the last kept ones: drop them so that
    # on_train_end neither repeats the check nor could roll back to them.
    divergence._good = divergence._start = None
    if end_step:
        net.criterion_.set_time(model.last_time, static=model.last_static)
    bar = callbacks["progress_bar"]
    bar._done = len(model.history_rows) if bar.verbose else 0
    net.notify("on_train_end", X=_net_X(model.data), y=model.data[1])


# ----------------------------------------------------------------- the public API


def _warn_static(estimator, y):
    """The single fit's warning when the whole fit would be the plain base loss."""
    n_classes = len(np.unique(np.asarray(y)))
    estimator._warn_if_static(estimator._period(n_classes), estimator.max_epochs)


def _finalize(model):
    """The estimator's own fitted attributes, computed by its own code."""
    est = model.estimator
    state = est._fitted_state(model.net, model.data, model.classes_, continuing=False)
    before = model.before
    kept = ("n_features_in_", "feature_names_in_")
    for key in [k for k in before if k.endswith("_") and k not in kept]:
        if key not in state:
            est.__dict__.pop(key, None)
    est.__dict__.update(state)


class _Progress:
    """A tqdm bar per stack (epochs), and a line when it starts and ends."""

    def __init__(self, verbose, label, file=None):
        self.verbose = verbose
        self.label = label
        self.file = file if file is not None else sys.stderr

    def start(self, index, n_stacks, models, epochs):
        self.t0 = time.perf_counter()
        self.bar = None
        if not self.verbose:
            return None
        est = models[0].estimator
        desc = f"{self.label}stack {index}/{n_stacks} ({len(models)} models)"
        print(
            f"[lockstep] {desc}: {est.optimizer} lr={est.lr:g}, hidden="
            f"{_hidden_sizes(est.hidden_layer_sizes)}, batch_size={est.batch_size}, "
            f"{epochs} epochs",
            file=self.file,
        )
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=epochs,
            unit="epoch",
            desc=desc,
            file=self.file,
            leave=False,
            mininterval=0.5,
        )

        def update(done, n_active):
            self.bar.update(done - self.bar.n)

        return update

    def end(self, index, n_stacks, models):
        elapsed = time.perf_counter() - self.t0
        if self.bar is not None:
            self.bar.close()
        if self.verbose:
            diverged = sum(m.diverged for m in models)
            print(
                f"[lockstep] {self.label}stack {index}/{n_stacks}: {len(models)} models "
                f"trained in {elapsed:.2f}s"
                + (f" ({diverged} diverged)" if diverged else ""),
                file=self.file,
            )
        return elapsed


def fit_datasets(
    estimators,
    datasets,
    *,
    errors="raise",
    interrupt="warn",
    verbose=0,
    max_stack_bytes=None,
    label="",
):
    """Fit each estimator on its own data set, in stacks where possible.

    Parameters
    ----------
    estimators : list of estimators
    datasets : list of (X, y, sample_weight, key)
        One per estimator; estimators whose ``key`` is the same (and not None) train
        on the same data, which their stack then holds once.
    errors : {"raise", "return"}
        What a failure of one estimator's fit does: raise, or be returned in its slot.
    interrupt : {"warn", "raise"}
        What Ctrl-C does: end training after the current step and warn (as a fit
        does), or raise KeyboardInterrupt once every estimator is restored.

    Returns
    -------
    errors : list of (Exception or None)
    fit_times : list of float
        Seconds per estimator (its preparation and record, and its share of its stack).
    """
    n = len(estimators)
    failures = [None] * n
    times = [0.0] * n
    models, fallback = {}, []
    cache = {}
    for k, (est, (X, y, w, key)) in enumerate(zip(estimators, datasets, strict=True)):
        if unstackable_reason(est) is not None:
            fallback.append(k)
            continue
        t0 = time.perf_counter()
        try:
            _warn_static(est, y)
            models[k] = _prepare(
                est, X, y, w, ("key", key) if key is not None else ("own", k), cache
            )
        except Exception as exc:
            if errors == "raise":
                _restore_all(models)
                raise
            failures[k] = exc
        times[k] += time.perf_counter() - t0
    groups = {}
    for k, m in models.items():
        groups.setdefault(_stack_key(m), []).append(k)
    stacks = []
    for ks in groups.values():
        m0 = models[ks[0]]
        limit = max_stack_bytes or default_max_stack_bytes(m0.net.device)
        chunks = _split_stacks([models[k] for k in ks], limit)
        start = 0
        for chunk in chunks:
            stacks.append(ks[start : start + len(chunk)])
            start += len(chunk)
    state = {"stop": False}
    progress = _Progress(verbose, label)
    done = set()
    try:
        with _interrupt_flag(state):
            for i, ks in enumerate(stacks, 1):
                if state["stop"]:
                    break
                chunk = [models[k] for k in ks]
                epochs = int(chunk[0].estimator.max_epochs)
                _begin(chunk, epochs)
                update = progress.start(i, len(stacks), chunk, epochs)
                _train_stack(chunk, epochs=epochs, state=state, progress=update)
                elapsed = progress.end(i, len(stacks), chunk)
                for k in ks:
                    times[k] += elapsed / len(ks)
                    done.add(k)
            if state["stop"] and interrupt == "raise":
                raise KeyboardInterrupt
            for k in sorted(done):
                t0 = time.perf_counter()
                try:
                    _finalize(models[k])
                except Exception as exc:
                    if errors == "raise":
                        raise
                    failures[k] = exc
                    _restore(models[k])
                times[k] += time.perf_counter() - t0
                if state["stop"]:
                    est = models[k].estimator
                    warnings.warn(
                        f"Training interrupted by user after {est.n_iter_} epochs; the "
                        "estimator holds the network as it was at the end of the last "
                        "step.",
                        UserWarning,
                        stacklevel=3,
                    )
            for k in models:
                if k not in done:
                    _restore(models[k])
            if state["stop"]:
                untrained = len(models) - len(done) + len(fallback)
                if untrained:
                    warnings.warn(
                        f"Training interrupted by user: {untrained} estimator(s) whose "
                        "stack had not started (or that train alone) were not fitted.",
                        UserWarning,
                        stacklevel=3,
                    )
                return failures, times
            for k in fallback:
                X, y, w, _ = datasets[k]
                t0 = time.perf_counter()
                try:
                    if w is None:
                        estimators[k].fit(X, y)
                    else:
                        estimators[k].fit(X, y, sample_weight=w)
                except Exception as exc:
                    if errors == "raise":
                        raise
                    failures[k] = exc
                times[k] += time.perf_counter() - t0
    except BaseException:
        _restore_all(models)
        raise
    return failures, times


def _restore(model):
    est = model.estimator
    est.__dict__.clear()
    est.__dict__.update(model.before)


def _restore_all(models):
    for m in models.values():
        _restore(m)


def fit_lockstep(
    estimators, X, y, *, rows=None, sample_weight=None, verbose=0, max_stack_bytes=None
):
    """Fit many DynamicalLossClassifier configurations at once.

    Estimators that differ only in what can be stacked (``amplitude``, ``period``,
    ``shape``, ``order``, ``static_last_period``, a named ``loss``, ``random_state``)
    and their rows train together as one stacked network; the others form further
    stacks, one after another. Each estimator ends as if fitted alone: it predicts,
    reports ``loss_curve_``, ``dynamics_`` and ``sharpness_``, and pickles as its own
    ``fit`` would leave it. Estimators that cannot be stacked (a CNN or a custom module,
    a callable loss, user callbacks, ``sharpness_every``, ``early_stopping``) are
    fitted by their own ``fit``, after the stacks.

    Parameters
    ----------
    estimators : list of DynamicalLossClassifier
        Fitted in place (each as a new fit).
    X : array-like of shape (n_samples, n_features)
        Training data, shared by all.
    y : array-like of shape (n_samples,)
        Labels.
    rows : list of array-like of int, default=None
        One index array per estimator: the rows of (X, y) it trains on, in that
        order (cross-validation folds). None trains every estimator on all rows.
    sample_weight : array-like of shape (n_samples,), default=None
        Weights of the samples (indexed by ``rows`` with them).
    verbose : int, default=0
        1 prints a line per stack and shows a progress bar over its epochs.
    max_stack_bytes : int, default=None
        Most memory one stack may use, estimated by :func:`model_bytes` per model;
        a larger group of models is split into several stacks. None is a quarter of
        the memory of the device (its free memory on CUDA).

    Returns
    -------
    estimators : list of DynamicalLossClassifier
        The same estimators, fitted.

    Examples
    --------
    >>> from skdynloss import DynamicalLossClassifier, fit_lockstep, make_spiral
    >>> X, y = make_spiral(30)
    >>> models = [
    ...     DynamicalLossClassifier(amplitude=a, period=2, max_epochs=10,
    ...                             hidden_layer_sizes=(8,), random_state=0)
    ...     for a in (1, 5, 20)
    ... ]
    >>> [len(m.loss_curve_) for m in fit_lockstep(models, X, y)]
    [10, 10, 10]
    """
    estimators = list(estimators)
    if rows is not None and len(rows) != len(estimators):
        raise ValueError(
            f"rows holds {len(rows)} index arrays for {len(estimators)} estimators."
        )
    datasets = []
    for k in range(len(estimators)):
        if rows is None:
            datasets.append((X, y, sample_weight, "all"))
            continue
        r = np.asarray(rows[k])
        if r.ndim != 1 or not np.issubdtype(r.dtype, np.integer):
            raise ValueError(
                "rows must hold one 1-d array of row indices per estimator."
            )
        datasets.append(
            (
                _safe_indexing(X, r),
                _safe_indexing(y, r),
                None if sample_weight is None else _safe_indexing(sample_weight, r),
                r.tobytes(),
            )
        )
    fit_datasets(estimators, datasets, verbose=verbose, max_stack_bytes=max_stack_bytes)
    return estimators
