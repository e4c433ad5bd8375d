"""``skdynloss reproduce followup``: validation accuracy against network size for the
static and dynamical losses of Lavin and Ruiz-Garcia (2024, :arxiv:`2410.10690`).

Five losses from the same initialisation at each seed (the names are the follow-up
paper's, the values of ``loss`` and ``amplitude`` the package's):

======  ===================================  ===================================
name    loss                                 the estimator
======  ===================================  ===================================
CE      cross-entropy                        ``loss="cross_entropy"``, A = 1
DCE     dynamical cross-entropy              ``loss="cross_entropy"``, A
MSE     mean squared error (sum over         ``loss="squared_error_sum"``, A = 1
        the outputs)
DMSE1   dynamical MSE, each sample weighted  ``loss="squared_error_sum"``, A
        by its class
DMSE2   dynamical MSE, each output weighted  ``loss="squared_error_per_output"``, A
        by its class
======  ===================================  ===================================

on the spiral with held-out points (200 points per arm, alternate points held out:
300 to train on, 300 to validate on), 2-width-3 ReLU networks over ``widths``,
full-batch gradient descent in float64, the last period of every dynamical fit with
the plain loss. Each fit reports its validation (held-out) accuracy at the end of
training; the summary gives, per width and loss, their mean, standard deviation,
extremes, and the paired difference dynamical - static (DCE - CE, DMSE1 - MSE,
DMSE2 - MSE; same seed, same initialisation).

What the scale below sets, and why (chosen here, not taken from the follow-up
paper's text):

* the task and the network are those of the original paper (the spiral of
  :func:`skdynloss.make_spiral`, one hidden ReLU layer, full-batch gradient descent),
  held out as in ``skdynloss reproduce generalisation``;
* a learning rate per family: 1 for the cross-entropies (the original paper's) and
  1/4 of it, 0.25, for the squared errors. In the outputs, the Hessian of the sum of
  squared errors is 2 I per sample and that of cross-entropy has eigenvalues of at
  most 1/2, so the squared errors reach the stability threshold 2/lr of gradient
  descent at a learning rate about four times smaller. In trial runs (width 20,
  20 000 steps) every squared-error fit collapsed to one class or diverged at lr 1,
  and DMSE2 diverged at lr 0.5; at lr 0.2 and 0.3 none diverged (widths 20, 50 and
  200);
* A = 70 as in the original paper, 14 periods per fit (13 dynamical, the last one
  static) as there, but 42 000 steps (T = 3000) instead of 70 000 (T = 5000), so
  that the 125 fits (5 widths, 5 seeds, 5 losses) run within 20 minutes on 2 cores;
* widths 5 to 100 (a fit of width 200 costs about four times one of width 50).

Run ``skdynloss reproduce followup [--quick] [--out DIR] [--n-jobs N] [--seeds N]``.
"""

import numpy as np

from .reproduce import (
    _mean_std,
    _provenance,
    _rows_plan,
    _save,
    _score_summary,
    _spiral_split,
    paper_estimator,
    write_table,
)

__all__ = [
    "CONFIGS",
    "LOSSES",
    "plan_followup",
    "run_followup",
    "followup_summary",
    "plot_followup",
    "write_followup",
]

#: The five losses: name -> (``loss``, dynamical?). The dynamical ones use the
#: scale's amplitude, the static ones amplitude 1.
LOSSES = {
    "CE": ("cross_entropy", False),
    "DCE": ("cross_entropy", True),
    "MSE": ("squared_error_sum", False),
    "DMSE1": ("squared_error_sum", True),
    "DMSE2": ("squared_error_per_output", True),
}

#: Each dynamical loss against its static counterpart.
STATIC_OF = {"DCE": "CE", "DMSE1": "MSE", "DMSE2": "MSE"}

LABELS = {
    "CE": "CE (static)",
    "DCE": "DCE",
    "MSE": "MSE (static)",
    "DMSE1": "DMSE1 (by sample's class)",
    "DMSE2": "DMSE2 (by output's class)",
}

# The full scale (see the module's docstring for its reasons). --quick keeps the
# settings but divides the steps and the period by 75 (still 14 periods), with fewer
# widths and seeds: seconds, too short to show any effect.
CONFIGS = {
    "full": {
        "widths": (5, 10, 20, 50, 100),
        "n_seeds": 5,
        "lr_cross_entropy": 1.0,
        "lr_squared_error": 0.25,
        "amplitude": 70.0,
        "max_epochs": 42_000,
        "period": 3000,
    },
    "quick": {
        "widths": (5, 20),
        "n_seeds": 2,
        "lr_cross_entropy": 1.0,
        "lr_squared_error": 0.25,
        "amplitude": 70.0,
        "max_epochs": 560,
        "period": 40,
    },
}


def _lr(cfg, loss):
    return cfg["lr_cross_entropy" if loss == "cross_entropy" else "lr_squared_error"]


