"""verbose=1: a tqdm bar on a terminal, plain lines in a file or pipe."""

import io
import sys

import numpy as np
import pytest

from skdynloss import DynamicalLossClassifier
from skdynloss._callbacks import ProgressBar


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def data():
    rng = np.random.RandomState(0)
    X = rng.randn(96, 4).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


PARAMS = dict(max_epochs=30, batch_size=32, compute_sharpness=False, random_state=0)


def test_a_pipe_gets_plain_lines(data, capsys):
    DynamicalLossClassifier(verbose=1, **PARAMS).fit(*data)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err  # no redraws, no terminal codes
    lines = err.splitlines()
    assert 1 <= len(lines) <= 12  # at most one per tenth of the fit, and the end
    assert all(line.startswith("fit: ") for line in lines)
    assert "30/30 epochs (100%)" in lines[-1]
    assert "loss=" in lines[-1] and "acc=" in lines[-1] and "elapsed" in lines[-1]
    assert all("left" in line for line in lines[:-1])
    done = [int(line.split()[1].split("/")[0]) for line in lines]
    assert done == sorted(done)


def test_a_terminal_gets_a_tqdm_bar(data, monkeypatch):
    tty = Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    DynamicalLossClassifier(verbose=1, **PARAMS).fit(*data)
    text = tty.getvalue()
    assert "\r" in text and "30/30" in text


def test_a_fit_that_stops_early_ends_with_a_line(data, capsys):
    X, y = data
    clf = DynamicalLossClassifier(
        verbose=1,
        amplitude=1.0,  # no tilt: every epoch is judged
        early_stopping=True,
        n_iter_no_change=1,
        tol=1.0,
        **PARAMS,
    ).fit(X, y)
    assert clf.n_iter_ < 30
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith(f"fit: {clf.n_iter_}/30 epochs")


def test_the_time_left_is_elapsed_over_done():
    bar = ProgressBar(verbose=1, epochs=10, file=io.StringIO())

    class Net:
        history = [{"train_loss": 0.5, "train_accuracy": 0.75}]

    bar.on_train_begin(Net())
    bar._done = 4
    bar._line(Net(), bar._start + 8.0)
    line = bar.file.getvalue()
    assert line == (
        "fit: 4/10 epochs (40%), loss=0.5, acc=0.750, 00:08 elapsed, 00:12 left\n"
    )


def test_verbose_0_prints_nothing(data, capsys):
    DynamicalLossClassifier(verbose=0, **PARAMS).fit(*data)
    assert capsys.readouterr().err == ""
