"""The flat-buffer optimizers behind optimizer="sgd" and "adam"."""

import copy
import io
import pickle

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from skdynloss import DynamicalLossClassifier
from skdynloss._modules import MLP
from skdynloss._optim import FlatAdam, FlatSGD

SETTINGS = [
    (FlatSGD, torch.optim.SGD, {"lr": 0.1}),
    (FlatSGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    (FlatSGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.5, "dampening": 0.3}),
    (FlatAdam, torch.optim.Adam, {"lr": 0.01}),
    (
        FlatAdam,
        torch.optim.Adam,
        {"lr": 0.05, "betas": (0.5, 0.9), "eps": 1e-3, "weight_decay": 0.1},
    ),
]


def problem(dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(40, 5, generator=gen, dtype=dtype)
    y = torch.randint(0, 3, (40,), generator=gen)
    torch.manual_seed(1)
    return MLP(5, 3, (7, 4)).to(dtype), X, y


def train(model, opt, X, y, steps, between=None):
    for i in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
        if between is not None:
            opt = between(i, model, opt) or opt
    return opt


def flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def reference(torch_cls, kwargs, steps, dtype=torch.float32, between=None):
    model, X, y = problem(dtype)
    opt = torch_cls(model.parameters(), foreach=False, **kwargs)
    train(model, opt, X, y, steps, between)
    return flat_params(model)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("flat_cls, torch_cls, kwargs", SETTINGS)
def test_bit_identical_to_torch(flat_cls, torch_cls, kwargs, dtype):
    model, X, y = problem(dtype)
    opt = flat_cls(model.parameters(), **kwargs)
    train(model, opt, X, y, 25)
    expected = reference(torch_cls, kwargs, 25, dtype)
    torch.testing.assert_close(flat_params(model), expected, rtol=0, atol=0)


def test_parameters_and_gradients_are_views_of_one_buffer():
    model, X, y = problem()
    opt = FlatAdam(model.parameters())
    train(model, opt, X, y, 2)
    base = opt._flat.data_ptr()
    size = opt._flat.element_size()
    offset = 0
    for p in model.parameters():
        assert p.data_ptr() == base + offset * size
        assert p.grad.data_ptr() == opt._grad.data_ptr() + offset * size
        offset += p.numel()
    assert offset == opt._flat.numel()


@pytest.mark.parametrize("flat_cls, torch_cls, kwargs", SETTINGS)
def test_repairs_itself_when_the_views_are_broken(flat_cls, torch_cls, kwargs):
    # Each disturbance breaks the flat layout in one way; torch's optimizer, disturbed
    # the same way, must give the very same parameters.
    def disturb(i, model, opt):
        params = list(model.parameters())
        if i == 2:
            model.zero_grad()  # gradients set to None
        elif i == 4:
            params[0].data = params[0].data.clone()  # data replaced
        elif i == 6:
            params[1].grad = params[1].grad * 1.0  # gradient replaced
        elif i == 8:
            # Reload the state into a new optimizer (torch's layout).
            new = type(opt)(model.parameters(), **kwargs)
            new.load_state_dict(opt.state_dict())
            return new
        elif i == 10:
            opt.state.clear()  # as the divergence guard does
        return None

    model, X, y = problem()
    opt = flat_cls(model.parameters(), **kwargs)
    train(model, opt, X, y, 14, disturb)
    expected = reference(
        torch_cls, kwargs, 14, between=lambda i, m, o: disturb(i, m, o)
    )
    torch.testing.assert_close(flat_params(model), expected, rtol=0, atol=0)


def test_a_cleared_state_keeps_the_parameters_storage():
    # The divergence guard holds detached views of the parameters across the
    # optimizer's state.clear(): the relink that follows must not move them.
    model, X, y = problem()
    opt = FlatSGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, opt, X, y, 3)
    views = [p.detach() for p in model.parameters()]
    opt.state.clear()
    train(model, opt, X, y, 1)
    assert [v.data_ptr() for v in views] == [p.data_ptr() for p in model.parameters()]


@pytest.mark.parametrize("flat_cls, torch_cls, kwargs", SETTINGS)
def test_state_dict_is_torchs(flat_cls, torch_cls, kwargs):
    # Moving between the flat optimizer and torch's keeps training identical.
    model, X, y = problem()
    opt = train(model, flat_cls(model.parameters(), **kwargs), X, y, 5)
    state = opt.state_dict()
    theirs = torch_cls(model.parameters(), foreach=False, **kwargs)
    theirs.load_state_dict(state)
    train(model, theirs, X, y, 5)
    back = flat_cls(model.parameters(), **kwargs)
    back.load_state_dict(theirs.state_dict())
    train(model, back, X, y, 5)
    expected = reference(torch_cls, kwargs, 15)
    torch.testing.assert_close(flat_params(model), expected, rtol=0, atol=0)


