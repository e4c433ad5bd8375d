"""The lockstep searches against scikit-learn's, side by side in one process.

Every comparison runs both contenders in alternation (interleaved rounds, the first one
rotating), after one short untimed warm-up of each, with one torch thread per worker,
and prints the median wall time of each, their ratio, its target and whether the two
searches agree. The parts (``--part``):

* ``grid``: LockstepGridSearchCV against GridSearchCV(n_jobs=1), 4 amplitudes x 4
  periods x 5 folds = 80 fits;
* ``randomized``: LockstepRandomizedSearchCV against RandomizedSearchCV(n_jobs=1),
  16 candidates (amplitude log-uniform in [1, 100], period uniform in [1, 30]) x 5
  folds = 80 fits; target 4x;
* ``halving``: LockstepHalvingGridSearchCV against HalvingGridSearchCV(n_jobs=1), 27
  candidates (3 amplitudes x 3 periods x 3 seeds), ``resource="n_samples"``,
  factor 3; target 3x, and the same best candidate;
* ``n_jobs``: LockstepGridSearchCV with n_jobs=2 against n_jobs=1 on the 80-fit grid,
  whose fits form one group (its stacks go to the two workers); target 1.6x where the
  default bound cuts the group into two stacks or more (digits; the spiral's 80 small
  networks fit in one), and the same scores bit for bit. Beside it, a control: two
  pure-Python loops on two joblib workers against one after another (2.0x on two free
  cores), before and after, which says how much of the machine two workers had;
* ``stacks``: process CPU time per model and step (best of 3 rounds) against the number of models in one stack
  (an MLP 2-100-3 on the spiral in full batch and float64, as the reproductions train
  it, and the digits MLP 64-100-10 with Adam and batches of 64), and the stack that
  :func:`skdynloss._lockstep.default_max_stack_bytes` allows for each.

The estimators (``compute_sharpness=False``: a search does not need it):

* spiral: the paper's data (300 points, 3 classes), an MLP 2-30-3, full-batch gradient
  descent (SGD, lr 0.5, no momentum);
* digits: scikit-learn's 8x8 digits (1797 images, 10 classes, scaled to [0, 1]), MLP
  64-100-10, Adam (lr 1e-3), batches of 64.

Usage::

    python benchmarks/bench_lockstep.py                  # every part, 3 rounds
    python benchmarks/bench_lockstep.py --part halving   # one part
    python benchmarks/bench_lockstep.py --quick          # few epochs, 1 round
"""

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness  # noqa: E402  (puts this checkout first on sys.path)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import loguniform, uniform  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.experimental import enable_halving_search_cv  # noqa: E402,F401
from sklearn.model_selection import (  # noqa: E402
    GridSearchCV,
    HalvingGridSearchCV,
    RandomizedSearchCV,
    StratifiedKFold,
)

from skdynloss import (  # noqa: E402
    DynamicalLossClassifier,
    LockstepGridSearchCV,
    LockstepHalvingGridSearchCV,
    LockstepRandomizedSearchCV,
    make_spiral,
)
from skdynloss._lockstep import (  # noqa: E402
    default_max_stack_bytes,
    fit_datasets,
    model_bytes,
)

GRID = {"amplitude": [1, 5, 20, 70], "period": [1, 3, 10, 30]}
SPACE = {"amplitude": loguniform(1, 100), "period": uniform(1, 29)}
HALVING_GRID = {
    "amplitude": [1, 10, 50],
    "period": [1, 3, 10],
    "random_state": [0, 1, 2],
}
PARTS = ("grid", "randomized", "halving", "n_jobs", "stacks")


def spiral_case(epochs):
    X, y = make_spiral()
    clf = DynamicalLossClassifier(
        hidden_layer_sizes=(30,),
        optimizer="sgd",
        lr=0.5,
        momentum=0.0,
        batch_size=-1,
        max_epochs=epochs,
        compute_sharpness=False,
        random_state=0,
    )
    return "spiral 2-30-3, full batch", X, y, clf


