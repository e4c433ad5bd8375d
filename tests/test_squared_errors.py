"""The squared errors of Lavin and Ruiz-Garcia (2024), against the formulas written out
by hand: values, gradients, full-batch gradient descent, stacks, sharpness, and the
estimator around them.

With outputs f, one-hot targets delta and class weights Gamma (C classes, P samples):

* ``squared_error_sum``:        (1/P) sum_mu Gamma_{y_mu} sum_j (f_mu,j - delta_j,y_mu)^2
* ``squared_error_per_output``: (1/P) sum_mu sum_j Gamma_j (f_mu,j - delta_j,y_mu)^2
* ``squared_error``:            (1/P) sum_mu Gamma_{y_mu} (1/C) sum_j (...)^2

Every reference here is plain Python or plain torch on tiny tensors; none calls the
package's loss functions.
"""

import functools

import numpy as np
import pytest
import torch
from _reference import by_hand
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from skdynloss import (
    DynamicalLoss,
    DynamicalLossClassifier,
    dynamical_loss,
    fit_lockstep,
    load,
    save,
)
from skdynloss._losses import probabilities

NEW = ("squared_error_sum", "squared_error_per_output")


# ----------------------------------------------------------------- by hand


def hand_value(outputs, y, gamma, base, sample_weight=None):
    """The formulas of the module docstring with explicit loops (Python floats)."""
    f, y, g = outputs.tolist(), y.tolist(), list(gamma)
    s = [1.0] * len(y) if sample_weight is None else list(sample_weight)
    C = len(f[0])
    total = 0.0
    for row, label, weight in zip(f, y, s, strict=True):
        errors = [(v - (1.0 if j == label else 0.0)) ** 2 for j, v in enumerate(row)]
        if base == "squared_error_per_output":
            term = sum(g[j] * e for j, e in enumerate(errors))
        elif base == "squared_error_sum":
            term = g[label] * sum(errors)
        else:  # squared_error
            term = g[label] * sum(errors) / C
        total += weight * term
    return total / sum(s)


def hand_torch(outputs, y, gamma, base):
    """The same formula as torch operations (differentiable), for Hessians and GD."""
    one_hot = torch.zeros_like(outputs)
    one_hot[torch.arange(len(y)), y] = 1.0
    errors = (outputs - one_hot) ** 2
    gamma = torch.as_tensor(gamma, dtype=outputs.dtype)
    if base == "squared_error_per_output":
        return (errors * gamma).sum(dim=1).mean()
    per_sample = errors.sum(dim=1) if base == "squared_error_sum" else errors.mean(1)
    return (gamma[y] * per_sample).mean()


def hand_gradient(outputs, y, gamma, base):
    """d F / d f_{mu j} written out: (2/P) w (f_{mu j} - delta_{j y_mu}) with w =
    Gamma_j (per output), Gamma_{y_mu} (sum) or Gamma_{y_mu} / C (squared_error)."""
    P, C = outputs.shape
    grad = np.zeros((P, C))
    for mu in range(P):
        for j in range(C):
            d = outputs[mu, j].item() - (1.0 if j == y[mu].item() else 0.0)
            if base == "squared_error_per_output":
                w = gamma[j]
            elif base == "squared_error_sum":
                w = gamma[y[mu].item()]
            else:
                w = gamma[y[mu].item()] / C
            grad[mu, j] = 2.0 / P * w * d
    return grad


def dense_top_eigenvalue(module, X, y, loss):
    """Top eigenvalue of the dense Hessian of ``loss(outputs, y)`` in the module's
    parameters (torch.autograd.functional.hessian and eigvalsh, float64)."""
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().double() for p in module.parameters()]
    sizes = [p.numel() for p in params]
    flat = torch.cat([p.reshape(-1) for p in params])
    Xt = torch.as_tensor(X, dtype=torch.float64)
    yt = torch.as_tensor(y)

    def F(theta):
        chunks = torch.split(theta, sizes)
        state = {
            n: c.reshape(p.shape) for n, c, p in zip(names, chunks, params, strict=True)
        }
        return loss(torch.func.functional_call(module, state, (Xt,)), yt)

    H = torch.autograd.functional.hessian(F, flat)
    return torch.linalg.eigvalsh(H)[-1].item()


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=48, centers=3, n_features=3, random_state=3)
    return StandardScaler().fit_transform(X), y


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(9, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 3, 1, 0, 2, 2])
    gamma = [2.5, 0.5, 0.25, 0.75]
    return outputs, y, gamma


# ------------------------------------------------------------------ values


