"""The benchmarks' reference loop computes what fit computes, and the scripts run.

``benchmarks/_harness.py`` writes the dynamical loss, its weights and the per-epoch
record out from the formula with torch alone; from the same initial module, in full
batch and float64, its record and final parameters must equal the fit's to 1e-6: an
independent check of the loss, the clock and the record.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_reference_weights_match_the_worked_example():
    # DESIGN.md: A = 70, C = 3: at tau = T/2 the focus class gets 2.917 and the others
    # 0.0417; at tau = 0 all weights are 1; the focus then moves to class 1.
    H = load("_harness")
    G = H.weight_schedule([0.0, 5.0, 15.0, 20.0], 3, 70.0, 10.0, plain_from=20.0)
    np.testing.assert_allclose(G[0], [1, 1, 1])
    np.testing.assert_allclose(G[1], [3 * 70 / 72, 3 / 72, 3 / 72])
    np.testing.assert_allclose(G[2], [3 / 72, 3 * 70 / 72, 3 / 72])
    np.testing.assert_allclose(G[3], [1, 1, 1])  # the static last period
    np.testing.assert_allclose(G.sum(axis=1), 3)


@pytest.mark.slow
def test_reference_loop_reproduces_fit_in_float64():
    diffs = load("bench_training").agreement(steps=60, period=12.0)
    assert set(diffs) >= {"loss", "cross_entropy", "accuracy", "class_weights", "time"}
    assert max(diffs.values()) < 1e-6, diffs


def run(*cmd, env=None):
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    return result.stdout


@pytest.mark.slow
def test_gpu_script_dry_run_on_the_cpu():
    # run_gpu.sh runs bench_training, bench_partial_fit and bench_memory (quick here).
    out = run(
        "bash", str(BENCHMARKS / "run_gpu.sh"),
        env={"BENCH_DEVICE": "cpu", "BENCH_EXTRA": "--quick"},
    )  # fmt: skip
    assert "0 step(s) failed" in out
    difference = re.search(r"agreement max \|difference\| = (\S+)", out)
    assert difference and float(difference.group(1)) < 1e-6
    assert len(re.findall(r"^\d+ of \d+ targets met$", out, re.M)) == 3
    for check in ("skdynloss / reference", "empty callback / without",
                  "last 100 / calls 100-200", "pickle / (state_dicts + record)"):  # fmt: skip
        assert check in out


@pytest.mark.slow
@pytest.mark.parametrize(
    "script", ["bench_scaling.py", "bench_sharpness.py", "bench_sharpness_kernels.py"]
)
def test_other_scripts_run_quick(script):
    out = run(sys.executable, str(BENCHMARKS / script), "--quick")
    assert "load average" in out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "checks"),
    [
        ("bench_threads.py", ["iris pipeline: busy / quiet", "MLP, 20 epochs: busy"]),
        ("bench_fixed_cost.py", ["default fit / MLPClassifier fit", "fresh process"]),
    ],
)
def test_threads_and_fixed_cost_scripts_run_quick(script, checks):
    # Figures are not judged here (no timing assertions): the scripts run and print
    # their targets' rows.
    out = run(sys.executable, str(BENCHMARKS / script), "--quick")
    assert "load average" in out and re.search(r"^\d+ of \d+ targets met$", out, re.M)
    for check in checks:
        assert check in out
