"""Peak memory of DynamicalLossClassifier.fit against hand-written torch loops.

Method. Every measurement runs in a fresh child process (``python bench_memory.py
--child ...``) that

1. imports torch, scikit-learn, skorch and skdynloss (the same imports for every
   contender, so their baselines are equal) and loads the data set from a ``.npy`` file
   that the parent wrote (the arrays are in their final dtype, so loading them allocates
   nothing else);
2. runs one tiny forward/backward/optimizer step of an unrelated network, so that
   torch's one-time lazy allocations (thread pools, workspaces: about 80 MB on a CPU
   build) are paid before the measurement by every contender alike;
3. resets the kernel's peak-RSS counter by writing ``5`` to ``/proc/self/clear_refs``
   (Linux >= 4.0; this resets both ``VmHWM`` and ``getrusage().ru_maxrss``) and reads
   the current RSS: the *start*;
4. runs one ``fit`` (or hand loop) and reads ``resource.getrusage(RUSAGE_SELF).ru_maxrss``:
   the *peak*.

``fit increment`` = peak - start is the memory the training itself needed at its worst
moment (its tensors, the copy of X, autograd buffers, the history...). ``peak RSS``
includes the Python interpreter, torch's libraries and the data (several hundred MB of
shared libraries that every contender pays). Where ``clear_refs`` cannot be written the
peak is the process's whole-life high-water mark, which the import of torch may
dominate; the output says which method was used. With ``--device cuda`` the child also
reports ``torch.cuda.max_memory_allocated()`` over the fit (after
``reset_peak_memory_stats``).

No tracemalloc: it sees only Python allocations, not torch's.

    python benchmarks/bench_memory.py            # about 1-2 minutes on 2 cores
    python benchmarks/bench_memory.py --quick
    python benchmarks/bench_memory.py --device cuda
"""

import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

OURS, HAND_CE, HAND_DYN = "skdynloss", "hand (a) CE", "hand (b) dynamical+record"
#: Differences smaller than this are flagged: page/arena granularity and the per-epoch
#: history (about 1.3 KB per epoch) dominate them, not the training's tensors.
NOISE_MB = 5.0
SKORCH, SKLEARN = "skorch defaults", "sklearn MLPClassifier"


def cases(args):
    """name -> training configuration (data set, network, optimizer, schedule)."""
    big_n = 10_000 if args.quick else 50_000
    steps = 300 if args.quick else args.steps
    return {
        "spiral-full-batch": dict(
            data="spiral",
            hidden=(100,),
            optimizer="sgd",
            lr=1.0,
            batch_size=-1,
            epochs=steps,
            amplitude=70.0,
            period=steps / 4,
            contenders=(OURS, HAND_CE, HAND_DYN),
        ),
        "digits-mini-batch": dict(
            data="digits",
            hidden=(100,),
            optimizer="adam",
            lr=1e-3,
            batch_size=64,
            epochs=5 if args.quick else 20,
            amplitude=70.0,
            period=5.0,
            contenders=(OURS, HAND_CE, HAND_DYN, SKORCH, SKLEARN),
        ),
        "big-full-batch": dict(
            label=f"{big_n // 1000}k x 100, width 512, full batch",
            data=f"big{big_n}",
            hidden=(512,),
            optimizer="sgd",
            lr=0.1,
            batch_size=-1,
            epochs=2 if args.quick else 3,
            amplitude=10.0,
            period=1.0,
            contenders=(OURS, HAND_CE, HAND_DYN),
        ),
        "big-batch-256": dict(
            label=f"{big_n // 1000}k x 100, width 512, batch 256",
            data=f"big{big_n}",
            hidden=(512,),
            optimizer="adam",
            lr=1e-3,
            batch_size=256,
            epochs=1,
            amplitude=10.0,
            period=0.25,
            contenders=(OURS, HAND_CE, HAND_DYN),
        ),
    }


def make_data(name, dtype):
    if name == "spiral":
        return C.spiral(dtype)
    if name == "digits":
        return C.digits(dtype)
    if name.startswith("big"):
        return C.classification(
            int(name[3:]), n_features=100, n_classes=10, dtype=dtype
        )
    raise ValueError(name)


