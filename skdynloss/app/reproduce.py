"""Reproduce the paper's three claims at the paper's scale: ``skdynloss reproduce NAME``.

Ruiz-Garcia, Zhang, Schoenholz and Liu (ICML 2021, :arxiv:`2102.03793`) train a
2-100-3 network on a 3-arm spiral with full-batch gradient descent (lr 1, float64),
A = 70, T = 5000 steps, 70 000 steps, the last period with plain cross-entropy. Three
reproductions, each an importable function that returns its results, and a writer
that saves them as PNG figures and CSV/Markdown tables:

``fig4``
    The six rows of the paper's Fig. 4 (Gamma_i, F, F(t) - F(t-1), training accuracy,
    the top Hessian eigenvalue of F every 25 steps against 2/lr, the top NTK
    eigenvalue), a zoom on one period's end, and the period-end peaks of lambda_max
    period by period (the third claim, the mechanism).
``width``
    Training accuracy against hidden width, cross-entropy and the dynamical loss, over
    seeds (the first claim: networks too narrow for the data fit it better).
``generalisation``
    Held-out accuracy of networks wide enough to fit their data (the second claim):
    the spiral with held-out points at several widths and two learning rates, and three
    tasks where cross-entropy generalises poorly (a small training subset of the
    digits, label noise, a hard ``make_classification``).

Every run goes through the public estimator at the paper's settings (:data:`PAPER`;
``generalisation`` at a fifth of its length, :data:`PAPER_LENGTH` with
``--paper-length``). All fits go through one function, :func:`fit_estimators`, which
trains those that can share a stack in lockstep (the engine of
:func:`skdynloss.fit_lockstep`) and spreads the stacks over worker processes;
:func:`run_plans` pools several reproductions into one such call (``all``).

Two more run by name, not by ``all``: ``phase`` (:mod:`skdynloss.app.phase`, the
outcome over a grid of amplitudes and periods) and ``followup``
(:mod:`skdynloss.app.followup`, the squared errors of Lavin and Ruiz-Garcia, 2024).

Run ``skdynloss reproduce NAME [--quick] [--out DIR] [--n-jobs N] [--paper-length]``
(or ``python -m skdynloss.reproduce``).
"""

import argparse
import csv
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from skorch.callbacks import Callback

from .._classifier import DynamicalLossClassifier
from .._lockstep import default_max_stack_bytes
from .._sharpness import ntk_eigenvalues
from ..datasets import make_spiral
from ._arguments import positive_int, remove_empty, writable_folder

__all__ = [
    "PAPER",
    "PAPER_LENGTH",
    "CONFIGS",
    "STACK_BYTES",
    "NTKTracker",
    "fit_estimators",
    "paper_estimator",
    "period_peaks",
    "plan_fig4",
    "plan_width",
    "plan_generalisation",
    "run_plans",
    "run_fig4",
    "run_width",
    "run_generalisation",
    "write_fig4",
    "write_width",
    "write_generalisation",
    "main",
]

#: The paper's settings, as hyperparameters of the estimator.
#: Every fit of every reproduction starts from these.
PAPER = {
    "optimizer": "sgd",
    "momentum": 0.0,
    "lr": 1.0,
    "batch_size": -1,
    "amplitude": 70.0,
    "period": 5000,
    "max_epochs": 70_000,
    "dtype": "float64",
    "hidden_layer_sizes": (100,),
    "static_last_period": True,
    "sharpness_every": 25,
    "compute_sharpness": True,
}

# The full scale is the paper's. --quick keeps every setting but divides the period and
# the number of steps by 50 (14 periods still, the last one static), with fewer widths
# and seeds: a smoke run of seconds to a minute, too short to show the effects.
CONFIGS = {
    "fig4": {
        "full": {
            "width": 100,
            "max_epochs": 70_000,
            "period": 5000,
            "sharpness_every": 25,
            # As the sharpness: 2800 calls of the NTK's top eigenvalue (the Jacobian of
            # 900 outputs by 503 parameters through torch.func), 0.04 s each on an
            # idle core (measured at 2fc8afa), about 2 min in all.
            "ntk_every": 25,
            "zoom": 1000,
        },
        "quick": {
            "width": 100,
            "max_epochs": 1400,
            "period": 100,
            "sharpness_every": 25,
            "ntk_every": 100,
            "zoom": 50,
        },
    },
    "width": {
        "full": {
            "widths": (10, 20, 30, 50, 70, 100),
            "n_seeds": 8,
            "max_epochs": 70_000,
            "period": 5000,
            "lr": 1.0,
            "amplitude": 70.0,
        },
        "quick": {
            "widths": (10, 30, 100),
            "n_seeds": 2,
            "max_epochs": 1400,
            "period": 100,
            "lr": 1.0,
            "amplitude": 70.0,
        },
    },
    "generalisation": {
        # A fifth of the paper's length (T = 1000, 14 000 steps: still 14 periods, the
        # last one static), so that all three reproductions run within 30 minutes on
        # 2 CPU cores; --paper-length (PAPER_LENGTH) runs T = 5000, 70 000 steps.
        "full": {
            "spiral_widths": (100, 200, 400),
            "spiral_lrs": (1.0, 0.1),
            "spiral_seeds": 20,
            "tasks": ("digits-100", "noisy-spiral", "hard-classification"),
            "task_seeds": 10,
            "max_epochs": 14_000,
            "period": 1000,
        },
        "quick": {
            "spiral_widths": (100,),
            "spiral_lrs": (1.0, 0.1),
            "spiral_seeds": 2,
            "tasks": ("digits-100", "noisy-spiral", "hard-classification"),
            "task_seeds": 2,
            "max_epochs": 1400,
            "period": 100,
        },
    },
}

#: The paper's length for ``generalisation`` (``skdynloss reproduce generalisation
#: --paper-length``).
PAPER_LENGTH = {"max_epochs": 70_000, "period": 5000}

LOSSES = {"cross_entropy": 1.0, "dynamical": PAPER["amplitude"]}
LOSS_LABELS = {"cross_entropy": "cross-entropy (A = 1)", "dynamical": "dynamical loss"}


# ------------------------------------------------------------------------- running


def paper_estimator(**overrides):
    """A :class:`DynamicalLossClassifier` at the paper's settings, with overrides."""
    params = {**PAPER, **overrides}
    return DynamicalLossClassifier(**params)


