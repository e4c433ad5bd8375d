"""How the cost per epoch of DynamicalLossClassifier grows with data size and width.

Two sweeps on make_classification (20 features, 10 classes, seed 0), each in two
regimes (mini-batch 256 with Adam 1e-3, and full-batch gradient descent, SGD lr 0.1):

* n_samples in ``--sizes`` (1k, 10k, 100k) at width ``--base-width`` (128);
* hidden width in ``--widths`` (32, 128, 512) at ``--base-size`` rows (10k).

In every cell skdynloss (amplitude 10, period = a quarter of the run) is timed side by
side with hand loop (a) (plain cross-entropy) and hand loop (b) (the same dynamical
loss by hand, with a per-step record), and in mini-batch cells on the CPU with
scikit-learn's MLPClassifier doing the same epochs of Adam at the same width and batch
size, interleaved, best of ``--repeats`` after one warm-up. The number of epochs of a cell is ``--min-steps`` optimizer steps' worth,
capped at ``--min-rows`` rows processed (so the big full-batch cells stay short).
``overhead us/step`` = (skdynloss - hand (b)) per optimizer step: a constant per-step
cost shows up as a ratio that falls towards 1 as the work per step grows.

    python benchmarks/bench_scaling.py            # about 2-4 minutes on 2 cores
    python benchmarks/bench_scaling.py --quick
    python benchmarks/bench_scaling.py --full-grid   # every size x width pair
"""

import math
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import torch  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

OURS, HAND_CE, HAND_DYN = "skdynloss", "hand (a) CE", "hand (b) dynamical+record"
MLP = "sklearn MLPClassifier"


def parse_args(argv=None):
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sweep, < 1 minute")
    p.add_argument("--sizes", default=None, help="n_samples sweep (1000,10000,100000)")
    p.add_argument("--widths", default=None, help="width sweep (32,128,512)")
    p.add_argument("--base-size", type=int, default=None, help="n of the width sweep")
    p.add_argument("--base-width", type=int, default=128, help="width of the n sweep")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--regimes", default="mini-batch,full-batch", help="mini-batch,full-batch"
    )
    p.add_argument("--full-grid", action="store_true", help="all size x width pairs")
    p.add_argument("--min-steps", type=int, default=None, help="per run (300)")
    p.add_argument("--min-rows", type=int, default=None, help="per run (1e6)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (3)")
    args = p.parse_args(argv)
    q = args.quick
    if args.sizes is None:
        args.sizes = "1000,10000" if q else "1000,10000,100000"
    if args.widths is None:
        args.widths = "32,128" if q else "32,128,512"
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.widths = [int(w) for w in args.widths.split(",")]
    if args.base_size is None:
        args.base_size = 10_000 if 10_000 in args.sizes else args.sizes[0]
    if args.min_steps is None:
        args.min_steps = 100 if q else 300
    if args.min_rows is None:
        args.min_rows = 200_000 if q else 1_000_000
    if args.repeats is None:
        args.repeats = 2 if q else 3
    args.regimes = args.regimes.split(",")
    return args


def cells(args):
    """(regime, n, width) triples: the two sweeps, or the full grid."""
    pairs = []
    if args.full_grid:
        pairs = [(n, w) for n in args.sizes for w in args.widths]
    else:
        pairs = [(n, args.base_width) for n in args.sizes]
        pairs += [
            (args.base_size, w) for w in args.widths if (args.base_size, w) not in pairs
        ]
    return [(regime, n, w) for regime in args.regimes for n, w in pairs]