# ------------------------------------------------------------------------- child


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _warm_torch(device, dtype, n_features, n_classes):
    """Pay torch's one-time lazy initialisations before the peak counter is reset.

    The first forward/backward/optimizer step of a process allocates thread pools,
    kernel workspaces and autograd state (about 80 MB on a CPU build) whatever is being
    trained; every contender gets the same warm-up, so the increments compare the fits.
    """
    import torch.nn.functional as F

    net = torch.nn.Sequential(
        torch.nn.Linear(n_features, 8), torch.nn.ReLU(), torch.nn.Linear(8, n_classes)
    ).to(device=device, dtype=dtype)
    x = torch.zeros(4, n_features, device=device, dtype=dtype)
    t = torch.zeros(4, dtype=torch.long, device=device)
    for opt in (
        torch.optim.SGD(net.parameters(), lr=0.1),
        torch.optim.Adam(net.parameters()),
    ):
        logits = net(x)
        ce = F.cross_entropy(logits, t, reduction="none")
        loss = (torch.ones(n_classes, device=device, dtype=dtype)[t] * ce).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        torch.stack([loss.detach(), ce.sum()]).tolist()
        (logits.argmax(dim=1) == t).sum().item()
    del net, opt, x, t, logits, ce, loss


def child(args):
    # The same imports for every contender.
    import sklearn.neural_network  # noqa: F401
    import skorch  # noqa: F401

    import skdynloss  # noqa: F401

    device = C.setup(args)
    dtype = C.DTYPES[args.dtype]
    cfg = cases(args)[args.case]
    X = np.load(os.path.join(args.data, "X.npy"))
    y = np.load(os.path.join(args.data, "y.npy"))
    n_classes = int(y.max()) + 1
    common = dict(
        module="mlp",
        hidden=cfg["hidden"],
        optimizer=cfg["optimizer"],
        lr=cfg["lr"],
        batch_size=cfg["batch_size"],
        epochs=cfg["epochs"],
        device=device,
    )
    _warm_torch(device, dtype, X.shape[1], n_classes)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_start = torch.cuda.memory_allocated()
    reset = _reset_peak()
    start = _rss_mb()
    if args.contender == OURS:
        clf = C.skdynloss_classifier(
            amplitude=cfg["amplitude"], period=cfg["period"], dtype=args.dtype, **common
        ).fit(X, y)
        C.check_fitted(clf, cfg["epochs"], OURS)
    elif args.contender in (HAND_CE, HAND_DYN):
        C.hand_fit(
            X,
            y,
            variant="ce" if args.contender == HAND_CE else "dynamical",
            n_classes=n_classes,
            amplitude=cfg["amplitude"],
            period=cfg["period"],
            dtype=dtype,
            **common,
        )
    elif args.contender == SKORCH:
        C.skorch_classifier(
            n_features=X.shape[1], n_classes=n_classes, dtype=dtype, **common
        ).fit(X, y)
    elif args.contender == SKLEARN:
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            C.sklearn_mlp(
                hidden=cfg["hidden"],
                batch_size=cfg["batch_size"],
                epochs=cfg["epochs"],
                lr=cfg["lr"],
            ).fit(X, y)
    else:
        raise ValueError(args.contender)
    out = {
        "start_mb": start,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "reset": reset,
    }
    if device.type == "cuda":
        torch.cuda.synchronize()
        out["cuda_peak_mb"] = (torch.cuda.max_memory_allocated() - cuda_start) / 2**20
    print("RESULT " + json.dumps(out))


# ------------------------------------------------------------------------ parent