def _settings(quick, overrides):
    config = dict(CONFIGS["quick" if quick else "full"])
    unknown = set(overrides or {}) - set(config)
    if unknown:
        raise ValueError(f"unknown settings for followup: {sorted(unknown)}")
    config.update(overrides or {})
    return config


def _summary(estimator, data, seconds):
    """One fit's row: its training and validation (held-out) accuracy, and more."""
    row = _score_summary(estimator, data, seconds)
    row["validation_accuracy"] = row.pop("test_accuracy")
    return row


def _describe(rows):
    """A unit's fits in a few words (for the progress lines)."""
    widths = ",".join(str(w) for w in dict.fromkeys(r["width"] for r in rows))
    parts = []
    for name in LOSSES:
        mine = [r["validation_accuracy"] for r in rows if r["loss"] == name]
        if mine:
            parts.append(f"{name} {np.mean(mine):.3f}")
    return f"width={widths}; validation " + ", ".join(parts)


def plan_followup(*, quick=False, settings=None):
    """The fits of the follow-up's comparison, as a plan for
    :func:`skdynloss.reproduce.run_plans`.

    For every width and seed, the five :data:`LOSSES` from the same initialisation
    (``random_state=seed``); they differ only in what the loss does with the outputs,
    so the fits of one width train together, in stacks.
    """
    cfg = _settings(quick, settings)
    X, y, X_val, y_val = _spiral_split()
    estimators, data = [], []
    for width in cfg["widths"]:
        for seed in range(int(cfg["n_seeds"])):
            for name, (loss, dynamical) in LOSSES.items():
                amplitude = float(cfg["amplitude"]) if dynamical else 1.0
                estimators.append(
                    paper_estimator(
                        loss=loss,
                        amplitude=amplitude,
                        lr=_lr(cfg, loss),
                        hidden_layer_sizes=(width,),
                        period=cfg["period"],
                        max_epochs=cfg["max_epochs"],
                        # Only the end of training is reported: no tracking.
                        sharpness_every=None,
                        random_state=seed,
                    )
                )
                meta = {
                    "width": width,
                    "loss": name,
                    "base": loss,
                    "amplitude": amplitude,
                    "lr": _lr(cfg, loss),
                    "seed": seed,
                }
                data.append(
                    {"X": X, "y": y, "X_test": X_val, "y_test": y_val, "meta": meta}
                )

    return _rows_plan(
        "followup", cfg, estimators, data, summarize=_summary, describe=_describe
    )


def run_followup(*, quick=False, settings=None, n_jobs=1, progress=True):
    """Validation accuracy against width for the five losses.

    Returns ``{"settings", "rows" (one dict per fit), "seconds" (wall time),
    "fit_seconds" (the fits' time on one core)}``.
    """
    from .reproduce import run_plans

    plan = plan_followup(quick=quick, settings=settings)
    return run_plans([plan], n_jobs=n_jobs, progress=progress)[0]


def followup_summary(rows):
    """Per width and loss: the validation accuracy's mean, std, min and max over the
    seeds, the training accuracy's mean, and for a dynamical loss the paired
    difference to its static counterpart (same seed) with how many seeds it is
    higher, equal and lower."""
    by = {}
    for r in rows:
        by.setdefault((r["width"], r["loss"]), {})[r["seed"]] = r
    out = []
    for width in sorted({w for w, _ in by}):
        for name in LOSSES:
            fits = by.get((width, name))
            if not fits:
                continue
            val = [f["validation_accuracy"] for f in fits.values()]
            mean, std = _mean_std(val)
            any_fit = next(iter(fits.values()))
            row = {
                "width": width,
                "loss": name,
                "base": any_fit["base"],
                "amplitude": any_fit["amplitude"],
                "lr": any_fit["lr"],
                "n_seeds": len(fits),
                "validation_mean": mean,
                "validation_std": std,
                "validation_min": float(np.min(val)),
                "validation_max": float(np.max(val)),
                "train_mean": _mean_std([f["train_accuracy"] for f in fits.values()])[
                    0
                ],
                "diverged": int(sum(bool(f["diverged"]) for f in fits.values())),
                "static": STATIC_OF.get(name, ""),
                # Blank for a static loss (no counterpart).
                **dict.fromkeys(
                    ("difference_mean", "difference_std", "better", "equal", "worse"),
                    "",
                ),
            }
            static = by.get((width, STATIC_OF.get(name)))
            if static:
                seeds = sorted(set(fits) & set(static))
                diff = np.array(
                    [
                        fits[s]["validation_accuracy"]
                        - static[s]["validation_accuracy"]
                        for s in seeds
                    ]
                )
                d_mean, d_std = _mean_std(diff)
                row.update(
                    difference_mean=d_mean,
                    difference_std=d_std,
                    better=int(np.sum(diff > 1e-12)),
                    equal=int(np.sum(np.abs(diff) <= 1e-12)),
                    worse=int(np.sum(diff < -1e-12)),
                )
            out.append(row)
    return out


