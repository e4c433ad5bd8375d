"""``skdynloss reproduce followup``: the follow-up paper's comparison runs, its fits are
what the public estimator gives, and it writes its figure and tables.

The fast tests run the plan at a tiny scale; the slow one runs the command with
``--quick`` as a user would.
"""

import csv
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from skdynloss import DynamicalLossClassifier, reproduce  # noqa: E402
from skdynloss.app import followup  # noqa: E402

TINY = {"widths": (3, 6), "n_seeds": 2, "max_epochs": 28, "period": 2}

RUN_COLUMNS = [
    "width",
    "loss",
    "base",
    "amplitude",
    "lr",
    "seed",
    "train_accuracy",
    "validation_accuracy",
    "sharpness",
    "n_iter",
    "diverged",
    "seconds",
]
SUMMARY_COLUMNS = [
    "width",
    "loss",
    "base",
    "amplitude",
    "lr",
    "n_seeds",
    "validation_mean",
    "validation_std",
    "validation_min",
    "validation_max",
    "train_mean",
    "diverged",
    "static",
    "difference_mean",
    "difference_std",
    "better",
    "equal",
    "worse",
]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def results():
    return followup.run_followup(settings=TINY, progress=False)


def test_full_scale_settings():
    full = followup.CONFIGS["full"]
    assert full["n_seeds"] >= 5 and len(full["widths"]) >= 5
    # 14 periods, the last one static, as in the original paper; A = 70 there too.
    assert full["max_epochs"] / full["period"] == 14
    assert full["amplitude"] == 70
    assert full["lr_cross_entropy"] == 1.0
    assert full["lr_squared_error"] == full["lr_cross_entropy"] / 4
    quick = followup.CONFIGS["quick"]
    assert quick["max_epochs"] / quick["period"] == 14


def test_five_losses_from_the_same_initialisation(results):
    rows = results["rows"]
    assert len(rows) == 2 * 2 * 5
    assert {(r["width"], r["loss"], r["seed"]) for r in rows} == {
        (w, name, s) for w in (3, 6) for name in followup.LOSSES for s in (0, 1)
    }
    for r in rows:
        assert 0 <= r["train_accuracy"] <= 1 and 0 <= r["validation_accuracy"] <= 1
        assert r["n_iter"] == 28 and math.isfinite(r["sharpness"])
        static = r["loss"] in ("CE", "MSE")
        assert r["amplitude"] == (1.0 if static else 70.0)
        assert r["lr"] == (1.0 if r["base"] == "cross_entropy" else 0.25)
    # Each row is a direct fit of the public estimator, seeded by the seed alone.
    r = next(r for r in rows if (r["width"], r["loss"], r["seed"]) == (6, "DMSE2", 1))
    X, y, X_val, y_val = reproduce._spiral_split()
    direct = DynamicalLossClassifier(
        loss="squared_error_per_output",
        optimizer="sgd",
        momentum=0,
        lr=0.25,
        batch_size=-1,
        amplitude=70,
        period=2,
        max_epochs=28,
        dtype="float64",
        hidden_layer_sizes=(6,),
        random_state=1,
    ).fit(X, y)
    assert r["validation_accuracy"] == direct.score(X_val, y_val)
    assert r["train_accuracy"] == direct.score(X, y)