def run_cell(args, device, dtype, data, regime, n, width):
    X, y = data[n]
    batch = -1 if regime == "full-batch" else args.batch_size
    spe = C.steps_per_epoch(n, batch)
    # Enough steps for per-step costs to show, capped by the rows processed so that
    # big full-batch cells stay short.
    epochs = max(1, min(math.ceil(args.min_steps / spe), math.ceil(args.min_rows / n)))
    if regime == "full-batch":
        common = dict(optimizer="sgd", lr=0.1, momentum=0.0)
    else:
        common = dict(optimizer="adam", lr=1e-3)
    common.update(
        module="mlp", hidden=(width,), batch_size=batch, epochs=epochs, device=device
    )
    period = max(epochs / 4, 1.0 / spe)

    def ours():
        clf = C.skdynloss_classifier(
            amplitude=10.0, period=period, dtype=args.dtype, **common
        ).fit(X, y)
        C.check_fitted(clf, epochs, OURS)

    def hand(variant):
        return lambda: C.hand_fit(
            X,
            y,
            variant=variant,
            n_classes=10,
            amplitude=10.0,
            period=period,
            dtype=dtype,
            **common,
        )

    def mlp():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            C.sklearn_mlp(
                hidden=(width,), batch_size=batch, epochs=epochs, lr=1e-3
            ).fit(X, y)

    contenders = {OURS: ours, HAND_CE: hand("ce"), HAND_DYN: hand("dynamical")}
    # The same work in scikit-learn (Adam, same batches, epochs and width): mini-batch
    # cells on the CPU only.
    with_mlp = regime == "mini-batch" and device.type == "cpu"
    if with_mlp:
        contenders[MLP] = mlp
    print(
        f"  [{regime}] n={n} width={width}: {epochs} epochs x {spe} steps",
        file=sys.stderr,
        flush=True,
    )
    times = C.interleaved(contenders, device, repeats=args.repeats, verbose=False)
    per_epoch = {k: min(v["wall"]) / epochs for k, v in times.items()}
    per_epoch_cpu = {k: min(v["cpu"]) / epochs for k, v in times.items()}
    return {
        "regime": regime,
        "n_samples": n,
        "width": width,
        "epochs x steps": f"{epochs} x {spe}",
        "ours ms/epoch": per_epoch[OURS] * 1e3,
        "hand (a) ms/epoch": per_epoch[HAND_CE] * 1e3,
        "hand (b) ms/epoch": per_epoch[HAND_DYN] * 1e3,
        "ours/(a)": f"{per_epoch[OURS] / per_epoch[HAND_CE]:.2f}x",
        "ours/(b)": f"{per_epoch[OURS] / per_epoch[HAND_DYN]:.2f}x",
        "ours/(b) cpu": f"{per_epoch_cpu[OURS] / per_epoch_cpu[HAND_DYN]:.2f}x",
        "overhead us/step": (per_epoch[OURS] - per_epoch[HAND_DYN]) / spe * 1e6,
        "MLP ms/epoch": per_epoch[MLP] * 1e3 if with_mlp else "-",
        "ours/MLP": f"{per_epoch[OURS] / per_epoch[MLP]:.2f}x" if with_mlp else "-",
        "_per_epoch": per_epoch,
    }


def growth_rows(rows, key, fixed_key, fixed_value):
    """Cost per epoch relative to the smallest value of ``key`` in one sweep."""
    out = []
    for regime in dict.fromkeys(r["regime"] for r in rows):
        sweep = [
            r for r in rows if r["regime"] == regime and r[fixed_key] == fixed_value
        ]
        sweep.sort(key=lambda r: r[key])
        if len(sweep) < 2:
            continue
        base = sweep[0]["_per_epoch"]
        for r in sweep:
            out.append(
                {
                    "regime": regime,
                    key: r[key],
                    f"{key} x": f"{r[key] / sweep[0][key]:g}",
                    "ours cost x": f"{r['_per_epoch'][OURS] / base[OURS]:.1f}",
                    "hand (a) cost x": f"{r['_per_epoch'][HAND_CE] / base[HAND_CE]:.1f}",
                    "hand (b) cost x": f"{r['_per_epoch'][HAND_DYN] / base[HAND_DYN]:.1f}",
                }
            )
    return out


def main(argv=None):
    args = parse_args(argv)
    device = C.setup(args)
    dtype = C.DTYPES[args.dtype]
    todo = cells(args)
    config = {
        "data": "make_classification(n, 20 features, 10 informative, 10 classes, seed 0)",
        "n sweep": f"n in {args.sizes} at width {args.base_width}",
        "width sweep": f"width in {args.widths} at n={args.base_size}",
        "full grid": args.full_grid,
        "regimes": "mini-batch: batch "
        f"{args.batch_size}, adam lr=1e-3 | full-batch: sgd lr=0.1 momentum=0",
        "skdynloss": "amplitude=10, period=epochs/4, compute_sharpness=False",
        "epochs per run": f"max(1, min(ceil({args.min_steps} / steps_per_epoch), "
        f"ceil({args.min_rows} / n)))",
        "timing": f"1 warm-up, best of {args.repeats} interleaved rounds (wall)",
        C.load_note().split(":")[0]: C.load_note().split(":", 1)[1].strip(),
    }
    C.print_header("skdynloss scaling benchmark", args, config)
    data = {
        n: C.classification(n, n_features=20, n_classes=10, dtype=dtype)
        for n in sorted({n for _, n, _ in todo})
    }
    rows = [run_cell(args, device, dtype, data, *cell) for cell in todo]
    columns = [k for k in rows[0] if not k.startswith("_")]
    C.print_table(rows, columns, title="Cost per epoch (best of the rounds, wall)")
    n_growth = growth_rows(rows, "n_samples", "width", args.base_width)
    if n_growth:
        C.print_table(
            n_growth,
            title=f"Growth with n_samples (width {args.base_width}); cost relative to "
            "the smallest n",
        )
    w_growth = growth_rows(rows, "width", "n_samples", args.base_size)
    if w_growth:
        C.print_table(
            w_growth,
            title=f"Growth with width (n={args.base_size}); cost relative to the "
            "narrowest",
        )
    print(C.load_note())


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = False
    main()
