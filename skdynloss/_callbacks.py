"""skorch callbacks: the loss clock and its record, the divergence guard, the sharpness
tracker and the progress bar.

Shaped like skorch's LRScheduler: state is reset in ``initialize`` and ``on_train_begin``,
what was applied is recorded in the net's history, and the clock resumes from the
history on a warm start. They use the net's public attributes only (``criterion_``,
``module_``, ``optimizer_``, ``history``, ``batch_size``), and every hook does the same
work whichever other callbacks are installed.
"""

import math
import sys
import time
import warnings

import numpy as np
import torch
from skorch.callbacks import Callback

from ._losses import dynamical_loss, per_sample_losses, weighted_mean
from ._net import StopTraining, _is_dict, batch_size_for, steps_per_epoch


def _rows(X):
    return len(X["X"]) if _is_dict(X) else len(X)  # a StackData: its longest


def _sample_weight(X):
    return X.get("sample_weight") if _is_dict(X) else None


def weighted_mean_loss(base, sample_weight=None):
    """``(outputs, y) -> mean base loss`` (weighted by ``sample_weight`` when given)."""

    def loss(outputs, y):
        return weighted_mean(
            per_sample_losses(outputs, y, base), y, None, sample_weight=sample_weight
        )

    return loss


def top_hessian_eigenvalue(module, loss_fn, X, y, *, random_state):
    """The top Hessian eigenvalue of ``loss_fn`` (Lanczos), or NaN where it cannot be
    computed, with how it went: ``(value, info)``.

    A curvature beyond the range of the training dtype (inputs near its limits, or a
    diverging network) makes the Hessian-vector products non-finite and ARPACK fail;
    that is a property of the network, not a failure of the fit, so it is reported
    (NaN, and the error in ``info``) rather than raised.
    """
    from ._sharpness import hessian_eigenvalues

    try:
        result = hessian_eigenvalues(
            module,
            loss_fn,
            X,
            y,
            k=1,
            tol=SharpnessTracker.tol,
            random_state=random_state,
        )
        if not np.isfinite(result.eigenvalues).all():
            raise ValueError("the Hessian-vector products are not finite")
    except (ArithmeticError, ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
        # (ARPACK's errors derive from RuntimeError.)
        return math.nan, {
            "n_samples": len(X),
            "converged": False,
            "error": f"{type(exc).__name__}: {exc}",
        }
    return float(result.eigenvalues[0]), {
        "n_samples": len(X),
        "n_matvec": int(result.n_matvec),
        "residual": float(result.residuals[0]),
        "converged": bool(result.converged),
    }


class LossClock(Callback):
    """Advance the time of a :class:`~skdynloss.DynamicalLoss` criterion, and record.

    Before every *training* step (never on validation or prediction batches) it calls
    ``criterion.set_time(t)`` with ``t = step / steps_per_epoch``, so ``period`` is
    measured in epochs and the weights change smoothly within an epoch; with full-batch
    training one step is one epoch, the paper's unit. On every ``partial_fit`` (and
    warm-started ``fit``) the clock resumes from the last ``loss_time`` in the history.

    Per epoch it records in ``net.history``: ``train_loss`` (the dynamical loss, as
    skorch's PassthroughScoring would), ``loss_time`` (the clock at the end of the
    epoch), ``class_weights`` (the weights applied, averaged over the epoch's steps),
    ``train_base_loss`` (the unweighted base loss; also ``train_cross_entropy`` when the
    base is cross-entropy) and ``train_accuracy``, both of the training batches,
    measured in the same forward passes as the loss, before each update, as skorch
    measures ``train_loss``.

    Setting :attr:`stop_requested` (the classifier's Ctrl-C handler does) ends training
    at the end of the current step; the epoch it interrupts is recorded as far as it ran.

    Parameters
    ----------
    static_last_period : bool, default=True
        Train the last ``period`` epochs of a call with the plain base loss, as the
        paper does. Needs ``epochs``.
    epochs : int or None, default=None
        Number of epochs of the coming call; None (``partial_fit``) never goes static.
    """

    def __init__(self, static_last_period=True, epochs=None):
        self.static_last_period = static_last_period
        self.epochs = epochs

    def initialize(self):
        self.time_ = 0.0
        self.static_from_ = math.inf
        self.steps_per_epoch_ = 1
        self.stop_requested = False
        self._step = 0
        self._best_loss = math.inf
        self._reset_epoch()
        return self

    def _reset_epoch(self):
        self._n_steps = 0
        self._gamma_sum = None
        self._gamma = None
        self._stats = None
        self._losses = None  # a stack's per-step losses (K,), read back per epoch

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        if net.members is not None:
            self._begin_stack(net, X)
            return
        history = net.history
        self.time_ = history[-1].get("loss_time", 0.0) if len(history) else 0.0
        spe = steps_per_epoch(net.batch_size, _rows(X))
        self.steps_per_epoch_ = spe
        # Steps are numbered from the very first epoch, so that a resumed fit computes
        # exactly the times of one long fit: step k runs at time k / steps_per_epoch.
        self._step = round(self.time_ * spe)
        if self.static_last_period and self.epochs is not None:
            self.static_from_ = self.time_ + self.epochs - net.criterion_.period
        else:
            self.static_from_ = math.inf
        self.stop_requested = False
        losses = [row.get("train_loss", math.inf) for row in history[-1:]]
        self._best_loss = min(self._best_loss, *losses) if history else math.inf
        self._reset_epoch()

    def on_epoch_begin(self, net, **kwargs):
        self._reset_epoch()
        if net.members is not None:
            # Each active model's own history gets the epoch's row, as its own net's
            # on_epoch_begin makes it.
            for k in _active(net):
                member = net.members[k]
                member.history.new_epoch()
                member.history.record("epoch", len(member.history))

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        if self.stop_requested:
            # Ctrl-C arrived after the last step's end: no new step.
            raise StopTraining
        t = self._step / self.steps_per_epoch_
        # A small tolerance: times are fractions of steps_per_epoch (with K models,
        # one static flag per model).
        static = t >= self.static_from_ - 1e-9
        self._gamma = net.criterion_.set_time(t, static=static)
        self._last = (t, static)

    def on_batch_end(
        self,
        net,
        batch=None,
        training=False,
        y_pred=None,
        base_losses=None,
        **kwargs,
    ):
        if not training:
            return
        if net.members is not None:
            self._record_stack_step(net, batch, y_pred, base_losses, kwargs["losses"])
            return
        X, y = batch
        weight = _sample_weight(X)
        # skorch has just read the step's loss back (.item()) into the batch's row.
        batch_row = net.history[-1]["batches"][-1]
        # Detached already: no autograd here (and no no_grad context to pay for).
        outputs = y_pred.detach()
        if base_losses is None:  # a train step of another net's making
            with torch.no_grad():
                base_losses = per_sample_losses(outputs, y, net.criterion_.base)
        correct = outputs.argmax(dim=-1) == y
        f64 = torch.float64
        if weight is None:
            parts = [base_losses.sum(dtype=f64), correct.sum(dtype=f64)]
        else:
            parts = [
                (weight * base_losses).sum(dtype=f64),
                (weight * correct).sum(dtype=f64),
                weight.sum(dtype=f64),
            ]
        # One read-back per step, as skorch's own loss.item() (nothing to wait for
        # on the CPU; on a GPU skorch synchronises at every step already).
        values = torch.stack(parts).tolist()
        total = values[2] if weight is not None else float(y.shape[0])
        stats = (batch_row["train_loss"] * total, values[0], values[1], total)
        acc = self._stats
        if acc is not None:
            stats = tuple(a + b for a, b in zip(acc, stats, strict=True))
        self._stats = stats
        gamma = self._gamma
        if self._gamma_sum is not None:
            gamma = [a + b for a, b in zip(self._gamma_sum, gamma, strict=True)]
        self._gamma_sum = gamma
        self._n_steps += 1
        self._step += 1
        self.time_ = self._step / self.steps_per_epoch_
        if self.stop_requested:
            # skorch ends training quietly on KeyboardInterrupt (its EarlyStopping
            # uses the same signal); on_train_end records the epoch as far as it ran.
            raise StopTraining

    def _write(self, net, row):
        """Record the epoch's steps so far in its history row."""
        values = self._stats
        total = values[3]
        row["loss_time"] = self.time_
        row["class_weights"] = [g / self._n_steps for g in self._gamma_sum]
        # The epoch's loss: the mean over its batches weighted by their size (or
        # weight), as skorch's PassthroughScoring computes it.
        loss = values[0] / total if total else math.nan
        row["train_loss"] = loss
        row["train_loss_best"] = loss < self._best_loss
        self._best_loss = min(self._best_loss, loss)
        base = values[1] / total if total else math.nan
        row["train_base_loss"] = base
        if net.criterion_.base == "cross_entropy":
            row["train_cross_entropy"] = base
        row["train_accuracy"] = values[2] / total if total else math.nan
        self._reset_epoch()

    def on_epoch_end(self, net, **kwargs):
        if net.members is not None:
            self._write_stack(net)
        elif self._n_steps:
            self._write(net, net.history[-1])

    def on_train_end(self, net, **kwargs):
        if net.members is not None:
            self._end_stack(net)
            return
        history = net.history
        if not len(history) or "loss_time" in history[-1]:
            return
        row = history[-1]
        if not self._n_steps:
            # Interrupted before its first step finished: the epoch did not happen.
            del history[-1]
            return
        # An epoch cut short (Ctrl-C): its record covers the steps that ran.
        row["batches"] = row["batches"][: self._n_steps]
        row["train_batch_count"] = self._n_steps
        self._write(net, row)

    # -------------------------------------------------- K models (a stack's clock)

    def _begin_stack(self, net, X):
        """Start from the models' own clocks, which their own on_train_begin set as
        for a fit of their own (one time for all: a stack's models share it)."""
        clocks = [_callback(m, "loss_clock") for m in net.members]
        first = clocks[0]
        self.time_ = first.time_
        self._step = first._step
        self.steps_per_epoch_ = first.steps_per_epoch_
        self.static_from_ = np.array([c.static_from_ for c in clocks])
        self._best_loss = np.array([c._best_loss for c in clocks])
        self._last = None
        self.stop_requested = False
        # Rows of model k in batch s, as TensorBatches cuts its own rows.
        bs = batch_size_for(net.batch_size, _rows(X))
        self._sizes = [[min(bs, n - start) for start in range(0, n, bs)] for n in X.n]
        self._reset_epoch()

    def _record_stack_step(self, net, batch, y_pred, base_losses, losses):
        X, y = batch
        weight = _sample_weight(X)
        outputs = y_pred.detach()
        # max(dim).indices: argmax's indices (the first maximum), an order of magnitude
        # faster than argmax over the class axis of (K, C, B).
        correct = outputs.max(dim=net.module_.class_dim).indices == y
        f64 = torch.float64
        if weight is None:
            total = torch.full_like(losses, float(y.shape[1]), dtype=f64)
            parts = [
                losses.to(f64) * total,
                base_losses.sum(dim=-1, dtype=f64),
                correct.sum(dim=-1, dtype=f64),
                total,
            ]
        else:
            total = weight.sum(dim=-1, dtype=f64)
            parts = [
                losses.to(f64) * total,
                (weight * base_losses).sum(dim=-1, dtype=f64),
                (weight * correct).sum(dim=-1, dtype=f64),
                total,
            ]
        stats = torch.stack(parts, dim=1)
        self._stats = stats if self._stats is None else self._stats + stats
        # Each model's batch rows are written at the end of the epoch, from one
        # read-back of the epoch's losses (K Python calls per step would cost more
        # than a small model's step).
        if self._losses is None:
            self._losses = []
        self._losses.append(losses)
        gamma = self._gamma
        self._gamma_sum = gamma if self._gamma_sum is None else self._gamma_sum + gamma
        self._n_steps += 1
        self._step += 1
        self.time_ = self._step / self.steps_per_epoch_
        if self.stop_requested:
            raise StopTraining

    def _write_stack(self, net):
        """Each active model's epoch row, with the arithmetic of a fit of its own."""
        if not self._n_steps:
            return
        values = self._stats.tolist()
        per_step = torch.stack(self._losses, dim=1).tolist()  # (K, steps)
        for k in _active(net):
            member = net.members[k]
            row = member.history[-1]
            # The batch rows skorch records in a fit of its own.
            row["batches"] = [
                {"train_loss": loss, "train_batch_size": size}
                for loss, size in zip(per_step[k], self._sizes[k], strict=False)
            ]
            row["train_batch_count"] = self._n_steps
            v = values[k]
            total = v[3]
            row["loss_time"] = self.time_
            row["class_weights"] = (self._gamma_sum[k] / self._n_steps).tolist()
            loss = v[0] / total if total else math.nan
            row["train_loss"] = loss
            row["train_loss_best"] = loss < self._best_loss[k]
            self._best_loss[k] = min(self._best_loss[k], loss)
            base = v[1] / total if total else math.nan
            row["train_base_loss"] = base
            if member.criterion_.base == "cross_entropy":
                row["train_cross_entropy"] = base
            row["train_accuracy"] = v[2] / total if total else math.nan
        self._reset_epoch()

    def _end_stack(self, net):
        if self._n_steps:
            # An epoch cut short (Ctrl-C): its record covers the steps that ran.
            self._write_stack(net)
        for k in _active(net):
            history = net.members[k].history
            if len(history) and "loss_time" not in history[-1]:
                # Interrupted before its first step finished: the epoch did not happen.
                del history[-1]
        for k in _active(net):
            self.export(net, k)

    def export(self, net, k):
        """Model k's clock as a fit of its own leaves it (when it stops, or at the
        end): its clock callback, and its criterion at the time of its last step."""
        member = net.members[k]
        clock = _callback(member, "loss_clock")
        clock._step = self._step
        clock.time_ = self.time_
        clock._best_loss = float(self._best_loss[k])
        clock.stop_requested = self.stop_requested
        clock._reset_epoch()
        if self._last is not None:
            t, static = self._last
            clock._last = (t, bool(static[k]))
            member.criterion_.set_time(t, static=bool(static[k]))


def _callback(net, name):
    """The net's callback called ``name``."""
    return dict(net.callbacks_)[name]


def _active(net):
    """Indices of the models of a stack that still train."""
    return [k for k, a in enumerate(net.active_) if a]


def _state_tensors(module):
    return [t.detach() for t in [*module.parameters(), *module.buffers()]]


def non_finite_cause(net, X):
    """Why the trained ``net`` cannot predict ``X`` (its training inputs), or None.

    Its parameters are not finite, or its outputs on ``X`` are not: checked by a
    bound for a plain MLP (``max |x|`` through each layer's row-sum norm and bias,
    which ReLU cannot raise), and by a forward pass over ``X`` when the bound does
    not rule an overflow out or the module is not a plain MLP.
    """
    tensors = _state_tensors(net.module_)
    if not all(bool(t.isfinite().all()) for t in tensors):
        return "the parameters became infinite or NaN"
    X = X["X"] if _is_dict(X) else X
    if X is None or not len(X):
        return None
    layers = list(net.module_.children())
    if layers and all(isinstance(m, torch.nn.Linear | torch.nn.ReLU) for m in layers):
        with torch.no_grad():
            bound = float(X.detach().abs().max())
            for m in layers:
                if isinstance(m, torch.nn.Linear):
                    bound = float(m.weight.abs().sum(dim=1).max()) * bound
                    if m.bias is not None:
                        bound += float(m.bias.abs().max())
        if math.isfinite(bound) and bound < torch.finfo(X.dtype).max / 16:
            return None
    with torch.no_grad():
        out = net.forward(X, training=False)
    if not bool(torch.isfinite(out).all()):
        return "the outputs on the training data became infinite or NaN"
    return None


def divergence_message(cause, diverged_at, good_epoch):
    """The warning of a divergence (the single fit's guard and the stacked one)."""
    return (
        f"Training diverged ({cause}) at epoch {diverged_at}; stopped and restored the "
        f"parameters after epoch {good_epoch}, the last ones kept with a finite loss. "
        "A smaller learning rate or amplitude usually helps."
    )


class DivergenceGuard(Callback):
    """Stop training when the loss stops being finite, and keep the last good state.

    An epoch's ``train_loss`` is measured at the parameters the epoch *started* from, so
    a finite loss vouches for those parameters, not for the ones the epoch produced. The
    guard therefore copies the parameters at the start of an epoch and keeps the copy
    once that epoch's loss proved finite. It copies at the start of every epoch, or of
    every ``ceil(snapshot_steps / steps_per_epoch)``-th epoch when epochs are shorter
    than :attr:`snapshot_steps` steps (full-batch training, where an epoch is one step
    and a copy would cost a few percent of it). When an epoch's loss is NaN or
    infinite, the last kept parameters are restored, the optimizer's state (momentum,
    Adam moments, perhaps non-finite now) is cleared, the history is cut back to the
    epochs that produced them (so the loss clock resumes consistently), a warning names
    the likely cause, and training stops. The last epoch's loss cannot vouch for the
    parameters its last step left, so at the end of training parameters that are no
    longer finite are rolled back the same way. The estimator stays usable: it
    predicts with the restored parameters and can be trained further.
    """

    #: Fewest training steps between two copies of the parameters.
    snapshot_steps = 16

    def initialize(self):
        self.diverged_ = False
        self._good = self._start = self._X = None
        self._good_epoch = self._next_copy = 0
        self._every = 1
        self._copied = False
        return self

    def on_train_begin(self, net, X=None, **kwargs):
        self.diverged_ = False
        self._X = X
        sources = _state_tensors(net.module_)
        self._good = [t.clone() for t in sources]
        self._start = [t.clone() for t in sources]
        # With K models, epochs are counted in the models' own histories (all of the
        # same length when the stack starts); the stack's own counts from 0.
        self._offset = 0 if net.members is None else len(net.members[0].history)
        self._good_epoch = self._offset + len(net.history)
        spe = steps_per_epoch(net.batch_size, _rows(X))
        self._every = max(1, math.ceil(self.snapshot_steps / spe))
        self._next_copy = self._good_epoch + self._every
        self._copied = False

    def on_train_end(self, net, **kwargs):
        if net.members is not None:
            try:
                for k in _active(net):
                    member = net.members[k]
                    # Model k's last parameters and optimizer state into its own net,
                    # then the end-of-training check there.
                    net.export_model(k)
                    cause = non_finite_cause(member, self._X.X[self._X.rows[k]])
                    if cause is not None:
                        self._roll_back(net, cause, k)
                    self.export(net, k)
            finally:
                self._good = self._start = self._X = None
            return
        try:
            # The last epoch's loss vouches for the parameters it started from, not for
            # those its last step left: a step can still overflow them, or the outputs.
            if self._good is not None and not self.diverged_:
                cause = non_finite_cause(net, getattr(self, "_X", None))
                if cause is not None:
                    self._roll_back(net, cause)
        finally:
            # Do not carry copies of the parameters or the data into pickles.
            self._good = self._start = self._X = None

    def _roll_back(self, net, cause, k=None):
        """Restore the last kept parameters, cut the history back to them, warn.

        With ``k``, model k of a stack: into its own net (its guard records the
        divergence), and it stops while the others go on."""
        own = net if k is None else net.members[k]
        guard = self if k is None else _callback(own, "divergence_guard")
        with torch.no_grad():
            for target, good in zip(
                _state_tensors(own.module_), self._good, strict=True
            ):
                target.copy_(good if k is None else good[k])
        guard.diverged_ = True
        # Its optimizer's state may be non-finite now (a model of a stack: its own
        # optimizer never stepped, and stays empty).
        own.optimizer_.state.clear()
        diverged_at = len(own.history)
        del own.history[self._good_epoch :]
        warnings.warn(
            divergence_message(cause, diverged_at, self._good_epoch),
            RuntimeWarning,
            stacklevel=3,
        )

    def export(self, net, k):
        """Model k's guard as a fit of its own leaves it."""
        guard = _callback(net.members[k], "divergence_guard")
        guard._good_epoch = self._good_epoch
        guard._next_copy = self._next_copy
        guard._every = self._every
        guard._copied = self._copied
        # Its copies would be of the parameters its own on_train_begin saw.
        guard._good = guard._start = guard._X = None

    def on_epoch_begin(self, net, **kwargs):
        # The epoch's row is already in the history: this epoch follows len - 1 others.
        if self._offset + len(net.history) - 1 >= self._next_copy:
            for copy, source in zip(
                self._start, _state_tensors(net.module_), strict=True
            ):
                copy.copy_(source)
            self._copied = True

    def on_epoch_end(self, net, **kwargs):
        if net.members is not None:
            self._epoch_end_stack(net)
            return
        history = net.history
        loss = history[-1].get("train_loss", 0.0)
        if math.isfinite(loss):
            if self._copied:
                # The parameters this epoch started from gave a finite loss: keep them.
                self._good, self._start = self._start, self._good
                self._good_epoch = len(history) - 1
                self._next_copy = self._good_epoch + self._every
                self._copied = False
            return
        self._roll_back(net, f"the loss became {loss}")
        raise KeyboardInterrupt  # skorch's signal to end training

    def _epoch_end_stack(self, net):
        clock = _callback(net, "loss_clock")
        bad = []
        for k in _active(net):
            loss = net.members[k].history[-1].get("train_loss", 0.0)
            if not math.isfinite(loss):
                bad.append((k, loss))
        for k, loss in bad:
            self._roll_back(net, f"the loss became {loss}", k)
            clock.export(net, k)
            self.export(net, k)
            net.stop_model(k)
        if not any(net.active_):
            raise KeyboardInterrupt  # skorch's signal to end training
        if self._copied:
            self._good, self._start = self._start, self._good
            self._good_epoch = self._offset + len(net.history) - 1
            self._next_copy = self._good_epoch + self._every
            self._copied = False


class SharpnessTracker(Callback):
    """Record the top Hessian eigenvalue of the training loss every ``every`` epochs.

    Records in ``net.history``: ``sharpness_dynamical``, the largest eigenvalue of the
    loss being minimised at the end of the epoch (the dynamical loss with the weights of
    the current time, as the paper tracks it), ``sharpness_base``, that of the plain
    base loss (also ``sharpness_cross_entropy`` for cross-entropy), and
    ``stability_threshold`` (2/lr for gradient descent).

    Parameters
    ----------
    every : int
        Track every so many epochs (epochs counted over the whole history).
    max_samples : int
        Rows of the training data used (a seeded subsample when there are more).
    threshold : float
        The stability threshold to record beside the eigenvalues.
    random_state : int
        Seed of the subsample and of the Lanczos start vector.
    """

    #: Relative accuracy asked of Lanczos for every sharpness the package reports.
    tol = 1e-4

    def __init__(
        self, every=1, max_samples=2048, threshold=float("nan"), random_state=0
    ):
        self.every = every
        self.max_samples = max_samples
        self.threshold = threshold
        self.random_state = random_state

    def initialize(self):
        self._data = None
        return self

    @staticmethod
    def subsample(n, max_samples, seed):
        """Sorted indices of a seeded subsample of ``max_samples`` rows, or None."""
        if n <= max_samples:
            return None
        gen = torch.Generator().manual_seed(int(seed))
        return torch.randperm(n, generator=gen)[:max_samples].sort().values

    def set_data(self, X, y, sample_weight=None):
        """Give the training data (tensors on the net's device); None releases them."""
        if X is None:
            self._data = None
            return
        idx = self.subsample(len(X), self.max_samples, self.random_state)
        if idx is not None:
            idx = idx.to(X.device)
            X, y = X[idx], y[idx]
            sample_weight = None if sample_weight is None else sample_weight[idx]
        self._data = (X, y, sample_weight)

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        if self._data is None or epoch % self.every:
            return
        X, y, weight = self._data
        criterion = net.criterion_
        clock = dict(net.callbacks_)["loss_clock"]
        gamma = criterion.weights_at(
            clock.time_, static=clock.time_ >= clock.static_from_ - 1e-9
        ).to(X.dtype)

        def dynamical(outputs, target):
            return dynamical_loss(
                outputs, target, gamma, base=criterion.base, sample_weight=weight
            )

        values = {}
        for name, loss_fn in (
            ("dynamical", dynamical),
            ("base", weighted_mean_loss(criterion.base, weight)),
        ):
            values[name], _ = top_hessian_eigenvalue(
                net.module_, loss_fn, X, y, random_state=self.random_state
            )
        row = net.history[-1]
        row["sharpness_dynamical"] = values["dynamical"]
        row["sharpness_base"] = values["base"]
        if criterion.base == "cross_entropy":
            row["sharpness_cross_entropy"] = values["base"]
        row["stability_threshold"] = self.threshold


class ProgressBar(Callback):
    """One progress report per fit, and with ``verbose >= 2`` a throttled epoch log.

    On a terminal a tqdm bar shows the epochs done out of the call's total, the current
    loss and training accuracy, and the time left, redrawn at most every
    :attr:`interval` seconds. In a file or pipe (a log, a CI job) the same report is a
    plain line instead, with no carriage-return redraws, written at most every
    :attr:`file_interval` seconds or tenth of the fit, and at its end; so a fit writes
    a bounded number of lines. With ``verbose >= 2`` a line per epoch is printed, at
    most every :attr:`log_interval` seconds (the last epoch always).

    Parameters
    ----------
    verbose : int, default=1
    epochs : int or None, default=None
        The call's epochs (set by the classifier before each call); no bar without.
    file : file-like, default=None
        Where to write (``sys.stderr`` when None).
    """

    interval = 0.2
    file_interval = 10.0
    log_interval = 1.0

    def __init__(self, verbose=1, epochs=None, file=None):
        self.verbose = verbose
        self.epochs = epochs
        self.file = file

    def initialize(self):
        self._bar = None
        self._lines = False
        return self

    def on_train_begin(self, net, **kwargs):
        file = self.file if self.file is not None else sys.stderr
        self._file = file
        tty = bool(getattr(file, "isatty", lambda: False)())
        self._interval = self.interval if tty else self.file_interval
        self._done = 0
        self._start = self._last = self._last_log = time.monotonic()
        self._next_mark = 0
        self._bar = None
        # Plain lines where the output is not a terminal.
        self._lines = bool(self.epochs and self.verbose >= 1 and not tty)
        self._reported = 0
        if self.epochs and self.verbose >= 1 and tty:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.epochs,
                unit="epoch",
                file=file,
                dynamic_ncols=True,
                mininterval=0,
                miniters=1,
                leave=True,
                desc="fit",
            )

    def _postfix(self, row):
        parts = []
        if "train_loss" in row:
            parts.append(f"loss={row['train_loss']:.4g}")
        if "train_accuracy" in row:
            parts.append(f"acc={row['train_accuracy']:.3f}")
        if "valid_acc" in row:
            parts.append(f"valid_acc={row['valid_acc']:.3f}")
        return ", ".join(parts)

    @staticmethod
    def _clock(seconds):
        seconds = int(round(seconds))
        hours, rest = divmod(seconds, 3600)
        return (f"{hours}:" if hours else "") + f"{rest // 60:02d}:{rest % 60:02d}"

    def _line(self, net, now):
        """``fit: 30/100 epochs (30%), loss=..., acc=..., 00:03 elapsed, 00:07 left``."""
        elapsed = now - self._start
        total = self.epochs
        left = elapsed / self._done * (total - self._done) if self._done else 0.0
        parts = [f"fit: {self._done}/{total} epochs ({100 * self._done // total}%)"]
        if len(net.history):
            postfix = self._postfix(net.history[-1])
            if postfix:
                parts.append(postfix)
        parts.append(f"{self._clock(elapsed)} elapsed")
        if self._done < total:
            parts.append(f"{self._clock(left)} left")
        print(", ".join(parts), file=self._file, flush=True)
        self._reported = self._done

    def on_epoch_end(self, net, **kwargs):
        if not self.verbose:
            return
        self._done += 1
        now = time.monotonic()
        last = self.epochs is not None and self._done >= self.epochs
        due = (
            now - self._last >= self._interval or last or self._done >= self._next_mark
        )
        if (self._bar is not None or self._lines) and due:
            self._next_mark = self._done + max(1, (self.epochs or 1) // 10)
            if self._bar is not None:
                row = net.history[-1]
                self._bar.set_postfix_str(self._postfix(row), refresh=False)
                self._bar.update(self._done - self._bar.n)
            else:
                self._line(net, now)
            self._last = now
        if self.verbose >= 2 and (now - self._last_log >= self.log_interval or last):
            row = net.history[-1]
            line = f"epoch {row['epoch']}: {self._postfix(row)}"
            if self._bar is not None:
                self._bar.write(line, file=self._file)
            else:
                print(line, file=self._file)
            self._last_log = now

    def on_train_end(self, net, **kwargs):
        if self._bar is not None:
            self._bar.update(self._done - self._bar.n)
            self._bar.close()
        elif self._lines and self._done and self._reported != self._done:
            # Training ended before the call's last epoch (early stopping, Ctrl-C).
            self._line(net, time.monotonic())
        self._bar = None
        self._lines = False

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_bar"] = None
        state.pop("_file", None)
        state["file"] = None if self.file in (sys.stderr, sys.stdout) else self.file
        return state


class CycleEarlyStopping(Callback):
    """Stop a fit when its monitored record stops improving, at the ends of periods.

    The rule of scikit-learn's MLPClassifier, judged where a dynamical loss allows:

    * an epoch *improves* when its value beats the best so far by ``tol``
      (``value >= best + tol`` for a score, ``value <= best - tol`` for a loss), and
      the fit stops at a judged epoch more than ``patience`` epochs after the last
      epoch that improved;
    * without a tilt (``amplitude == 1``) every epoch is judged, and with
      ``restore_best`` the parameters of the best epoch are kept, as MLPClassifier
      keeps them;
    * with a tilt, only the epoch in which a period ends is judged (the class weights
      are back to 1 there, so the values of different periods compare; inside a
      period they trade one class against the others by design), never one of the
      call's plain last period, and the rule does not stop before ``min_cycles``
      whole cycles through the classes since the call began. When it stops, a fit
      with ``static_last_period`` trains one more period with the plain base loss
      (all weights 1, from the next step on, ``ceil(period)`` epochs) and ends there,
      with the parameters it ends with; without it, the fit ends at once and
      ``restore_best`` keeps the parameters of the best judged epoch.

    It acts on its own net only: it reads the net's history and criterion, moves the
    start of the plain period through the net's loss clock (``static_from_``), and
    ends training with skorch's signal, a KeyboardInterrupt raised in
    ``on_epoch_end``. So in a stack each model does what its own fit does (the stack
    takes each model's ``static_from_`` from its clock after its callbacks ran, and a
    model that raises stops alone).

    Parameters
    ----------
    monitor : str, default="valid_acc"
        The history key judged.
    lower_is_better : bool, default=False
    patience : int, default=10
        Epochs without improvement (``n_iter_no_change``).
    tol : float, default=1e-4
    restore_best : bool, default=True
        Keep the parameters of the best judged epoch when the fit does not end with a
        plain period (and did not diverge: then the divergence guard's are kept).
    min_cycles : int, default=2
        Whole cycles through the classes before a tilted fit may stop.

    Attributes
    ----------
    converged_ : bool
        Whether the rule's condition held at a judged epoch of the last call (the fit
        stopped, or its own plain last period began, there).
    stopped_epoch_ : int or None
        The epoch at which the rule decided to stop (None when it did not).
    best_ : float
        The best judged value of the call; ``best_epoch_`` its epoch.
    """

    #: Times that differ by less than this (in periods or epochs) are the same.
    eps = 1e-9

    def __init__(
        self,
        monitor="valid_acc",
        lower_is_better=False,
        patience=10,
        tol=1e-4,
        restore_best=True,
        min_cycles=2,
    ):
        self.monitor = monitor
        self.lower_is_better = lower_is_better
        self.patience = patience
        self.tol = tol
        self.restore_best = restore_best
        self.min_cycles = min_cycles

    def initialize(self):
        self._reset(0, 0.0)
        return self

    def _reset(self, epoch, time):
        self.best_ = math.inf if self.lower_is_better else -math.inf
        self.best_epoch_ = None
        self.improved_epoch_ = epoch
        self.converged_ = False
        self.stopped_epoch_ = None
        self.plain_until_ = None
        self.start_epoch_ = epoch
        self.start_time_ = time
        self._best_weights = None

    def on_train_begin(self, net, **kwargs):
        history = net.history
        start = history[-1].get("loss_time", 0.0) if len(history) else 0.0
        # Each call is judged afresh: its own cycles, its own plain last period.
        self._reset(len(history), start)

    @staticmethod
    def _tilted(net):
        return net.criterion_.amplitude != 1

    @staticmethod
    def _ends_plain(net):
        """Whether the call ends with a plain period (its clock's static one)."""
        clock = _callback(net, "loss_clock")
        return bool(clock.static_last_period and clock.epochs is not None)

    def judged(self, net):
        """Whether the epoch just ended is judged, and the end of the period it
        completed (its time; the epoch's own end without a tilt)."""
        history = net.history
        end = history[-1]["loss_time"]
        if not self._tilted(net):
            return True, end
        begin = history[-2].get("loss_time", 0.0) if len(history) > 1 else 0.0
        period = net.criterion_.period
        k = math.floor(end / period + self.eps)
        if k <= math.floor(begin / period + self.eps):
            return False, end  # no period ended in this epoch
        boundary = k * period
        clock = _callback(net, "loss_clock")
        if boundary > clock.static_from_ + self.eps * period:
            return False, end  # inside the call's plain last period
        return True, boundary

    def on_epoch_end(self, net, **kwargs):
        history = net.history
        epoch = len(history)
        if self.plain_until_ is not None:
            if epoch >= self.plain_until_:
                raise KeyboardInterrupt  # skorch's signal to end training
            return
        if self.stopped_epoch_ is not None:
            return
        judged, boundary = self.judged(net)
        if not judged:
            return
        value = history[-1][self.monitor]
        best, tol = self.best_, self.tol
        if self.lower_is_better:
            improved, better = value <= best - tol, value < best
        else:
            improved, better = value >= best + tol, value > best
        if improved:
            self.improved_epoch_ = epoch
        tilted = self._tilted(net)
        if better:
            self.best_, self.best_epoch_ = float(value), epoch
            if self.restore_best and not (tilted and self._ends_plain(net)):
                self._best_weights = {
                    k: v.detach().clone() for k, v in net.module_.state_dict().items()
                }
        if tilted:
            criterion = net.criterion_
            cycles = criterion.n_classes * criterion.period * self.min_cycles
            if boundary < self.start_time_ + cycles - self.eps * criterion.period:
                return
        if epoch - self.improved_epoch_ <= self.patience:
            return
        self.converged_ = True
        self.stopped_epoch_ = epoch
        if not (tilted and self._ends_plain(net)):
            raise KeyboardInterrupt
        clock = _callback(net, "loss_clock")
        period = net.criterion_.period
        if boundary >= clock.static_from_ - self.eps * period:
            return  # the call's own plain last period has begun: it ends as planned
        # The plain period, from the next step on, for one period of whole epochs.
        clock.static_from_ = history[-1]["loss_time"]
        self.plain_until_ = epoch + math.ceil(period - self.eps)

    def on_train_end(self, net, **kwargs):
        weights, self._best_weights = self._best_weights, None
        n = len(net.history)
        if (
            weights is not None
            and not (self._tilted(net) and self._ends_plain(net))
            and self.best_epoch_ is not None
            and self.best_epoch_ < n
            and not _callback(net, "divergence_guard").diverged_
        ):
            # The best judged epoch's parameters, as MLPClassifier keeps them (not
            # after a divergence: the guard's parameters are the last it vouched for).
            net.module_.load_state_dict(weights)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_best_weights"] = None
        return state


#: The callbacks of a model's own net that a stack runs once for all K models.
STACK_RUN = ("loss_clock", "divergence_guard", "progress_bar")


def member_callbacks(net):
    """A stack member's callbacks that the stack notifies per model (all but those it
    runs for all K at once), as (name, callback) pairs."""
    return [(n, cb) for n, cb in net.callbacks_ if n not in STACK_RUN]


def stack_aware(callback):
    """Whether a callback may run in a stack: it says so with ``stack_aware = True``
    (or is one of the package's own per-model callbacks)."""
    return bool(getattr(callback, "stack_aware", False))


class MemberCallbacks(Callback):
    """Run each model's own callbacks in a stack, with the model's own net.

    A stack runs the clock, the divergence guard and the progress bar once for all K
    models. Every other callback of model k (the sharpness tracker, early stopping and
    its validation scores, stack-aware user callbacks) is notified with model k's own
    net, as in a fit of its own:

    * ``on_batch_begin`` / ``on_batch_end`` with model k's rows of the batch, its
      outputs ``y_pred`` (B, C) and its ``loss``;
    * ``on_epoch_begin`` / ``on_epoch_end`` with its net, whose history holds its
      rows and whose ``module_`` holds its parameters at the end of the epoch (and
      which runs its validation epoch first, when it has a validation split);
    * a KeyboardInterrupt raised by ``on_epoch_end`` (skorch's signal to stop, as its
      EarlyStopping raises it) stops model k alone: it keeps its state of that moment
      while the others go on;
    * a start of the plain period set on model k's own clock (``static_from_``, which
      :class:`CycleEarlyStopping` moves) applies to model k from the next step on.

    ``on_train_begin`` and ``on_train_end`` reach every model's callbacks from the
    engine, with the model's own data, before and after the stack trains.
    """

    def initialize(self):
        self._callbacks = None
        return self

    def on_train_begin(self, net, X=None, **kwargs):
        self._data = X
        self._callbacks = [member_callbacks(m) for m in net.members]
        self._batch = [
            [cb for _, cb in cbs if _overrides(cb, "on_batch_begin", "on_batch_end")]
            for cbs in self._callbacks
        ]

    def on_train_end(self, net, **kwargs):
        self._data = self._callbacks = self._batch = None

    def _slice(self, net, k, batch, n):
        X, y = batch
        if _is_dict(X):
            X = {key: value[k, :n] for key, value in X.items()}
            if "sample_weight" in X and self._data.sample_weight is None:
                X = X["X"]
        else:
            X = X[k, :n]
        return X, y[k, :n]

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if not training or not any(self._batch):
            return
        clock = _callback(net, "loss_clock")
        for k in _active(net):
            if self._batch[k]:
                n = clock._sizes[k][clock._n_steps]
                member_batch = self._slice(net, k, batch, n)
                for cb in self._batch[k]:
                    cb.on_batch_begin(net.members[k], batch=member_batch, training=True)

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if not training or not any(self._batch):
            return
        clock = _callback(net, "loss_clock")
        losses = kwargs["losses"]
        class_dim = net.module_.class_dim
        for k in _active(net):
            if self._batch[k]:
                # The clock has counted the step already.
                n = clock._sizes[k][clock._n_steps - 1]
                member_batch = self._slice(net, k, batch, n)
                out = y_pred[k] if class_dim == -1 else y_pred[k].transpose(0, 1)
                for cb in self._batch[k]:
                    cb.on_batch_end(
                        net.members[k],
                        batch=member_batch,
                        training=True,
                        loss=losses[k],
                        y_pred=out[:n],
                    )

    def on_epoch_begin(self, net, **kwargs):
        for k in _active(net):
            member = net.members[k]
            for _, cb in self._callbacks[k]:
                cb.on_epoch_begin(member, **member.stack_datasets_)

    def on_epoch_end(self, net, **kwargs):
        clock = _callback(net, "loss_clock")
        for k in _active(net):
            if not self._callbacks[k]:
                continue
            member = net.members[k]
            # Its own net as its own fit would hold it at this epoch's end: its
            # parameters, optimizer state, clock and criterion.
            net.export_model(k)
            clock.export(net, k)
            iterator = getattr(member, "valid_iterator_", None)
            if iterator is not None:
                member.run_single_epoch(
                    iterator,
                    training=False,
                    prefix="valid",
                    step_fn=member.validation_step,
                )
                member._set_training(True)
            try:
                for _, cb in self._callbacks[k]:
                    cb.on_epoch_end(member, **member.stack_datasets_)
            except KeyboardInterrupt:
                # Model k stops here (its early stopping, or a callback's own stop).
                _callback(net, "divergence_guard").export(net, k)
                net.stop_model(k)
                continue
            # Its callbacks may have moved the start of its plain period (early
            # stopping does) on its own clock: the stack's clock follows from the
            # next step on, as its own clock would.
            clock.static_from_[k] = _callback(member, "loss_clock").static_from_
        if not any(net.active_):
            raise KeyboardInterrupt  # skorch's signal to end training


def _overrides(callback, *hooks):
    return any(
        getattr(type(callback), hook) is not getattr(Callback, hook) for hook in hooks
    )


#: The names the classifier gives its own callbacks and skorch's defaults it keeps.
RESERVED_NAMES = (
    "loss_clock",
    "divergence_guard",
    "sharpness_tracker",
    "progress_bar",
    "early_stopping",
    "train_loss",
    "valid_loss",
    "valid_acc",
    "epoch_timer",
    "print_log",
)
