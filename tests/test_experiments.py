"""skdynloss.experiments: the demo's experiments as functions returning results."""

import copy
import pickle
from math import comb

import numpy as np
import pytest

from skdynloss import make_spiral
from skdynloss.experiments import (
    DIGITS_QUICK,
    SPIRAL_QUICK,
    DigitsComparison,
    DigitsResult,
    EpochReporter,
    SpiralComparison,
    SpiralFit,
    digits_comparison,
    period_summary,
    spiral_comparison,
    spiral_fit,
)

TINY = {**SPIRAL_QUICK, "epochs": 40, "period": 10.0, "sharpness_every": 10}


# ---------------------------------------------------------------- period_summary


def test_period_summary_by_hand():
    # Periods of 10 epochs: (0, 10], (10, 20], (20, 30]; nothing in the third.
    epoch = [2, 5, 10, 11, 20, 31]
    values = [4.0, 1.0, 3.0, 7.0, 5.0, 9.0]
    s = period_summary(epoch, values, period=10)
    assert s["period"].tolist() == [0, 1, 3]
    assert s["end"].tolist() == [10, 20, 40]
    assert s["last"].tolist() == [3.0, 5.0, 9.0]
    assert s["median"].tolist() == [3.0, 6.0, 9.0]
    assert s["min"].tolist() == [1.0, 5.0, 9.0]
    assert s["max"].tolist() == [4.0, 7.0, 9.0]
    assert s["count"].tolist() == [3, 2, 1]


def test_period_summary_fractional_period_and_errors():
    s = period_summary([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], period=2.5)
    assert s["period"].tolist() == [0, 1]
    assert s["last"].tolist() == [2, 5]
    with pytest.raises(ValueError, match="one length"):
        period_summary([1, 2], [1.0], period=1)
    with pytest.raises(ValueError, match="period"):
        period_summary([1], [1.0], period=0)


# ------------------------------------------------------------------------ spiral


def test_progress_reports_count_every_epoch_and_change_nothing():
    reports = []
    with_reports = spiral_fit(
        amplitude=10.0, seed=0, config=TINY, keep_estimator=True, report=reports.append
    )
    plain = spiral_fit(amplitude=10.0, seed=0, config=TINY, keep_estimator=True)
    # Every 100 epochs and at the end: one report of all 40 here.
    assert reports == [TINY["epochs"]]
    assert with_reports.accuracy == plain.accuracy
    assert with_reports.sharpness == plain.sharpness
    np.testing.assert_array_equal(
        with_reports.estimator.loss_curve_, plain.estimator.loss_curve_
    )
    # The kept estimator holds no progress sink any more.
    for _, cb in with_reports.estimator.net_.callbacks_:
        assert getattr(cb, "sink", None) is None


def test_epoch_reporter_shares_its_sink_and_drops_it_when_pickled():
    seen = []
    reporter = EpochReporter(seen.append, every=3).initialize()
    twin = copy.deepcopy(reporter)
    assert twin.sink == reporter.sink and twin.every == 3
    for _ in range(7):
        reporter.on_epoch_end(net=None)
    reporter.on_train_end(net=None)
    assert seen == [3, 3, 1]
    assert pickle.loads(pickle.dumps(reporter)).sink is None


@pytest.fixture(scope="module")
def tiny_comparison():
    return spiral_comparison(config=TINY, seed=3, n_jobs=1)


def test_spiral_comparison_pairs_fits_by_seed(tiny_comparison):
    result = tiny_comparison
    assert result.seeds == [3, 4]
    assert [f.amplitude for f in result.cross_entropy] == [1.0, 1.0]
    assert [f.amplitude for f in result.dynamical] == [TINY["amplitude"]] * 2
    X, y = make_spiral()
    for fits in (result.cross_entropy, result.dynamical):
        # Only the first seed keeps its estimator, with a sharpness history.
        first, second = fits
        assert second.estimator is None
        assert first.accuracy == first.estimator.score(X, y)
        assert len(first.estimator.sharpness_history_["epoch"]) == 4
    np.testing.assert_allclose(
        result.differences,
        [
            d.accuracy - c.accuracy
            for c, d in zip(result.cross_entropy, result.dynamical, strict=True)
        ],
    )


def test_worker_processes_do_not_change_the_results(tiny_comparison):
    # Each fit is seeded by its own random_state, so the results are a serial run's.
    parallel = spiral_comparison(config=TINY, seed=3, n_jobs=2, progress=True)
    for a, b in zip(
        tiny_comparison.cross_entropy + tiny_comparison.dynamical,
        parallel.cross_entropy + parallel.dynamical,
        strict=True,
    ):
        assert (a.amplitude, a.seed) == (b.amplitude, b.seed)
        assert a.accuracy == b.accuracy
        assert a.sharpness == b.sharpness
    # The kept fit comes back whole from its worker, for the figure.
    history = parallel.dynamical[0].estimator.sharpness_history_
    np.testing.assert_array_equal(
        history["dynamical"],
        tiny_comparison.dynamical[0].estimator.sharpness_history_["dynamical"],
    )


