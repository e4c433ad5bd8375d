"""Sweep of candidate default hyperparameters over scikit-learn's built-in data sets.

Every candidate is ``make_pipeline(StandardScaler(), DynamicalLossClassifier(
random_state=0, compute_sharpness=False, **candidate))`` scored by 5-fold stratified
cross-validation (``StratifiedKFold(5, shuffle=True, random_state=0)``, n_jobs=1) on
iris, wine, breast_cancer, digits and three make_* problems, next to the same pipeline
around scikit-learn's ``MLPClassifier(random_state=0)`` (its defaults) and
``LogisticRegression(max_iter=1000)``. The tables give mean +- std accuracy over the
folds, the mean CPU seconds of one fit (pipeline fit: scaler + classifier), and whether
each candidate is within 0.02 of MLPClassifier's mean accuracy (or above it) on each of
iris, wine, breast_cancer and digits.

A candidate is written as space-separated ``key=value`` settings, keys:

    A   amplitude            T   period (a number, or autoK, see below)
    lr  lr                   bs  batch_size (an int, -1 for full batch, or auto)
    ep  max_epochs           wd  weight_decay
    sh  shape                st  static_last_period (0 or 1)

``T=autoK`` emulates a period tied to the number of epochs: ``period = max_epochs /
(K * n_classes + 1)`` (the ``+ 1`` only with static_last_period=True), so that the
fit is exactly K full cycles of the focus through the classes followed by the static
last period of plain cross-entropy. ``bs=auto`` is scikit-learn's ``min(200,
n_samples)`` of the training fold. Both are computed here and passed as numbers.

    python benchmarks/sweep_defaults.py                 # the reported table (~4 min on 2 cores)
    python benchmarks/sweep_defaults.py --grid coarse   # the first, coarse stage
    python benchmarks/sweep_defaults.py --quick         # smoke test, seconds
    python benchmarks/sweep_defaults.py --candidates "A=10 T=10" "A=5 T=auto2 lr=3e-3"
"""

import functools
import os
import re
import sys
import time
import warnings

# The skdynloss of the checkout this script lives in (not whichever one is installed):
# the sweep's numbers belong to the commit the header prints.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import datasets  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from skdynloss import DynamicalLossClassifier  # noqa: E402

# The data sets the target names: a candidate must be within TOLERANCE of
# MLPClassifier's mean accuracy on each of them.
NAMED = ("iris", "wine", "breast_cancer", "digits")
TOLERANCE = 0.02


def _classification():
    return datasets.make_classification(
        n_samples=600,
        n_features=20,
        n_informative=6,
        n_redundant=4,
        n_classes=4,
        n_clusters_per_class=2,
        class_sep=1.0,
        random_state=0,
    )


DATASETS = {
    "iris": lambda: datasets.load_iris(return_X_y=True),
    "wine": lambda: datasets.load_wine(return_X_y=True),
    "breast_cancer": lambda: datasets.load_breast_cancer(return_X_y=True),
    "digits": lambda: datasets.load_digits(return_X_y=True),
    "classification": _classification,
    "moons": lambda: datasets.make_moons(n_samples=500, noise=0.3, random_state=0),
    "blobs": lambda: datasets.make_blobs(
        n_samples=600, centers=5, n_features=2, cluster_std=2.0, random_state=0
    ),
}

DATASET_NOTES = {
    "classification": "make_classification(n_samples=600, n_features=20, "
    "n_informative=6, n_redundant=4, n_classes=4, n_clusters_per_class=2, "
    "random_state=0)",
    "moons": "make_moons(n_samples=500, noise=0.3, random_state=0)",
    "blobs": "make_blobs(n_samples=600, centers=5, n_features=2, cluster_std=2.0, "
    "random_state=0)",
}

# The estimator's defaults when this script was written, and the recommended
# ones the sweep chose (docs/defaults.rst): lr 3e-3 and a period of max_epochs /
# (2 * n_classes + 1), amplitude, batch size and epochs unchanged.
CURRENT = "A=10 T=10 lr=1e-3 bs=64 ep=100"
RECOMMENDED = "A=10 T=auto2 lr=3e-3 bs=64 ep=100"