@pytest.mark.parametrize("how", ["torch.save", "deepcopy"])
def test_copies_keep_training_identically(how):
    model, X, y = problem()
    opt = train(model, FlatAdam(model.parameters(), lr=0.01), X, y, 5)
    if how == "torch.save":
        # skorch pickles module and optimizer together this way.
        buffer = io.BytesIO()
        torch.save({"module": model, "optimizer": opt}, buffer)
        buffer.seek(0)
        copied = torch.load(buffer, weights_only=False)
    else:
        copied = copy.deepcopy({"module": model, "optimizer": opt})
    train(copied["module"], copied["optimizer"], X, y, 5)
    train(model, opt, X, y, 5)
    torch.testing.assert_close(flat_params(copied["module"]), flat_params(model))
    torch.testing.assert_close(
        flat_params(model), reference(torch.optim.Adam, {"lr": 0.01}, 10)
    )


@pytest.mark.parametrize("flat_cls, torch_cls, kwargs", SETTINGS)
def test_frozen_parameters_are_left_alone(flat_cls, torch_cls, kwargs):
    # A frozen first layer (transfer learning): torch never gives it a gradient, so
    # weight decay and momentum must not move it either.
    kwargs = {**kwargs, "weight_decay": 0.1}
    results = []
    for make in (flat_cls, lambda p, **k: torch_cls(p, foreach=False, **k)):
        model, X, y = problem()
        model[0].requires_grad_(False)
        frozen = model[0].weight.detach().clone()
        opt = make(model.parameters(), **kwargs)
        train(model, opt, X, y, 5)
        assert torch.equal(model[0].weight, frozen)
        results.append(flat_params(model))
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
    # Unfreezing it mid-training would need a state of its own: a clear error.
    model, X, y = problem()
    model[0].requires_grad_(False)
    opt = train(model, flat_cls(model.parameters(), **kwargs), X, y, 2)
    model[0].requires_grad_(True)
    if flat_cls is FlatAdam or kwargs.get("momentum"):
        with pytest.raises(ValueError, match="unfrozen"):
            train(model, opt, X, y, 1)
    else:  # plain SGD keeps no state: the layer simply trains from now on
        before = model[0].weight.detach().clone()
        train(model, opt, X, y, 1)
        assert not torch.equal(model[0].weight, before)


def test_closure_and_hooks():
    model, X, y = problem()
    opt = FlatSGD(model.parameters(), lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X), y)
        loss.backward()
        return loss

    before = flat_params(model).clone()
    loss = opt.step(closure)
    assert calls == ["pre", "post"]
    assert torch.isfinite(loss)
    assert not torch.equal(before, flat_params(model))


def test_bad_input():
    model, _, _ = problem()
    with pytest.raises(ValueError, match="one parameter group"):
        FlatAdam([{"params": [model[0].weight]}, {"params": [model[0].bias]}])
    with pytest.raises(ValueError, match="one device with one dtype"):
        FlatSGD([model[0].weight, torch.nn.Parameter(torch.zeros(2).double())])
    with pytest.raises(ValueError, match="lr"):
        FlatSGD(model.parameters(), lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        FlatAdam(model.parameters(), betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="dense real floating-point"):
        FlatSGD([torch.nn.Parameter(torch.zeros(2, 2).to_sparse())])


class PoisonAt(Callback):
    """Make the parameters infinite at the end of the given epochs (history length),
    once each."""

    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) in self.epochs:
            self.epochs = self.epochs - {len(net.history)}
            with torch.no_grad():
                for p in net.module_.parameters():
                    p.fill_(float("inf"))


def test_divergence_guard_after_a_relink():
    # The guard clears the optimizer's state when it restores, so the next fit starts
    # with a relink; a second divergence must still restore the right parameters.
    X, y = np.random.RandomState(0).randn(60, 4), np.arange(60) % 3
    params = dict(
        optimizer="adam",
        lr=0.01,
        batch_size=3,  # 20 steps per epoch: the guard copies at every epoch
        max_epochs=10,
        static_last_period=False,
        compute_sharpness=False,
        random_state=0,
    )
    with pytest.warns(RuntimeWarning, match="diverged"):
        clf = DynamicalLossClassifier(callbacks=[PoisonAt({5, 12})], **params)
        clf.fit(X, y)
    assert clf.n_iter_ == 4
    with pytest.warns(RuntimeWarning, match="diverged"):
        clf.set_params(warm_start=True).fit(X, y)
    assert clf.n_iter_ == 11
    reference = DynamicalLossClassifier(callbacks=[PoisonAt({5})], **params)
    with pytest.warns(RuntimeWarning, match="diverged"):
        reference.fit(X, y)
    reference.set_params(warm_start=True, max_epochs=7).fit(X, y)
    assert reference.n_iter_ == 11
    np.testing.assert_array_equal(clf.predict_proba(X), reference.predict_proba(X))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pickled_estimator_continues_like_the_original(optimizer):
    # The optimizer's state (momentum, Adam's moments and step count) travels with
    # the estimator, and its flat buffers are rebuilt after unpickling.
    X, y = np.random.RandomState(1).randn(60, 4), np.arange(60) % 3
    clf = DynamicalLossClassifier(
        optimizer=optimizer,
        lr=0.01,
        batch_size=20,
        max_epochs=4,
        period=2,
        compute_sharpness=False,
        random_state=0,
        warm_start=True,
    ).fit(X, y)
    copied = pickle.loads(pickle.dumps(clf))
    clf.fit(X, y)
    copied.fit(X, y)
    np.testing.assert_array_equal(copied.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(copied.loss_curve_, clf.loss_curve_)