def run_child(args, case, contender, data_dir):
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        "--case",
        case,
        "--contender",
        contender,
        "--data",
        data_dir,
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--dtype",
        args.dtype,
        "--steps",
        str(args.steps),
    ] + (["--quick"] if args.quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(
        f"child {case!r} / {contender!r} failed (exit {proc.returncode}):\n"
        f"{proc.stdout}\n{proc.stderr}"
    )


def main(argv=None):
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller cases (< 1 minute)")
    p.add_argument("--steps", type=int, default=2000, help="spiral full-batch steps")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="children per contender and case (the smallest increment is kept)",
    )
    p.add_argument(
        "--cases",
        default=None,
        help="comma-separated subset of spiral-full-batch, digits-mini-batch, "
        "big-full-batch, big-batch-256",
    )
    p.add_argument("--child", action="store_true", help=argparse_hidden())
    p.add_argument("--case", help=argparse_hidden())
    p.add_argument("--contender", help=argparse_hidden())
    p.add_argument("--data", help=argparse_hidden())
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    device = C.setup(args)
    dtype = C.DTYPES[args.dtype]
    all_cases = cases(args)
    chosen = list(all_cases) if args.cases is None else args.cases.split(",")
    unknown = [c for c in chosen if c not in all_cases]
    if unknown:
        sys.exit(f"error: unknown case(s) {unknown}; choose from {list(all_cases)}")
    config = {
        name: ", ".join(
            f"{k}={v}"
            for k, v in all_cases[name].items()
            if k not in ("contenders", "label")
        )
        + " | contenders: "
        + ", ".join(all_cases[name]["contenders"])
        for name in chosen
    }
    config["children per contender"] = args.repeats
    config["method"] = (
        "one fresh child per measurement; equal imports; data loaded from .npy; torch "
        "warmed up by a tiny unrelated step; peak "
        "counter reset (/proc/self/clear_refs) just before fit; fit increment = "
        "ru_maxrss after fit - RSS before fit"
    )
    C.print_header("skdynloss peak-memory benchmark", args, config)
    del device
    rows, summary = [], []
    methods = set()
    with tempfile.TemporaryDirectory() as tmp:
        for case in chosen:
            cfg = all_cases[case]
            data_dir = os.path.join(tmp, cfg["data"])
            if not os.path.isdir(data_dir):
                os.makedirs(data_dir)
                X, y = make_data(cfg["data"], dtype)
                np.save(os.path.join(data_dir, "X.npy"), np.ascontiguousarray(X))
                np.save(os.path.join(data_dir, "y.npy"), y)
            results = {}
            for contender in cfg["contenders"]:
                print(f"  measuring {case} / {contender}", file=sys.stderr, flush=True)
                runs = [
                    run_child(args, case, contender, data_dir)
                    for _ in range(args.repeats)
                ]
                results[contender] = min(
                    runs, key=lambda r: r["peak_mb"] - r["start_mb"]
                )
                methods.add(results[contender]["reset"])
            X_mb = os.path.getsize(os.path.join(data_dir, "X.npy")) / 2**20
            ref_inc = {
                h: max(results[h]["peak_mb"] - results[h]["start_mb"], 1e-9)
                for h in (HAND_CE, HAND_DYN)
            }
            for contender, r in results.items():
                inc = r["peak_mb"] - r["start_mb"]
                row = {
                    "case": cfg.get("label", case),
                    "X MB": X_mb,
                    "contender": contender,
                    "start RSS MB": r["start_mb"],
                    "peak RSS MB": r["peak_mb"],
                    "fit increment MB": inc,
                    "incr. / hand (a)": f"{inc / ref_inc[HAND_CE]:.2f}x",
                    "peak / hand (a)": f"{r['peak_mb'] / results[HAND_CE]['peak_mb']:.2f}x",
                }
                if args.device == "cuda":
                    row["cuda peak MB"] = r.get("cuda_peak_mb", float("nan"))
                rows.append(row)
            ours = results[OURS]
            inc = ours["peak_mb"] - ours["start_mb"]
            for ref in (HAND_CE, HAND_DYN):
                summary.append(
                    {
                        "case": cfg.get("label", case),
                        "vs": ref,
                        "increment ratio": f"{inc / ref_inc[ref]:.2f}x",
                        "peak RSS ratio": f"{ours['peak_mb'] / results[ref]['peak_mb']:.2f}x",
                        "extra MB": inc - ref_inc[ref],
                        "target": "<= 1.50x",
                        "verdict (increment)": C.verdict(inc / ref_inc[ref], 1.5)
                        + (
                            f" (only {inc - ref_inc[ref]:+.1f} MB)"
                            if abs(inc - ref_inc[ref]) < NOISE_MB
                            else ""
                        ),
                        "verdict (peak RSS)": C.verdict(
                            ours["peak_mb"] / results[ref]["peak_mb"], 1.5
                        ),
                    }
                )
                if args.device == "cuda":
                    summary[-1]["cuda ratio"] = (
                        f"{ours['cuda_peak_mb'] / max(results[ref]['cuda_peak_mb'], 1e-9):.2f}x"
                    )
    C.print_table(rows, title="Peak memory of one fit (MB = 2**20 bytes)")
    C.print_table(summary, title="skdynloss vs the hand loops")
    print(
        "peak-counter reset via /proc/self/clear_refs: "
        + ("yes" if methods == {True} else "NO (whole-life high-water marks)")
    )
    print(
        "fit increment = peak RSS during fit - RSS just before fit; it includes the "
        "copy of X that fit makes (torch.tensor copies), the network, optimizer "
        "state, autograd buffers and the history (skorch keeps one dict per epoch, "
        "about 1.3 KB each: 2000 full-batch epochs are about 2.6 MB)."
    )
    print(
        f"'only +x MB': increments that differ by less than {NOISE_MB:g} MB; their "
        "ratios say little (a 400 MB process), read the peak RSS ratio there."
    )


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
