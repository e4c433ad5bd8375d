"""DynamicalCrossEntropy against the loss written out by hand."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skdynloss import DynamicalCrossEntropy


def hand_loss(logits, target, gamma):
    """(1/P) sum_mu Gamma_{y_mu} CE_mu with explicit loops."""
    total = 0.0
    for row, y in zip(logits.tolist(), target.tolist(), strict=True):
        log_z = math.log(sum(math.exp(v) for v in row))
        total += gamma[y] * (log_z - row[y])
    return total / len(target)


@pytest.mark.parametrize("t", [0.0, 1.3, 2.5, 7.9, 11.0])
def test_loss_matches_hand_formula(t):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(17, 3, generator=g, dtype=torch.float64)
    target = torch.randint(0, 3, (17,), generator=g)
    loss = DynamicalCrossEntropy(3, amplitude=70, period=5).double()
    loss.set_time(t)
    gamma = loss.weights.tolist()
    assert loss(logits, target).item() == pytest.approx(
        hand_loss(logits, target, gamma), rel=1e-12
    )


def test_batch_dominated_by_one_class_is_not_torch_weighted_mean():
    # All targets are class 1 while class 0 is in focus: the tilt must lower the loss.
    # torch's weight-normalised mean divides the weights out and returns plain CE.
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 3, generator=g, dtype=torch.float64)
    target = torch.ones(8, dtype=torch.long)
    loss = DynamicalCrossEntropy(3, amplitude=70, period=5).double()
    loss.set_time(2.5)
    ours = loss(logits, target).item()
    torch_mean = F.cross_entropy(logits, target, weight=loss.weights).item()
    plain = F.cross_entropy(logits, target).item()
    assert torch_mean == pytest.approx(plain, rel=1e-12)
    assert ours == pytest.approx(3 / 72 * plain, rel=1e-12)
    assert ours == pytest.approx(hand_loss(logits, target, loss.weights.tolist()))


def test_weights_at_and_set_time():
    loss = DynamicalCrossEntropy(3, amplitude=70, period=5000)
    np.testing.assert_allclose(
        loss.weights_at(2500).numpy(), [2.9167, 0.0417, 0.0417], atol=1e-4
    )
    np.testing.assert_allclose(loss.weights_at(0).numpy(), [1, 1, 1])
    # weights_at does not move the clock.
    assert loss.time == 0.0
    assert loss.weights.tolist() == [1.0, 1.0, 1.0]
    applied = loss.set_time(7500)  # class 1 in focus, mid-period
    assert loss.time == 7500
    np.testing.assert_allclose(applied, [3 / 72, 3 * 70 / 72, 3 / 72])
    np.testing.assert_allclose(loss.weights.numpy(), applied, rtol=1e-6)
    loss.set_time(7500, static=True)
    assert loss.weights.tolist() == [1.0, 1.0, 1.0]
    loss.set_time(7500, static=False)
    np.testing.assert_allclose(loss.weights.numpy(), applied, rtol=1e-6)


def test_amplitude_one_equals_cross_entropy():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(11, 4, generator=g)
    target = torch.randint(0, 4, (11,), generator=g)
    loss = DynamicalCrossEntropy(4, amplitude=1.0, period=2.0)
    for t in (0.0, 0.7, 1.0, 5.3):
        loss.set_time(t)
        torch.testing.assert_close(
            loss(logits, target), F.cross_entropy(logits, target)
        )


def test_weights_are_a_buffer_that_follows_the_module():
    loss = DynamicalCrossEntropy(3, amplitude=5, period=1)
    assert "weights" in dict(loss.named_buffers())
    assert "weights" in loss.state_dict()
    assert loss.double().weights.dtype == torch.float64


def test_gradient_flows_through_weighted_loss():
    logits = torch.zeros(4, 3, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0])
    loss = DynamicalCrossEntropy(3, amplitude=70, period=5)
    loss.set_time(2.5)
    loss(logits, target).backward()
    # d/dlogits of Gamma_y CE at uniform logits: Gamma_y (1/3 - onehot) / P.
    gamma = loss.weights
    expected = torch.full((4, 3), 1 / 3) - F.one_hot(target, 3)
    expected = expected * gamma[target][:, None] / 4
    torch.testing.assert_close(logits.grad, expected)


def test_weights_seen_by_forward_follow_every_change():
    # forward folds 1/P into a cached copy of the weights: every way the weights, the
    # batch size or the dtype can change must reach the next forward pass.
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(9, 3, generator=g, dtype=torch.float64)
    target = torch.randint(0, 3, (9,), generator=g)
    loss = DynamicalCrossEntropy(3, amplitude=70, period=5).double()

    def check():
        gamma = loss.weights.tolist()
        for p in (9, 4, 9):  # batch size changes and changes back
            assert loss(logits[:p], target[:p]).item() == pytest.approx(
                hand_loss(logits[:p], target[:p], gamma), rel=1e-12
            )

    check()
    loss.set_time(2.5)  # written through a numpy view: no version bump
    check()
    loss.set_time(7.5)
    check()
    with torch.no_grad():
        loss.weights.copy_(torch.tensor([0.5, 2.0, 0.5]))  # in place, by hand
    check()
    loss.load_state_dict({"weights": torch.tensor([1.5, 1.0, 0.5])})
    check()
    # A new dtype (and storage): the cached float64 copy must not be reused.
    loss.float()
    assert loss(logits[:4].float(), target[:4]).item() == pytest.approx(
        hand_loss(logits[:4], target[:4], [1.5, 1.0, 0.5]), rel=1e-6
    )


def test_works_on_inference_tensors():
    # Inference tensors have no version counter, which the weight cache reads.
    with torch.inference_mode():
        loss = DynamicalCrossEntropy(3, amplitude=70, period=5)
        loss.set_time(2.5)
        logits = torch.zeros(4, 3)
        target = torch.tensor([0, 1, 2, 0])
        value = loss(logits, target).item()
    gamma = loss.weights.tolist()
    assert value == pytest.approx(hand_loss(logits, target, gamma), rel=1e-6)


def test_graph_keeps_the_weights_it_was_built_with():
    logits = torch.zeros(4, 3, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0])
    loss = DynamicalCrossEntropy(3, amplitude=70, period=5)
    loss.set_time(2.5)
    gamma = loss.weights.clone()
    value = loss(logits, target)
    loss.set_time(7.5)  # the clock moves before backward
    value.backward()
    expected = (torch.full((4, 3), 1 / 3) - F.one_hot(target, 3)) / 4
    torch.testing.assert_close(logits.grad, expected * gamma[target][:, None])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_classes": 0}, "n_classes"),
        ({"n_classes": 3, "amplitude": 0.5}, "amplitude"),
        ({"n_classes": 3, "period": 0}, "period"),
        ({"n_classes": 3, "shape": "square"}, "shape"),
        ({"n_classes": 3, "order": "backwards"}, "order"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DynamicalCrossEntropy(**kwargs)
