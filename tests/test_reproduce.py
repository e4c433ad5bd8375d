"""Tests of ``skdynloss.reproduce``: every reproduction runs and writes its files.

The fast tests run each reproduction at a tiny scale (tens of steps, one width, one
seed); the slow ones run the command with ``--quick`` as a user would, and check the
direction of the paper's first claim at one width over several seeds.
"""

import csv
import json
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from skdynloss import DynamicalLossClassifier, make_spiral, reproduce  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

TINY_FIG4 = {
    "max_epochs": 60,
    "period": 5,
    "sharpness_every": 5,
    "ntk_every": 20,
    "zoom": 5,
    "width": 8,
}
TINY_WIDTH = {"widths": (4, 8), "n_seeds": 2, "max_epochs": 30, "period": 3}
TINY_GENERALISATION = {
    "spiral_widths": (8,),
    "spiral_lrs": (1.0, 0.1),
    "spiral_seeds": 1,
    "tasks": ("digits-100", "noisy-spiral", "hard-classification"),
    "task_seeds": 1,
    "max_epochs": 30,
    "period": 3,
}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def is_png(path):
    return path.read_bytes()[:8] == PNG_SIGNATURE


@pytest.fixture(scope="module")
def fig4():
    return reproduce.run_fig4(settings=TINY_FIG4, progress=False)


def test_paper_estimator_has_the_papers_settings():
    est = reproduce.paper_estimator(random_state=3)
    params = est.get_params()
    assert params["optimizer"] == "sgd" and params["momentum"] == 0
    assert params["lr"] == 1.0 and params["batch_size"] == -1
    assert params["amplitude"] == 70 and params["period"] == 5000
    assert params["max_epochs"] == 70_000 and params["dtype"] == "float64"
    assert params["hidden_layer_sizes"] == (100,)
    assert params["static_last_period"] and params["sharpness_every"] == 25
    assert params["random_state"] == 3
    # The full-scale settings of the command are the paper's too.
    for name in ("fig4", "width"):
        full = reproduce.CONFIGS[name]["full"]
        assert full["max_epochs"] == 70_000 and full["period"] == 5000
    # generalisation: 14 periods of a fifth of the length (the 30-minute budget), the
    # paper's own with --paper-length.
    full = reproduce.CONFIGS["generalisation"]["full"]
    assert full["max_epochs"] / full["period"] == 14
    assert reproduce.PAPER_LENGTH == {"max_epochs": 70_000, "period": 5000}
    assert len(reproduce.CONFIGS["width"]["full"]["widths"]) >= 6
    assert reproduce.CONFIGS["width"]["full"]["n_seeds"] >= 8
    assert reproduce.CONFIGS["generalisation"]["full"]["spiral_seeds"] == 20


def test_fig4_records_every_row(fig4):
    est = fig4["estimator"]
    assert est.n_iter_ == 60
    assert est.dynamics_["loss"].shape == (60,)
    # lambda_max of F every 5 steps, with 2/lr beside it.
    np.testing.assert_array_equal(est.sharpness_history_["epoch"], np.arange(5, 61, 5))
    np.testing.assert_allclose(est.sharpness_history_["threshold"], 2.0)
    # The NTK callback's records: every 20 steps, positive, timed.
    np.testing.assert_array_equal(fig4["ntk"]["epoch"], [20, 40, 60])
    assert np.all(fig4["ntk"]["value"] > 0)
    assert np.all(fig4["ntk"]["seconds"] >= 0)
    # 60 steps of period 5: 12 periods, the last one static.
    peaks = fig4["peaks"]
    assert [p["period"] for p in peaks] == list(range(1, 13))
    assert [p["focus"] for p in peaks[:4]] == ["0", "1", "2", "0"]
    assert peaks[-1]["focus"] == "static"


def test_ntk_tracker_records_the_top_ntk_eigenvalue_of_the_network(fig4):
    from skdynloss import ntk_eigenvalues

    est = fig4["estimator"]
    X, _ = make_spiral()
    # The last record is at the last step, so it is that of the fitted network.
    expected = ntk_eigenvalues(est.module_, X, k=1)[0]
    assert fig4["ntk"]["value"][-1] == pytest.approx(expected, rel=1e-10)


def test_period_peaks_by_hand():
    history = {
        "epoch": np.array([2, 4, 6, 8, 10, 12]),
        "dynamical": np.array([1.0, 3.0, 0.5, 2.5, 1.5, 1.0]),
        "cross_entropy": np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
    }
    rows = reproduce.period_peaks(history, period=4, n_epochs=12, threshold=2.0)
    assert [(r["peak"], r["peak_epoch"]) for r in rows] == [
        (3.0, 4),
        (2.5, 8),
        (1.5, 10),
    ]
    assert [r["at_end"] for r in rows] == [3.0, 2.5, 1.0]
    assert [r["cross_entropy_at_end"] for r in rows] == [0.2, 0.4, 0.6]
    assert [r["above_threshold"] for r in rows] == [True, True, False]
    assert [r["focus"] for r in rows] == ["0", "1", "static"]


