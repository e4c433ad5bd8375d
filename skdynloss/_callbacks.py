"""skorch callbacks: the loss clock and per-epoch record, and the divergence guard.

Shaped like skorch's LRScheduler: state is reset in ``initialize``, what was applied is
recorded in the net's history, and the clock resumes from the history on a warm start.
"""

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from skorch.callbacks import Callback


class LossClock(Callback):
    """Advance the time of a :class:`~skdynloss.DynamicalCrossEntropy` criterion.

    The clock advances by ``1 / steps_per_epoch`` after every *training* step (never on
    validation or prediction batches), so ``period`` is measured in epochs and the weights
    change smoothly within an epoch; with full-batch training one step is one epoch, the
    paper's unit. On every ``partial_fit`` (and warm-started ``fit``) the clock resumes
    from the last ``loss_time`` recorded in the history.

    Per epoch it records in ``net.history``: ``loss_time`` (the clock at the end of the
    epoch), ``class_weights`` (the weights applied, averaged over the epoch's steps),
    ``train_cross_entropy`` and ``train_accuracy`` (plain cross-entropy and accuracy of
    the training batches, measured in the same forward passes as the loss, before each
    update, as skorch measures ``train_loss``).

    The weights of up to :attr:`plan_limit` steps are computed at once, and the record
    is reduced for many epochs at once when only the package's callbacks are installed
    (every row is complete when training ends); with any other callback every row is
    complete at the end of its epoch.

    Parameters
    ----------
    static_last_period : bool, default=True
        Train the last ``period`` epochs of a call with plain cross-entropy, as the paper
        does. Needs ``epochs``.
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
        self._step = 0
        self._end_step = None
        self._reset_record()
        self._reset_epoch()
        self._reset_plan()
        return self

    #: Log-probabilities (elements) kept before the record is reduced: bounds memory.
    pending_limit = 1 << 19

    def _reset_record(self):
        # The log-probabilities of the steps not reduced yet are copied into one
        # buffer (rows 0.._fill) and their targets kept; the epochs they belong to are
        # [history row, samples in pending, samples of the epoch, carry] where carry
        # holds [cross-entropy sum, correct] reduced before.
        self.__dict__.update(self._no_pending())
        self._buffer = None
        self._open_carry = [0.0, 0.0]
        self._defer = False

    @staticmethod
    def _no_pending():
        """The record's state with nothing waiting to be reduced."""
        return {
            "_fill": 0,
            "_slots": (),
            "_slot_i": 0,
            "_targets": [],
            "_closed": [],
            "_open_count": 0,
        }

    def _reset_epoch(self):
        self._n_steps = 0
        self._n_samples = 0
        # Where the epoch's weights lie in the plans: the rows of plans already
        # replaced, and the epoch's first row in the current plan.
        self._epoch_parts = []
        self._epoch_start = getattr(self, "_plan_i", 0)

    #: Most steps whose weights are computed together (one numpy pass, one tensor).
    plan_limit = 1024

    def _reset_plan(self):
        self._plan_len = self._plan_i = 0
        self._plan_size = min(16, self.plan_limit)
        self._plan = None

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        criterion = net.criterion_
        history = net.history
        self.time_ = history[-1].get("loss_time", 0.0) if len(history) else 0.0
        n = len(X)
        batch_size, spe = _batching(net, n)
        self.steps_per_epoch_ = spe
        self._batch_sizes = np.array(
            [min(batch_size, n - j * batch_size) for j in range(spe)]
        )
        # Steps are numbered from the very first epoch, so that a resumed fit computes
        # exactly the times of one long fit: step k runs at time k / steps_per_epoch.
        self._step = round(self.time_ * spe)
        self._end_step = None if self.epochs is None else self._step + self.epochs * spe
        self._reset_plan()
        if self.static_last_period and self.epochs is not None:
            self.static_from_ = self.time_ + self.epochs - criterion.period
        else:
            self.static_from_ = math.inf
        # Records of a call that ended with an exception are completed first.
        self._reduce_pending()
        self._reset_record()
        self._reset_epoch()
        # The cross-entropy and accuracy of many epochs are reduced together when no
        # callback can read them before the end of training (only the package's own
        # are installed); otherwise every epoch's row is complete at its end.
        self._defer = all(isinstance(cb, _OWN_CALLBACKS) for _, cb in net.callbacks_)

    def on_train_end(self, net, **kwargs):
        self._reduce_pending()
        self._reset_record()
        self._reset_plan()

    def __getstate__(self):
        # Device tensors of a call still running (or aborted by an exception) are not
        # pickled: the plan is recomputed at the next step, and records not reduced
        # yet are dropped.
        state = self.__dict__.copy()
        state.update(self._no_pending())
        state.update(_plan=None, _plan_len=0, _plan_i=0, _buffer=None)
        return state

    def _make_plan(self, criterion):
        """Compute the weights of the coming steps together (chunks grow to a limit)."""
        if self._plan is not None and self._epoch_start < self._plan_len:
            # The running epoch began in the plan being replaced.
            self._epoch_parts.append(self._plan[2][self._epoch_start :])
        self._epoch_start = 0
        if self._end_step is not None:
            # The length of the call is known: plan to its end, within the limit.
            k = max(1, min(self.plan_limit, self._end_step - self._step))
        else:
            # partial_fit: chunks grow from small ones.
            k = self._plan_size
            self._plan_size = min(2 * k, self.plan_limit)
        steps = self._step + np.arange(k)
        times = steps / self.steps_per_epoch_
        # A small tolerance: times are fractions of steps_per_epoch.
        static = times >= self.static_from_ - 1e-9
        table = criterion.weights_table(times, static)
        sizes = self._batch_sizes[steps % self.steps_per_epoch_]
        weights = criterion.weights
        rows = torch.from_numpy(table).to(weights.dtype)
        # Gamma / P in the buffer's dtype, as the loss would compute it at each step.
        scaled = rows / torch.from_numpy(sizes).to(weights.dtype)[:, None]
        device = weights.device
        # Rows are written through numpy on the CPU, as tensors elsewhere.
        on_cpu = criterion._numpy_view(weights) is not None
        self._plan = (
            times.tolist(),
            static.tolist(),
            table,
            rows.numpy(),
            [None] * k if on_cpu else rows.to(device).unbind(0),
            scaled.to(device).unbind(0),
            sizes.tolist(),
        )
        self._plan_len = k
        self._plan_i = 0

    def _epoch_weights(self):
        """The weights applied in the epoch's steps, averaged (a list)."""
        rows = self._plan[2][self._epoch_start : self._plan_i]
        if not self._epoch_parts and len(rows) == 1:
            return rows[0].tolist()  # full batch: one step per epoch
        total = sum(part.sum(axis=0) for part in [*self._epoch_parts, rows])
        return (total / self._n_steps).tolist()

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        if self._plan_i == self._plan_len:
            self._make_plan(net.criterion_)
        i = self._plan_i
        self._plan_i = i + 1
        times, static, table, rows, device_rows, scaled, sizes = self._plan
        net.criterion_._set_scheduled(
            times[i], static[i], rows[i], device_rows[i], scaled[i], sizes[i]
        )

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if not training:
            return
        # Copy the step's log-probabilities aside and reduce many steps (and epochs)
        # at once: one copy per step instead of four ops, and one device
        # synchronisation per reduction. Copied, not kept: holding every step's tensor
        # alive makes each step allocate fresh memory, which costs more than the copy.
        log_probs, target = net.criterion_.last_log_probs
        n = target.shape[0]
        slots = self._slots
        i = self._slot_i
        if i == len(slots) or slots[i].shape[0] != n:
            slots = self._new_slots(log_probs, n)
            i = 0
        slots[i].copy_(log_probs)
        self._slot_i = i + 1
        self._fill += n
        self._targets.append(target)
        self._open_count += n
        self._n_samples += n
        self._n_steps += 1
        self._step += 1
        self.time_ = self._step / self.steps_per_epoch_

    def _new_slots(self, log_probs, n):
        """Views of the buffer for the coming steps (this one first), made at once."""
        # Batch sizes of this step and of the rest of the plan, when they match.
        sizes = self._plan[6][self._plan_i - 1 :] if self._plan is not None else []
        if not sizes or sizes[0] != n:
            sizes = [n]
        buffer = self._buffer
        room = 0 if buffer is None else buffer.shape[0] - self._fill
        if room < n:
            self._reduce_pending()
            if buffer is None or buffer.shape[0] < n:
                # Room for the whole call when it fits in pending_limit elements, and
                # for at least one batch.
                n_classes = max(1, log_probs.shape[1])
                call = self.steps_per_epoch_ * n * (self.epochs or 1)
                rows = max(n, min(call, self.pending_limit // n_classes))
                buffer = self._buffer = log_probs.new_empty((rows, log_probs.shape[1]))
            room = buffer.shape[0]
        take, total = 0, 0
        for size in sizes:
            if total + size > room:
                break
            take, total = take + 1, total + size
        self._slots = buffer[self._fill : self._fill + total].split(sizes[:take])
        self._slot_i = 0
        return self._slots

    def _reduce_pending(self):
        """Write the cross-entropy and accuracy of the epochs closed since last time."""
        counts = [seg[1] for seg in self._closed]
        if self._open_count:
            counts.append(self._open_count)
        if not counts:
            return
        sums = self._segment_sums(counts) if self._fill else [[0.0, 0.0]] * len(counts)
        for (row, _, n_samples, carry), (ce, correct) in zip(
            self._closed, sums, strict=False
        ):
            row["train_cross_entropy"] = (ce + carry[0]) / n_samples
            row["train_accuracy"] = (correct + carry[1]) / n_samples
        if self._open_count:
            # Part of an epoch still running: carried into its record.
            self._open_carry[0] += sums[-1][0]
            self._open_carry[1] += sums[-1][1]
        self.__dict__.update(self._no_pending())

    def _segment_sums(self, counts):
        """[cross-entropy sum, correct] of consecutive runs of ``counts`` samples."""
        log_probs = self._buffer[: self._fill]
        targets = self._targets
        target = targets[0] if len(targets) == 1 else torch.cat(targets)
        ce = F.nll_loss(log_probs, target, reduction="none")
        # The first maximal index (as argmax) of the log-probabilities is that of the
        # logits; max(dim) finds it faster than argmax for few classes.
        correct = log_probs.max(dim=1).indices == target
        n_segments = len(counts)
        if counts.count(counts[0]) == n_segments:
            # Whole epochs of equal size (the usual case): sum rows of a view.
            ce_sums = ce.view(n_segments, -1).sum(dim=1, dtype=torch.float64)
            correct_sums = correct.view(n_segments, -1).sum(dim=1)
        else:
            device = ce.device
            segment = torch.repeat_interleave(
                torch.arange(n_segments, device=device),
                torch.tensor(counts, device=device),
            )
            zeros = torch.zeros(n_segments, dtype=torch.float64, device=device)
            ce_sums = zeros.index_add(0, segment, ce.double())
            correct_sums = zeros.index_add(0, segment, correct.double())
        return torch.stack([ce_sums, correct_sums.double()], dim=1).tolist()

    def on_epoch_end(self, net, **kwargs):
        if self._n_steps == 0:
            return
        row = list.__getitem__(net.history, -1)
        row["loss_time"] = self.time_
        row["class_weights"] = self._epoch_weights()
        self._closed.append([row, self._open_count, self._n_samples, self._open_carry])
        self._open_count = 0
        self._open_carry = [0.0, 0.0]
        if not self._defer:
            self._reduce_pending()
        self._reset_epoch()


def _state_tensors(net):
    """The module's parameters and buffers, detached.

    Detached tensors share storage with the parameters, so copies from and into them
    need no no_grad context (which costs more than the copy itself on small networks).
    """
    module = net.module_
    return [t.detach() for t in [*module.parameters(), *module.buffers()]]


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
    the likely cause, and training stops. The estimator stays usable: it predicts with
    the restored parameters and can be trained further.
    """

    #: Fewest training steps between two copies of the parameters.
    snapshot_steps = 16

    def initialize(self):
        self.diverged_ = False
        self._sources = self._good = self._start = None
        self._good_epoch = self._next_copy = 0
        self._every = 1
        self._copied = False
        return self

    def on_train_begin(self, net, X=None, **kwargs):
        self.diverged_ = False
        self._sources = _state_tensors(net)
        self._good = [t.clone() for t in self._sources]
        self._start = [t.clone() for t in self._sources]
        self._good_epoch = len(net.history)
        _, steps_per_epoch = _batching(net, len(X) if X is not None else 1)
        self._every = max(1, math.ceil(self.snapshot_steps / steps_per_epoch))
        self._next_copy = self._good_epoch + self._every
        self._copied = False

    def _current(self, net):
        """The tensors to copy, found anew if a parameter's data was replaced since the
        last look (the flat optimizers repoint the parameters they relink)."""
        sources = self._sources
        for p, t in zip(net.module_.parameters(), sources, strict=False):
            if p.data_ptr() != t.data_ptr():
                sources = self._sources = _state_tensors(net)
                break
        return sources

    def on_train_end(self, net, **kwargs):
        # Do not carry copies of the parameters into pickles of the estimator.
        self._sources = self._good = self._start = None

    def on_epoch_begin(self, net, **kwargs):
        # The epoch's row is already in the history: this epoch follows len - 1 others.
        if len(net.history) - 1 >= self._next_copy:
            torch._foreach_copy_(self._start, self._current(net))
            self._copied = True

    def on_epoch_end(self, net, **kwargs):
        history = net.history
        loss = list.__getitem__(history, -1).get("train_loss", 0.0)
        if math.isfinite(loss):
            if self._copied:
                # The parameters this epoch started from gave a finite loss: keep them.
                self._good, self._start = self._start, self._good
                self._good_epoch = len(history) - 1
                self._next_copy = self._good_epoch + self._every
                self._copied = False
            return
        torch._foreach_copy_(self._current(net), self._good)
        self.diverged_ = True
        net.optimizer_.state.clear()
        diverged_at = len(history)
        del history[self._good_epoch :]
        warnings.warn(
            f"Training diverged (the loss became {loss}) at epoch {diverged_at}; "
            f"stopped and restored the parameters after epoch {self._good_epoch}, the "
            "last ones kept with a finite loss. A smaller learning rate or amplitude "
            "usually helps.",
            RuntimeWarning,
            stacklevel=2,
        )
        # skorch's fit loop ends training quietly on KeyboardInterrupt (EarlyStopping
        # uses the same signal).
        raise KeyboardInterrupt


class SharpnessTracker(Callback):
    """Record the top Hessian eigenvalue of the training loss every ``every`` epochs.

    Records in ``net.history``: ``sharpness_dynamical``, the largest eigenvalue of the
    loss being minimised at the end of the epoch (the dynamical loss with the weights of
    the current time, as the paper tracks it), ``sharpness_cross_entropy``, that of plain
    cross-entropy, and ``stability_threshold`` (2/lr for gradient descent).

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
        self._X = self._y = None
        return self

    @staticmethod
    def subsample(n, max_samples, seed):
        """Sorted indices of a seeded subsample of ``max_samples`` rows, or None."""
        if n <= max_samples:
            return None
        rng = np.random.default_rng(seed)
        return torch.as_tensor(np.sort(rng.choice(n, size=max_samples, replace=False)))

    def set_data(self, X, y):
        """Give the training data (tensors on the net's device); None releases them."""
        if X is None:
            self._X = self._y = None
            return
        idx = self.subsample(len(X), self.max_samples, self.random_state)
        if idx is not None:
            idx = idx.to(X.device)
            X, y = X[idx], y[idx]
        self._X, self._y = X, y

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        if self._X is None or epoch % self.every:
            return
        from ._sharpness import hessian_eigenvalues

        clock = dict(net.callbacks_)["loss_clock"]
        criterion = net.criterion_
        gamma = torch.tensor(
            criterion._weights_list(
                clock.time_, clock.time_ >= clock.static_from_ - 1e-9
            ),
            dtype=self._X.dtype,
            device=self._X.device,
        )

        def dynamical_loss(logits, target):
            ce = F.cross_entropy(logits, target, reduction="none")
            return (gamma[target] * ce).mean()

        values = {}
        for name, loss_fn in (
            ("dynamical", dynamical_loss),
            ("cross_entropy", F.cross_entropy),
        ):
            result = hessian_eigenvalues(
                net.module_,
                loss_fn,
                self._X,
                self._y,
                k=1,
                tol=self.tol,
                random_state=self.random_state,
            )
            values[name] = float(result.eigenvalues[0])
        net.history.record("sharpness_dynamical", values["dynamical"])
        net.history.record("sharpness_cross_entropy", values["cross_entropy"])
        net.history.record("stability_threshold", self.threshold)


_OWN_CALLBACKS = (LossClock, DivergenceGuard, SharpnessTracker)


def _batching(net, n):
    """(batch size, steps per epoch) of the net's training on ``n`` rows."""
    batch_size = n if net.batch_size in (-1, None) else min(net.batch_size, n)
    return batch_size, max(1, math.ceil(n / max(1, batch_size)))
