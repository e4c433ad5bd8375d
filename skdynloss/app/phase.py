"""Where the tilt helps: ``skdynloss reproduce phase``.

The paper reports its claims at one point of the schedule, A = 70 and T = 5000. This
reproduction maps the outcome over a grid of amplitudes and periods, at the paper's
settings otherwise (full-batch gradient descent, lr 1, float64, 70 000 steps, the last
period plain cross-entropy), in two settings:

``train`` (claim 1)
    Final training accuracy of a 2-30-3 network on the paper's spiral, a width at
    which cross-entropy alone does not fit it.
``test`` (claim 2)
    Held-out accuracy of a 2-200-3 network on the spiral with held-out points (200
    per arm, alternate points held out: 300 training and 300 test points).

Every cell trains the paper's 14 periods (``14 T`` steps, the last period plain
cross-entropy), so the column T = 5000 is the paper's length (70 000 steps) and a
shorter period also means a shorter training. Each cell is therefore compared with
cross-entropy (A = 1) trained for the same number of steps from the same
initialisation: the difference is paired by seed and by length.

All fits go through :func:`skdynloss.reproduce.fit_estimators`, in stacks (the
amplitude and the period are a model's own in a stack).
"""

import numpy as np

from ..datasets import make_spiral
from . import reproduce as _r

__all__ = ["CONFIG", "plan_phase", "run_phase", "phase_summary", "write_phase"]

#: The grids: amplitudes 1 to 100 log-spaced (1 is plain cross-entropy, the
#: baseline), periods from 100 steps to the paper's 5000 (each trained for
#: ``n_periods`` periods), and the two settings' widths. ``--quick`` keeps fewer of
#: each, with shorter periods.
CONFIG = {
    "full": {
        "amplitudes": tuple(float(f"{a:.3g}") for a in np.logspace(0, 2, 6)),
        "periods": (100, 300, 700, 2000, 5000),
        "n_seeds": 4,
        "n_periods": 14,
        "settings": ("train", "test"),
        "widths": {"train": 30, "test": 200},
    },
    "quick": {
        "amplitudes": (1.0, 10.0, 100.0),
        "periods": (2, 10, 100),
        "n_seeds": 2,
        "n_periods": 14,
        "settings": ("train", "test"),
        "widths": {"train": 30, "test": 200},
    },
}

#: Each setting: its metric, and what it is (its width is the config's).
SETTINGS = {
    "train": {
        "metric": "train_accuracy",
        "title": "training accuracy on the spiral (claim 1)",
    },
    "test": {
        "metric": "test_accuracy",
        "title": "held-out accuracy on the spiral split (claim 2)",
    },
}

#: A cell "helps" (or "hurts") when the paired difference to cross-entropy has this
#: sign at every seed but at most one and its mean is at least this large.
MARGIN = 0.01


def _config(quick, overrides):
    config = dict(CONFIG["quick" if quick else "full"])
    unknown = set(overrides or {}) - set(config)
    if unknown:
        raise ValueError(f"unknown settings for phase: {sorted(unknown)}")
    config.update(overrides or {})
    if 1.0 not in [float(a) for a in config["amplitudes"]]:
        raise ValueError("phase: the amplitudes must include 1 (the baseline).")
    unknown = set(config["settings"]) - set(SETTINGS)
    if unknown:
        raise ValueError(f"phase: unknown settings {sorted(unknown)}")
    return config


def plan_phase(*, quick=False, settings=None):
    """The fits of the phase map, as a plan for :func:`skdynloss.reproduce.run_plans`."""
    cfg = _config(quick, settings)
    X, y = make_spiral()
    split = _r._spiral_split()
    estimators, data = [], []
    for name in cfg["settings"]:
        width = int(cfg["widths"][name])
        if name == "train":
            fit_data = {"X": X, "y": y}
        else:
            X_train, y_train, X_test, y_test = split
            fit_data = {"X": X_train, "y": y_train, "X_test": X_test, "y_test": y_test}
        for seed in range(cfg["n_seeds"]):
            for amplitude in cfg["amplitudes"]:
                # A = 1 (cross-entropy) too at every period: it is the baseline of
                # the cells trained as long.
                for period in cfg["periods"]:
                    estimators.append(
                        _r.paper_estimator(
                            amplitude=float(amplitude),
                            period=int(period),
                            max_epochs=int(cfg["n_periods"]) * int(period),
                            hidden_layer_sizes=(width,),
                            sharpness_every=None,
                            random_state=seed,
                        )
                    )
                    meta = {
                        "setting": name,
                        "width": width,
                        "amplitude": float(amplitude),
                        "period": int(period),
                        "steps": int(cfg["n_periods"]) * int(period),
                        "seed": seed,
                        "loss": "cross_entropy" if amplitude == 1 else "dynamical",
                    }
                    data.append({**fit_data, "meta": meta})

    return _r._rows_plan("phase", cfg, estimators, data, describe=_describe)