#: Most memory (as ``skdynloss._lockstep.model_bytes`` counts it) of one stack of the
#: reproductions on this machine's CPU: the searches' rule,
#: :func:`skdynloss._lockstep.default_max_stack_bytes` (one core's share of the
#: last-level cache, the stack size measured fastest per model and step; 16 MiB on a
#: 32 MiB L3 shared by 2 cores: 16 networks 2-100-3 in float64, 8 at width 200, 4 at
#: width 400). ``fit_estimators`` applies the rule for each stack's device (on CUDA
#: it is a share of the free memory).
STACK_BYTES = default_max_stack_bytes("cpu")


def _data_keys(data):
    """One key per distinct (X, y) pair: fits on the same arrays share one copy."""
    seen = {}
    return [seen.setdefault((id(d["X"]), id(d["y"])), len(seen)) for d in data]


def _units(estimators, data, max_stack_bytes):
    """The fits as units of work: the engine's stacks (balanced, by the one grouping
    of :func:`skdynloss._lockstep.stack_units`), fits of different reproductions
    never in one stack.

    The same units whatever the number of workers, so that the results do not depend
    on it.
    """
    from .._lockstep import stack_units

    datasets = [(d["X"], d["y"], d.get("sample_weight"), None) for d in data]
    return stack_units(
        estimators,
        datasets,
        max_stack_bytes=max_stack_bytes,
        extra_keys=[d.get("plan") for d in data],
    )


def _unit_cost(estimators, data, unit):
    """A rough estimate of a unit's seconds on one CPU core (to order the work).

    Per step: about 0.3 ms of Python and 0.2 ms per MiB of the stack's memory; the
    tracking of lambda_max every ``sharpness_every`` epochs about 0.1 s a call.
    """
    from .._lockstep import model_bytes

    est, d = estimators[unit[0]], data[unit[0]]
    n, n_features = np.shape(d["X"])
    n_classes = len(np.unique(d["y"]))
    size = (
        sum(model_bytes(estimators[i], n, n_features, n_classes) for i in unit) / 2**20
    )
    epochs = int(est.max_epochs)
    seconds = epochs * (3e-4 + 2e-4 * size)
    if est.sharpness_every:
        seconds += epochs / int(est.sharpness_every) * 0.1
    return seconds


def _fit_unit(unit, estimators, data, keys, summarize, max_stack_bytes):
    """Fit one unit (a stack, or a fit alone) and summarise its fits (a worker)."""
    import torch

    from .._lockstep import fit_datasets

    # One thread: fastest for these small networks, and fair to the other worker.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        datasets = [
            (d["X"], d["y"], d.get("sample_weight"), key)
            for d, key in zip(data, keys, strict=True)
        ]
        # Ctrl-C stops the whole run (the estimators are restored), not one stack.
        _, seconds = fit_datasets(
            estimators, datasets, max_stack_bytes=max_stack_bytes, interrupt="raise"
        )
        results = [
            summarize(est, d, t)
            for est, d, t in zip(estimators, data, seconds, strict=True)
        ]
        return unit, results, time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)


def fit_estimators(
    estimators,
    data,
    *,
    summarize=None,
    n_jobs=1,
    progress=None,
    max_stack_bytes=None,
):
    """Fit each estimator on its data and return ``summarize(est, data, seconds)``.

    The one place where the reproductions fit anything. Estimators that can share a
    stack (the same architecture, optimizer, learning rate and number of epochs, on
    data of the same shape; see :func:`skdynloss.fit_lockstep`) train in lockstep, in
    stacks of at most ``max_stack_bytes``; Fig. 4's fit (its NTK tracker and
    ``sharpness_every``) trains through the same engine, as a stack of one. The units of work go to ``n_jobs`` worker
    processes, the longest first; they are the same whatever ``n_jobs``, so the
    results are too.

    Parameters
    ----------
    estimators : list of DynamicalLossClassifier
        Unfitted estimators.
    data : list of dict
        For each estimator, ``X`` and ``y`` to fit on (and whatever ``summarize``
        reads, e.g. held-out ``X_test`` and ``y_test``). Fits given the same ``X``
        and ``y`` objects share them in their stack.
    summarize : callable, default=keep the fitted estimator
        ``summarize(fitted_estimator, data, seconds) -> result``; runs in the worker,
        so that only the result travels back. ``seconds`` is the fit's share of its
        stack's time.
    n_jobs : int, default=1
        Worker processes (joblib's loky backend); 1 fits in this process.
    progress : callable, default=None
        Called as ``progress(done, total, indices, results, seconds, fraction)`` after
        each unit: fits done and in all, the indices and results of the unit's fits,
        its wall time, and the estimated share of all the work done so far (the
        units still running on other workers counted as half done).
    max_stack_bytes : int, default=None
        Most memory of one stack (``skdynloss._lockstep.model_bytes`` per model);
        None is the searches' rule, ``skdynloss._lockstep.default_max_stack_bytes``
        of the stack's device (:data:`STACK_BYTES` on this machine's CPU).

    Returns
    -------
    results : list
        One result per estimator, in the order of ``estimators``.
    """
    if len(estimators) != len(data):
        raise ValueError("estimators and data must have the same length.")
    summarize = _keep_estimator if summarize is None else summarize
    n = len(estimators)
    keys = _data_keys(data)
    units = _units(estimators, data, max_stack_bytes)
    costs = [_unit_cost(estimators, data, u) for u in units]
    order = sorted(range(len(units)), key=lambda j: -costs[j])
    total_cost = sum(costs) or 1.0
    cost_of = {tuple(units[j]): costs[j] for j in order}

    def task(j):
        u = units[j]
        return (
            u,
            [estimators[i] for i in u],
            [data[i] for i in u],
            [keys[i] for i in u],
            summarize,
            max_stack_bytes,
        )

    if n_jobs == 1 or len(units) <= 1:
        finished = (_fit_unit(*task(j)) for j in order)
    else:
        from joblib import Parallel, delayed

        finished = Parallel(
            n_jobs=n_jobs, return_as="generator_unordered", pre_dispatch="n_jobs"
        )(delayed(_fit_unit)(*task(j)) for j in order)
    results = [None] * n
    done, done_cost = 0, 0.0
    pending = [tuple(units[j]) for j in order]
    workers = 1 if n_jobs == 1 or len(units) <= 1 else n_jobs
    for unit, unit_results, seconds in finished:
        for i, result in zip(unit, unit_results, strict=True):
            results[i] = result
        done += len(unit)
        done_cost += cost_of[tuple(unit)]
        pending.remove(tuple(unit))
        if progress is not None:
            # The other workers' units are under way (the next ones in the order, as
            # they are handed out): count them as half done.
            running = sum(cost_of[u] for u in pending[: workers - 1]) / 2
            fraction = (done_cost + running) / total_cost
            progress(done, n, unit, unit_results, seconds, fraction)
    return results


