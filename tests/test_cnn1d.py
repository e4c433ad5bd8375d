"""module="cnn1d": a 1-D convolutional network for rows that are signals."""

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError
from torch.func import functional_call, stack_module_state, vmap

from skdynloss import DynamicalLossClassifier
from skdynloss._modules import CNN1D


def waves(n_per_class=40, length=64, noise=0.3, seed=0):
    """Noisy sine, square and sawtooth waves of random frequency and phase."""
    rng = np.random.RandomState(seed)
    t = np.linspace(0, 1, length, endpoint=False)
    X, y = [], []
    for label in range(3):
        for _ in range(n_per_class):
            freq, phase = rng.uniform(2, 5), rng.uniform(0, 1)
            u = (freq * t + phase) % 1.0
            wave = [np.sin(2 * np.pi * u), np.where(u < 0.5, 1.0, -1.0), 2 * u - 1][
                label
            ]
            X.append(wave + noise * rng.randn(length))
            y.append(label)
    return np.asarray(X, dtype=np.float32), np.asarray(y)


def test_fit_predict_learns_the_wave_forms():
    X, y = waves()
    clf = DynamicalLossClassifier(
        module="cnn1d", max_epochs=30, amplitude=3, random_state=0
    ).fit(X, y)
    assert isinstance(clf.module_, CNN1D)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-6)
    assert clf.predict(X).shape == (len(X),)
    X_test, y_test = waves(seed=1)
    assert clf.score(X_test, y_test) > 0.8  # chance is 1/3


def test_same_seed_same_model_other_seed_another():
    X, y = waves(n_per_class=10, length=32)

    def fit(seed):
        params = dict(module="cnn1d", max_epochs=3, random_state=seed)
        return DynamicalLossClassifier(**params).fit(X, y).predict_proba(X)

    np.testing.assert_array_equal(fit(0), fit(0))
    assert not np.array_equal(fit(0), fit(1))


@pytest.mark.parametrize(
    ("n_features", "channels"), [(1, 1), (3, 1), (7, 1), (64, 1), (300, 3), (8, 2)]
)
def test_shapes_and_counts(n_features, channels):
    net = CNN1D(n_features, 4, (20, 10), channels=channels)
    out = net(torch.randn(5, n_features))
    assert out.shape == (5, 4)
    n_params = sum(p.numel() for p in net.parameters())
    assert CNN1D.n_parameters(n_features, 4, (20, 10), channels) == n_params
    assert CNN1D.macs(n_features, 4, (20, 10), channels) == net.macs_per_row()
    assert net.macs_per_row() > 0


@pytest.mark.parametrize("image_shape", [(1, 8, 8), (3, 5, 7), (2, 3)])
def test_cnn_counts_its_multiply_adds(image_shape):
    from skdynloss._modules import CNN

    net = CNN(image_shape, 4, (20,))
    assert CNN.macs(image_shape, 4, (20,)) == net.macs_per_row() > 0


def test_channels_read_channel_after_channel():
    # Two channels: a row is channel 0's samples, then channel 1's.
    X, y = waves(n_per_class=10, length=32)
    X2 = np.hstack([X, -X])
    clf = DynamicalLossClassifier(
        module="cnn1d", signal_channels=2, max_epochs=2, random_state=0
    ).fit(X2, y)
    conv = clf.module_.features[0]
    assert conv.in_channels == 2
    x = torch.as_tensor(X2[:3])
    np.testing.assert_allclose(
        conv(x.reshape(3, 2, 32)).detach().numpy(),
        conv(torch.stack([x[:, :32], x[:, 32:]], dim=1)).detach().numpy(),
    )


def test_channels_that_do_not_divide_the_row_are_a_clear_error():
    X, y = waves(n_per_class=5, length=31)
    clf = DynamicalLossClassifier(module="cnn1d", signal_channels=2, max_epochs=1)
    with pytest.raises(ValueError, match="31 features.*2 signals|signal_channels=2"):
        clf.fit(X, y)
    with pytest.raises(InvalidParameterError, match="signal_channels"):
        clf.set_params(signal_channels=0).fit(X, y)


def test_warm_start_cannot_change_the_channels():
    X, y = waves(n_per_class=5, length=32)
    clf = DynamicalLossClassifier(
        module="cnn1d", max_epochs=1, warm_start=True, random_state=0
    ).fit(X, y)
    with pytest.raises(ValueError, match="signal_channels"):
        clf.set_params(signal_channels=2).fit(X, y)


def test_stackable_with_torch_func():
    # K copies stacked as one: vmap over their parameters gives each copy's outputs
    # and gradients (no buffers, no in-place state in the forward pass).
    torch.manual_seed(0)
    nets = [CNN1D(40, 3, (16,), channels=2) for _ in range(3)]
    assert not list(nets[0].buffers())
    params, buffers = stack_module_state(nets)
    base = CNN1D(40, 3, (16,), channels=2).to("meta")
    x = torch.randn(3, 6, 40)
    y = torch.randint(0, 3, (6,))

    def loss(p, b, xk):
        out = functional_call(base, (p, b), (xk,))
        return torch.nn.functional.cross_entropy(out, y), out

    grads, outs = vmap(torch.func.grad(loss, has_aux=True))(params, buffers, x)
    for k, net in enumerate(nets):
        out = net(x[k])
        torch.testing.assert_close(outs[k], out)
        torch.nn.functional.cross_entropy(out, y).backward()
        for name, p in net.named_parameters():
            torch.testing.assert_close(grads[name][k], p.grad)


def test_save_and_load_round_trip(tmp_path):
    from skdynloss import load, save

    X, y = waves(n_per_class=8, length=24)
    clf = DynamicalLossClassifier(
        module="cnn1d", signal_channels=2, max_epochs=2, random_state=0
    ).fit(X, y)
    save(clf, tmp_path / "signals.skdl")
    loaded = load(tmp_path / "signals.skdl")
    assert loaded.signal_channels == 2
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