@pytest.mark.parametrize("base", [*NEW, "squared_error"])
def test_values_are_the_formulas(batch, base):
    outputs, y, gamma = batch
    g = torch.tensor(gamma, dtype=torch.float64)
    assert dynamical_loss(outputs, y, g, base=base).item() == pytest.approx(
        hand_value(outputs, y, gamma, base), rel=1e-13
    )
    # With sample weights: sum s w e / sum s.
    s = [1.0, 0.0, 2.0, 3.0, 1.0, 0.5, 1.0, 4.0, 1.0]
    got = dynamical_loss(
        outputs, y, g, base=base, sample_weight=torch.tensor(s, dtype=torch.float64)
    )
    assert got.item() == pytest.approx(
        hand_value(outputs, y, gamma, base, s), rel=1e-13
    )


def test_the_module_at_a_time_is_the_formula_with_that_times_weights(batch):
    outputs, y, _ = batch
    for base in NEW:
        loss = DynamicalLoss(4, amplitude=70.0, period=5.0, base=base).double()
        for t in (0.0, 2.5, 7.0, 13.9):
            loss.set_time(t)
            assert loss(outputs, y).item() == pytest.approx(
                hand_value(outputs, y, by_hand(t, 4, 70.0, 5.0), base), rel=1e-12
            )


def test_how_the_three_squared_errors_relate(batch):
    outputs, y, gamma = batch
    ones = [1.0] * 4
    g = torch.tensor(gamma, dtype=torch.float64)
    C = outputs.shape[1]
    # With all weights 1 the two new ones are the same plain sum of squared errors,
    # C times torch's mean squared error against the one-hot targets.
    plain = torch.nn.functional.mse_loss(
        outputs, torch.nn.functional.one_hot(y, C).double()
    ).item()
    for base in NEW:
        value = dynamical_loss(outputs, y, torch.ones(C).double(), base=base).item()
        assert value == pytest.approx(C * plain, rel=1e-13)
        assert value == pytest.approx(hand_value(outputs, y, ones, base), rel=1e-13)
    # Weighted by the sample's class, the sum is C times squared_error.
    assert dynamical_loss(outputs, y, g, base="squared_error_sum").item() == (
        pytest.approx(C * dynamical_loss(outputs, y, g, base="squared_error").item())
    )
    # Weighted by output it is another loss.
    assert (
        abs(
            dynamical_loss(outputs, y, g, base="squared_error_per_output").item()
            - dynamical_loss(outputs, y, g, base="squared_error_sum").item()
        )
        > 0.1
    )


# --------------------------------------------------------------- gradients


@pytest.mark.parametrize("base", [*NEW, "squared_error"])
def test_gradients_with_respect_to_the_outputs_are_the_formulas(batch, base):
    outputs, y, gamma = batch
    f = outputs.clone().requires_grad_(True)
    dynamical_loss(f, y, torch.tensor(gamma, dtype=torch.float64), base=base).backward()
    np.testing.assert_allclose(
        f.grad.numpy(), hand_gradient(outputs, y, gamma, base), rtol=1e-12, atol=1e-15
    )


# ------------------------------------------------- a fit, by hand, step by step


class FixedMLP(torch.nn.Module):
    """A 2-layer ReLU network starting from given tensors (the hand-written descent
    starts from the same ones)."""

    def __init__(self, n_features, n_classes, state):
        super().__init__()
        hidden = state["0.weight"].shape[0]
        # In float64, so that the state is loaded without rounding.
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_features, hidden, dtype=torch.float64),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, n_classes, dtype=torch.float64),
        )
        self.net.load_state_dict(state)

    def forward(self, x):
        return self.net(x)


def initial_state(n_features, n_classes, hidden=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "0.weight": torch.randn(hidden, n_features, generator=g, dtype=torch.float64)
        / 2,
        "0.bias": torch.randn(hidden, generator=g, dtype=torch.float64) / 4,
        "2.weight": torch.randn(n_classes, hidden, generator=g, dtype=torch.float64)
        / 2,
        "2.bias": torch.randn(n_classes, generator=g, dtype=torch.float64) / 4,
    }


def hand_descent(X, y, state, base, *, lr, amplitude, period, steps):
    """Full-batch gradient descent on the formula, one step per epoch: the weights at
    step s are those of time s (class weights written out by hand)."""
    W1, b1, W2, b2 = (
        state[k].clone().requires_grad_(True)
        for k in ("0.weight", "0.bias", "2.weight", "2.bias")
    )
    Xt, yt = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y)
    C = int(yt.max()) + 1
    losses = []
    for s in range(steps):
        gamma = by_hand(float(s), C, amplitude, period)
        out = torch.relu(Xt @ W1.T + b1) @ W2.T + b2
        loss = hand_torch(out, yt, gamma, base)
        grads = torch.autograd.grad(loss, (W1, b1, W2, b2))
        with torch.no_grad():
            for p, g in zip((W1, b1, W2, b2), grads, strict=True):
                p -= lr * g
        losses.append(loss.item())
    return [p.detach() for p in (W1, b1, W2, b2)], losses


