"""Tests of ``skdynloss reproduce phase``: the grid it fits, its summary and verdicts
computed by hand, and the command at a tiny scale and with ``--quick``."""

import csv

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from skdynloss import reproduce  # noqa: E402
from skdynloss.app import phase  # noqa: E402

TINY = {
    "amplitudes": (1.0, 10.0),
    "periods": (3, 6),
    "n_seeds": 2,
    "n_periods": 4,
    "widths": {"train": 4, "test": 6},
}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_full_grid_is_the_one_promised():
    cfg = phase.CONFIG["full"]
    amplitudes = np.array(cfg["amplitudes"])
    assert len(amplitudes) >= 6 and amplitudes[0] == 1 and amplitudes[-1] == 100
    # Log-spaced (to the three digits they are written with).
    np.testing.assert_allclose(np.diff(np.log(amplitudes)), np.log(100) / 5, rtol=5e-3)
    assert len(cfg["periods"]) >= 5
    assert cfg["periods"][0] == 100 and cfg["periods"][-1] == 5000
    # The paper's 14 periods in every cell: T = 5000 is its 70 000 steps.
    assert cfg["n_seeds"] >= 4 and cfg["n_periods"] == 14
    assert cfg["widths"] == {"train": 30, "test": 200}
    plan = phase.plan_phase()
    metas = [d["meta"] for d in plan["data"]]
    # Every amplitude, A = 1 (the baseline of the cells as long) included, at every
    # period.
    assert len(plan["estimators"]) == 2 * cfg["n_seeds"] * 6 * 5 == 240
    for est, meta in zip(plan["estimators"], metas, strict=True):
        params = est.get_params()
        assert params["amplitude"] == meta["amplitude"]
        assert params["period"] == meta["period"]
        assert params["random_state"] == meta["seed"]
        assert params["hidden_layer_sizes"] == (cfg["widths"][meta["setting"]],)
        assert params["max_epochs"] == 14 * meta["period"] == meta["steps"]
        assert params["lr"] == 1.0
        assert params["optimizer"] == "sgd" and params["batch_size"] == -1
        assert params["static_last_period"] and params["dtype"] == "float64"
    tests = [d for d in plan["data"] if d["meta"]["setting"] == "test"]
    assert all(len(d["X"]) == 300 and len(d["X_test"]) == 300 for d in tests)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="unknown settings for phase"):
        phase.plan_phase(settings={"widht": 3})
    with pytest.raises(ValueError, match="must include 1"):
        phase.plan_phase(settings={**TINY, "amplitudes": (10.0,)})


def _rows(values):
    """Rows of the train setting: values[(amplitude, period)] = one metric per seed."""
    rows = []
    for (amplitude, period), per_seed in values.items():
        for seed, value in enumerate(per_seed):
            rows.append(
                {
                    "setting": "train",
                    "width": 30,
                    "amplitude": amplitude,
                    "period": period,
                    "steps": 14 * period,
                    "seed": seed,
                    "train_accuracy": value,
                    "sharpness": 1.0 + seed,
                    "diverged": False,
                }
            )
    return rows


def test_summary_pairs_each_cell_with_the_baseline_as_long():
    rows = _rows(
        {
            (1.0, 100): [0.5, 0.6, 0.7, 0.8],
            (1.0, 5000): [0.6, 0.6, 0.6, 0.6],
            (10.0, 100): [0.6, 0.7, 0.8, 0.9],  # +0.1 at every seed: helps
            (10.0, 5000): [0.7, 0.7, 0.5, 0.6],  # +0.1, +0.1, -0.1, 0: level
            (70.0, 100): [0.3, 0.6, 0.2, 0.79],  # -0.2, 0, -0.5, -0.01: hurts
            (70.0, 5000): [0.59, 0.6, 0.6, 0.6],  # -0.0025 on average: level
        }
    )
    summary = {(r["amplitude"], r["period"]): r for r in phase.phase_summary(rows)}
    assert (
        summary[(1.0, 100)]["verdict"] == summary[(1.0, 5000)]["verdict"] == "baseline"
    )
    assert summary[(1.0, 100)]["mean"] == pytest.approx(0.65)
    assert summary[(1.0, 100)]["difference_mean"] == 0
    helps = summary[(10.0, 100)]
    assert helps["verdict"] == "helps"
    assert helps["difference_mean"] == pytest.approx(0.1)
    assert helps["difference_std"] == pytest.approx(0.0, abs=1e-12)
    assert helps["dynamical_better"] == 4 and helps["cross_entropy_better"] == 0
    assert helps["cross_entropy_mean"] == pytest.approx(0.65)
    level = summary[(10.0, 5000)]
    assert level["verdict"] == "level"
    assert level["cross_entropy_mean"] == pytest.approx(0.6)
    assert level["difference_mean"] == pytest.approx(0.025)
    assert (level["dynamical_better"], level["cross_entropy_better"]) == (2, 1)
    hurts = summary[(70.0, 100)]
    assert hurts["verdict"] == "hurts"
    assert hurts["difference_mean"] == pytest.approx(-0.71 / 4)
    assert hurts["min"] == pytest.approx(0.2) and hurts["max"] == pytest.approx(0.79)
    assert summary[(70.0, 5000)]["verdict"] == "level"
    assert summary[(70.0, 100)]["sharpness_median"] == pytest.approx(2.5)
    assert summary[(70.0, 100)]["steps"] == 1400
    text = phase.sentences(list(summary.values()))[0]
    assert "helps in 1 of 4 cells (A 10: T 100;" in text
    assert "hurts in 1 of 4 cells (A 70: T 100;" in text
    assert "level in 2 of 4 cells" in text and "cross-entropy 0.600-0.650" in text


