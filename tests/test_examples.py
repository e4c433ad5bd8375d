"""The gallery scripts in examples/ run to completion (they are the docs' figures)."""

import runpy
import warnings
from pathlib import Path

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")  # before pyplot is imported anywhere: no display needed
plt = pytest.importorskip("matplotlib.pyplot")

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("plot_*.py"))


def test_examples_are_found():
    # Guards against the parametrization below silently collecting nothing.
    assert len(EXAMPLES) >= 4, EXAMPLES


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(path, monkeypatch):
    # The scripts call plt.show(), which only warns under Agg; run them from the
    # examples folder, as sphinx-gallery does.
    monkeypatch.chdir(path.parent)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=".*non-interactive.*", category=UserWarning
            )
            runpy.run_path(str(path), run_name="__main__")
        assert plt.get_fignums(), f"{path.name} drew no figure"
    finally:
        plt.close("all")