@pytest.mark.parametrize("base", NEW)
def test_a_fit_is_full_batch_gradient_descent_on_the_formula(blobs, base):
    X, y = blobs
    state = initial_state(X.shape[1], 3)
    clf = DynamicalLossClassifier(
        loss=base,
        module=functools.partial(FixedMLP, state=state),
        optimizer="sgd",
        momentum=0.0,
        lr=0.05,
        batch_size=-1,
        amplitude=20.0,
        period=2.0,
        static_last_period=False,
        max_epochs=9,
        dtype="float64",
        compute_sharpness=False,
        random_state=0,
    ).fit(X, y)
    params, losses = hand_descent(
        X, y, state, base, lr=0.05, amplitude=20.0, period=2.0, steps=9
    )
    for got, want in zip(clf.module_.parameters(), params, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-13)
    # Each epoch's recorded loss is the formula before that epoch's step.
    np.testing.assert_allclose(clf.loss_curve_, losses, rtol=1e-12)


# ------------------------------------------------------------------- stacks


def _assert_same(a, b, X):
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-10)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-10)
    for key in b.dynamics_:
        np.testing.assert_allclose(
            a.dynamics_[key], b.dynamics_[key], rtol=1e-10, atol=1e-13, err_msg=key
        )
    assert a.sharpness_ == pytest.approx(b.sharpness_, rel=1e-6)
    for key in ("dynamical", "base"):
        np.testing.assert_allclose(
            a.sharpness_history_[key], b.sharpness_history_[key], rtol=1e-6
        )


@pytest.mark.parametrize("module", ["mlp", "custom"])
def test_a_stack_of_every_base_does_what_each_fit_does(blobs, module):
    """One stack with models of both kinds (weighted by label and by output); the
    MLP's stack computes class-major outputs, a custom module's goes through vmap."""
    from skdynloss._lockstep import stack_units

    X, y = blobs
    # One module factory for all (a stack holds models of the same module).
    module = (
        "mlp"
        if module == "mlp"
        else functools.partial(FixedMLP, state=initial_state(X.shape[1], 3))
    )
    base = DynamicalLossClassifier(
        hidden_layer_sizes=(6,),
        optimizer="sgd",
        momentum=0.0,
        lr=0.05,
        batch_size=-1,
        period=2.0,
        max_epochs=8,
        dtype="float64",
        sharpness_every=4,
    )
    grid = [
        {"loss": "cross_entropy", "amplitude": 8.0, "random_state": 0},
        {"loss": "squared_error_sum", "amplitude": 1.0, "random_state": 0},
        {"loss": "squared_error_sum", "amplitude": 8.0, "random_state": 0},
        {"loss": "squared_error_per_output", "amplitude": 8.0, "random_state": 0},
        {"loss": "squared_error_per_output", "amplitude": 3.0, "random_state": 1},
        {"loss": "squared_error", "amplitude": 8.0, "random_state": 2},
    ]
    estimators = [clone(base).set_params(**g, module=module) for g in grid]
    units = stack_units(estimators, [(X, y, None, 0)] * len(estimators))
    assert units == [list(range(len(grid)))]  # one stack for all of them
    fit_lockstep(estimators, X, y)
    for est in estimators:
        _assert_same(est, clone(est).fit(X, y), X)


def test_a_stack_with_sample_weights_does_what_each_fit_does(blobs):
    X, y = blobs
    w = np.random.default_rng(0).integers(0, 3, len(y)).astype(float)
    estimators = [
        DynamicalLossClassifier(
            loss=b,
            hidden_layer_sizes=(4,),
            batch_size=16,
            optimizer="adam",
            lr=0.01,
            amplitude=6.0,
            period=1.5,
            max_epochs=5,
            dtype="float64",
            random_state=3,
        )
        for b in NEW
    ]
    fit_lockstep(estimators, X, y, sample_weight=w)
    for est in estimators:
        alone = clone(est).fit(X, y, sample_weight=w)
        np.testing.assert_allclose(est.loss_curve_, alone.loss_curve_, rtol=1e-10)
        np.testing.assert_allclose(
            est.predict_proba(X), alone.predict_proba(X), atol=1e-10
        )


# ---------------------------------------------------------------- sharpness