GRIDS = {
    # Stage 1: one factor at a time around the current defaults, and a few joint moves.
    "coarse": [
        CURRENT,
        "A=1 T=10 lr=1e-3 bs=64 ep=100",
        "A=5 T=10 lr=1e-3 bs=64 ep=100",
        "A=3 T=10 lr=1e-3 bs=64 ep=100",
        "A=10 T=10 lr=1e-3 bs=64 ep=200",
        "A=10 T=10 lr=3e-3 bs=64 ep=100",
        "A=10 T=10 lr=1e-2 bs=64 ep=100",
        "A=10 T=10 lr=1e-3 bs=32 ep=100",
        "A=10 T=10 lr=1e-3 bs=auto ep=100",
        "A=10 T=auto1 lr=1e-3 bs=64 ep=100",
        "A=10 T=auto2 lr=1e-3 bs=64 ep=100",
        "A=10 T=auto2 lr=3e-3 bs=64 ep=100",
        "A=5 T=auto2 lr=3e-3 bs=64 ep=100",
    ],
    # Stage 2: the cheap fix (lr) crossed with amplitude and the auto period's cycles.
    "fine": [
        "A=10 T=10 lr=3e-3 bs=64 ep=100",
        "A=10 T=auto1 lr=3e-3 bs=64 ep=100",
        "A=10 T=auto2 lr=3e-3 bs=64 ep=100",
        "A=10 T=auto3 lr=3e-3 bs=64 ep=100",
        "A=10 T=auto2 lr=5e-3 bs=64 ep=100",
        "A=10 T=auto2 lr=1e-2 bs=64 ep=100",
        "A=5 T=auto1 lr=3e-3 bs=64 ep=100",
        "A=5 T=auto2 lr=3e-3 bs=64 ep=100",
        "A=5 T=auto3 lr=3e-3 bs=64 ep=100",
        "A=5 T=auto2 lr=5e-3 bs=64 ep=100",
        "A=3 T=auto2 lr=3e-3 bs=64 ep=100",
    ],
    # The reported table (run with --seed 0, 1, 2): the current defaults, plain
    # cross-entropy at the recommended settings, the recommendation's neighbours, and
    # the recommendation last (its fit time is also measured with sharpness).
    "final": [
        CURRENT,
        "A=1 T=auto2 lr=3e-3 bs=64 ep=100",
        "A=10 T=10 lr=3e-3 bs=64 ep=100",
        "A=10 T=auto1 lr=3e-3 bs=64 ep=100",
        "A=10 T=auto3 lr=3e-3 bs=64 ep=100",
        "A=10 T=auto2 lr=5e-3 bs=64 ep=100",
        "A=5 T=auto2 lr=3e-3 bs=64 ep=100",
        RECOMMENDED,
    ],
    "quick": [RECOMMENDED],
}


_KEYS = {
    "A": ("amplitude", float),
    "T": ("period", str),
    "lr": ("lr", float),
    "bs": ("batch_size", str),
    "ep": ("max_epochs", int),
    "wd": ("weight_decay", float),
    "sh": ("shape", str),
    "st": ("static_last_period", lambda v: bool(int(v))),
}


def parse_candidate(spec):
    """``"A=10 T=auto2 ..."`` -> dict of DynamicalLossClassifier settings (unresolved)."""
    settings = {}
    for item in spec.split():
        key, sep, value = item.partition("=")
        if not sep or key not in _KEYS:
            raise ValueError(f"bad setting {item!r} in candidate {spec!r}")
        name, convert = _KEYS[key]
        settings[name] = convert(value)
    return settings


