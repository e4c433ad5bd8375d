"""Memory: the size of a fitted estimator on disk, and the peak RSS of a fit.

size  (target) a fitted DynamicalLossClassifier (its defaults, random_state
      0) is pickled and joblib-dumped; the size must be at most 3x that of what it has
      to keep: its module's state_dict, its optimizer's state_dict and its per-epoch
      record (``dynamics_``), each pickled (every tensor in storage of its own). Cases: the default MLP (64 -> 100 -> 10)
      on digits, a 10-hidden-layer MLP (width 100) on digits, and the digits CNN
      (``module="cnn"``). Each dump is loaded back and must predict the same.
rss   (for information) the peak resident memory a fit adds, skdynloss against the
      reference loop of ``_harness`` on the same work, each measurement in a fresh
      child process: same imports, one unrelated warm-up fit (torch's one-time lazy
      allocations), the peak counter reset (``/proc/self/clear_refs``, Linux), then
      one fit; reported is the peak VmHWM minus the RSS before the fit.

    python benchmarks/bench_memory.py                 # ~1 min
    python benchmarks/bench_memory.py --quick
    python benchmarks/bench_memory.py --sections size --epochs 100
"""

import copy
import io
import json
import os
import pickle
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

TARGET = 3.0
SIZE_CASES = {
    "default MLP": {},
    "10-layer MLP": {"hidden_layer_sizes": (100,) * 10},
    "CNN": {"module": "cnn"},
}
RSS_CASES = ("spiral full batch", "digits batch 64")


def nbytes(obj):
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def own_storage(obj):
    """``obj`` with every tensor cloned into storage of its own: a tensor that is a view
    of a larger buffer pickles the whole buffer, and a state_dict is measured here as
    what it holds, not as what its tensors happen to share."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return type(obj)((k, own_storage(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(own_storage(v) for v in obj)
    return obj


def size_section(args, X, y):
    import joblib

    rows, checks = [], []
    for name, params in SIZE_CASES.items():
        clf = H.estimator(
            **params, max_epochs=args.epochs, device=args.device, dtype=args.dtype,
            compute_sharpness=True,
        ).fit(X, y)  # fmt: skip
        kept = {
            "module state_dict": nbytes(own_storage(clf.module_.state_dict())),
            "optimizer state_dict": nbytes(
                own_storage(clf.net_.optimizer_.state_dict())
            ),
            "record": nbytes(clf.dynamics_),
        }
        essential = sum(kept.values())
        buffer = io.BytesIO()
        joblib.dump(clf, buffer)
        dumps = {"pickle": pickle.dumps(clf), "joblib": buffer.getvalue()}
        expected = clf.predict_proba(X[:50])
        for kind, blob in dumps.items():
            loaded = (
                pickle.loads(blob)
                if kind == "pickle"
                else joblib.load(io.BytesIO(blob))
            )
            if not np.allclose(loaded.predict_proba(X[:50]), expected):
                print(f"WARNING: {name}: the {kind} round trip predicts differently")
        n_params = sum(p.numel() for p in clf.module_.parameters())
        rows.append(
            {
                "case": name,
                "epochs": clf.n_iter_,
                "parameters": n_params,
                **{f"{k} kB": v / 1e3 for k, v in kept.items()},
                "pickle kB": len(dumps["pickle"]) / 1e3,
                "joblib kB": len(dumps["joblib"]) / 1e3,
            }
        )
        for kind, blob in dumps.items():
            r = len(blob) / essential
            checks.append(
                {
                    "check": f"{name}: {kind} / (state_dicts + record)",
                    "ratio": f"{r:.2f}x",
                    "target": f"<= {TARGET:.2f}x",
                    "verdict": H.verdict(r, TARGET),
                }
            )
    H.print_table(rows, title="Size of a fitted estimator (kB = 1000 bytes)")
    return checks


# ------------------------------------------------------------------- peak RSS


def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_child(case, contender, args):
    """One measurement, in this (fresh) process: a JSON line on stdout."""
    import sklearn.neural_network  # noqa: F401  (every child imports the same modules)
    import skorch  # noqa: F401

    import skdynloss  # noqa: F401

    device = H.setup(args)
    if case == "spiral full batch":
        X, y = H.spiral(args.dtype)
        train = {"optimizer": "sgd", "lr": 1.0, "momentum": 0.0, "batch_size": -1}
        epochs = 100 if args.quick else 1000
    else:
        X, y = H.digits(args.dtype)
        train = {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "batch_size": 64}
        epochs = 2 if args.quick else 10
    net = H.mlp(X.shape[1], (100,), int(y.max()) + 1, dtype=args.dtype).to(device)

    def fit(X, y, epochs):
        dyn = {"amplitude": 70.0, "period": epochs / 4}
        if contender == "reference":
            H.reference_fit(X, y, copy.deepcopy(net), epochs=epochs, device=device,
                            **train, **dyn)  # fmt: skip
        else:
            H.estimator(module=H.Copies(net), max_epochs=epochs, device=args.device,
                        dtype=args.dtype, **train, **dyn).fit(X, y)  # fmt: skip

    fit(X[::10], y[::10], 2)  # warm-up on less data: torch's one-time allocations
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current RSS
    before = status_kb("VmRSS")
    fit(X, y, epochs)
    peak = status_kb("VmHWM")
    print(json.dumps({"before": before / 1024, "peak": peak / 1024}))


def rss_section(args):
    rows = []
    for case in RSS_CASES:
        result = {}
        for contender in ("reference", "skdynloss"):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", case, contender,
                   "--device", args.device, "--dtype", args.dtype,
                   "--threads", str(args.threads)] + (["--quick"] if args.quick else [])  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                print(f"WARNING: {case} / {contender} failed:\n{out.stderr[-1500:]}")
                continue
            result[contender] = json.loads(out.stdout.strip().splitlines()[-1])
        for contender, r in result.items():
            increment = r["peak"] - r["before"]
            ref = result.get("reference")
            rows.append(
                {
                    "case": case,
                    "contender": contender,
                    "RSS before MB": r["before"],
                    "peak MB": r["peak"],
                    "fit increment MB": increment,
                    "extra over reference MB": (
                        increment - (ref["peak"] - ref["before"])
                        if ref
                        else float("nan")
                    ),
                }
            )
    H.print_table(
        rows, title="Peak RSS of one fit, fresh process each (MB = 2**20 bytes)"
    )


def main(argv=None):
    p = H.parser(__doc__.splitlines()[0], repeats=1)
    p.add_argument("--sections", default="size,rss")
    p.add_argument("--epochs", type=int, default=100, help="epochs of the size fits")
    p.add_argument(
        "--child", nargs=2, metavar=("CASE", "CONTENDER"), help=argparse_hide()
    )
    args = p.parse_args(argv)
    if args.child:
        return rss_child(*args.child, args)
    if args.quick:
        args.epochs = min(args.epochs, 3)
    H.setup(args)
    sections = args.sections.split(",")
    H.print_header(
        "Memory: size of a fitted estimator, peak RSS of a fit",
        args,
        {
            "size fits": f"defaults (compute_sharpness=True), {args.epochs} epochs",
            "sections": ", ".join(sections),
        },  # fmt: skip
    )
    checks = []
    if "size" in sections:
        X, y = H.digits(args.dtype)
        checks += size_section(args, X, y)
    if "rss" in sections:
        if os.path.exists("/proc/self/clear_refs"):
            rss_section(args)
        else:
            print("rss: skipped (no /proc/self/clear_refs on this system)")
    if checks:
        H.print_checks(checks, title="Target: size on disk")
    print(H.load_note())
    return 0


def argparse_hide():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())
