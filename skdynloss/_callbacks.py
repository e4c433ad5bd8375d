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
        self._reset_epoch()
        return self

    #: Log-probabilities (elements) kept before the record is reduced: bounds memory.
    pending_limit = 1 << 22

    def _reset_epoch(self):
        self._ce = []
        self._correct = []
        self._pending = []
        self._pending_size = 0
        self._weight_sum = None
        self._n_steps = 0
        self._n_samples = 0

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        criterion = net.criterion_
        history = net.history
        self.time_ = history[-1].get("loss_time", 0.0) if len(history) else 0.0
        n = len(X)
        batch_size = n if net.batch_size in (-1, None) else min(net.batch_size, n)
        self.steps_per_epoch_ = max(1, math.ceil(n / batch_size))
        if self.static_last_period and self.epochs is not None:
            self.static_from_ = self.time_ + self.epochs - criterion.period
        else:
            self.static_from_ = math.inf
        self._reset_epoch()

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        criterion = net.criterion_
        # Compare with a small tolerance: the clock is a sum of 1/steps_per_epoch.
        gamma = criterion.set_time(
            self.time_, static=self.time_ >= self.static_from_ - 1e-9
        )
        weight_sum = self._weight_sum
        if weight_sum is None:
            self._weight_sum = list(gamma)
        else:
            for i, g in enumerate(gamma):
                weight_sum[i] += g

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if not training:
            return
        yi = batch[1]
        # Keep the (detached) log-probabilities of the step and reduce many steps at
        # once: four small ops per epoch instead of four per step, and one device
        # synchronisation per epoch.
        log_probs, target = net.criterion_.last_log_probs
        self._pending.append((log_probs, target))
        self._pending_size += log_probs.numel()
        if self._pending_size > self.pending_limit:
            self._reduce_pending()
        self._n_samples += yi.shape[0]
        self._n_steps += 1
        self.time_ += 1.0 / self.steps_per_epoch_

    def _reduce_pending(self):
        if not self._pending:
            return
        if len(self._pending) == 1:
            log_probs, target = self._pending[0]
        else:
            log_probs = torch.cat([p for p, _ in self._pending])
            target = torch.cat([t for _, t in self._pending])
        self._ce.append(F.nll_loss(log_probs, target, reduction="sum"))
        # argmax of the log-probabilities is the argmax of the logits.
        self._correct.append((log_probs.argmax(dim=1) == target).sum())
        self._pending = []
        self._pending_size = 0

    def on_epoch_end(self, net, **kwargs):
        if self._n_steps == 0:
            return
        self._reduce_pending()
        if len(self._ce) == 1:
            ce, correct = self._ce[0].item(), self._correct[0].item()
        else:
            ce = torch.stack(self._ce).sum().item()
            correct = torch.stack(self._correct).sum().item()
        # Snap to the epoch grid so that float sums of 1/steps_per_epoch do not drift.
        self.time_ = round(self.time_ * self.steps_per_epoch_) / self.steps_per_epoch_
        history = net.history
        history.record("loss_time", self.time_)
        history.record("class_weights", [w / self._n_steps for w in self._weight_sum])
        history.record("train_cross_entropy", ce / self._n_samples)
        history.record("train_accuracy", correct / self._n_samples)
        self._reset_epoch()


class DivergenceGuard(Callback):
    """Stop training when the loss stops being finite, and keep the last good state.

    An epoch's ``train_loss`` is measured at the parameters the epoch *started* from, so
    a finite loss vouches for those parameters, not for the ones the epoch produced. The
    guard therefore keeps two copies: the parameters at the start of the current epoch,
    and those at the start of the last epoch whose loss was finite. When an epoch's loss
    is NaN or infinite, the latter are restored, the optimizer's state (momentum, Adam
    moments, perhaps non-finite now) is cleared, the history is cut back to the epochs
    that produced the restored parameters (so the loss clock resumes consistently), a
    warning names the likely cause, and training stops. The estimator stays usable: it
    predicts with the restored parameters and can be trained further.
    """

    def initialize(self):
        self.diverged_ = False
        self._sources = self._good = self._start = None
        self._good_epoch = 0
        return self

    def on_train_begin(self, net, **kwargs):
        self.diverged_ = False
        module = net.module_
        # Detached views share storage with the parameters, so copies from and into
        # them need no no_grad context (which costs more than the copy itself on small
        # networks, at every epoch).
        self._sources = [t.detach() for t in [*module.parameters(), *module.buffers()]]
        self._good = [t.clone() for t in self._sources]
        self._start = [t.clone() for t in self._sources]
        self._good_epoch = len(net.history)

    def on_train_end(self, net, **kwargs):
        # Do not carry copies of the parameters into pickles of the estimator.
        self._sources = self._good = self._start = None

    def on_epoch_begin(self, net, **kwargs):
        torch._foreach_copy_(self._start, self._sources)

    def on_epoch_end(self, net, **kwargs):
        history = net.history
        loss = history[-1].get("train_loss", 0.0)
        if math.isfinite(loss):
            # The parameters this epoch started from gave a finite loss: keep them.
            self._good, self._start = self._start, self._good
            self._good_epoch = len(history) - 1
            return
        torch._foreach_copy_(self._sources, self._good)
        self.diverged_ = True
        net.optimizer_.state.clear()
        diverged_at = len(history)
        del history[self._good_epoch :]
        warnings.warn(
            f"Training diverged (the loss became {loss}) at epoch {diverged_at}; "
            f"stopped and restored the parameters after epoch {self._good_epoch}, the "
            "last ones with a finite loss. A smaller learning rate or amplitude usually "
            "helps.",
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
