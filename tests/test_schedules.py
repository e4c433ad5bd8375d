"""The class weights Gamma_i(t), against the paper's formulas written out by hand."""

import math

import numpy as np
import pytest
from _reference import by_hand

from skdynloss import class_weights
from skdynloss._schedules import (
    focus_class,
    focus_weight,
    normalise_weights,
    sine_weight,
    triangle_weight,
)


def test_paper_values_at_mid_period():
    # A = 70, C = 3: at tau = T/2 the focus class gets 2.917 and the others 0.0417.
    gamma = class_weights(2500.0, n_classes=3, amplitude=70, period=5000)
    np.testing.assert_allclose(gamma, [2.9167, 0.0417, 0.0417], atol=5e-5)
    np.testing.assert_allclose(gamma, [3 * 70 / 72, 3 / 72, 3 / 72], rtol=1e-12)


def test_all_ones_at_period_start():
    for k in range(6):
        np.testing.assert_allclose(
            class_weights(k * 5.0, n_classes=3, amplitude=70, period=5.0), np.ones(3)
        )


@pytest.mark.parametrize("shape", ["triangle", "sine"])
@pytest.mark.parametrize("C", [2, 3, 10])
def test_weights_sum_to_n_classes(shape, C):
    t = np.linspace(0, 7 * C, 997)
    gamma = class_weights(t, n_classes=C, amplitude=13.0, period=1.7, shape=shape)
    np.testing.assert_allclose(gamma.sum(axis=1), C, rtol=1e-12)
    assert (gamma > 0).all()


def test_matches_hand_formula_everywhere():
    for t in np.linspace(0, 60, 241):
        np.testing.assert_allclose(
            class_weights(t, n_classes=3, amplitude=70, period=5.0),
            by_hand(t, 3, 70, 5.0),
            rtol=1e-12,
        )


def test_focus_cycles_in_class_order_and_periods_last_T():
    # No off-by-one: the focus changes exactly at multiples of T (the authors' code
    # made each period T + 1 steps long).
    T = 4.0
    focus = [focus_class(t, n_classes=3, period=T) for t in np.arange(0, 24)]
    assert focus == [0] * 4 + [1] * 4 + [2] * 4 + [0] * 4 + [1] * 4 + [2] * 4


def test_triangle_is_one_to_A_to_one_and_normalised_plateau():
    A = 70
    assert triangle_weight(0.0, A) == 1.0
    assert triangle_weight(0.5, A) == pytest.approx(A)
    assert triangle_weight(0.25, A) == pytest.approx((1 + A) / 2)
    assert triangle_weight(0.75, A) == pytest.approx((1 + A) / 2)
    # After normalisation the focus curve is a flat-topped plateau: at a quarter period
    # it is already within 7% of its peak.
    quarter = class_weights(1.25, n_classes=3, amplitude=A, period=5.0)[0]
    peak = class_weights(2.5, n_classes=3, amplitude=A, period=5.0)[0]
    assert quarter > 0.93 * peak


def test_sine_shape():
    assert sine_weight(0.0, 9.0) == pytest.approx(1.0)
    assert sine_weight(0.5, 9.0) == pytest.approx(9.0)
    assert sine_weight(0.25, 9.0) == pytest.approx(5.0)
    np.testing.assert_allclose(
        sine_weight(np.array([0.0, 0.5]), 9.0), [1.0, 9.0], rtol=1e-12
    )


@pytest.mark.parametrize("shape", ["triangle", "sine", lambda phase, A: 1 + A * phase])
def test_amplitude_one_is_plain_cross_entropy_for_every_shape(shape):
    t = np.linspace(0, 30, 101)
    gamma = class_weights(t, n_classes=4, amplitude=1.0, period=3.0, shape=shape)
    np.testing.assert_array_equal(gamma, np.ones_like(gamma))


def test_callable_shape_is_normalised():
    gamma = class_weights(
        0.5, n_classes=2, amplitude=5.0, period=1.0, shape=lambda p, A: 3.0
    )
    np.testing.assert_allclose(gamma, [2 * 3 / 4, 2 / 4])


def test_callable_shape_must_return_positive_weights():
    with pytest.raises(ValueError, match="positive and finite"):
        focus_weight(0.5, amplitude=3.0, period=1.0, shape=lambda p, A: -1.0)


def test_random_order_visits_every_class_once_per_cycle_and_is_seeded():
    C, T = 5, 1.0
    for seed in (0, 1):
        order = [
            focus_class(k + 0.5, n_classes=C, period=T, order="random", seed=seed)
            for k in range(4 * C)
        ]
        for cycle in range(4):
            assert sorted(order[cycle * C : (cycle + 1) * C]) == list(range(C))
    a = [
        focus_class(k, n_classes=C, period=T, order="random", seed=3) for k in range(20)
    ]
    b = [
        focus_class(k, n_classes=C, period=T, order="random", seed=3) for k in range(20)
    ]
    c = [
        focus_class(k, n_classes=C, period=T, order="random", seed=4) for k in range(20)
    ]
    assert a == b
    assert a != c


def test_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        class_weights(0.0, n_classes=3, amplitude=2, period=1, shape="square")
    with pytest.raises(ValueError, match="order"):
        focus_class(0.0, n_classes=3, period=1, order="backwards")


def test_vectorised_equals_scalar():
    t = np.array([0.0, 0.3, 1.7, 2.2, math.pi])
    vec = class_weights(t, n_classes=3, amplitude=7, period=1.0, shape="sine")
    for ti, row in zip(t, vec, strict=True):
        np.testing.assert_allclose(
            class_weights(ti, n_classes=3, amplitude=7, period=1.0, shape="sine"), row
        )


@pytest.mark.parametrize("shape", ["triangle", "sine"])
@pytest.mark.parametrize("order", ["cyclic", "random"])
@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_vectorised_weights_are_the_scalar_formula(shape, order, n_classes):
    # class_weights over an array runs one numpy operation per formula step; it must
    # give what the per-step scalar functions give (training uses both).
    rng = np.random.default_rng(n_classes)
    period = 3.7
    t = np.concatenate(
        [rng.uniform(0, 500, 500), np.arange(0, 60, 1 / 7), np.arange(40) * period]
    )
    vec = class_weights(
        t,
        n_classes=n_classes,
        amplitude=37.0,
        period=period,
        shape=shape,
        order=order,
        seed=5,
    )
    ref = np.array(
        [
            normalise_weights(
                focus_weight(ti, amplitude=37.0, period=period, shape=shape),
                focus_class(
                    ti, n_classes=n_classes, period=period, order=order, seed=5
                ),
                n_classes,
            )
            for ti in t
        ]
    )
    if shape == "triangle":
        np.testing.assert_array_equal(vec, ref)
    else:  # numpy's sin and math.sin may differ in the last bit
        np.testing.assert_allclose(vec, ref, rtol=1e-14, atol=1e-15)
