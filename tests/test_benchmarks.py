"""The benchmark scripts run, and their hand-written loop (b) computes what fit computes.

Hand loop (b) writes the dynamical loss and the per-epoch record out by hand
(``benchmarks/_common.py``); the scripts compare its per-epoch loss, cross-entropy and
accuracy with ``DynamicalLossClassifier.dynamics_`` from the same initial parameters and
batch order. The difference must be zero: an independent check of the loss, the clock
and the record, in both regimes.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

pytestmark = pytest.mark.slow


def run(script, *args):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_training_benchmark_hand_loop_reproduces_fit_exactly():
    out = run(
        "bench_training.py",
        "--quick",
        "--sections",
        "full-batch,mini-batch",
        "--repeats",
        "1",
    )
    differences = re.findall(r"max \|difference\| = (\S+)", out)
    assert len(differences) == 2  # full batch and mini-batch
    assert [float(d) for d in differences] == [0.0, 0.0]
    assert "Summary" in out


def test_call_count_benchmark_runs():
    out = run("bench_calls.py")
    rows = re.findall(r"^(full batch|mini-batch).*skdynloss\s+([\d.]+)", out, re.M)
    assert len(rows) == 2
    assert all(float(calls) > 0 for _, calls in rows)