def test_paired_summary_by_hand():
    rows = [
        {"width": 5, "loss": "cross_entropy", "seed": 0, "acc": 0.5},
        {"width": 5, "loss": "dynamical", "seed": 0, "acc": 0.7},
        {"width": 5, "loss": "cross_entropy", "seed": 1, "acc": 0.6},
        {"width": 5, "loss": "dynamical", "seed": 1, "acc": 0.6},
        {"width": 5, "loss": "cross_entropy", "seed": 2, "acc": 0.8},
        {"width": 5, "loss": "dynamical", "seed": 2, "acc": 0.5},
    ]
    (row,) = reproduce.paired_summary(rows, ("width",), "acc")
    assert row["cross_entropy_mean"] == pytest.approx(0.63333333)
    assert row["dynamical_mean"] == pytest.approx(0.6)
    assert row["dynamical_std"] == pytest.approx(0.1)
    # Paired differences: +0.2, 0, -0.3.
    assert row["difference_mean"] == pytest.approx(-0.1 / 3)
    assert row["difference_std"] == pytest.approx(np.std([0.2, 0.0, -0.3], ddof=1))
    assert (row["dynamical_better"], row["equal"], row["cross_entropy_better"]) == (
        1,
        1,
        1,
    )
    assert row["dynamical_min"] == 0.5 and row["cross_entropy_max"] == 0.8


def test_write_fig4(fig4, tmp_path):
    written = reproduce.write_fig4(fig4, tmp_path, provenance={"command": "x"})
    assert {p.name for p in written} >= {"fig4.png", "fig4_peaks.csv", "fig4_peaks.md"}
    assert is_png(tmp_path / "fig4.png")
    rows = read_csv(tmp_path / "fig4_peaks.csv")
    assert len(rows) == 12
    assert float(rows[0]["peak"]) == pytest.approx(fig4["peaks"][0]["peak"])
    md = (tmp_path / "fig4_peaks.md").read_text()
    assert "| period |" in md and "- command: x" in md
    run = json.loads((tmp_path / "fig4_run.json").read_text())
    assert run["settings"]["max_epochs"] == 60


def test_width_runs_both_losses_from_the_same_initialisation(tmp_path):
    results = reproduce.run_width(settings=TINY_WIDTH, progress=False)
    rows = results["rows"]
    assert len(rows) == 2 * 2 * 2
    assert {(r["width"], r["loss"], r["seed"]) for r in rows} == {
        (w, loss, s) for w in (4, 8) for loss in reproduce.LOSSES for s in (0, 1)
    }
    for r in rows:
        assert 0 <= r["train_accuracy"] <= 1 and r["n_iter"] == 30
        assert math.isfinite(r["sharpness"])
    # Each row is what a direct fit of the public estimator gives.
    r = next(
        r for r in rows if (r["width"], r["loss"], r["seed"]) == (8, "dynamical", 1)
    )
    X, y = make_spiral()
    direct = DynamicalLossClassifier(
        optimizer="sgd",
        momentum=0,
        lr=1.0,
        batch_size=-1,
        amplitude=70,
        period=3,
        max_epochs=30,
        dtype="float64",
        hidden_layer_sizes=(8,),
        random_state=1,
    ).fit(X, y)
    assert r["train_accuracy"] == direct.score(X, y)
    written = reproduce.write_width(results, tmp_path, provenance={"command": "x"})
    assert is_png(tmp_path / "width.png")
    summary = read_csv(tmp_path / "width_summary.csv")
    assert [int(s["width"]) for s in summary] == [4, 8]
    assert all(int(s["n_seeds"]) == 2 for s in summary)
    assert len(read_csv(tmp_path / "width_runs.csv")) == 8
    assert (tmp_path / "width_summary.md") in written


def test_generalisation_reports_held_out_accuracy(tmp_path):
    results = reproduce.run_generalisation(settings=TINY_GENERALISATION, progress=False)
    rows = results["rows"]
    # spiral at 2 learning rates, and 3 tasks, each with both losses.
    assert len(rows) == (2 + 3) * 2
    assert {r["task"] for r in rows} == {
        "spiral",
        "digits-100",
        "noisy-spiral",
        "hard-classification",
    }
    assert {r["lr"] for r in rows if r["task"] == "spiral"} == {1.0, 0.1}
    assert all(0 <= r["test_accuracy"] <= 1 for r in rows)
    reproduce.write_generalisation(results, tmp_path, provenance={"command": "x"})
    assert is_png(tmp_path / "generalisation.png")
    summary = read_csv(tmp_path / "generalisation_summary.csv")
    assert len(summary) == 5