def _comparison(ce, dyn, sharp_ce=None, sharp_dyn=None):
    sharp_ce = sharp_ce or [1.0] * len(ce)
    sharp_dyn = sharp_dyn or [1.0] * len(dyn)
    return SpiralComparison(
        config=dict(TINY),
        cross_entropy=tuple(
            SpiralFit(1.0, s, a, h, 0.0)
            for s, (a, h) in enumerate(zip(ce, sharp_ce, strict=True))
        ),
        dynamical=tuple(
            SpiralFit(10.0, s, a, h, 0.0)
            for s, (a, h) in enumerate(zip(dyn, sharp_dyn, strict=True))
        ),
    )


def test_spiral_conclusions():
    every = _comparison([0.5, 0.6, 0.55], [0.6, 0.7, 0.66])
    assert every.n_wins == 3
    assert every.conclusion.startswith(
        "the dynamical loss fit the training data better at every seed (3/3)"
    )
    assert "+0.103" in every.conclusion
    # Better on average (mean 0.1075 > 2 * stderr 0.085) but not at every seed.
    most = _comparison([0.5, 0.5, 0.5, 0.5], [0.65, 0.65, 0.65, 0.48])
    assert most.conclusion.startswith(
        "the dynamical loss fit the training data better on average"
    )
    assert "3/4 seeds" in most.conclusion
    worse = _comparison([0.6, 0.7, 0.66], [0.5, 0.6, 0.55])
    assert worse.conclusion.startswith("cross-entropy did better here")
    mixed = _comparison([0.5, 0.6], [0.6, 0.5])
    assert mixed.conclusion.startswith("no clear difference (+0.000")
    flatter = _comparison([0.5, 0.5], [0.5, 0.5], [2.0, 1.0], [1.0, 3.0])
    assert flatter.n_flatter == 1
    assert flatter.sharpness_conclusion == (
        "lower with the dynamical loss at 1/2 seeds (median 2 vs 1.5 for cross-entropy)."
    )


# ------------------------------------------------------------------------ digits


def _digits(correct_ce, correct_dyn, baseline=0.9):
    def result(name, correct):
        correct = np.asarray(correct, dtype=bool)
        return DigitsResult(name, 1, float(correct.mean()), 1.0, 0.0, None, correct)

    n = len(correct_ce)
    base = np.arange(n) < round(baseline * n)
    return DigitsComparison(
        config=dict(DIGITS_QUICK),
        n_train=3 * n,
        n_test=n,
        models=(
            result("ce", correct_ce),
            result("dyn", correct_dyn),
            result("sklearn MLPClassifier(100,)", base),
            result("sklearn LogisticRegression", base[::-1]),
        ),
    )


def test_mcnemar_against_the_binomial_by_hand():
    # 10 images right only with the dynamical loss, none only with cross-entropy.
    ce = [True] * 30 + [False] * 10
    dyn = [True] * 40
    b, c, p = _digits(ce, dyn).mcnemar
    assert (b, c) == (10, 0)
    assert p == pytest.approx(2 * 0.5**10)
    # 7 against 3: two-sided, twice the tail P(X <= 3) of Binomial(10, 1/2).
    ce = [True] * 7 + [False] * 3 + [True] * 30
    dyn = [False] * 7 + [True] * 3 + [True] * 30
    b, c, p = _digits(ce, dyn).mcnemar
    assert (b, c) == (3, 7)
    assert p == pytest.approx(2 * sum(comb(10, k) for k in range(4)) / 2**10)


def test_digits_conclusions():
    better = _digits([True] * 30 + [False] * 10, [True] * 40)
    assert better.conclusion.startswith(
        "the dynamical loss did better on held-out digits: dynamical 1.000 vs "
        "cross-entropy 0.750 (McNemar p=0.00 on the 10 test images only one got right)"
    )
    assert better.conclusion.endswith(
        "best sklearn baseline 0.900 (MLPClassifier(100,))."
    )
    same = _digits([True] * 39 + [False], [True] * 39 + [False])
    assert same.conclusion.startswith("no clear held-out difference")
    assert "both got the same test images wrong" in same.conclusion
    worse = _digits([True] * 40, [True] * 30 + [False] * 10)
    assert worse.conclusion.startswith("cross-entropy did better on held-out digits")


def test_digits_comparison_runs_four_models():
    result = digits_comparison(config={**DIGITS_QUICK, "epochs": 2, "mlp_iter": 2})
    assert (result.n_train, result.n_test) == (1347, 450)
    names = [m.name for m in result.models]
    assert names[0].endswith("cross-entropy (A=1)") and "dynamical" in names[1]
    assert names[2:] == ["sklearn MLPClassifier(100,)", "sklearn LogisticRegression"]
    for m in result.models:
        assert m.test_correct.shape == (450,)
        assert m.test_accuracy == pytest.approx(m.test_correct.mean())
    assert [m.n_epochs for m in result.models] == [2, 2, 2, None]
    assert result.models[0].sharpness > 0 and result.models[2].sharpness is None
    assert result.conclusion.count(".") >= 1 and "\n" not in result.conclusion


def test_progress_shows_no_time_left_before_some_work_is_done(capsys):
    # The first reports come after the workers' start-up: a time left computed from
    # them is far too long, so the bar says it is estimating until 5 % is done.
    from skdynloss.app import experiments as E

    with E._progress(True, 1000, "fits", "step") as bar:
        bar.update(10)
        E._show_eta_when_due(bar)
        assert "estimating the time left" in str(bar)
        bar.update(50)
        E._show_eta_when_due(bar)
        assert "estimating" not in str(bar) and "<" in str(bar)  # elapsed<left