def digits_case(epochs):
    X, y = load_digits(return_X_y=True)
    clf = DynamicalLossClassifier(
        optimizer="adam",
        lr=1e-3,
        batch_size=64,
        max_epochs=epochs,
        compute_sharpness=False,
        random_state=0,
    )
    return "digits 64-100-10, Adam", X / 16.0, y, clf


def _cv():
    return StratifiedKFold(5, shuffle=True, random_state=0)


def _fit(make, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        start = time.perf_counter()
        search = make().fit(X, y)
        return time.perf_counter() - start, search


def side_by_side(contenders, X, y, rounds, warm):
    """{name: (median seconds, last fitted search)}, in interleaved rounds."""
    for make in warm.values():
        _fit(make, X, y)  # untimed: torch's first steps import and compile
    names = list(contenders)
    times = {n: [] for n in names}
    searches = {}
    for r in range(rounds):
        for i in range(len(names)):
            name = names[(i + r) % len(names)]
            elapsed, search = _fit(contenders[name], X, y)
            times[name].append(elapsed)
            searches[name] = search
        print(f"    round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return {n: (statistics.median(times[n]), searches[n]) for n in names}


def _row(part, case, ref_name, ref, ours_name, ours, target, agree, note=""):
    speedup = ref[0] / ours[0]
    row = {
        "part": part,
        "case": case,
        "reference": ref_name,
        "ref s": ref[0],
        "contender": ours_name,
        "s": ours[0],
        "speedup": f"{speedup:.2f}x",
        "target": f">= {target:.1f}x" if target else "(info)",
        "verdict": ("met" if speedup >= target else "NOT met") if target else "",
        "agreement": agree + note,
    }
    print(
        f"  {part}, {case}: {ref_name} {ref[0]:.2f} s, {ours_name} {ours[0]:.2f} s, "
        f"{speedup:.2f}x ({row['target']} {row['verdict']}); {row['agreement']}",
        flush=True,
    )
    return row


def _max_diff(a, b, key="mean_test_score"):
    return float(np.max(np.abs(a.cv_results_[key] - b.cv_results_[key])))


def search_parts(parts, cases, rounds):
    rows = []
    for name, X, y, clf in cases:
        short = clone(clf).set_params(max_epochs=2)
        if "grid" in parts:
            pair = {
                "GridSearchCV": lambda c=clf: GridSearchCV(c, GRID, cv=_cv(), n_jobs=1),
                "LockstepGridSearchCV": lambda c=clf: LockstepGridSearchCV(
                    c, GRID, cv=_cv(), n_jobs=1
                ),
            }
            r = side_by_side(pair, X, y, rounds, _warm(pair, short))
            d = _max_diff(r["LockstepGridSearchCV"][1], r["GridSearchCV"][1])
            rows.append(
                _row(
                    "grid",
                    name,
                    "GridSearchCV",
                    r["GridSearchCV"],
                    "LockstepGridSearchCV",
                    r["LockstepGridSearchCV"],
                    None,
                    f"max|dscore| {d:.2g}",
                )  # fmt: skip
            )
        if "randomized" in parts:
            kw = dict(n_iter=16, cv=_cv(), n_jobs=1, random_state=0)
            pair = {
                "RandomizedSearchCV": lambda c=clf, kw=kw: RandomizedSearchCV(
                    c, SPACE, **kw
                ),
                "LockstepRandomizedSearchCV": lambda c=clf, kw=kw: (
                    LockstepRandomizedSearchCV(c, SPACE, **kw)
                ),
            }
            r = side_by_side(pair, X, y, rounds, _warm(pair, short))
            a, b = r["LockstepRandomizedSearchCV"][1], r["RandomizedSearchCV"][1]
            rows.append(
                _row(
                    "randomized",
                    name,
                    "RandomizedSearchCV",
                    r["RandomizedSearchCV"],
                    "LockstepRandomizedSearchCV",
                    r["LockstepRandomizedSearchCV"],
                    4.0,
                    f"max|dscore| {_max_diff(a, b):.2g}",
                )  # fmt: skip
            )
        if "halving" in parts:
            kw = dict(cv=StratifiedKFold(5), factor=3, n_jobs=1, random_state=0)
            pair = {
                "HalvingGridSearchCV": lambda c=clf, kw=kw: HalvingGridSearchCV(
                    c, HALVING_GRID, **kw
                ),
                "LockstepHalvingGridSearchCV": lambda c=clf, kw=kw: (
                    LockstepHalvingGridSearchCV(c, HALVING_GRID, **kw)
                ),
            }
            r = side_by_side(pair, X, y, rounds, _warm(pair, short))
            a, b = r["LockstepHalvingGridSearchCV"][1], r["HalvingGridSearchCV"][1]
            same = "same best" if a.best_params_ == b.best_params_ else "OTHER best"
            rows.append(
                _row(
                    "halving",
                    name,
                    "HalvingGridSearchCV",
                    r["HalvingGridSearchCV"],
                    "LockstepHalvingGridSearchCV",
                    r["LockstepHalvingGridSearchCV"],
                    3.0,
                    f"{same}, max|dscore| {_max_diff(a, b):.2g}",
                    f"; {sum(b.n_candidates_)} candidates in {b.n_iterations_} rounds",
                )  # fmt: skip
            )
        if "n_jobs" in parts:
            pair = {
                "n_jobs=1": lambda c=clf: LockstepGridSearchCV(
                    c, GRID, cv=_cv(), n_jobs=1
                ),
                "n_jobs=2": lambda c=clf: LockstepGridSearchCV(
                    c, GRID, cv=_cv(), n_jobs=2
                ),
            }
            before = parallel_control()
            r = side_by_side(pair, X, y, rounds, _warm(pair, short))
            control = (before + parallel_control()) / 2
            d = _max_diff(r["n_jobs=2"][1], r["n_jobs=1"][1])
            # The stacks the default bound cuts the group of 80 into: with one,
            # there is nothing to share between the workers.
            per_model = model_bytes(clf, len(X) * 4 // 5, X.shape[1], len(set(y)))
            n_stacks = -(-80 // max(1, default_max_stack_bytes("cpu") // per_model))
            rows.append(
                _row(
                    "n_jobs",
                    name,
                    "Lockstep n_jobs=1",
                    r["n_jobs=1"],
                    "Lockstep n_jobs=2",
                    r["n_jobs=2"],
                    1.6 if n_stacks > 1 else None,
                    ("identical" if d == 0 else f"max|dscore| {d:.2g}")
                    + f"; {n_stacks} stack(s) of the 80 fits; parallel control "
                    f"{control:.2f}x",
                )  # fmt: skip
            )
    return rows


def _spin(n):
    total = 0
    for i in range(n):
        total += i
    return total


def parallel_control(n=20_000_000):
    """What two worker processes get on this machine now: the ratio of the times of
    two pure-Python loops one after another and on two joblib workers (2.0 on two
    free cores; about 1 when other processes hold one of them)."""
    from joblib import Parallel, delayed

    Parallel(n_jobs=2)(delayed(_spin)(10) for _ in range(2))  # start the workers
    t0 = time.perf_counter()
    for _ in range(2):
        _spin(n)
    serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    Parallel(n_jobs=2)(delayed(_spin)(n) for _ in range(2))
    return serial / (time.perf_counter() - t0)


def _warm(pair, short):
    """The same searches on a 2-epoch estimator, for the untimed warm-up."""
    return {
        n: (lambda m=make: m().set_params(estimator=short)) for n, make in pair.items()
    }


def stack_sizes(quick):
    """Time per model and step against the stack's size, in one stack each."""
    X, y = make_spiral()
    Xd, yd = load_digits(return_X_y=True)
    cases = [
        (
            "spiral 2-100-3, full batch, float64",
            X,
            y,
            dict(
                hidden_layer_sizes=(100,),
                optimizer="sgd",
                lr=0.1,
                momentum=0.0,
                batch_size=-1,
                dtype="float64",
                max_epochs=40 if quick else 400,
            ),
        ),  # fmt: skip
        (
            "digits 64-100-10, Adam, batches of 64",
            Xd / 16.0,
            yd,
            dict(
                hidden_layer_sizes=(100,),
                optimizer="adam",
                lr=1e-3,
                batch_size=64,
                max_epochs=1 if quick else 6,
            ),
        ),  # fmt: skip
    ]
    sizes = (1, 4, 8) if quick else (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64)
    bound = default_max_stack_bytes("cpu")
    rows = []
    for name, X, y, kw in cases:

        def make(k, kw=kw):
            return [
                DynamicalLossClassifier(amplitude=1.0 + i, period=2.0, random_state=i,
                                        compute_sharpness=False, **kw)
                for i in range(k)
            ]  # fmt: skip

        data = (X, y, None, "all")
        fit_datasets(make(1), [data], max_stack_bytes=2**40)  # warm-up
        per_model = model_bytes(make(1)[0], len(X), X.shape[1], len(np.unique(y)))
        steps = kw["max_epochs"] * (1 if kw["batch_size"] == -1 else -(-len(X) // 64))
        best = {}
        for _ in range(1 if quick else 3):
            for k in sizes:  # interleaved over the sizes, best of the rounds
                models = make(k)
                # Process CPU time (one thread): waiting for a core on a shared
                # machine does not count.
                t0 = time.process_time()
                fit_datasets(models, [data] * k, max_stack_bytes=2**40)
                t = (time.process_time() - t0) / (steps * k)
                best[k] = min(best.get(k, np.inf), t)
        fastest = min(best, key=best.get)
        allowed = max(1, int(bound // per_model))
        for k in sizes:
            rows.append({
                "case": name,
                "models": k,
                "stack MiB": k * per_model / 2**20,
                "cpu us per model-step": best[k] * 1e6,
                "": ("fastest" if k == fastest else "")
                + (" <- default bound" if k == max(s for s in sizes if s <= allowed)
                   else ""),
            })  # fmt: skip
        print(
            f"{name}: fastest at {fastest} models ({fastest * per_model / 2**20:.1f} "
            f"MiB); the default bound ({bound / 2**20:.0f} MiB) allows {allowed}",
            flush=True,
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=PARTS, action="append", default=None)
    parser.add_argument("--only", choices=["spiral", "digits"], default=None)
    parser.add_argument("--quick", action="store_true", help="few epochs, one round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--spiral-epochs", type=int, default=None)
    parser.add_argument("--digits-epochs", type=int, default=None)
    args = parser.parse_args(argv)
    # The searches' warnings (a period as long as a 2-epoch warm-up) stay quiet, in
    # the worker processes too (they inherit the environment).
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    warnings.simplefilter("ignore", UserWarning)
    parts = args.part or list(PARTS)
    args.device, args.dtype, args.threads = "cpu", "float32", 1
    args.repeats = args.rounds or (1 if args.quick else 3)
    _harness.setup(args)  # one torch (and BLAS) thread; the workers get one each
    spiral_epochs = args.spiral_epochs or (50 if args.quick else 1000)
    digits_epochs = args.digits_epochs or (2 if args.quick else 20)
    _harness.print_header(
        "Lockstep searches against scikit-learn's, side by side",
        args,
        {
            "parts": ", ".join(parts),
            "epochs": f"spiral {spiral_epochs}, digits {digits_epochs}",
            "default stack bound on this CPU": (
                f"{default_max_stack_bytes('cpu') / 2**20:.0f} MiB"
            ),
        },
    )
    if "stacks" in parts:
        _harness.print_table(stack_sizes(args.quick), title="Stack size (one thread)")
    cases = []
    if args.only in (None, "spiral"):
        cases.append(spiral_case(spiral_epochs))
    if args.only in (None, "digits"):
        cases.append(digits_case(digits_epochs))
    rows = search_parts([p for p in parts if p != "stacks"], cases, args.repeats)
    if rows:
        _harness.print_table(rows, title="Searches (median wall seconds)")
        judged = [r for r in rows if r["verdict"]]
        met = sum(r["verdict"] == "met" for r in judged)
        print(f"{met} of {len(judged)} targets met")
    print(f"after the run: {_harness.load_note()}")
    if torch.cuda.is_available():
        print("A CUDA device is present: this script times the CPU only.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