def test_the_held_out_splits():
    X, y, X_test, y_test = reproduce._spiral_split()
    assert X.shape == X_test.shape == (300, 2)
    assert np.bincount(y).tolist() == [100, 100, 100]
    Xn, yn, Xn_test, yn_test = reproduce._spiral_split(noise_fraction=0.2)
    np.testing.assert_array_equal(Xn, X)
    np.testing.assert_array_equal(yn_test, y_test)  # held-out labels stay clean
    assert np.mean(yn != y) == pytest.approx(0.2)
    Xd, yd, Xd_test, _ = reproduce._digits_subset()
    assert len(yd) == 100 and np.bincount(yd).tolist() == [10] * 10
    assert len(Xd_test) == 1697 and Xd.max() <= 1.0
    Xh, yh, Xh_test, _ = reproduce._hard_classification()
    assert Xh.shape == Xh_test.shape == (300, 10)
    np.testing.assert_allclose(Xh.mean(axis=0), 0, atol=1e-12)


def test_fit_estimators_keeps_the_order_and_reports_progress():
    X, y = make_spiral(n_samples_per_class=10)
    estimators = [
        reproduce.paper_estimator(
            hidden_layer_sizes=(w,), max_epochs=5, period=2, sharpness_every=None
        )
        for w in (3, 5)
    ]
    seen = []
    results = reproduce.fit_estimators(
        estimators,
        [{"X": X, "y": y}] * 2,
        summarize=lambda est, data, s: sum(p.numel() for p in est.module_.parameters()),
        progress=lambda done, total, ix, rs, s, f: seen.append((done, total, ix, f)),
    )
    # 2-3-3 and 2-5-3 networks, in the order given.
    assert results == [2 * 3 + 3 + 3 * 3 + 3, 2 * 5 + 5 + 5 * 3 + 3]
    # Two widths: two units, the larger (costlier) one first.
    assert [(d, t, ix) for d, t, ix, _ in seen] == [(1, 2, [1]), (2, 2, [0])]
    assert 0 < seen[0][3] < seen[1][3] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same length"):
        reproduce.fit_estimators(estimators, [{"X": X, "y": y}])


def test_fit_estimators_stacks_what_can_share_a_stack():
    """Fits of one width train as stacks of balanced size (fit_lockstep's engine),
    a fit that tracks its sharpness among them; each equals its own fit."""
    X, y = make_spiral(n_samples_per_class=10)
    X2, y2 = X[::-1].copy(), y[::-1].copy()
    kw = {
        "hidden_layer_sizes": (6,),
        "max_epochs": 8,
        "period": 2,
        "sharpness_every": None,
    }
    estimators = [
        reproduce.paper_estimator(amplitude=a, random_state=s, **kw)
        for s in range(3)
        for a in (1.0, 70.0)
    ] + [reproduce.paper_estimator(random_state=0, **{**kw, "sharpness_every": 2})]
    data = [{"X": X, "y": y}] * 3 + [{"X": X2, "y": y2}] * 3 + [{"X": X, "y": y}]
    from skdynloss._lockstep import model_bytes

    per_model = model_bytes(estimators[0], len(X), 2, 3)
    units = reproduce._units(estimators, data, 4 * per_model)
    assert sorted(map(sorted, units)) == [[0, 1, 2, 3], [4, 5, 6]]
    assert reproduce._data_keys(data) == [0, 0, 0, 1, 1, 1, 0]
    results = reproduce.fit_estimators(
        estimators, data, summarize=lambda est, d, s: est, max_stack_bytes=4 * per_model
    )
    for est, d in zip(results, data, strict=True):
        alone = reproduce.paper_estimator(**est.get_params()).fit(d["X"], d["y"])
        np.testing.assert_allclose(est.loss_curve_, alone.loss_curve_, rtol=1e-9)
        np.testing.assert_array_equal(est.predict(X), alone.predict(X))


def test_an_interrupted_run_writes_nothing(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "fit_estimators", interrupted)
    assert reproduce.main(["width", "--quick", "--out", tmp_path / "out"]) == 130
    assert not (tmp_path / "out").exists()
    assert "[width] interrupted after" in capsys.readouterr().err


def test_main_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["fig5"])


