"""The CUDA path. Skipped without a CUDA device (see conftest.py)."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler

from skdynloss import DynamicalLossClassifier

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X)[:500], y[:500]


def test_auto_device_is_cuda_and_everything_lives_there(digits):
    X, y = digits
    clf = DynamicalLossClassifier(max_epochs=3, random_state=0).fit(X, y)
    assert clf.device_ == "cuda"
    assert all(p.is_cuda for p in clf.module_.parameters())
    # The class weights are a buffer: they moved with the criterion.
    assert clf.net_.criterion_.weights.is_cuda
    assert np.isfinite(clf.sharpness_)
    proba = clf.predict_proba(X)
    assert isinstance(proba, np.ndarray)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-10)


def test_batches_are_indexed_on_the_device(digits, monkeypatch):
    X, y = digits
    seen = []
    original = torch.Tensor.to

    def spy(self, *args, **kwargs):
        if self.dim() == 2 and self.shape[1] == 64 and not self.is_cuda:
            seen.append(self.shape)
        return original(self, *args, **kwargs)

    clf = DynamicalLossClassifier(
        max_epochs=2, batch_size=32, compute_sharpness=False, random_state=0
    )
    monkeypatch.setattr(torch.Tensor, "to", spy)
    clf.fit(X, y)
    monkeypatch.undo()
    # No per-batch host-to-device copy of the features.
    assert seen == []


def test_cuda_matches_cpu_closely(digits):
    X, y = digits
    params = dict(
        max_epochs=5,
        dtype="float64",
        compute_sharpness=False,
        random_state=0,
        batch_size=-1,
        optimizer="sgd",
        momentum=0.0,
        lr=0.1,
    )
    cpu = DynamicalLossClassifier(device="cpu", **params).fit(X, y)
    gpu = DynamicalLossClassifier(device="cuda", **params).fit(X, y)
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), atol=1e-8)
    np.testing.assert_allclose(gpu.class_weights_, cpu.class_weights_)


def test_cnn_on_cuda(digits):
    X, y = digits
    clf = DynamicalLossClassifier(
        module="cnn", image_shape=(1, 8, 8), max_epochs=3, random_state=0
    ).fit(X, y)
    assert clf.score(X, y) > 0.5
    assert np.isfinite(clf.sharpness_)


@pytest.mark.parametrize(
    "name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)]
)
def test_named_optimizers_are_torchs_fused_ones_on_cuda(digits, name, cls):
    # "sgd"/"adam" build torch's own optimizer with its fused CUDA kernel, and the
    # parameters stay ordinary, separately stored CUDA tensors.
    X, y = digits
    clf = DynamicalLossClassifier(
        optimizer=name, max_epochs=2, compute_sharpness=False, random_state=0
    ).fit(X, y)
    optimizer = clf.net_.optimizer_
    assert type(optimizer) is cls
    assert optimizer.defaults["fused"] is True
    pointers = {p.untyped_storage().data_ptr() for p in clf.module_.parameters()}
    assert len(pointers) == len(list(clf.module_.parameters()))
    assert all(p.is_cuda for p in clf.module_.parameters())
