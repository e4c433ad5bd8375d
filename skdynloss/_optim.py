"""SGD and Adam over one flat buffer: torch's updates in a handful of tensor ops.

For the small networks this package trains, an optimizer step costs far more Python
than arithmetic: ``torch.optim.Adam.step`` spends about 80 us per step on a 64-100-10
MLP (its fused kernel takes 10 us of that), as long as the forward pass. Here the
parameters and their gradients are views into one contiguous buffer each, so one step
is a few whole-buffer tensor ops whatever the number of parameter tensors: the same
arithmetic as torch's single-tensor implementations (``foreach=False``), in the same
order, so the parameters are bit-identical to theirs (tested).

The optimizers are ordinary :class:`torch.optim.Optimizer` subclasses: skorch builds,
pickles and restores them, ``param_groups`` hold the hyperparameters (a warm start
changes ``lr`` there), ``state_dict`` has torch's layout and step hooks run. The flat
layout is an implementation detail that repairs itself: whenever a parameter's data or
gradient stops being a view of the buffers (``module.zero_grad()``, ``p.data = ...``,
an unpickled copy, ``load_state_dict``, ``state.clear()``), the next step or
``zero_grad`` rebuilds the buffers from the current values.

Parameters with ``requires_grad=False`` are left out of the buffers and alone, as
torch's optimizers leave them (they never get a gradient). One behavioural difference:
``zero_grad`` always zeroes the gradients in place (as
torch's ``zero_grad(set_to_none=False)``), so a parameter that took no part in a
forward pass has a zero gradient rather than none, and Adam's moments still move it.
"""

import torch
import torch.optim.optimizer as _torch_optimizer


