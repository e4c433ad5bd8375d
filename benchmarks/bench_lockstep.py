"""LockstepGridSearchCV against GridSearchCV(n_jobs=1), side by side in one process.

Two grids of 16 candidates (4 amplitudes x 4 periods) x 5 folds = 80 fits, with the
same estimator on both sides (``compute_sharpness=False``: a search does not need it):

* spiral: the paper's data (300 points, 3 classes), an MLP 2-30-3, full-batch gradient
  descent (SGD, lr 0.5, no momentum), 2000 epochs;
* digits: scikit-learn's 8x8 digits (1797 images, 10 classes), MLP 64-100-10, Adam
  (lr 1e-3), batches of 64, 20 epochs.

The two searches run in alternation (interleaved rounds, one torch thread), after one
untimed warm-up of each, and the table gives the median time of each, their ratio, and
whether the two searches agree (the same ``mean_test_score`` for every candidate).
The memory that a stack of K models needs is :func:`skdynloss._lockstep.model_bytes`
times K (parameters, gradients, optimizer moments, the divergence guard's copies and a
batch's activations).

With a CUDA device the script also times the stack of 80 against GridSearchCV on it;
without one it says so.

Usage::

    python benchmarks/bench_lockstep.py            # the full grids, 3 rounds
    python benchmarks/bench_lockstep.py --quick    # 200 and 4 epochs, 1 round
"""

import argparse
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from skdynloss import DynamicalLossClassifier, LockstepGridSearchCV, make_spiral
from skdynloss._lockstep import model_bytes

GRID = {"amplitude": [1, 5, 20, 70], "period": [1, 3, 10, 30]}


def spiral_case(epochs, device):
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
        device=device,
    )
    return "spiral 2-30-3, full batch", X, y, clf


def digits_case(epochs, device):
    X, y = load_digits(return_X_y=True)
    clf = DynamicalLossClassifier(
        optimizer="adam",
        lr=1e-3,
        batch_size=64,
        max_epochs=epochs,
        compute_sharpness=False,
        random_state=0,
        device=device,
    )
    return "digits 64-100-10, Adam", X / 16.0, y, clf


def run(search_cls, clf, X, y):
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        start = time.perf_counter()
        search = search_cls(clf, GRID, cv=cv, n_jobs=1).fit(X, y)
        elapsed = time.perf_counter() - start
    if device_of(clf) == "cuda":
        torch.cuda.synchronize()
    return elapsed, search.cv_results_["mean_test_score"]


def device_of(clf):
    return str(clf.device).split(":")[0]


def compare(case, rounds):
    name, X, y, clf = case
    epochs = clf.max_epochs
    # One short untimed warm-up of each (torch's first optimizer step imports its
    # compiler, seconds that either side would otherwise pay).
    clf.set_params(max_epochs=2)
    run(LockstepGridSearchCV, clf, X, y)
    run(GridSearchCV, clf, X, y)
    clf.set_params(max_epochs=epochs)
    times = {"GridSearchCV": [], "LockstepGridSearchCV": []}
    scores = {}
    for _ in range(rounds):
        for label, cls in (
            ("GridSearchCV", GridSearchCV),
            ("LockstepGridSearchCV", LockstepGridSearchCV),
        ):
            elapsed, score = run(cls, clf, X, y)
            times[label].append(elapsed)
            scores[label] = score
    grid_t = statistics.median(times["GridSearchCV"])
    lock_t = statistics.median(times["LockstepGridSearchCV"])
    agree = float(
        np.max(np.abs(scores["GridSearchCV"] - scores["LockstepGridSearchCV"]))
    )
    n_rows = int(len(X) * 4 / 5)
    per_model = model_bytes(clf, n_rows, X.shape[1], len(np.unique(y)))
    return {
        "case": name,
        "epochs": clf.max_epochs,
        "grid": grid_t,
        "lockstep": lock_t,
        "speedup": grid_t / lock_t,
        "max |score difference|": agree,
        "stack of 1 (MiB)": per_model / 2**20,
        "stack of 16 (MiB)": 16 * per_model / 2**20,
        "stack of 80 (MiB)": 80 * per_model / 2**20,
    }


def table(rows):
    print(
        f"{'case':28} {'epochs':>6} {'GridSearchCV':>13} {'Lockstep':>9} "
        f"{'speedup':>8} {'max|dscore|':>11} {'K=1 MiB':>8} {'K=16 MiB':>9} "
        f"{'K=80 MiB':>9}"
    )
    for r in rows:
        print(
            f"{r['case']:28} {r['epochs']:>6} {r['grid']:>12.2f}s {r['lockstep']:>8.2f}s "
            f"{r['speedup']:>7.2f}x {r['max |score difference|']:>11.2g} "
            f"{r['stack of 1 (MiB)']:>8.3f} {r['stack of 16 (MiB)']:>9.2f} "
            f"{r['stack of 80 (MiB)']:>9.2f}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few epochs, one round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--spiral-epochs", type=int, default=None)
    parser.add_argument("--digits-epochs", type=int, default=None)
    parser.add_argument("--only", choices=["spiral", "digits"], default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rounds = args.rounds or (1 if args.quick else 3)
    spiral_epochs = args.spiral_epochs or (200 if args.quick else 2000)
    digits_epochs = args.digits_epochs or (4 if args.quick else 20)
    print(
        f"torch {torch.__version__}, 1 thread, {rounds} interleaved round(s); "
        "16 candidates x 5 folds = 80 fits per search"
    )
    cases = []
    if args.only in (None, "spiral"):
        cases.append(spiral_case(spiral_epochs, "cpu"))
    if args.only in (None, "digits"):
        cases.append(digits_case(digits_epochs, "cpu"))
    print("\nCPU")
    rows = [compare(case, rounds) for case in cases]
    table(rows)
    print("\nGPU")
    if torch.cuda.is_available():
        gpu_cases = []
        if args.only in (None, "spiral"):
            gpu_cases.append(spiral_case(spiral_epochs, "cuda"))
        if args.only in (None, "digits"):
            gpu_cases.append(digits_case(digits_epochs, "cuda"))
        table([compare(case, rounds) for case in gpu_cases])
        print(f"device: {torch.cuda.get_device_name()}")
    else:
        print("No CUDA device on this machine: the GPU comparison was not run.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
