import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

import skdynloss  # noqa: E402
from skdynloss import cli  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

HEADERS = (
    "seed",
    "cross-entropy (A=1)",
    "dynamical (A=10, T=100)",
    "difference",
    "mean +- std",
    "model",
    "epochs",
    "test acc",
    "fit time (s)",
    "sharpness",
    "sklearn MLPClassifier",
    "sklearn LogisticRegression",
)


def _spiral_section(text):
    """The spiral comparison: deterministic given the seed (no timings in it)."""
    start = text.index("[1/3]")
    return text[start : text.index("[2/3]")]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "f.png"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = cli.main(["demo", "--quick", "--out", out])
    return status, buffer.getvalue(), out


def test_quick_demo_prints_tables_and_saves_figure(quick_run):
    status, text, out = quick_run
    assert status == 0
    for header in HEADERS:
        assert header in text
    assert "Result:" in text and "Final sharpness:" in text
    assert f"Figure saved to {os.path.abspath(out)}" in text
    assert "Demo finished in" in text
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_demo_as_a_subprocess_is_deterministic(quick_run, tmp_path):
    _, text, _ = quick_run
    out = tmp_path / "g.png"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-m", "skdynloss.cli", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
    # Same seed, another process: the same spiral comparison, digit for digit.
    assert _spiral_section(proc.stdout) == _spiral_section(text)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"skdynloss {skdynloss.__version__}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "invalid choice"),
        ([], "required"),
        (["demo", "--seed", "minus one"], "expected an integer"),
        (["demo", "--seed", "-1"], "expected 0 <= seed"),
        (["demo", "--n-jobs", "0"], "positive integer"),
        (["demo", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_exit_nonzero(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


TINY = {**cli.SPIRAL_QUICK, "epochs": 40, "period": 10.0, "sharpness_every": 10}


def test_worker_processes_do_not_change_the_results():
    # The full demo fits the spiral in joblib worker processes; each fit is seeded by
    # its own random_state, so the results are those of a serial run.
    tasks = [(1.0, 0, TINY, False), (10.0, 0, TINY, True)]
    serial = cli._run_parallel(tasks, n_jobs=1)
    parallel = cli._run_parallel(tasks, n_jobs=2)
    for a, b in zip(serial, parallel, strict=True):
        assert (a["amplitude"], a["seed"]) == (b["amplitude"], b["seed"])
        assert a["accuracy"] == b["accuracy"]
        assert a["sharpness"] == b["sharpness"]
    # The tracked fit comes back whole, for the figure.
    assert len(parallel[1]["estimator"].sharpness_history_["epoch"]) == 4


def test_demo_without_matplotlib_skips_the_figure(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "_has_matplotlib", lambda: False)
    monkeypatch.setattr(cli, "SPIRAL_QUICK", TINY)
    monkeypatch.setattr(cli, "DIGITS_QUICK", {**cli.DIGITS_QUICK, "epochs": 1})
    out = tmp_path / "never.png"
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pip install 'skdynloss[plots]'" in text
    assert "Figure skipped" in text
    assert not out.exists()