def _describe(rows):
    """A unit's fits in a few words, for the progress lines."""
    settings = ",".join(dict.fromkeys(r["setting"] for r in rows))
    metric = {r["setting"]: SETTINGS[r["setting"]]["metric"] for r in rows}
    mean = np.mean([r[metric[r["setting"]]] for r in rows])
    return (
        f"setting={settings} x{len(rows)}: mean {'/'.join(metric.values())} {mean:.3f}"
    )


def run_phase(*, quick=False, settings=None, n_jobs=1, progress=True):
    """Fit the phase map. Returns ``{"settings", "rows", "seconds", "fit_seconds"}``."""
    plan = plan_phase(quick=quick, settings=settings)
    return _r.run_plans([plan], n_jobs=n_jobs, progress=progress)[0]


def _verdict(diff):
    """ "helps", "hurts" or "level" for the paired differences of one cell."""
    diff = np.asarray(diff, dtype=float)
    allowed = 1 if diff.size > 2 else 0
    if diff.mean() >= MARGIN and np.sum(diff <= 0) <= allowed:
        return "helps"
    if diff.mean() <= -MARGIN and np.sum(diff >= 0) <= allowed:
        return "hurts"
    return "level"


def phase_summary(rows):
    """One row per setting, amplitude and period: the metric's mean, std, min and max
    over seeds, the paired difference to cross-entropy (the A = 1 fit of the same
    seed and period, so as long) and its verdict (:data:`MARGIN`)."""
    out = []
    for name in dict.fromkeys(r["setting"] for r in rows):
        metric = SETTINGS[name]["metric"]
        mine = [r for r in rows if r["setting"] == name]
        base = {
            (r["seed"], r["period"]): r[metric] for r in mine if r["amplitude"] == 1
        }
        periods = sorted({r["period"] for r in mine})
        for amplitude in sorted({r["amplitude"] for r in mine}):
            for period in periods:
                cell = [
                    r
                    for r in mine
                    if r["amplitude"] == amplitude and r["period"] == period
                ]
                values = np.array([r[metric] for r in cell])
                diff = np.array([r[metric] - base[(r["seed"], period)] for r in cell])
                base_mean = np.mean([v for (_, t), v in base.items() if t == period])
                mean, std = _r._mean_std(values)
                dmean, dstd = _r._mean_std(diff)
                out.append(
                    {
                        "setting": name,
                        "width": mine[0]["width"],
                        "metric": metric,
                        "amplitude": amplitude,
                        "period": period,
                        "steps": cell[0].get("steps"),
                        "n_seeds": len(cell),
                        "mean": mean,
                        "std": std,
                        "min": float(values.min()),
                        "max": float(values.max()),
                        "cross_entropy_mean": float(base_mean),
                        "difference_mean": dmean,
                        "difference_std": dstd,
                        "dynamical_better": int(np.sum(diff > 1e-12)),
                        "cross_entropy_better": int(np.sum(diff < -1e-12)),
                        "verdict": "baseline" if amplitude == 1 else _verdict(diff),
                        "sharpness_median": float(
                            np.median([r["sharpness"] for r in cell])
                        ),
                        "diverged": int(sum(r["diverged"] for r in cell)),
                    }
                )
    return out


def sentences(summary):
    """One sentence per setting: where the dynamical loss helps, is level, or hurts."""
    out = []
    for name in dict.fromkeys(r["setting"] for r in summary):
        cells = [r for r in summary if r["setting"] == name and r["amplitude"] != 1]
        bases = [r["cross_entropy_mean"] for r in cells] or [float("nan")]
        width = cells[0]["width"] if cells else "?"
        parts = []
        for verdict in ("helps", "level", "hurts"):
            chosen = [r for r in cells if r["verdict"] == verdict]
            if not chosen:
                parts.append(f"{verdict} nowhere")
                continue
            where = "; ".join(
                f"A {a:g}: T "
                + ", ".join(str(r["period"]) for r in chosen if r["amplitude"] == a)
                for a in dict.fromkeys(r["amplitude"] for r in chosen)
            )
            best = max(chosen, key=lambda r: abs(r["difference_mean"]))
            parts.append(
                f"{verdict} in {len(chosen)} of {len(cells)} cells ({where}; "
                f"largest {best['difference_mean']:+.3f} at A {best['amplitude']:g}, "
                f"T {best['period']})"
            )
        out.append(
            f"{name} ({SETTINGS[name]['title']}, width {width}; cross-entropy "
            f"{min(bases):.3f}-{max(bases):.3f}): the dynamical loss "
            + "; ".join(parts)
            + "."
        )
    return out