@pytest.mark.parametrize("base", NEW)
def test_sharpness_is_the_dense_hessian_of_the_formula(blobs, base):
    X, y = blobs
    A, T = 30.0, 2.0
    clf = DynamicalLossClassifier(
        loss=base,
        hidden_layer_sizes=(5,),
        optimizer="sgd",
        momentum=0.0,
        lr=0.05,
        batch_size=-1,
        amplitude=A,
        period=T,
        static_last_period=False,
        max_epochs=5,
        dtype="float64",
        sharpness_every=5,
        random_state=0,
    ).fit(X, y)
    # sharpness_: the plain loss (all weights 1).
    plain = dense_top_eigenvalue(
        clf.module_, X, y, lambda o, t: hand_torch(o, t, [1.0] * 3, base)
    )
    assert clf.sharpness_ == pytest.approx(plain, rel=1e-6)
    # The tracked curvature at the end of epoch 5: the loss being minimised then, with
    # the weights of time 5, and the plain loss.
    gamma = by_hand(5.0, 3, A, T)
    dynamical = dense_top_eigenvalue(
        clf.module_, X, y, lambda o, t: hand_torch(o, t, gamma, base)
    )
    history = clf.sharpness_history_
    assert history["epoch"].tolist() == [5]
    assert history["dynamical"][-1] == pytest.approx(dynamical, rel=1e-6)
    assert history["base"][-1] == pytest.approx(plain, rel=1e-6)
    assert abs(dynamical - plain) > 1e-3 * plain  # the weights do change the landscape


# ---------------------------------------------------------------- estimator


@pytest.fixture(scope="module", params=NEW)
def fitted(request, blobs):
    X, y = blobs
    clf = DynamicalLossClassifier(
        loss=request.param,
        hidden_layer_sizes=(16,),
        amplitude=5.0,
        period=4,
        max_epochs=40,
        batch_size=16,
        random_state=0,
    )
    return clf.fit(X, y)


def test_fit_predict_and_the_record(fitted, blobs):
    X, y = blobs
    assert fitted.score(X, y) > 0.9
    assert set(fitted.predict(X)) <= set(fitted.classes_)
    assert np.isfinite(fitted.dynamics_["base_loss"]).all()
    assert "cross_entropy" not in fitted.dynamics_
    assert np.isfinite(fitted.sharpness_) and fitted.sharpness_ > 0


def test_predict_proba_is_the_outputs_clipped_and_normalised(fitted, blobs):
    X, _ = blobs
    proba = fitted.predict_proba(X)
    out = fitted.module_(torch.tensor(X, dtype=torch.float32)).detach().double()
    clipped = out.numpy().clip(min=0)
    expected = clipped / clipped.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(proba, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(fitted.classes_[proba.argmax(1)], fitted.predict(X))


def test_probabilities_by_hand():
    outputs = torch.tensor(
        [[0.8, 0.3, -0.2], [1.4, 1.2, 0.0], [-0.5, -0.1, -2.0], [0.0, 0.0, 0.0]],
        dtype=torch.float64,
    )
    p = probabilities(outputs, "squared_error_per_output").numpy()
    np.testing.assert_allclose(p[0], [0.8 / 1.1, 0.3 / 1.1, 0.0])
    np.testing.assert_allclose(p[1], [1.4 / 2.6, 1.2 / 2.6, 0.0])
    # No positive output: the softmax, whose largest entry is the largest output's.
    e = np.exp([-0.5, -0.1, -2.0])
    np.testing.assert_allclose(p[2], e / e.sum())
    np.testing.assert_allclose(p[3], [1 / 3] * 3)
    np.testing.assert_array_equal(
        p.argmax(1), outputs.argmax(1).numpy()[:3].tolist() + [0]
    )
    # Cross-entropy and callables: the softmax.
    np.testing.assert_allclose(
        probabilities(outputs, "cross_entropy").numpy(),
        torch.softmax(outputs, dim=1).numpy(),
    )


def test_save_and_load(fitted, blobs, tmp_path):
    X, _ = blobs
    path = tmp_path / "model.skdl"
    save(fitted, path)
    loaded = load(path)
    assert loaded.loss == fitted.loss
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))


def test_amplitude_one_makes_the_two_the_same_plain_loss(blobs):
    X, y = blobs
    params = {
        "amplitude": 1.0,
        "hidden_layer_sizes": (6,),
        "max_epochs": 6,
        "batch_size": 16,
        "dtype": "float64",
        "random_state": 0,
    }
    a = DynamicalLossClassifier(loss="squared_error_sum", **params).fit(X, y)
    b = DynamicalLossClassifier(loss="squared_error_per_output", **params).fit(X, y)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-12)


@pytest.mark.parametrize("name", ["squared_errors", "mse", "squared_error_mean", 3])
def test_a_bad_name_is_a_clear_error(blobs, name):
    X, y = blobs
    with pytest.raises(InvalidParameterError, match="'loss' parameter"):
        DynamicalLossClassifier(loss=name, max_epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="loss must be one of"):
        DynamicalLoss(3, base=name)