def resolve(settings, n_train, n_classes):
    """Turn ``period="autoK"`` and ``batch_size="auto"`` into the numbers they mean.

    period autoK: max_epochs / (K * n_classes + 1), the + 1 being the static last
    period (dropped with static_last_period=False): K whole cycles, then the static
    period. batch_size auto: min(200, n_train), scikit-learn's MLP default.
    """
    kwargs = dict(settings)
    epochs = kwargs.get("max_epochs", 100)
    static = kwargs.get("static_last_period", True)
    period = str(kwargs.get("period", "10"))
    match = re.fullmatch(r"auto(\d+(?:\.\d+)?)", period)
    if match:
        cycles = float(match.group(1))
        kwargs["period"] = epochs / (cycles * n_classes + (1 if static else 0))
    else:
        kwargs["period"] = float(period)
    batch = str(kwargs.get("batch_size", "64"))
    kwargs["batch_size"] = min(200, n_train) if batch == "auto" else int(batch)
    return kwargs


def evaluate(make_estimator, X, y, folds):
    """Accuracy and fit times over the folds; make_estimator(n_train) -> estimator."""
    scores, cpu, wall, diverged = [], [], [], 0
    for train, test in folds:
        est = make_estimator(len(train))
        fit = functools.partial(est.fit, X[train], y[train])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            w, c = C.timed(fit, "cpu")
        scores.append(est.score(X[test], y[test]))
        cpu.append(c)
        wall.append(w)
        diverged += bool(getattr(est[-1], "diverged_", False))
    return {
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "cpu": float(np.mean(cpu)),
        "wall": float(np.mean(wall)),
        "diverged": diverged,
    }


def dynamical(spec, n_classes, compute_sharpness=False, seed=0):
    settings = parse_candidate(spec)

    def make(n_train):
        kwargs = resolve(settings, n_train, n_classes)
        return make_pipeline(
            StandardScaler(),
            DynamicalLossClassifier(
                random_state=seed, compute_sharpness=compute_sharpness, **kwargs
            ),
        )

    return make


def references(seed=0):
    return {
        MLP: lambda n_train: make_pipeline(
            StandardScaler(), MLPClassifier(random_state=seed)
        ),
        "LogisticRegression()": lambda n_train: make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=1000)
        ),
    }


MLP = "MLPClassifier()"