def _keep_estimator(estimator, data, seconds):
    return {"estimator": estimator, "seconds": seconds}


class _Progress:
    """One line per finished unit of work on stderr: what it was, time and ETA.

    ``names`` gives, for each fit's index, the reproduction it belongs to; ``describe``
    maps a reproduction's name to a function that describes a unit's results.
    """

    def __init__(self, names, describe, stream=None):
        self.names = names
        self.describe = describe
        self.stream = sys.stderr if stream is None else stream
        self.start = time.perf_counter()

    def __call__(self, done, total, indices, results, seconds, fraction):
        elapsed = time.perf_counter() - self.start
        eta = elapsed * (1 - fraction) / max(fraction, 1e-9)
        name = self.names[indices[0]]
        what = self.describe[name](results)
        print(
            f"[{name}] {done}/{total} fits done: {what} ({_duration(seconds)}; "
            f"elapsed {_duration(elapsed)}, about {_duration(eta)} left)",
            file=self.stream,
            flush=True,
        )


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _settings(name, quick, overrides):
    config = dict(CONFIGS[name]["quick" if quick else "full"])
    unknown = set(overrides or {}) - set(config)
    if unknown:
        raise ValueError(f"unknown settings for {name}: {sorted(unknown)}")
    config.update(overrides or {})
    return config


# ---------------------------------------------------------------------------- fig4


class NTKTracker(Callback):
    """A skorch callback: the top NTK eigenvalue every ``every`` epochs.

    Stack-aware: in a stack it runs with its own model's net, whose ``module_``
    holds that model's parameters at the end of each epoch.

    Records ``ntk_max`` (``skdynloss.ntk_eigenvalues(net.module_, X, k=1)`` on the
    training inputs) and ``ntk_seconds`` (the time it took) in ``net.history``.

    Parameters
    ----------
    every : int, default=250
        Epochs between two evaluations (counted over the whole history).
    """

    stack_aware = True

    def __init__(self, every=250):
        self.every = every

    def initialize(self):
        self._X = None
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        # The classifier passes its training tensor (a dict with sample weights).
        self._X = X["X"] if isinstance(X, dict) else X

    def on_train_end(self, net, **kwargs):
        self._X = None

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        if self._X is None or epoch % int(self.every):
            return
        start = time.perf_counter()
        value = float(ntk_eigenvalues(net.module_, self._X, k=1)[0])
        net.history.record("ntk_max", value)
        net.history.record("ntk_seconds", time.perf_counter() - start)


def period_peaks(sharpness_history, period, n_epochs, threshold, *, n_classes=3):
    """The peak of the tracked lambda_max in each period, period by period.

    Returns one dict per period: ``period`` (1-based), ``start`` and ``end`` (epochs),
    ``focus`` (class in focus, or "static" for the last period), ``peak`` (largest
    lambda_max of the loss being minimised), ``peak_epoch``, ``at_end`` (lambda_max at
    the last tracked epoch of the period), ``cross_entropy_at_end`` (that of the plain
    cross-entropy) and ``above_threshold`` (whether the peak exceeds 2/lr).
    """
    epochs = np.asarray(sharpness_history["epoch"])
    dyn = np.asarray(sharpness_history["dynamical"], dtype=float)
    ce = np.asarray(sharpness_history["cross_entropy"], dtype=float)
    n_periods = int(math.ceil(n_epochs / period))
    rows = []
    for k in range(n_periods):
        start, end = k * period, min((k + 1) * period, n_epochs)
        inside = (epochs > start) & (epochs <= end)
        if not inside.any():
            continue
        e, d, c = epochs[inside], dyn[inside], ce[inside]
        j = int(np.nanargmax(d))
        static = k == n_periods - 1
        rows.append(
            {
                "period": k + 1,
                "start": int(start),
                "end": int(end),
                "focus": "static" if static else str(k % n_classes),
                "peak": float(d[j]),
                "peak_epoch": int(e[j]),
                "at_end": float(d[-1]),
                "cross_entropy_at_end": float(c[-1]),
                "above_threshold": bool(d[j] > threshold),
            }
        )
    return rows


def plan_fig4(*, quick=False, settings=None, verbose=0):
    """The fit of the paper's Figure 4, as a plan for :func:`run_plans`."""
    cfg = _settings("fig4", quick, settings)
    X, y = make_spiral()
    est = paper_estimator(
        hidden_layer_sizes=(cfg["width"],),
        period=cfg["period"],
        max_epochs=cfg["max_epochs"],
        sharpness_every=cfg["sharpness_every"],
        callbacks=[("ntk", NTKTracker(every=cfg["ntk_every"]))],
        random_state=0,
        verbose=verbose,
    )

    def finish(results):
        (result,) = results
        est = result["estimator"]
        history = est.net_.history
        rows = [(i + 1, r) for i, r in enumerate(history) if "ntk_max" in r]
        ntk = {
            "epoch": np.array([e for e, _ in rows], dtype=int),
            "value": np.array([r["ntk_max"] for _, r in rows], dtype=float),
            "seconds": np.array([r["ntk_seconds"] for _, r in rows], dtype=float),
        }
        threshold = 2.0 / PAPER["lr"]
        peaks = period_peaks(
            est.sharpness_history_,
            cfg["period"],
            cfg["max_epochs"],
            threshold,
            n_classes=len(est.classes_),
        )
        return {
            "estimator": est,
            "settings": cfg,
            "fit_seconds": result["seconds"],
            "ntk": ntk,
            "peaks": peaks,
            "threshold": threshold,
            "train_accuracy": float(est.score(X, y)),
        }

    def describe(results):
        (result,) = results
        est = result["estimator"]
        return f"the run of Fig. 4, training accuracy {est.score(X, y):.3f}"

    return {
        "name": "fig4",
        "estimators": [est],
        "data": [{"X": X, "y": y}],
        "summarize": _keep_estimator,
        "finish": finish,
        "describe": describe,
    }


def run_fig4(*, quick=False, settings=None, progress=True):
    """Fit the run of the paper's Figure 4 and return its record.

    Parameters
    ----------
    quick : bool, default=False
        The smoke-run scale of :data:`CONFIGS` instead of the paper's.
    settings : dict, default=None
        Overrides of the scale (keys of ``CONFIGS["fig4"]["full"]``).
    progress : bool, default=True
        Show the fit's progress bar on stderr.

    Returns
    -------
    results : dict
        ``estimator`` (fitted), ``settings``, ``seconds`` (wall time),
        ``fit_seconds``, ``ntk`` (epochs, values, seconds per call), ``peaks``
        (:func:`period_peaks`) and ``threshold`` (2/lr).
    """
    plan = plan_fig4(quick=quick, settings=settings, verbose=int(bool(progress)))
    (results,) = run_plans([plan], progress=progress)
    return results