@pytest.mark.slow
def test_fit_estimators_in_two_processes_gives_the_same_results():
    settings = {**TINY_WIDTH, "widths": (6,)}
    one = reproduce.run_width(settings=settings, n_jobs=1, progress=False)["rows"]
    two = reproduce.run_width(settings=settings, n_jobs=2, progress=False)["rows"]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in one]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in two]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fig4", "width", "generalisation"])
def test_command_quick(name, tmp_path, capsys):
    assert reproduce.main([name, "--quick", "--out", tmp_path, "--n-jobs", "2"]) == 0
    png = tmp_path / f"{name}.png"
    assert is_png(png)
    table = "fig4_peaks" if name == "fig4" else f"{name}_summary"
    assert read_csv(tmp_path / f"{table}.csv")
    md = (tmp_path / f"{table}.md").read_text()
    assert f"skdynloss reproduce {name} --quick" in md and "- commit: " in md
    # Progress goes to stderr.
    err = capsys.readouterr().err
    assert f"[{name}] done" in err and "fits done:" in err


@pytest.mark.slow
def test_command_all_quick_pools_the_three(tmp_path, capsys):
    """``all`` fits the three reproductions as one pool of work and writes each."""
    assert reproduce.main(["all", "--quick", "--out", tmp_path, "--n-jobs", "2"]) == 0
    for name in ("fig4", "width", "generalisation"):
        assert is_png(tmp_path / f"{name}.png")
    md = (tmp_path / "width_summary.md").read_text()
    assert "skdynloss reproduce all --quick" in md
    assert "(all three together)" in md and "of one core" in md
    err = capsys.readouterr().err
    assert "[all] started (quick): 33 fits on 2 worker(s)" in err
    # One progress line per unit of work, each naming its reproduction; the last
    # one has nothing left.
    lines = [line for line in err.splitlines() if "fits done:" in line]
    assert {line.split("]")[0][1:] for line in lines} == {
        "fig4",
        "width",
        "generalisation",
    }
    assert "33/33 fits done" in lines[-1] and "about 0 s left" in lines[-1]


@pytest.mark.slow
def test_first_claim_direction_at_one_width():
    """Through the width runner, a 2-16-3 network over 3 seeds: the dynamical loss
    ends with a higher training accuracy than cross-entropy (same initialisation).

    Not at the paper's scale (70 000 steps per fit is minutes): at the settings of
    ``skdynloss demo`` (lr 3, A = 10, T = 100, 10 000 steps), chosen there by a sweep
    over widths, amplitudes and periods, where the effect shows within seconds.
    """
    settings = {
        "widths": (16,),
        "n_seeds": 3,
        "max_epochs": 10_000,
        "period": 100,
        "lr": 3.0,
        "amplitude": 10.0,
    }
    rows = reproduce.run_width(settings=settings, n_jobs=2, progress=False)["rows"]
    (summary,) = reproduce.paired_summary(rows, ("width",), "train_accuracy")
    assert summary["n_seeds"] == 3
    assert summary["dynamical_mean"] > summary["cross_entropy_mean"] + 0.03
    assert summary["dynamical_better"] >= 2


@pytest.fixture
def no_fits(monkeypatch):
    """A run that would start fitting fails the test: checks come first."""

    def fit(*args, **kwargs):
        raise AssertionError("a fit started before the arguments were checked")

    monkeypatch.setattr(reproduce, "run_plans", fit)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0"], "--seeds: expected a positive integer, got 0"),
        (["--seeds", "-1"], "--seeds: expected a positive integer, got -1"),
        (["--n-jobs", "0"], "--n-jobs: expected a positive integer, got 0"),
        (["--n-jobs", "-2"], "--n-jobs: expected a positive integer"),
        (["--seeds", "two"], "expected an integer"),
    ],
)
def test_impossible_arguments_are_refused_at_once(no_fits, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        reproduce.main(["width", "--quick", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_fit(
    no_fits, tmp_path, where, capsys
):
    file = tmp_path / "results"
    file.write_text("a file, not a folder")
    out = file if where == "file" else file / "sub" / "dir"
    with pytest.raises(SystemExit) as exc:
        reproduce.main(["all", "--quick", "--out", out])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--out {out}" in err and "is a file, not a folder" in err
    assert file.read_text() == "a file, not a folder"


def test_the_output_folders_are_created_before_the_first_fit(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "new" / "results"
    seen = []

    def interrupted(*args, **kwargs):
        seen.append(out.is_dir())
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "run_plans", interrupted)
    assert reproduce.main(["width", "--quick", "--out", out]) == 130
    assert seen == [True]
    # Interrupted, the run writes nothing: the folders it created are gone again.
    assert list(tmp_path.iterdir()) == []
    capsys.readouterr()