def parse_args(argv=None):
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--grid",
        choices=sorted(GRIDS),
        default="final",
        help="which list of candidates to run",
    )
    p.add_argument(
        "--candidates",
        nargs="+",
        default=None,
        help='candidates to run instead of --grid, each like "A=10 T=auto2 lr=3e-3"',
    )
    p.add_argument(
        "--datasets",
        default=",".join(DATASETS),
        help="comma-separated data sets",
    )
    p.add_argument(
        "--sharpness",
        default=None,
        help="candidate whose fit time is also measured with compute_sharpness=True "
        "(default: the last candidate of the grid)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random_state of the folds, of every DynamicalLossClassifier and of "
        "MLPClassifier (0 is the reported sweep; others check its robustness)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: iris and wine, one candidate, seconds",
    )
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.device != "cpu":
        sys.exit("error: the sweep runs on the CPU only (MLPClassifier is CPU-only)")
    C.setup(args)
    if args.quick:
        names = ["iris", "wine"]
        candidates = GRIDS["quick"]
    else:
        names = [n.strip() for n in args.datasets.split(",") if n.strip()]
        candidates = args.candidates or GRIDS[args.grid]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        sys.exit(f"error: unknown data sets {unknown}; choose from {list(DATASETS)}")
    for spec in candidates:
        parse_candidate(spec)  # fail early on a typo
    sharp = args.sharpness if args.sharpness is not None else candidates[-1]
    if sharp:
        parse_candidate(sharp)

    C.print_header(
        "Sweep of candidate defaults: 5-fold stratified CV accuracy and fit time",
        args,
        {
            "data sets": ", ".join(names),
            **{f"  {k}": v for k, v in DATASET_NOTES.items() if k in names},
            "cv": f"StratifiedKFold(5, shuffle=True, random_state={args.seed}), "
            "n_jobs=1",
            "pipeline": "make_pipeline(StandardScaler(), estimator)",
            "skdynloss": f"DynamicalLossClassifier(random_state={args.seed}, "
            "compute_sharpness=False, **candidate)",
            "candidate keys": "A amplitude, T period (autoK: max_epochs / (K * "
            "n_classes + 1)), lr, bs batch_size (auto: min(200, n_train)), "
            "ep max_epochs, wd weight_decay, sh shape, st static_last_period",
            "references": f"MLPClassifier(random_state={args.seed}) (ConvergenceWarning "
            "silenced), LogisticRegression(max_iter=1000)",
            "fit time": "mean CPU seconds (time.process_time) of one pipeline fit",
            "target": f"mean accuracy >= MLPClassifier's - {TOLERANCE} on "
            + ", ".join(NAMED),
        },
    )

    refs = references(args.seed)
    rows = list(refs) + list(candidates)
    extra = f"{sharp}  [compute_sharpness=True]" if sharp else None
    if extra:
        rows.append(extra)
    results = {row: {} for row in rows}
    # One untimed fit of each kind first: torch's and skorch's one-time costs (lazy
    # imports, first kernels) would otherwise land in the first timed fit.
    Xw, yw = datasets.load_iris(return_X_y=True)
    for make in (*refs.values(), dynamical(candidates[0], 3, seed=args.seed)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            make(len(yw)).fit(Xw, yw)
    start = time.perf_counter()
    for name in names:
        X, y = DATASETS[name]()
        X = X.astype(np.float64)
        n_classes = len(np.unique(y))
        folds = list(
            StratifiedKFold(5, shuffle=True, random_state=args.seed).split(X, y)
        )
        t0 = time.perf_counter()
        for row in rows:
            if row in refs:
                make = refs[row]
            elif row == extra:
                make = dynamical(
                    sharp, n_classes, compute_sharpness=True, seed=args.seed
                )
            else:
                make = dynamical(row, n_classes, seed=args.seed)
            results[row][name] = evaluate(make, X, y, folds)
        print(
            f"  {name}: {X.shape[0]} x {X.shape[1]}, {n_classes} classes, "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    print(f"sweep took {time.perf_counter() - start:.0f} s wall; {C.load_note()}\n")

    named = [n for n in NAMED if n in names]
    acc_cols = ["candidate"] + names
    if named:
        acc_cols.append("within 0.02 of MLP (" + "/".join(named) + ")")
    acc_rows = []
    for row in rows:
        r = {"candidate": row}
        for name in names:
            res = results[row][name]
            cell = f"{res['mean']:.3f} +- {res['std']:.3f}"
            if res["diverged"]:
                cell += f" ({res['diverged']} diverged)"
            r[name] = cell
        if named and row != MLP and MLP in results:
            marks = [
                results[row][n]["mean"] >= results[MLP][n]["mean"] - TOLERANCE
                for n in named
            ]
            r[acc_cols[-1]] = " ".join("yes" if m else "NO" for m in marks) + (
                "  ALL" if all(marks) else ""
            )
        acc_rows.append(r)
    C.print_table(acc_rows, acc_cols, title="Accuracy, mean +- std over 5 folds")

    time_rows = []
    for row in rows:
        r = {"candidate": row}
        for name in names:
            r[name] = f"{results[row][name]['cpu']:.2f}"
        r["total"] = f"{sum(results[row][n]['cpu'] for n in names):.2f}"
        time_rows.append(r)
    C.print_table(
        time_rows,
        ["candidate"] + names + ["total"],
        title="Fit time, mean CPU seconds of one fit",
    )
    if named and MLP in results:
        diff_rows = []
        for row in rows:
            if row == MLP:
                continue
            r = {"candidate": row}
            for n in named:
                r[n] = f"{results[row][n]['mean'] - results[MLP][n]['mean']:+.3f}"
            diff_rows.append(r)
        C.print_table(
            diff_rows,
            ["candidate"] + named,
            title="Accuracy minus MLPClassifier's",
        )
    return results


if __name__ == "__main__":
    main()