def plot_phase(results):
    """One heat map per setting: the paired difference to cross-entropy (colour)
    and the mean metric (text), amplitude against period; the paper's point marked."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    summary = phase_summary(results["rows"])
    names = list(dict.fromkeys(r["setting"] for r in summary))
    fig = Figure(figsize=(5.6 * len(names), 4.6), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    limit = max([abs(r["difference_mean"]) for r in summary] + [0.05])
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    for ax, name in zip(axes, names, strict=True):
        cells = [r for r in summary if r["setting"] == name]
        amps = sorted({r["amplitude"] for r in cells})
        periods = sorted({r["period"] for r in cells})
        grid = np.full((len(amps), len(periods)), np.nan)
        for r in cells:
            grid[amps.index(r["amplitude"]), periods.index(r["period"])] = r[
                "difference_mean"
            ]
        mesh = ax.pcolormesh(grid, cmap="RdBu", norm=norm, edgecolors="white")
        for r in cells:
            i, j = amps.index(r["amplitude"]), periods.index(r["period"])
            mark = {"helps": "better", "hurts": "worse", "level": "", "baseline": "CE"}
            ax.text(
                j + 0.5,
                i + 0.5,
                f"{r['mean']:.2f}\n{mark[r['verdict']]}",
                ha="center",
                va="center",
                fontsize="x-small",
                # Legible on the darkest cells too.
                color="white" if abs(r["difference_mean"]) > 0.6 * limit else "black",
            )
        ax.set_xticks(np.arange(len(periods)) + 0.5, [str(p) for p in periods])
        ax.set_yticks(np.arange(len(amps)) + 0.5, [f"{a:g}" for a in amps])
        ax.set_xlabel("period T (steps)")
        ax.set_ylabel("amplitude A")
        # The paper's point, A = 70 and T = 5000, placed on the cells' log scales.
        paper = _position(70.0, amps), _position(5000.0, periods)
        if np.isfinite(paper).all():
            ax.plot(paper[1], paper[0], "*", color="k", ms=12, mfc="gold")
        cfg = results["settings"]
        ax.set_title(
            f"{SETTINGS[name]['title']}, 2-{cells[0]['width']}-3\n"
            f"{cfg['n_periods']} periods of T steps, {cfg['n_seeds']} seeds; "
            "text: mean accuracy",
            fontsize="small",
        )
        fig.colorbar(
            mesh, ax=ax, label="dynamical - cross-entropy (as long, paired by seed)"
        )
    return fig


def _position(value, values):
    """Where ``value`` falls on a row of cells centred on ``values`` (log scale)."""
    logs = np.log(np.asarray(values, dtype=float))
    if not logs[0] <= np.log(value) <= logs[-1] or len(logs) < 2:
        return float("nan")
    return float(np.interp(np.log(value), logs, np.arange(len(logs)) + 0.5))


def write_phase(results, out, *, provenance=None):
    """Save phase.png and phase_runs/phase_summary (.csv, .md) under ``out``."""
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    provenance = provenance or _r._provenance()
    rows = results["rows"]
    written = [_r._save(plot_phase(results), out / "phase.png", dpi=90)]
    written += _r.write_table(
        rows,
        out / "phase_runs",
        columns=[
            "setting",
            "width",
            "amplitude",
            "period",
            "steps",
            "seed",
            "train_accuracy",
            "test_accuracy",
            "sharpness",
            "n_iter",
            "diverged",
            "seconds",
        ],
    )
    summary = phase_summary(rows)
    cfg = results["settings"]
    written += _r.write_table(
        summary,
        out / "phase_summary",
        columns=[
            "setting",
            "width",
            "metric",
            "amplitude",
            "period",
            "steps",
            "n_seeds",
            "mean",
            "std",
            "min",
            "max",
            "cross_entropy_mean",
            "difference_mean",
            "difference_std",
            "dynamical_better",
            "cross_entropy_better",
            "verdict",
            "sharpness_median",
            "diverged",
        ],
        title="Where the tilt helps: amplitude x period",
        provenance=provenance,
        notes=(
            f"Full-batch gradient descent, lr 1, float64, {cfg['n_periods']} periods "
            "of T steps in every cell (T = 5000: 70 000 steps), the last one plain "
            "cross-entropy. difference = dynamical - cross-entropy (the A = 1 fit "
            "of the same length from the same initialisation), paired by seed; "
            f"verdict: helps (hurts) when its mean is at least {MARGIN} (at most "
            f"-{MARGIN}) and its sign holds at every seed but at most one (at every "
            "seed with 2 seeds), level otherwise. Fits: "
            f"{results['fit_seconds']:.0f} s of one core, in stacks; wall time "
            f"{results['seconds']:.0f} s.",
            "",
            *sentences(summary),
        ),
    )
    return written
