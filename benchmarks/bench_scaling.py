"""How the cost per epoch grows with the data size and the width (for information).

make_classification (20 features, 10 classes, seed 0); two sweeps, each in two regimes
(mini-batch 256 with Adam 1e-3; full-batch gradient descent, SGD lr 0.1):
n_samples in ``--sizes`` (1k, 10k, 100k) at width 128, and the hidden width in
``--widths`` (32, 128, 512) at 10k rows. In every cell skdynloss (amplitude 10, period
a quarter of the run, starting from the reference's module) is timed interleaved with
the reference loop of ``_harness`` and, in mini-batch cells on the CPU, scikit-learn's
MLPClassifier on the same epochs, width and batch size. A cell runs about 300 optimizer
steps, at most about 1e6 rows. ``overhead us/step`` = (skdynloss - reference) per step,
on the CPU-time medians: a constant per-step cost gives a ratio falling towards 1 as the
work per step grows.

    python benchmarks/bench_scaling.py            # ~2 min on one core
    python benchmarks/bench_scaling.py --quick
"""

import copy
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H  # noqa: E402
import numpy as np  # noqa: E402


def data(n, dtype):
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=n, n_features=20, n_informative=10, n_classes=10, random_state=0
    )
    return X.astype(dtype), y.astype(np.int64)


def cell(regime, n, width, args, device):
    X, y = data(n, args.dtype)
    bs = 256 if regime == "mini-batch" else -1
    spe = math.ceil(n / 256) if bs > 0 else 1
    epochs = max(1, min(math.ceil(300 / spe), 1_000_000 // n))
    train = (
        {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "batch_size": bs}
        if bs > 0
        else {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "batch_size": bs}
    )
    dyn = {"amplitude": 10.0, "period": epochs / 4}
    net = H.mlp(20, (width,), 10, dtype=args.dtype).to(device)
    contenders = {
        "reference": lambda: H.reference_fit(
            X, y, copy.deepcopy(net), epochs=epochs, device=device, **train, **dyn
        ),
        "skdynloss": lambda: H.estimator(
            module=H.Copies(net), max_epochs=epochs, device=args.device,
            dtype=args.dtype, **train, **dyn,
        ).fit(X, y),
    }  # fmt: skip
    if bs > 0 and device.type == "cpu":
        mlp = H.sklearn_mlp(hidden=(width,), batch_size=bs, epochs=epochs)
        contenders["MLPClassifier"] = lambda: H.quiet_fit(mlp, X, y)
    times = H.interleaved(contenders, device, repeats=args.repeats, verbose=False)
    med = {k: {m: H.median(v[m]) / epochs for m in v} for k, v in times.items()}
    row = {
        "regime": regime,
        "n_samples": n,
        "width": width,
        "epochs x steps": f"{epochs} x {spe}",
        "ours ms/epoch (cpu)": med["skdynloss"]["cpu"] * 1e3,
        "reference ms/epoch": med["reference"]["cpu"] * 1e3,
        "ours/ref (wall)": f"{med['skdynloss']['wall'] / med['reference']['wall']:.2f}x",
        "ours/ref (cpu)": f"{med['skdynloss']['cpu'] / med['reference']['cpu']:.2f}x",
        "overhead us/step": (med["skdynloss"]["cpu"] - med["reference"]["cpu"])
        / spe
        * 1e6,
    }
    if "MLPClassifier" in med:
        row["MLP ms/epoch"] = med["MLPClassifier"]["cpu"] * 1e3
        row["ours/MLP (cpu)"] = (
            f"{med['skdynloss']['cpu'] / med['MLPClassifier']['cpu']:.2f}x"
        )
    return row


def main(argv=None):
    p = H.parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--widths", default="32,128,512")
    p.add_argument("--regimes", default="mini-batch,full-batch")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.widths, args.repeats = "1000", "32,128", 1
    device = H.setup(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    widths = [int(w) for w in args.widths.split(",")]
    base_n = 10_000 if 10_000 in sizes else sizes[0]
    pairs = [(n, 128) for n in sizes] + [(base_n, w) for w in widths if w != 128]
    H.print_header(
        "Scaling: cost per epoch against data size and width",
        args,
        {
            "cells": ", ".join(f"n={n} w={w}" for n, w in pairs),
            "regimes": args.regimes,
        },  # fmt: skip
    )
    rows = []
    for regime in args.regimes.split(","):
        for n, w in pairs:
            rows.append(cell(regime, n, w, args, device))
            print(f"    {regime} n={n} width={w} done", file=sys.stderr, flush=True)
    H.print_table(rows, title="Cost per epoch (medians of the rounds; ms are CPU time)")
    print(H.load_note())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
