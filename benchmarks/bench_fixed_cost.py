"""The fixed cost of a fit: a default fit on iris against MLPClassifier's default fit.

Target: a default ``DynamicalLossClassifier()`` fit (in a pipeline after
``StandardScaler``) takes at most 2x the time of a default ``MLPClassifier()`` fit,
timed side by side in one process (interleaved rounds, after one untimed fit each).
Both run with their defaults, threads included (no ``--threads`` limit).

For information it also times

* the same fit with ``compute_sharpness=False``: what the default ``sharpness_``
  (computed after every fit) costs;
* the first fit in a fresh process, each contender in its own interpreter, with the
  part of it that is torch's one-off import of ``torch._dynamo`` (which
  ``torch.optim`` does on the first optimizer call of a process, for any PyTorch
  training loop) measured on its own.

    python benchmarks/bench_fixed_cost.py [--repeats 15] [--cold 3]
"""

import json
import os
import subprocess
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness  # noqa: E402
import torch  # noqa: E402
from _harness import (  # noqa: E402
    check,
    interleaved,
    median,
    print_checks,
    print_header,
    print_table,
    time_table,
)
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from skdynloss import DynamicalLossClassifier  # noqa: E402

# A fresh interpreter: import, then time the first fit and a second one. argv: the
# contender's name, whether to import torch._dynamo first (outside the timing).
_COLD = r"""
import json, sys, time, warnings
sys.path.insert(0, {root!r})
warnings.simplefilter("ignore")
t0 = time.perf_counter()
from sklearn.datasets import load_iris
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
name, predynamo = sys.argv[1], sys.argv[2] == "1"
if name != "MLPClassifier":
    import torch
    from skdynloss import DynamicalLossClassifier
t1 = time.perf_counter()
if predynamo:
    import torch._dynamo
t2 = time.perf_counter()
X, y = load_iris(return_X_y=True)
def make():
    if name == "MLPClassifier":
        return MLPClassifier(random_state=0)
    return DynamicalLossClassifier(
        random_state=0, compute_sharpness=not name.endswith("no sharpness")
    )
times = []
for _ in range(2):
    t = time.perf_counter()
    make_pipeline(StandardScaler(), make()).fit(X, y)
    times.append(time.perf_counter() - t)
print(json.dumps({{"import": t1 - t0, "dynamo": t2 - t1, "first": times[0],
                  "second": times[1]}}))
"""


def cold(name, predynamo, rounds):
    code = _COLD.format(root=_harness.ROOT)
    out = []
    for _ in range(rounds):
        run = subprocess.run(
            [sys.executable, "-c", code, name, "1" if predynamo else "0"],
            capture_output=True,
            text=True,
            check=True,
        )
        out.append(json.loads(run.stdout.strip().splitlines()[-1]))
    return {k: median([o[k] for o in out]) for k in out[0]}


def main(argv=None):
    p = _harness.parser(__doc__.splitlines()[0], repeats=15)
    p.set_defaults(threads=torch.get_num_threads())
    p.add_argument("--cold", type=int, default=3, help="fresh processes per contender")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.cold = 2, 1
    # Unlike the other scripts: each estimator's own thread defaults (the package's
    # policy, numpy's BLAS); --threads only caps what torch may use.
    torch.set_num_threads(args.threads)
    X, y = load_iris(return_X_y=True)
    config = {
        "data": f"iris {X.shape}, StandardScaler in the pipeline",
        "contenders": "DynamicalLossClassifier() and MLPClassifier(), defaults "
        "(random_state=0)",
        "threads": "each estimator's own defaults (torch and BLAS not limited)",
        "timing": f"medians of {args.repeats} interleaved rounds, after one untimed "
        f"fit each; first fits: median of {args.cold} fresh processes",
    }
    print_header("Fixed cost of a default fit on iris", args, config)
    warnings.simplefilter("ignore", ConvergenceWarning)

    def fit(make):
        return lambda: make_pipeline(StandardScaler(), make()).fit(X, y)

    contenders = {
        "DynamicalLossClassifier()": fit(
            lambda: DynamicalLossClassifier(random_state=0)
        ),
        "MLPClassifier()": fit(lambda: MLPClassifier(random_state=0)),
        "compute_sharpness=False": fit(
            lambda: DynamicalLossClassifier(random_state=0, compute_sharpness=False)
        ),
    }
    times = interleaved(contenders, "cpu", repeats=args.repeats)
    print_table(
        time_table(times, 1, "MLPClassifier()", unit="fit"),
        title="One fit (ms; ratios to MLPClassifier)",
    )
    print_checks(
        [
            check(
                "default fit / MLPClassifier fit",
                times,
                "DynamicalLossClassifier()",
                "MLPClassifier()",
                target=2.0,
            ),
            check(
                "default (with sharpness_) / compute_sharpness=False",
                times,
                "DynamicalLossClassifier()",
                "compute_sharpness=False",
            ),
        ]
    )

    rows = []
    for name, predynamo in [
        ("MLPClassifier", False),
        ("DynamicalLossClassifier", False),
        ("DynamicalLossClassifier", True),
        ("DynamicalLossClassifier no sharpness", True),
    ]:
        t = cold(name, predynamo, args.cold)
        rows.append(
            {
                "fresh process": name.replace(" no sharpness", ", no sharpness_")
                + (" (torch._dynamo imported first)" if predynamo else ""),
                "import s": t["import"],
                "torch._dynamo import s": t["dynamo"] if predynamo else float("nan"),
                "first fit s": t["first"],
                "second fit s": t["second"],
            }
        )
    print_table(rows, title="First fit in a fresh process (medians, seconds)")


if __name__ == "__main__":
    main()
