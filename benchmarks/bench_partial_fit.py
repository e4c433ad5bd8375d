"""Cost per partial_fit call as the calls accumulate (target: flat).

Two estimators (compute_sharpness=False) are trained by ``--calls`` (3000) partial_fit
calls each, their calls alternating so that load from other processes hits both alike:

full-batch  the spiral (300 x 2), 2 -> 100 -> 3, SGD lr 1, one step per call;
mini-batch  digits (1797 x 64), 64 -> 100 -> 10, Adam, batch 64, 29 steps per call.

Every call is timed (wall and process CPU). The target: the last 100 calls cost at most
1.2x what calls 100-200 cost (a cost that grows with the history would show here), on
the sum and on the median of each window. The table also gives windows in between.

    python benchmarks/bench_partial_fit.py            # ~1 min
    python benchmarks/bench_partial_fit.py --quick    # 400 calls each
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H  # noqa: E402
import numpy as np  # noqa: E402

TARGET = 1.2


def main(argv=None):
    p = H.parser(__doc__.splitlines()[0], repeats=1)
    p.add_argument("--calls", type=int, default=3000)
    args = p.parse_args(argv)
    calls = 400 if args.quick else args.calls
    if calls < 300:
        p.error("--calls must be at least 300 (windows 100-200 and the last 100)")
    device = H.setup(args)
    Xs, ys = H.spiral(args.dtype)
    Xd, yd = H.digits(args.dtype)
    cases = {
        "full-batch": (
            H.estimator(optimizer="sgd", lr=1.0, momentum=0.0, batch_size=-1,
                        amplitude=70.0, period=500.0, device=args.device,
                        dtype=args.dtype),
            Xs, ys,
        ),
        "mini-batch": (
            H.estimator(optimizer="adam", lr=1e-3, batch_size=64, amplitude=70.0,
                        period=5.0, device=args.device, dtype=args.dtype),
            Xd, yd,
        ),
    }  # fmt: skip
    H.print_header(
        "partial_fit: cost per call over many calls",
        args,
        {
            name: f"{X.shape}, {clf.optimizer}, batch {clf.batch_size}, {calls} calls"
            for name, (clf, X, y) in cases.items()
        },  # fmt: skip
    )
    wall = {name: np.empty(calls) for name in cases}
    cpu = {name: np.empty(calls) for name in cases}
    for clf, X, y in cases.values():
        clf.partial_fit(X, y, classes=np.unique(y))  # the build, untimed
    for i in range(calls):
        for name, (clf, X, y) in cases.items():
            H.sync(device)
            w, c = time.perf_counter(), time.process_time()
            clf.partial_fit(X, y)
            H.sync(device)
            wall[name][i] = time.perf_counter() - w
            cpu[name][i] = time.process_time() - c
        if (i + 1) % 500 == 0:
            print(f"    {i + 1}/{calls} calls", file=sys.stderr, flush=True)

    edges = sorted({100, 200, *range(500, calls - 100, 500), calls - 100, calls})
    windows = [(100, 200)] + [
        (a, b) for a, b in zip(edges[1:-1], edges[2:], strict=True)
    ]
    rows, checks = [], []
    for name in cases:
        for a, b in windows:
            row = {"case": name, "calls": f"{a}-{b}"}
            for metric, t in (("wall", wall[name]), ("cpu", cpu[name])):
                row[f"{metric} median ms/call"] = float(np.median(t[a:b])) * 1e3
                row[f"{metric} mean / calls 100-200"] = (
                    f"{t[a:b].mean() / t[100:200].mean():.2f}x"
                )
            rows.append(row)
        for stat, f in (("sum", np.sum), ("median", np.median)):
            row = {"check": f"{name}: last 100 / calls 100-200 ({stat})"}
            oks = []
            for metric, t in (("wall", wall[name]), ("cpu", cpu[name])):
                r = float(f(t[-100:]) / f(t[100:200]))
                row[metric] = f"{r:.2f}x"
                oks.append(r <= TARGET)
            row["target"] = f"<= {TARGET:.2f}x"
            row["verdict"] = H.verdict_of(oks)
            checks.append(row)
        clf = cases[name][0]
        if clf.n_iter_ != calls + 1 or clf.diverged_:
            print(f"WARNING: {name}: n_iter_={clf.n_iter_}, diverged_={clf.diverged_}")
    H.print_table(rows, title="Cost per call, by window of calls")
    H.print_checks(checks, title="Target: flat cost per call")
    print(H.load_note())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