def _zoom_window(results):
    """The end of the period whose lambda_max peak is highest (static one excluded)."""
    cfg = results["settings"]
    peaks = [p for p in results["peaks"] if p["focus"] != "static"] or results["peaks"]
    chosen = max(peaks, key=lambda p: p["peak"])
    end = chosen["end"]
    return chosen, max(0, end - cfg["zoom"]), end + cfg["zoom"] // 5


def plot_fig4(results):
    """The six rows of Fig. 4 and, beside them, a zoom on one period's end."""
    from matplotlib.figure import Figure

    from ..plotting import _symlog_decades, plot_training_dynamics

    est, ntk = results["estimator"], results["ntk"]
    fig = Figure(figsize=(13.0, 14.0), layout="constrained")
    grid = fig.add_gridspec(6, 2, width_ratios=(2.2, 1.0))
    left = [fig.add_subplot(grid[0, 0])]
    left += [fig.add_subplot(grid[i, 0], sharex=left[0]) for i in range(1, 6)]
    right = [fig.add_subplot(grid[0, 1])]
    right += [fig.add_subplot(grid[i, 1], sharex=right[0]) for i in range(1, 6)]
    plot_training_dynamics(est, axes=left[:5])
    for ax in left[:5]:
        ax.set_xlabel("")
    ax = left[5]
    ax.plot(ntk["epoch"], ntk["value"], ".-", ms=2, lw=0.8, color="C4")
    if np.all(ntk["value"] > 0):
        ax.set_yscale("log")
    ax.set_ylabel("top NTK\neigenvalue")
    every = results["settings"]["ntk_every"]
    ax.set_title(
        f"(f) top eigenvalue of the neural tangent kernel (every {every} steps)",
        loc="left",
        fontsize="medium",
    )
    ax.set_xlabel("step (full-batch gradient descent, lr 1)")

    # The zoom: the same quantities over one period's end.
    chosen, lo, hi = _zoom_window(results)
    dyn = est.dynamics_
    epoch = dyn["epoch"]
    sel = (epoch >= lo) & (epoch <= hi)
    hist = est.sharpness_history_
    hsel = (hist["epoch"] >= lo) & (hist["epoch"] <= hi)
    nsel = (ntk["epoch"] >= lo) & (ntk["epoch"] <= hi)
    w = dyn["class_weights"]
    for i in range(w.shape[1]):
        right[0].plot(epoch[sel], w[sel, i], lw=1.0)
    right[0].set_title(
        f"zoom: end of period {chosen['period']} (steps {lo}-{hi})",
        loc="left",
        fontsize="medium",
    )
    right[1].plot(epoch[sel], dyn["loss"][sel], lw=1.0)
    right[1].plot(epoch[sel], dyn["cross_entropy"][sel], lw=0.8, ls="--")
    right[1].set_yscale("log")
    diff = np.diff(dyn["loss"])
    dsel = sel[1:]
    right[2].plot(epoch[1:][dsel], diff[dsel], lw=0.6, color="C2")
    big = np.abs(diff[dsel])
    big = big[np.isfinite(big) & (big > 0)]
    if big.size:
        _symlog_decades(right[2], big.max())
    right[2].axhline(0, color="0.5", lw=0.5)
    right[3].plot(epoch[sel], dyn["accuracy"][sel], color="C3", lw=1.0)
    right[4].plot(hist["epoch"][hsel], hist["dynamical"][hsel], ".-", ms=3, lw=1.0)
    right[4].plot(hist["epoch"][hsel], hist["cross_entropy"][hsel], ".--", ms=3, lw=1.0)
    right[4].axhline(results["threshold"], color="k", ls=":", lw=1.2)
    right[4].set_yscale("log")
    if nsel.any():
        right[5].plot(ntk["epoch"][nsel], ntk["value"][nsel], ".-", color="C4")
    right[5].set_xlabel("step")
    for ax in right:
        ax.axvline(chosen["end"], color="0.6", lw=0.8, ls="--", zorder=0)
    return fig


# --------------------------------------------------------------------------- width


def _score_summary(estimator, data, seconds):
    """What the width and generalisation tables need of one fit."""
    out = {
        **data["meta"],
        "train_accuracy": float(estimator.score(data["X"], data["y"])),
        "sharpness": float(estimator.sharpness_),
        "n_iter": int(estimator.n_iter_),
        "diverged": bool(estimator.diverged_),
        "seconds": seconds,
    }
    if "X_test" in data:
        out["test_accuracy"] = float(estimator.score(data["X_test"], data["y_test"]))
    return out


def _describe(rows):
    """A unit's fits in a few words: what they share, and their accuracies."""
    keys = [k for k in ("task", "width", "lr") if k in rows[0]]
    text = " ".join(
        f"{k}=" + ",".join(str(v) for v in dict.fromkeys(r[k] for r in rows))
        for k in keys
    )
    for loss in LOSSES:
        mine = [r for r in rows if r["loss"] == loss]
        if not mine:
            continue
        text += f"; {loss} x{len(mine)}: train {np.mean([r['train_accuracy'] for r in mine]):.3f}"
        if "test_accuracy" in mine[0]:
            text += f", test {np.mean([r['test_accuracy'] for r in mine]):.3f}"
    return text


def _rows_plan(name, cfg, estimators, data, *, summarize=None, describe=None):
    """A plan whose fits are summarised as rows (one dict per fit, by ``summarize``,
    default :func:`_score_summary`), ``describe`` (default :func:`_describe`) saying
    a unit's rows in a few words."""

    def finish(rows):
        return {
            "settings": cfg,
            "rows": rows,
            "fit_seconds": float(sum(r["seconds"] for r in rows)),
        }

    return {
        "name": name,
        "estimators": estimators,
        "data": data,
        "summarize": summarize or _score_summary,
        "finish": finish,
        "describe": describe or _describe,
    }


def _plan_summary(estimator, data, seconds):
    return data["summarize"](estimator, data, seconds)


