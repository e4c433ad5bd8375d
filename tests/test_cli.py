"""The ``skdynloss`` command: ``skdynloss ...`` and ``python -m skdynloss ...`` alike."""

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

import skdynloss  # noqa: E402
from skdynloss import cli, experiments  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).parents[1]

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


def _env():
    # The subprocesses import this checkout's package, whatever is installed.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": path}


def _run(argv, **kwargs):
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=300,
        check=False,
        **kwargs,
    )


def _section(text, first, last):
    """The text from the line holding ``first`` to the one before ``last``."""
    return text[text.index(first) : text.index(last)]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "f.png"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = cli.main(["demo", "--quick", "--out", out])
    return status, stdout.getvalue(), stderr.getvalue(), out


def test_quick_demo_prints_tables_and_saves_figure(quick_run):
    status, text, _, out = quick_run
    assert status == 0
    for header in HEADERS:
        assert header in text
    assert "Final sharpness:" in text
    # Both comparisons end with a one-line conclusion.
    spiral = _section(text, "[1/3]", "[2/3]")
    digits = _section(text, "[2/3]", "[3/3]")
    for part in (spiral, digits):
        results = [line for line in part.splitlines() if "Result: " in line]
        assert len(results) == 1
    assert "McNemar p=" in digits or "same test images wrong" in digits
    assert f"Figure saved to {os.path.abspath(out)}" in text
    assert "Demo finished in" in text
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_progress_goes_to_stderr_and_tables_to_stdout(quick_run):
    _, text, progress, _ = quick_run
    # One bar over the spiral's training steps, one over the digits models.
    n_steps = (
        2 * experiments.SPIRAL_QUICK["n_seeds"] * experiments.SPIRAL_QUICK["epochs"]
    )
    assert "spiral: 4 fits" in progress and f"0/{n_steps}" in progress
    assert "digits: 4 models" in progress and "0/4" in progress
    assert "spiral:" not in text and "\r" not in text


def test_python_m_skdynloss_runs_the_demo_as_the_command_does(quick_run, tmp_path):
    _, text, _, _ = quick_run
    out = tmp_path / "g.png"
    proc = _run(
        [sys.executable, "-m", "skdynloss", "demo", "--quick", "-q", "--out", str(out)]
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    # Same seed, another process: the same spiral comparison, digit for digit.
    assert _section(proc.stdout, "[1/3]", "[2/3]") == _section(text, "[1/3]", "[2/3]")
    # --quiet: no progress bars (stderr may only hold warnings, never a bar).
    assert "spiral:" not in proc.stderr and "digits:" not in proc.stderr


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["demo", "--help"]])
def test_python_m_skdynloss_and_the_command_print_the_same(args):
    module = _run([sys.executable, "-m", "skdynloss", *args])
    assert module.returncode == 0, module.stderr
    assert module.stdout.startswith(
        "skdynloss" if args == ["--version"] else "usage: skdynloss"
    )
    command = shutil.which("skdynloss")
    if command is None:
        pytest.skip("the skdynloss command is not installed")
    installed = _run([command, *args])
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout == module.stdout


def test_python_m_skdynloss_fails_as_the_command_does():
    proc = _run([sys.executable, "-m", "skdynloss", "demo", "--seed", "-1"])
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: skdynloss demo")
    assert "expected 0 <= seed" in proc.stderr


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


TINY = {**experiments.SPIRAL_QUICK, "epochs": 40, "period": 10.0, "sharpness_every": 10}


@pytest.fixture
def tiny_demo(monkeypatch):
    monkeypatch.setattr(experiments, "SPIRAL_QUICK", TINY)
    monkeypatch.setattr(
        experiments, "DIGITS_QUICK", {**experiments.DIGITS_QUICK, "epochs": 1}
    )


def test_quiet_demo_writes_nothing_to_stderr(tiny_demo, tmp_path, capsys):
    assert cli.main(["demo", "--quick", "-q", "--out", str(tmp_path / "f.png")]) == 0
    captured = capsys.readouterr()
    assert "[3/3] Figure saved" in captured.out
    assert captured.err == ""


def test_demo_without_matplotlib_skips_the_figure(
    tiny_demo, monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(cli, "_has_matplotlib", lambda: False)
    out = tmp_path / "never.png"
    assert cli.main(["demo", "--quick", "-q", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pip install 'skdynloss[plots]'" in text
    assert "Figure skipped" in text
    assert not out.exists()


def test_reproduce_is_a_subcommand_with_its_own_help(capsys):
    from skdynloss.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "skdynloss reproduce" in out and "fig4" in out and "--quick" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "nonsense"])
    assert exit_info.value.code == 2


@pytest.fixture
def no_demo(monkeypatch):
    def fit(*args, **kwargs):
        raise AssertionError("the demo started before --out was checked")

    monkeypatch.setattr(experiments, "spiral_comparison", fit)


@pytest.mark.parametrize(
    "out, message",
    [
        ("{file}/fig.png", "is a file, not a folder"),
        ("{file}/below/fig.png", "is a file, not a folder"),
        ("{tmp}", "format is chosen by the extension"),
        ("{tmp}/fig.xyz", "format is chosen by the extension"),
        ("{tmp}/folder.png", "is a folder"),
    ],
)
def test_an_unwritable_figure_path_is_refused_before_the_demo_runs(
    no_demo, tmp_path, out, message, capsys
):
    (tmp_path / "file").write_text("")
    (tmp_path / "folder.png").mkdir()
    out = out.format(file=tmp_path / "file", tmp=tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--quick", "--out", out])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_the_figures_folders_are_created(tiny_demo, tmp_path, capsys):
    out = tmp_path / "missing" / "dir" / "fig.png"
    assert cli.main(["demo", "--quick", "-q", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    capsys.readouterr()
