"""benchmarks/sweep_defaults.py: how it reads candidates, the emulated "auto" values, and
a --quick run end to end."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

PAIR = r"(\d\.\d{3}) \+- (\d\.\d{3})"
SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "sweep_defaults.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("sweep_defaults", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_candidate_strings_name_every_setting(sweep):
    settings = sweep.parse_candidate("A=5 T=auto2 lr=3e-3 bs=auto ep=150 st=0")
    assert settings == {
        "amplitude": 5.0,
        "period": "auto2",
        "lr": 3e-3,
        "batch_size": "auto",
        "max_epochs": 150,
        "static_last_period": False,
    }
    with pytest.raises(ValueError, match="bad setting"):
        sweep.parse_candidate("A=5 amplitude=3")
    with pytest.raises(ValueError, match="bad setting"):
        sweep.parse_candidate("A5")


@pytest.mark.parametrize(
    ("cycles", "n_classes", "epochs", "static", "expected"),
    [
        (2, 3, 100, True, 100 / 7),  # iris: 2 cycles of 3 periods, then 1 static
        (2, 10, 100, True, 100 / 21),  # digits
        (2, 2, 100, True, 20.0),  # breast_cancer
        (1, 3, 60, False, 20.0),  # no static period: 3 periods fill the fit
        (1.5, 2, 80, True, 20.0),
    ],
)
def test_auto_period_is_whole_cycles_then_the_static_period(
    sweep, cycles, n_classes, epochs, static, expected
):
    kwargs = sweep.resolve(
        {
            "period": f"auto{cycles}",
            "max_epochs": epochs,
            "static_last_period": static,
        },
        n_train=120,
        n_classes=n_classes,
    )
    assert kwargs["period"] == pytest.approx(expected)
    # Written out: K cycles of C periods, plus the static last period, fill max_epochs.
    n_periods = cycles * n_classes + (1 if static else 0)
    assert kwargs["period"] * n_periods == pytest.approx(epochs)


def test_numbers_pass_through_and_auto_batch_is_sklearns(sweep):
    kwargs = sweep.resolve({"period": "7.5", "batch_size": "auto"}, 120, 3)
    assert kwargs == {"period": 7.5, "batch_size": 120}
    assert sweep.resolve({"batch_size": "auto"}, 1437, 10)["batch_size"] == 200
    assert sweep.resolve({"batch_size": "-1"}, 1437, 10)["batch_size"] == -1
    # The defaults the script assumes when a candidate leaves them out.
    assert sweep.resolve({}, 100, 3) == {"period": 10.0, "batch_size": 64}


@pytest.mark.slow  # a subprocess of about 10 s: 40 small fits
def test_quick_run_prints_the_tables_with_sensible_accuracies():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "Accuracy, mean +- std over 5 folds" in out
    assert "Fit time, mean CPU seconds of one fit" in out
    assert "[compute_sharpness=True]" in out

    table = out.split("Accuracy, mean +- std over 5 folds")[1].split("\n\n")[0]
    rows = {
        re.split(PAIR, line)[0].strip(): [float(m) for m, _ in re.findall(PAIR, line)]
        for line in table.splitlines()[3:]
    }
    assert {"MLPClassifier()", "LogisticRegression()"} <= set(rows)
    assert len(rows) == 4  # the references, the candidate, it with sharpness
    # iris and wine (the --quick data sets) are easy: every contender is far above
    # chance (1/3), and computing the sharpness after the fit changes no prediction.
    for name, (iris, wine) in rows.items():
        assert iris > 0.85 and wine > 0.85, name
    sharp = next(r for r in rows if r.endswith("[compute_sharpness=True]"))
    assert rows[sharp] == rows[sharp.split("  [")[0]]