class _FlatOptimizer(torch.optim.Optimizer):
    """One parameter group whose parameters, gradients and state are flat-buffer views.

    Subclasses name their per-parameter state buffers in ``_buffers`` (torch's names)
    and implement ``_update(group)``, which updates ``self._flat`` from ``self._grad``
    and ``self._flat_buffers`` (created with ``_new_buffer``) with whole-buffer ops.
    """

    _buffers = ()

    def __init__(self, params, defaults):
        self._links = None
        self._frozen = []
        self._numbers = {}
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(
                f"{type(self).__name__} takes one parameter group, got "
                f"{len(self.param_groups)}."
            )
        self._relink()

    def add_param_group(self, param_group):
        if self.param_groups:
            raise ValueError(
                f"{type(self).__name__} takes one parameter group; use a torch.optim "
                "optimizer for several."
            )
        super().add_param_group(param_group)
        for p in self.param_groups[0]["params"]:
            if p.is_sparse or not p.is_floating_point() or p.is_complex():
                raise ValueError(
                    f"{type(self).__name__} needs dense real floating-point "
                    f"parameters, got a {p.layout} {p.dtype} one."
                )

    # -- the flat buffers ------------------------------------------------------------

    def _relink(self):
        """(Re)build the flat buffers from the parameters, their gradients and state.

        Parameters and gradients that are views of the buffers already stay what they
        are (references to them elsewhere stay valid, the divergence guard's among
        them); only the others are copied in and repointed.
        """
        self._sync_state()  # the step count survives a relink, not a cleared state
        group = self.param_groups[0]["params"]
        # Frozen parameters get no gradient, so torch's optimizers leave them alone;
        # so do these, by leaving them out of the buffers.
        params = [p for p in group if p.requires_grad]
        self._frozen = [p for p in group if not p.requires_grad]
        kinds = {(p.dtype, p.device) for p in params}
        if len(kinds) > 1:
            raise ValueError(
                f"{type(self).__name__} needs all parameters on one device with one "
                f"dtype, got {sorted(map(str, kinds))}."
            )
        dtype, device = kinds.pop() if kinds else (torch.float32, "cpu")
        n = sum(p.numel() for p in params)
        flat = _reusable(getattr(self, "_flat", None), n, dtype, device)
        if flat is None:
            flat = _shared_storage(params, n)
        if flat is None:
            flat = torch.empty(n, dtype=dtype, device=device)
        grad = _reusable(getattr(self, "_grad", None), n, dtype, device)
        if grad is None:
            grad = torch.zeros(n, dtype=dtype, device=device)
        state = self.state
        stored = [
            [state.get(p, {}).get(name) for p in params] for name in self._buffers
        ]
        steps = {float(state[p]["step"]) for p in params if "step" in state.get(p, {})}
        if len(steps) > 1:
            raise ValueError(
                f"{type(self).__name__} needs one step count for all parameters, got "
                f"{sorted(steps)} in its state."
            )
        buffers = {}
        for name, tensors in zip(self._buffers, stored, strict=True):
            if all(t is not None for t in tensors):
                buffers[name] = torch.empty(n, dtype=dtype, device=device)
            elif any(t is not None for t in tensors):
                raise ValueError(
                    f"{type(self).__name__}'s state has {name!r} for some parameters "
                    "only (was a frozen parameter unfrozen during training?); it "
                    "keeps one state for all of them. Pass a torch.optim optimizer "
                    "class to train parameters that join later."
                )
        links = []
        with torch.no_grad():
            for i, (p, part) in enumerate(_segments(params)):
                view = flat[part].view_as(p)
                if p.data_ptr() != view.data_ptr():
                    view.copy_(p)
                    p.data = view
                g = grad[part].view_as(p)
                if p.grad is not None and p.grad.data_ptr() == g.data_ptr():
                    g = p.grad
                elif p.grad is not None:
                    g.copy_(p.grad)
                else:
                    g.zero_()
                p.grad = g
                for name, tensors in zip(self._buffers, stored, strict=True):
                    if name in buffers:
                        b = buffers[name][part].view_as(p)
                        b.copy_(tensors[i])
                        state[p][name] = b
                links.append((p, p.data_ptr(), g))
        self._flat, self._grad, self._flat_buffers = flat, grad, buffers
        self._count = int(steps.pop()) if steps else 0
        self._links = links
        self._n_state = len(state)

    def _linked(self):
        """Whether every parameter and gradient is still a view of the buffers."""
        links = self._links
        if links is None or len(self.state) != self._n_state:
            # Unpickled, loaded, or state.clear()'d (the divergence guard does).
            return False
        for p, ptr, g in links:
            if p.grad is not g or p.data_ptr() != ptr or not p.requires_grad:
                return False
        for p in self._frozen:
            if p.requires_grad:
                return False
        return True

    def _new_buffer(self, name, init):
        """Create the flat state buffer ``name`` from ``init`` and link its views."""
        buf = self._flat_buffers[name] = init
        for p, part in _segments([p for p, _, _ in self._links]):
            self.state[p][name] = buf[part].view_as(p)
        self._n_state = len(self.state)
        return buf

    def _number(self, key, value):
        """``value`` as a 0-dim CPU tensor of the buffers' dtype, refilled when it
        changes.

        A Python number given to a tensor operation as its tensor operand is wrapped
        into a new tensor and converted at every call (two allocations and a copy,
        several microseconds in a step of a few dozen); a CPU scalar tensor is used by
        value, as the wrapped number is, so the result is the same to the bit.
        """
        entry = self._numbers.get(key)
        dtype = self._flat.dtype
        if entry is None or entry[1].dtype != dtype:
            entry = self._numbers[key] = [value, torch.tensor(value, dtype=dtype)]
        elif entry[0] != value:
            entry[0] = value
            entry[1].fill_(value)
        return entry[1]

    def _sync_state(self):
        """Write the step count into the state, where torch's optimizers keep it."""
        if (
            self._uses_step
            and self._links is not None
            and self._flat_buffers
            and len(self.state) == self._n_state
        ):
            for p, _, _ in self._links:
                self.state[p]["step"] = torch.tensor(float(self._count))

    _uses_step = False

    # -- torch.optim.Optimizer interface ---------------------------------------------

    def zero_grad(self, set_to_none=True):
        """Zero the gradients in place (``set_to_none`` is ignored: see the module)."""
        if not self._linked():
            self._relink()
        self._grad.zero_()

    def step(self, closure=None):
        """One update of all the parameters; ``closure`` re-evaluates the loss."""
        if (
            self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or getattr(_torch_optimizer, "_global_optimizer_pre_hooks", None)
            or getattr(_torch_optimizer, "_global_optimizer_post_hooks", None)
        ):
            # torch's own wrapper, with its hooks and profiler label, on demand only:
            # around every step it costs as much as the update of a small network.
            return _hooked_step(self, closure)
        return self._update_step(closure)

    # Tell Optimizer.__init__ that step is wrapped already (it wraps it otherwise).
    step.hooked = True

    def _update_step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self._linked():
            self._relink()
        # The buffers do not require grad: their updates record no graph.
        self._update(self.param_groups[0])
        return loss

    def state_dict(self):
        self._sync_state()
        return super().state_dict()

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._relink()

    def __getstate__(self):
        self._sync_state()
        return super().__getstate__()

    def __setstate__(self, state):
        super().__setstate__(state)
        # The buffers are not pickled; the next step rebuilds them from the
        # parameters and the state, which were.
        self._links = self._flat = self._grad = None
        self._numbers = {}