def run_plans(plans, *, n_jobs=1, progress=True):
    """Fit the plans' estimators together (one :func:`fit_estimators`) and return
    each plan's results, with ``seconds``: the wall time of the whole run.

    A plan is a dict: ``name``, ``estimators``, ``data``, ``summarize``, ``finish``
    (maps the plan's summaries to its results) and ``describe`` (a unit's summaries
    in a few words, for the progress lines).
    """
    estimators, data, names, spans = [], [], [], []
    for plan in plans:
        start = len(estimators)
        estimators += plan["estimators"]
        data += plan["data"]
        names += [plan["name"]] * len(plan["estimators"])
        spans.append((start, len(estimators)))
    # Each fit is summarised by its own plan's function (in the worker).
    data = [
        {**d, "summarize": plan["summarize"], "plan": plan["name"]}
        for plan in plans
        for d in plan["data"]
    ]
    report = None
    if progress:
        report = _Progress(names, {p["name"]: p["describe"] for p in plans})
    start = time.perf_counter()
    results = fit_estimators(
        estimators, data, summarize=_plan_summary, n_jobs=n_jobs, progress=report
    )
    seconds = time.perf_counter() - start
    out = []
    for plan, (a, b) in zip(plans, spans, strict=True):
        result = plan["finish"](results[a:b])
        result["seconds"] = seconds
        out.append(result)
    return out


def plan_width(*, quick=False, settings=None):
    """The fits of the width reproduction, as a plan for :func:`run_plans`."""
    cfg = _settings("width", quick, settings)
    X, y = make_spiral()
    estimators, data = [], []
    for width in cfg["widths"]:
        for seed in range(cfg["n_seeds"]):
            for loss, amplitude in LOSSES.items():
                estimators.append(
                    paper_estimator(
                        amplitude=cfg["amplitude"]
                        if loss == "dynamical"
                        else amplitude,
                        lr=cfg["lr"],
                        hidden_layer_sizes=(width,),
                        period=cfg["period"],
                        max_epochs=cfg["max_epochs"],
                        # Only the end of training is reported: no tracking.
                        sharpness_every=None,
                        random_state=seed,
                    )
                )
                data.append(
                    {
                        "X": X,
                        "y": y,
                        "meta": {"width": width, "loss": loss, "seed": seed},
                    }
                )
    return _rows_plan("width", cfg, estimators, data)


def run_width(*, quick=False, settings=None, n_jobs=1, progress=True):
    """Training accuracy against hidden width, cross-entropy vs the dynamical loss.

    Same initialisation (``random_state=seed``) for both losses at each seed. Returns
    ``{"settings": ..., "rows": [one dict per fit], "seconds": wall time,
    "fit_seconds": the fits' time on one core}``.
    """
    plan = plan_width(quick=quick, settings=settings)
    return run_plans([plan], n_jobs=n_jobs, progress=progress)[0]


# ------------------------------------------------------------------ generalisation


def _spiral_split(noise_fraction=0.0):
    """The spiral with held-out points: 200 per arm, alternate points held out.

    The training half has the paper's size (100 points per arm); with
    ``noise_fraction`` that share of the training labels is replaced by another class
    (seeded, the same for every seed of the network), and the test labels stay clean.
    """
    X, y = make_spiral(n_samples_per_class=200, random_state=0)
    train = np.arange(len(X)) % 2 == 0
    X_train, y_train = X[train], y[train].copy()
    if noise_fraction:
        rng = np.random.default_rng(0)
        flip = rng.choice(
            len(y_train), int(round(noise_fraction * len(y_train))), replace=False
        )
        y_train[flip] = (y_train[flip] + rng.integers(1, 3, size=flip.size)) % 3
    return X_train, y_train, X[~train], y[~train]


def _digits_subset(n_per_class=10):
    """The digits: a stratified subset of ``n_per_class`` images per class for
    training (seeded), all the others held out; pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(0)
    train = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        train[rng.choice(np.flatnonzero(y == c), n_per_class, replace=False)] = True
    return X[train], y[train], X[~train], y[~train]


def _hard_classification():
    """A hard make_classification: 3 classes, 2 clusters each, class_sep 0.6, 5%
    flipped labels; 300 training and 300 held-out points, standardised on the
    training half."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = make_classification(
        n_samples=600,
        n_features=10,
        n_informative=4,
        n_redundant=2,
        n_classes=3,
        n_clusters_per_class=2,
        class_sep=0.6,
        flip_y=0.05,
        random_state=0,
    )
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.5, stratify=y, random_state=0
    )
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), y_train, scaler.transform(X_test), y_test


TASKS = {
    "digits-100": (
        _digits_subset,
        "digits, 10 training images per class (100), 1697 held out",
    ),
    "noisy-spiral": (
        lambda: _spiral_split(noise_fraction=0.2),
        "spiral (300 training points) with 20% of the training labels wrong, clean held-out points",
    ),
    "hard-classification": (
        _hard_classification,
        "make_classification, 3 classes x 2 clusters, class_sep 0.6, 5% flipped labels, 300/300",
    ),
}


def plan_generalisation(*, quick=False, settings=None):
    """The fits of the generalisation reproduction, as a plan for :func:`run_plans`."""
    cfg = _settings("generalisation", quick, settings)
    estimators, data = [], []

    def add(task, split, width, lr, seed):
        X, y, X_test, y_test = split
        for loss, amplitude in LOSSES.items():
            estimators.append(
                paper_estimator(
                    amplitude=amplitude,
                    hidden_layer_sizes=(width,),
                    lr=lr,
                    period=cfg["period"],
                    max_epochs=cfg["max_epochs"],
                    sharpness_every=None,
                    random_state=seed,
                )
            )
            meta = {"task": task, "width": width, "lr": lr, "loss": loss, "seed": seed}
            data.append(
                {"X": X, "y": y, "X_test": X_test, "y_test": y_test, "meta": meta}
            )

    spiral = _spiral_split()
    for lr in cfg["spiral_lrs"]:
        for width in cfg["spiral_widths"]:
            for seed in range(cfg["spiral_seeds"]):
                add("spiral", spiral, width, lr, seed)
    for task in cfg["tasks"]:
        split = TASKS[task][0]()
        for seed in range(cfg["task_seeds"]):
            add(task, split, PAPER["hidden_layer_sizes"][0], PAPER["lr"], seed)
    return _rows_plan("generalisation", cfg, estimators, data)


def run_generalisation(*, quick=False, settings=None, n_jobs=1, progress=True):
    """Held-out accuracy of networks wide enough to fit their data.

    The spiral with held-out points at ``spiral_widths`` x ``spiral_lrs`` over
    ``spiral_seeds`` seeds, and the ``tasks`` (width 100, lr 1) over ``task_seeds``
    seeds; cross-entropy and the dynamical loss from the same initialisation at each
    seed. Returns ``{"settings", "rows", "seconds", "fit_seconds"}``.
    """
    plan = plan_generalisation(quick=quick, settings=settings)
    return run_plans([plan], n_jobs=n_jobs, progress=progress)[0]