def test_summary_by_hand(results):
    rows = results["rows"]
    summary = followup.followup_summary(rows)
    assert [(s["width"], s["loss"]) for s in summary] == [
        (w, name) for w in (3, 6) for name in followup.LOSSES
    ]
    s = next(s for s in summary if (s["width"], s["loss"]) == (6, "DMSE1"))
    mine = {r["seed"]: r["validation_accuracy"] for r in rows if r["width"] == 6}
    dyn = [
        r["validation_accuracy"]
        for r in rows
        if r["width"] == 6 and r["loss"] == "DMSE1"
    ]
    static = [
        r["validation_accuracy"] for r in rows if r["width"] == 6 and r["loss"] == "MSE"
    ]
    assert mine  # both seeds
    assert s["n_seeds"] == 2 and s["static"] == "MSE"
    assert s["validation_mean"] == pytest.approx(np.mean(dyn))
    assert s["validation_std"] == pytest.approx(np.std(dyn, ddof=1))
    diff = np.array(dyn) - np.array(static)  # rows are in seed order
    assert s["difference_mean"] == pytest.approx(diff.mean())
    assert s["better"] + s["equal"] + s["worse"] == 2
    assert s["better"] == int(np.sum(diff > 1e-12))
    ce = next(s for s in summary if (s["width"], s["loss"]) == (6, "CE"))
    assert ce["static"] == "" and ce["difference_mean"] == ""


def test_write_followup(results, tmp_path):
    written = followup.write_followup(results, tmp_path, provenance={"command": "x"})
    names = {p.name for p in written}
    assert names == {
        "followup.png",
        "followup_runs.csv",
        "followup_runs.md",
        "followup_summary.csv",
        "followup_summary.md",
    }
    assert (tmp_path / "followup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = read_csv(tmp_path / "followup_runs.csv")
    assert list(runs[0]) == RUN_COLUMNS and len(runs) == 20
    summary = read_csv(tmp_path / "followup_summary.csv")
    assert list(summary[0]) == SUMMARY_COLUMNS and len(summary) == 10
    for s in summary:
        assert 0 <= float(s["validation_min"]) <= float(s["validation_mean"])
        assert float(s["validation_mean"]) <= float(s["validation_max"]) <= 1
        assert int(s["n_seeds"]) == 2
    md = (tmp_path / "followup_summary.md").read_text()
    assert "| width | loss |" in md and "- command: x" in md
    assert "Chosen, not taken from the follow-up paper's text" in md


def test_followup_is_a_command_but_not_part_of_all():
    assert "followup" in reproduce.EXPERIMENTS
    assert "followup" not in reproduce.ALL
    assert reproduce.ALL == ("fig4", "width", "generalisation")
    args = reproduce.build_parser().parse_args(["followup", "--quick", "--seeds", "3"])
    assert args.name == "followup" and args.seeds == 3
    with pytest.raises(ValueError, match="unknown settings"):
        followup.plan_followup(settings={"n_widths": 3})


def test_seeds_option_reaches_the_plan(monkeypatch, tmp_path):
    seen = {}

    def fake_run_plans(plans, n_jobs=1, progress=True):
        seen["plans"] = plans
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "run_plans", fake_run_plans)
    code = reproduce.main(["followup", "--quick", "--seeds", "1", "--out", tmp_path])
    assert code == 130
    (plan,) = seen["plans"]
    assert plan["name"] == "followup"
    quick = followup.CONFIGS["quick"]
    assert len(plan["estimators"]) == len(quick["widths"]) * 1 * 5


@pytest.mark.slow
def test_command_quick(tmp_path, capsys):
    out = tmp_path / "out"
    assert reproduce.main(["followup", "--quick", "--out", out, "--n-jobs", "2"]) == 0
    assert (out / "followup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = read_csv(out / "followup_summary.csv")
    quick = followup.CONFIGS["quick"]
    assert len(summary) == len(quick["widths"]) * 5
    assert {s["loss"] for s in summary} == set(followup.LOSSES)
    for s in summary:
        assert 0 <= float(s["validation_mean"]) <= 1
        assert int(s["diverged"]) == 0
    runs = read_csv(out / "followup_runs.csv")
    assert len(runs) == len(quick["widths"]) * quick["n_seeds"] * 5
    assert all(int(r["n_iter"]) == quick["max_epochs"] for r in runs)
    md = (out / "followup_summary.md").read_text()
    assert "skdynloss reproduce followup --quick" in md and "- commit: " in md
    err = capsys.readouterr().err
    assert "[followup] done" in err and "fits done:" in err