class FlatSGD(_FlatOptimizer):
    """Stochastic gradient descent with heavy-ball momentum, as ``torch.optim.SGD``.

    Parameters
    ----------
    params : iterable of torch.nn.Parameter
        One group of dense floating-point parameters on one device with one dtype.
    lr : float, default=1e-3
    momentum : float, default=0
    dampening : float, default=0
    weight_decay : float, default=0
        L2 penalty added to the gradient.
    """

    _buffers = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0):
        if not (lr >= 0 and momentum >= 0 and weight_decay >= 0):
            raise ValueError(
                f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, "
                f"{weight_decay}."
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    def _update(self, group):
        flat, grad = self._flat, self._grad
        lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
        if decay != 0:
            grad = grad.add(flat, alpha=decay)
        if momentum != 0:
            buf = self._flat_buffers.get("momentum_buffer")
            if buf is None:
                # torch's first step: the buffer starts as the gradient itself.
                buf = self._new_buffer("momentum_buffer", grad.clone())
            else:
                buf.mul_(self._number("momentum", momentum))
                buf.add_(grad, alpha=1 - group["dampening"])
            grad = buf
        flat.add_(grad, alpha=-lr)


class FlatAdam(_FlatOptimizer):
    """Adam (Kingma and Ba, 2015) with L2 weight decay, as ``torch.optim.Adam``.

    Parameters
    ----------
    params : iterable of torch.nn.Parameter
        One group of dense floating-point parameters on one device with one dtype.
    lr : float, default=1e-3
    betas : tuple of float, default=(0.9, 0.999)
    eps : float, default=1e-8
    weight_decay : float, default=0
        L2 penalty added to the gradient (torch.optim.Adam's, not AdamW's).
    """

    _buffers = ("exp_avg", "exp_avg_sq")
    _uses_step = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        beta1, beta2 = betas
        if not (lr >= 0 and eps >= 0 and weight_decay >= 0):
            raise ValueError(
                f"lr, eps and weight_decay must be >= 0, got {lr}, {eps}, "
                f"{weight_decay}."
            )
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}.")
        super().__init__(
            params,
            {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay},
        )

    def _update(self, group):
        flat, grad, buffers = self._flat, self._grad, self._flat_buffers
        if not buffers:
            for name in self._buffers:
                self._new_buffer(name, torch.zeros_like(flat))
        lr, (beta1, beta2) = group["lr"], group["betas"]
        eps, decay = group["eps"], group["weight_decay"]
        self._count += 1
        step = self._count
        if decay != 0:
            grad = grad.add(flat, alpha=decay)
        exp_avg, exp_avg_sq = buffers["exp_avg"], buffers["exp_avg_sq"]
        # torch.optim.adam._single_tensor_adam, operation for operation.
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(self._number("beta2", beta2))
        exp_avg_sq.addcmul_(grad, grad, value=1 - beta2)
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        # (Division in place on the new sqrt tensor: the same kernel, one tensor less.)
        denom = exp_avg_sq.sqrt().div_(self._number("bc2", bias_correction2_sqrt))
        denom.add_(self._number("eps", eps))
        flat.addcdiv_(exp_avg, denom, value=-step_size)


def _segments(params):
    """Each parameter with its slice of the flat buffers (back to back, in order)."""
    start = 0
    for p in params:
        stop = start + p.numel()
        yield p, slice(start, stop)
        start = stop


def _reusable(buffer, n, dtype, device):
    """``buffer`` if it can hold ``n`` numbers of this dtype on this device, else None."""
    if (
        buffer is not None
        and buffer.numel() == n
        and buffer.dtype == dtype
        and buffer.device == device
    ):
        return buffer
    return None


def _shared_storage(params, n):
    """A flat view of the storage the parameters fill back to back, if they do.

    They do after unpickling a net whose optimizer was flat (torch keeps views of one
    storage views of one storage); adopting it saves a copy and keeps the parameters'
    storage.
    """
    if not params:
        return None
    first = params[0]
    storage, offset = first.untyped_storage().data_ptr(), first.storage_offset()
    for p in params:
        if (
            not p.is_contiguous()
            or p.untyped_storage().data_ptr() != storage
            or p.storage_offset() != offset
        ):
            return None
        offset += p.numel()
    return first.detach().as_strided((n,), (1,), first.storage_offset())


def _hooked_step(optimizer, closure):
    return torch.optim.Optimizer.profile_hook_step(type(optimizer)._update_step)(
        optimizer, closure
    )