# -------------------------------------------------------------------- tables, files


def _mean_std(values):
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std


def paired_summary(rows, group_keys, metric):
    """Per group: both losses' mean, std, min and max of ``metric`` over seeds, and
    the paired difference dynamical - cross-entropy (same seed, same initialisation)
    with how many seeds it is positive, zero and negative."""
    groups = {}
    for r in rows:
        key = tuple(r[k] for k in group_keys)
        groups.setdefault(key, {}).setdefault(r["loss"], {})[r["seed"]] = r[metric]
    out = []
    for key, by_loss in groups.items():
        row = dict(zip(group_keys, key, strict=True))
        for loss in LOSSES:
            values = list(by_loss.get(loss, {}).values())
            mean, std = _mean_std(values)
            row[f"{loss}_mean"] = mean
            row[f"{loss}_std"] = std
            row[f"{loss}_min"] = float(np.min(values)) if values else float("nan")
            row[f"{loss}_max"] = float(np.max(values)) if values else float("nan")
        seeds = sorted(
            set(by_loss.get("cross_entropy", {})) & set(by_loss.get("dynamical", {}))
        )
        diff = np.array(
            [by_loss["dynamical"][s] - by_loss["cross_entropy"][s] for s in seeds]
        )
        mean, std = _mean_std(diff)
        row["n_seeds"] = len(seeds)
        row["difference_mean"] = mean
        row["difference_std"] = std
        row["dynamical_better"] = int(np.sum(diff > 1e-12))
        row["equal"] = int(np.sum(np.abs(diff) <= 1e-12))
        row["cross_entropy_better"] = int(np.sum(diff < -1e-12))
        out.append(row)
    return out


def _provenance(command=None):
    """The command, the commit and the machine, for every table the runs write."""
    root = Path(__file__).resolve().parent.parent
    commit = "unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if dirty:
            commit += " (with uncommitted changes)"
    except (OSError, subprocess.SubprocessError):
        pass
    from .. import __version__

    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return {
        "command": command or "python -m skdynloss.reproduce " + " ".join(sys.argv[1:]),
        "commit": commit,
        "skdynloss": __version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _fmt(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}" if abs(value) >= 100 or value == 0 else f"{value:.3f}"
    return str(value)


def write_table(rows, path, *, columns=None, title=None, provenance=None, notes=()):
    """Write ``rows`` (dicts) as ``path.csv`` and ``path.md``; returns both paths."""
    path = Path(path)
    columns = columns or list(rows[0]) if rows else (columns or [])
    with open(path.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k in columns})
    lines = []
    if title:
        lines += [f"# {title}", ""]
    lines += [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in columns) + " |" for r in rows]
    if notes:
        lines += ["", *notes]
    if provenance:
        lines += ["", *(f"- {k}: {v}" for k, v in provenance.items())]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return path.with_suffix(".csv"), path.with_suffix(".md")


def _save(fig, path, dpi=80):
    fig.savefig(path, dpi=dpi)
    return path


def write_fig4(results, out, *, provenance=None):
    """Save fig4.png, fig4_peaks.csv/.md and fig4_run.json under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    provenance = provenance or _provenance()
    est, cfg = results["estimator"], results["settings"]
    written = [_save(plot_fig4(results), out / "fig4.png")]
    columns = [
        "period",
        "start",
        "end",
        "focus",
        "peak",
        "peak_epoch",
        "above_threshold",
        "at_end",
        "cross_entropy_at_end",
    ]
    n_above = sum(p["above_threshold"] for p in results["peaks"])
    written += write_table(
        results["peaks"],
        out / "fig4_peaks",
        columns=columns,
        title="Fig. 4: top Hessian eigenvalue of F, period by period",
        provenance=provenance,
        notes=(
            f"2-{cfg['width']}-3 on the spiral, lr 1 (2/lr = {results['threshold']:g}), "
            f"A = 70, T = {cfg['period']}, {cfg['max_epochs']} steps, lambda_max every "
            f"{cfg['sharpness_every']} steps; peak above 2/lr in {n_above} of "
            f"{len(results['peaks'])} periods. Final training accuracy "
            f"{results['train_accuracy']:.3f}; fit {results['fit_seconds']:.0f} s, of which "
            f"NTK {results['ntk']['seconds'].sum():.0f} s "
            f"({results['ntk']['seconds'].mean() if results['ntk']['seconds'].size else float('nan'):.2f} s per call).",
        ),
    )
    run = {
        "settings": cfg,
        "seconds": results["seconds"],
        "fit_seconds": results["fit_seconds"],
        "train_accuracy": results["train_accuracy"],
        "final_sharpness": est.sharpness_,
        "ntk_seconds_per_call": float(results["ntk"]["seconds"].mean())
        if results["ntk"]["seconds"].size
        else None,
        "provenance": provenance,
    }
    (out / "fig4_run.json").write_text(json.dumps(run, indent=2, default=str) + "\n")
    written.append(out / "fig4_run.json")
    return written


def _error_plot(ax, x, rows, metric, label_suffix="", *, categorical=False):
    """Mean +- std of both losses against x, with each seed as a faint dot."""
    for k, loss in enumerate(LOSSES):
        color = f"C{k}"
        xs = sorted(set(x))
        means, stds = [], []
        for v in xs:
            values = [r[metric] for r in rows if r["_x"] == v and r["loss"] == loss]
            m, s = _mean_std(values)
            means.append(m)
            stds.append(s)
            shift = (k - 0.5) * 0.15 if categorical else 0.0
            ax.plot(
                [v + shift] * len(values), values, ".", color=color, alpha=0.3, ms=4
            )
        shift = (k - 0.5) * 0.15 if categorical else 0.0
        ax.errorbar(
            [v + shift for v in xs],
            means,
            ls="none" if categorical else "-",
            yerr=stds,
            marker="o",
            ms=4,
            capsize=3,
            color=color,
            label=LOSS_LABELS[loss] + label_suffix,
        )


def plot_width(results):
    from matplotlib.figure import Figure

    rows = [{**r, "_x": r["width"]} for r in results["rows"]]
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    _error_plot(ax, [r["_x"] for r in rows], rows, "train_accuracy")
    cfg = results["settings"]
    ax.set_xlabel("hidden width (2-width-3 network)")
    ax.set_ylabel("training accuracy (end of training)")
    ax.set_title(
        f"Spiral, full-batch GD lr {cfg['lr']:g}, A = {cfg['amplitude']:g}, "
        f"{cfg['max_epochs']} steps, T = {cfg['period']}, "
        f"{cfg['n_seeds']} seeds (mean +- std)",
        fontsize="medium",
    )
    ax.legend(frameon=False)
    return fig


def write_width(results, out, *, provenance=None):
    """Save width.png and width_runs/width_summary (.csv, .md) under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    provenance = provenance or _provenance()
    rows = results["rows"]
    written = [_save(plot_width(results), out / "width.png", dpi=90)]
    written += write_table(
        rows,
        out / "width_runs",
        columns=[
            "width",
            "loss",
            "seed",
            "train_accuracy",
            "sharpness",
            "n_iter",
            "diverged",
            "seconds",
        ],
    )
    summary = paired_summary(rows, ("width",), "train_accuracy")
    sharp = {r["width"]: r for r in paired_summary(rows, ("width",), "sharpness")}
    for r in summary:
        r["sharpness_cross_entropy_median"] = float(
            np.median(
                [
                    x["sharpness"]
                    for x in rows
                    if x["width"] == r["width"] and x["loss"] == "cross_entropy"
                ]
            )
        )
        r["sharpness_dynamical_median"] = float(
            np.median(
                [
                    x["sharpness"]
                    for x in rows
                    if x["width"] == r["width"] and x["loss"] == "dynamical"
                ]
            )
        )
        r["flatter_dynamical"] = sharp[r["width"]]["cross_entropy_better"]
    cfg = results["settings"]
    written += write_table(
        summary,
        out / "width_summary",
        columns=[
            "width",
            "n_seeds",
            "cross_entropy_mean",
            "cross_entropy_std",
            "dynamical_mean",
            "dynamical_std",
            "difference_mean",
            "difference_std",
            "dynamical_better",
            "equal",
            "cross_entropy_better",
            "sharpness_cross_entropy_median",
            "sharpness_dynamical_median",
            "flatter_dynamical",
        ],
        title="Claim 1: training accuracy against width on the spiral",
        provenance=provenance,
        notes=(
            f"Full-batch gradient descent, lr {cfg['lr']:g}, float64, "
            f"{cfg['max_epochs']} steps; dynamical: A = {cfg['amplitude']:g}, "
            f"T = {cfg['period']}, last period plain cross-entropy. "
            "Same initialisation for both losses at each seed; difference = dynamical "
            "- cross-entropy, paired by seed; sharpness: top Hessian eigenvalue of the "
            "plain cross-entropy at the end (flatter_dynamical: seeds where it is "
            f"lower with the dynamical loss). Fits: {results['fit_seconds']:.0f} s of "
            f"one core, in stacks; wall time {results['seconds']:.0f} s.",
        ),
    )
    return written