def test_the_papers_point_is_placed_on_the_log_scale():
    # Cells centred at 0.5, 1.5, ...: A = 70 between 39.8 and 100.
    amplitudes = phase.CONFIG["full"]["amplitudes"]
    position = phase._position(70.0, amplitudes)
    expected = 4.5 + np.log(70 / 39.8) / np.log(100 / 39.8)
    assert position == pytest.approx(expected)
    assert phase._position(5000.0, phase.CONFIG["full"]["periods"]) == 4.5
    assert np.isnan(phase._position(5000.0, (2, 10, 100)))


def test_a_tiny_phase_map_is_fitted_in_stacks_and_written(tmp_path):
    results = phase.run_phase(settings=TINY, progress=False)
    rows = results["rows"]
    # Settings x seeds x amplitudes x periods.
    assert len(rows) == 2 * 2 * 2 * 2
    assert {r["steps"] for r in rows} == {12, 24}
    assert all(0 <= r["train_accuracy"] <= 1 for r in rows)
    assert all("test_accuracy" in r for r in rows if r["setting"] == "test")
    written = phase.write_phase(results, tmp_path)
    assert (tmp_path / "phase.png").read_bytes()[:4] == b"\x89PNG"
    summary = read_csv(tmp_path / "phase_summary.csv")
    assert len(summary) == 2 * 2 * 2  # settings x amplitudes x periods
    assert {r["verdict"] for r in summary} <= {"baseline", "helps", "level", "hurts"}
    md = (tmp_path / "phase_summary.md").read_text()
    assert "train (training accuracy on the spiral (claim 1), width 4;" in md
    assert tmp_path / "phase_runs.csv" in written


def test_a_cell_equals_the_same_estimator_fitted_alone():
    results = phase.run_phase(
        settings={**TINY, "settings": ("train",), "n_seeds": 1}, progress=False
    )
    row = next(r for r in results["rows"] if r["amplitude"] == 10 and r["period"] == 6)
    X, y = reproduce.make_spiral()
    alone = reproduce.paper_estimator(
        amplitude=10.0,
        period=6,
        max_epochs=24,  # 4 periods
        hidden_layer_sizes=(4,),
        sharpness_every=None,
        random_state=0,
    ).fit(X, y)
    assert row["train_accuracy"] == alone.score(X, y)
    assert row["sharpness"] == pytest.approx(alone.sharpness_, rel=1e-9)


def test_all_runs_only_the_papers_three_claims():
    assert reproduce.ALL == ("fig4", "width", "generalisation")
    assert "phase" in reproduce.EXPERIMENTS


@pytest.mark.slow
def test_command_quick(tmp_path, capsys):
    argv = ["phase", "--quick", "--seeds", "1", "--out", tmp_path, "--n-jobs", "2"]
    assert reproduce.main(argv) == 0
    assert (tmp_path / "phase.png").read_bytes()[:4] == b"\x89PNG"
    summary = read_csv(tmp_path / "phase_summary.csv")
    cfg = phase.CONFIG["quick"]
    assert len(summary) == 2 * len(cfg["amplitudes"]) * len(cfg["periods"])
    md = (tmp_path / "phase_summary.md").read_text()
    assert "skdynloss reproduce phase --quick --seeds 1" in md and "- commit: " in md
    err = capsys.readouterr().err
    assert "[phase] started (quick): 18 fits on 2 worker(s)" in err
    assert "[phase] done" in err