def plot_followup(results):
    """Validation accuracy against width: the cross-entropies and the squared errors,
    mean +- std over the seeds, each seed a faint dot."""
    from matplotlib.figure import Figure

    rows, cfg = results["rows"], results["settings"]
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = (("CE", "DCE"), ("MSE", "DMSE1", "DMSE2"))
    for ax, names in zip(axes, panels, strict=True):
        for k, name in enumerate(names):
            color = f"C{list(LOSSES).index(name)}"
            widths = sorted({r["width"] for r in rows if r["loss"] == name})
            # Side by side at each width (a log axis: a factor, not an offset).
            shift = 1.0 + 0.04 * (k - (len(names) - 1) / 2)
            means, stds = [], []
            for w in widths:
                val = [
                    r["validation_accuracy"]
                    for r in rows
                    if r["loss"] == name and r["width"] == w
                ]
                m, s = _mean_std(val)
                means.append(m)
                stds.append(s)
                ax.plot([w * shift] * len(val), val, ".", color=color, alpha=0.3, ms=4)
            ax.errorbar(
                [w * shift for w in widths],
                means,
                yerr=stds,
                marker="o",
                ms=4,
                capsize=3,
                color=color,
                label=LABELS[name],
            )
        widths = sorted({r["width"] for r in rows})
        ax.set_xscale("log")
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xticks([], minor=True)
        ax.set_xlabel("hidden width (2-width-3 network)")
        ax.legend(frameon=False, fontsize="small")
    axes[0].set_ylabel("validation accuracy (end of training)")
    axes[0].set_title(
        f"cross-entropy (lr {cfg['lr_cross_entropy']:g})", fontsize="medium"
    )
    axes[1].set_title(
        f"squared errors (lr {cfg['lr_squared_error']:g})", fontsize="medium"
    )
    fig.suptitle(
        f"Spiral (300 train / 300 held out), full-batch gradient descent, "
        f"A = {cfg['amplitude']:g}, T = {cfg['period']}, {cfg['max_epochs']} steps, "
        f"{cfg['n_seeds']} seeds (mean +- std)",
        fontsize="medium",
    )
    return fig


def _notes(results):
    cfg = results["settings"]
    periods = cfg["max_epochs"] / cfg["period"]
    return (
        "Validation accuracy: held-out accuracy at the end of training. The spiral of "
        "make_spiral with 200 points per arm, alternate points held out (300/300); "
        "2-width-3 ReLU networks; full-batch gradient descent, float64, "
        f"{cfg['max_epochs']} steps, lr {cfg['lr_cross_entropy']:g} for CE and DCE, "
        f"{cfg['lr_squared_error']:g} for MSE, DMSE1 and DMSE2; dynamical losses A = "
        f"{cfg['amplitude']:g}, T = {cfg['period']} ({periods:g} periods), the last "
        "period with the plain loss. CE and DCE: loss='cross_entropy' (amplitude 1 "
        "and A); MSE and DMSE1: loss='squared_error_sum', (1/P) sum_mu Gamma_y sum_j "
        "(f_j - delta_jy)^2 (amplitude 1 and A); DMSE2: "
        "loss='squared_error_per_output', (1/P) sum_mu sum_j Gamma_j (f_j - "
        "delta_jy)^2 (amplitude A); no softmax before the squared errors. The five "
        "losses start from the same initialisation at each seed; difference = the "
        "loss - its static counterpart (column static), paired by seed. Fits: "
        f"{results['fit_seconds']:.0f} s of one core, in stacks; wall time "
        f"{results['seconds']:.0f} s.",
        "",
        "Chosen, not taken from the follow-up paper's text: the task and network (the "
        "original paper's spiral and one hidden ReLU layer, with held-out points), the "
        "widths, the learning rates (the original paper's 1 for the cross-entropies, "
        "a quarter of it for the squared errors, whose curvature in the outputs is at "
        "least four times larger), the amplitude and the number of periods (the "
        "original paper's), and the length (shorter than the original paper's 70 000 "
        "steps, to fit the comparison in 20 minutes on 2 cores).",
    )


def write_followup(results, out, *, provenance=None):
    """Save followup.png and followup_runs/followup_summary (.csv, .md) under ``out``."""
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    provenance = provenance or _provenance()
    written = [_save(plot_followup(results), out / "followup.png", dpi=90)]
    written += write_table(
        results["rows"],
        out / "followup_runs",
        columns=[
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
        ],
    )
    written += write_table(
        followup_summary(results["rows"]),
        out / "followup_summary",
        columns=[
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
        ],
        title="Validation accuracy against width: static and dynamical losses",
        provenance=provenance,
        notes=_notes(results),
    )
    return written