def plot_generalisation(results):
    from matplotlib.figure import Figure

    rows = results["rows"]
    cfg = results["settings"]
    lrs = list(cfg["spiral_lrs"])
    tasks = [t for t in cfg["tasks"] if any(r["task"] == t for r in rows)]
    # One panel per learning rate of the spiral, and one for the tasks if any ran.
    n_panels = max(1, len(lrs) + bool(tasks))
    fig = Figure(figsize=(4.0 * n_panels, 4.0), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    for ax, lr in zip(axes, lrs, strict=False):
        sub = [
            {**r, "_x": r["width"]}
            for r in rows
            if r["task"] == "spiral" and r["lr"] == lr
        ]
        if sub:
            _error_plot(ax, [r["_x"] for r in sub], sub, "test_accuracy")
            ax.set_xscale("log")
            widths = sorted({r["width"] for r in sub})
            ax.set_xticks(widths, [str(w) for w in widths])
            ax.set_xticks([], minor=True)  # no "3 x 10^2" between the widths
        ax.set_xlabel("hidden width")
        ax.set_ylabel("held-out accuracy")
        ax.set_title(
            f"spiral, lr {lr:g} ({cfg['spiral_seeds']} seeds)", fontsize="medium"
        )
    if tasks:
        ax = axes[-1]
        sub = [{**r, "_x": tasks.index(r["task"])} for r in rows if r["task"] in tasks]
        _error_plot(ax, [r["_x"] for r in sub], sub, "test_accuracy", categorical=True)
        ax.set_xticks(range(len(tasks)), tasks, rotation=15)
        ax.set_xlim(-0.5, len(tasks) - 0.5)
        ax.set_ylabel("held-out accuracy")
        ax.set_title(
            f"other tasks (width 100, lr 1, {cfg['task_seeds']} seeds)",
            fontsize="medium",
        )
    axes[0].legend(frameon=False, fontsize="small")
    return fig


def write_generalisation(results, out, *, provenance=None):
    """Save generalisation.png and generalisation_runs/_summary (.csv, .md)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    provenance = provenance or _provenance()
    rows = results["rows"]
    written = [_save(plot_generalisation(results), out / "generalisation.png", dpi=90)]
    written += write_table(
        rows,
        out / "generalisation_runs",
        columns=[
            "task",
            "width",
            "lr",
            "loss",
            "seed",
            "train_accuracy",
            "test_accuracy",
            "sharpness",
            "n_iter",
            "diverged",
            "seconds",
        ],
    )
    summary = paired_summary(rows, ("task", "width", "lr"), "test_accuracy")
    train = {
        (r["task"], r["width"], r["lr"]): r
        for r in paired_summary(rows, ("task", "width", "lr"), "train_accuracy")
    }
    for r in summary:
        t = train[(r["task"], r["width"], r["lr"])]
        r["train_cross_entropy_mean"] = t["cross_entropy_mean"]
        r["train_dynamical_mean"] = t["dynamical_mean"]
    cfg = results["settings"]
    descriptions = [f"- {name}: {TASKS[name][1]}" for name in cfg["tasks"]]
    written += write_table(
        summary,
        out / "generalisation_summary",
        columns=[
            "task",
            "width",
            "lr",
            "n_seeds",
            "train_cross_entropy_mean",
            "train_dynamical_mean",
            "cross_entropy_mean",
            "cross_entropy_std",
            "dynamical_mean",
            "dynamical_std",
            "difference_mean",
            "difference_std",
            "dynamical_better",
            "equal",
            "cross_entropy_better",
        ],
        title="Claim 2: held-out accuracy",
        provenance=provenance,
        notes=(
            "cross_entropy_* and dynamical_* are held-out accuracies (train_*: training "
            "accuracy); difference = dynamical - cross-entropy, paired by seed (same "
            f"initialisation). Full-batch gradient descent, float64, {cfg['max_epochs']} "
            f"steps, dynamical: A = 70, T = {cfg['period']}, last period plain "
            "cross-entropy. spiral: 200 points per arm, alternate points held out "
            f"(300/300). Fits: {results['fit_seconds']:.0f} s of one core, in stacks; "
            f"wall time {results['seconds']:.0f} s.",
            "",
            *descriptions,
        ),
    )
    return written


# ----------------------------------------------------------------------------- main

EXPERIMENTS = {
    "fig4": (plan_fig4, write_fig4),
    "width": (plan_width, write_width),
    "generalisation": (plan_generalisation, write_generalisation),
}

#: What ``all`` runs: the paper's three claims.
ALL = ("fig4", "width", "generalisation")

#: The settings that ``--seeds N`` sets, per reproduction.
SEED_SETTINGS = {
    "width": ("n_seeds",),
    "generalisation": ("spiral_seeds", "task_seeds"),
}


def _register(name, module, seeds=()):
    """Add a reproduction beyond the paper's three (run by name, not by ``all``):
    ``plan_NAME`` and ``write_NAME`` of ``skdynloss.app.MODULE``, imported when
    called (those modules build on this one)."""
    from importlib import import_module

    def plan(**kwargs):
        return getattr(import_module(f"{__package__}.{module}"), f"plan_{name}")(
            **kwargs
        )

    def write(results, out, **kwargs):
        return getattr(import_module(f"{__package__}.{module}"), f"write_{name}")(
            results, out, **kwargs
        )

    EXPERIMENTS[name] = (plan, write)
    if seeds:
        SEED_SETTINGS[name] = tuple(seeds)


# Not among the paper's claims, so not in ``all``: the map over amplitude and period,
# and the squared errors of Lavin and Ruiz-Garcia (2024).
_register("phase", "phase", seeds=("n_seeds",))
_register("followup", "followup", seeds=("n_seeds",))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="skdynloss reproduce",
        description=(
            "Reproduce the claims of Ruiz-Garcia et al. (ICML 2021) at the paper's "
            "settings (2-100-3 on the spiral, full-batch gradient descent, lr 1, "
            "float64, A = 70, T = 5000, 70 000 steps), writing PNG figures and "
            "CSV/Markdown tables. fig4: the training dynamics of the paper's Fig. 4 "
            "(one fit); width: training accuracy against width (claim 1; 96 fits); "
            "generalisation: held-out accuracy (claim 2; 300 fits, T = 1000, 14 000 "
            "steps). all: the three as one pool of work, about 28 min on 2 idle "
            "cores. Not in all: phase, training and held-out accuracy over a grid of "
            "amplitudes and periods (240 fits of 14 periods each); followup, "
            "validation accuracy against width for the static and dynamical "
            "cross-entropy and squared errors of Lavin and Ruiz-Garcia (2024; 125 "
            "fits). Fits that can share a stack train in lockstep. --quick runs all "
            "three in about 20 s, too briefly to show the effects."
        ),
    )
    parser.add_argument(
        "name",
        choices=[*EXPERIMENTS, "all"],
        metavar="NAME",
        help="fig4, width, generalisation, all (those three), phase or followup",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: period and steps divided by 50, fewer widths and seeds",
    )
    parser.add_argument(
        "--out",
        default="reproduce-results",
        metavar="DIR",
        help="folder for the figures and tables (default: reproduce-results)",
    )
    parser.add_argument(
        "--n-jobs",
        type=positive_int,
        default=2,
        metavar="N",
        help="worker processes for width and generalisation (default: 2)",
    )
    parser.add_argument(
        "--paper-length",
        action="store_true",
        help="generalisation at the paper's length (T = 5000, 70 000 steps; about "
        "3 h on 2 idle cores) instead of T = 1000, 14 000 steps",
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        metavar="N",
        help="run only the first N seeds of width, generalisation, phase and followup "
        "(default: all; for partial runs at full scale)",
    )
    return parser


def main(argv=None):
    """Run ``skdynloss reproduce NAME [--quick] [--out DIR] [--n-jobs N]``.

    ``all`` fits the three reproductions' estimators as one pool of work (the fit of
    Fig. 4 on one worker while the stacks of the others share the rest), then writes
    each. Returns the exit status: 0, or 130 when interrupted (Ctrl-C), in which case
    nothing is written.
    """
    parser = build_parser()
    args = parser.parse_args(None if argv is None else [str(a) for a in argv])
    # Checked (and created) before the first fit, so a long run cannot fail at its end.
    try:
        created = writable_folder(args.out)
    except OSError as exc:
        parser.error(f"--out {args.out}: {exc}")
    names = list(ALL) if args.name == "all" else [args.name]
    command = "skdynloss reproduce " + " ".join(
        [args.name]
        + (["--quick"] if args.quick else [])
        + ([f"--seeds {args.seeds}"] if args.seeds is not None else [])
        + (["--paper-length"] if args.paper_length else [])
    )
    import torch

    torch.set_num_threads(1)
    plans = []
    for name in names:
        plan, _ = EXPERIMENTS[name]
        settings = {}
        if args.seeds is not None:
            settings.update(dict.fromkeys(SEED_SETTINGS.get(name, ()), args.seeds))
        if args.paper_length and name == "generalisation" and not args.quick:
            settings.update(PAPER_LENGTH)
        kwargs = {"quick": args.quick, "settings": settings}
        if name == "fig4":
            # Its own progress bar only when it runs alone in this process.
            alone = len(names) == 1 or args.n_jobs == 1
            kwargs["verbose"] = int(alone)
        plans.append(plan(**kwargs))
    n_fits = sum(len(p["estimators"]) for p in plans)
    print(
        f"[{args.name}] started ({'quick' if args.quick else 'full scale'}): "
        f"{n_fits} fits on {args.n_jobs} worker(s)",
        file=sys.stderr,
        flush=True,
    )
    # The commit at the start: the code that ran, whatever is committed meanwhile.
    provenance = _provenance(command)
    start = time.perf_counter()
    try:
        results = run_plans(plans, n_jobs=args.n_jobs)
    except KeyboardInterrupt:
        remove_empty(created)
        print(
            f"[{args.name}] interrupted after {_duration(time.perf_counter() - start)}; "
            "nothing was written",
            file=sys.stderr,
            flush=True,
        )
        return 130
    wall = _duration(time.perf_counter() - start)
    for name, result in zip(names, results, strict=True):
        _, write = EXPERIMENTS[name]
        part = {
            **provenance,
            "wall time": wall if len(names) == 1 else f"{wall} (all three together)",
            "fit time": f"{_duration(result['fit_seconds'])} of one core",
        }
        written = write(result, Path(args.out), provenance=part)
        print(
            f"[{name}] done in {wall}; wrote " + ", ".join(str(p) for p in written),
            file=sys.stderr,
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
