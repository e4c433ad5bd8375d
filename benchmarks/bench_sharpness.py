"""Cost and accuracy of ``sharpness_``: fit with and without ``compute_sharpness``.

Target: with the defaults, fitting with ``compute_sharpness=True`` takes at most
1.25x the time of fitting without it on the digits MLP (64 -> 100 -> 10, 20 epochs,
batch 64). Also reports the Hessian-vector products used, Lanczos' residual, and the
error of the reported value against a tight-tolerance reference and against the dense
Hessian's eigvalsh on a small network. Contenders are timed interleaved in one process.

    python benchmarks/bench_sharpness.py [--repeats 5] [--device cuda]
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _harness import (  # noqa: E402
    check,
    digits,
    interleaved,
    median,
    parser,
    print_checks,
    print_header,
    print_table,
    setup,
    time_table,
)

from skdynloss import DynamicalLossClassifier, hessian_eigenvalues  # noqa: E402


def main(argv=None):
    p = parser(__doc__.splitlines()[0], repeats=5)
    p.add_argument("--epochs", type=int, default=20)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.epochs = 1, 3
    device = setup(args)
    X, y = digits(args.dtype)
    config = {
        "data": f"digits {X.shape}, standardised",
        "model": "MLP 64 -> 100 -> 10 (ReLU)",
        "training": f"Adam lr 1e-3, batch 64, {args.epochs} epochs, amplitude 10, period 2",
        "sharpness": "defaults: all rows (<= sharpness_max_samples=2048), Lanczos tol 1e-4",
        "timing": f"medians of {args.repeats} interleaved rounds, after one warm-up each",
    }
    print_header("sharpness_: cost of compute_sharpness=True", args, config)

    def make(compute):
        return DynamicalLossClassifier(
            amplitude=10,
            period=2,
            max_epochs=args.epochs,
            batch_size=64,
            device=args.device,
            dtype=args.dtype,
            random_state=0,
            compute_sharpness=compute,
        )

    fitted = {}

    def fit(compute):
        def run():
            fitted[compute] = make(compute).fit(X, y)

        return run

    times = interleaved(
        {"without": fit(False), "with": fit(True)}, device, repeats=args.repeats
    )
    clf = fitted[True]
    info = clf.sharpness_info_

    # Accuracy: the same Hessian at a tight tolerance, timed on its own.
    Xt = torch.tensor(X, dtype=next(clf.module_.parameters()).dtype, device=clf.device_)
    yt = torch.tensor(y, device=clf.device_)
    start = time.perf_counter()
    tight = hessian_eigenvalues(clf.module_, F.cross_entropy, Xt, yt, k=1, tol=1e-10)
    t_tight = time.perf_counter() - start
    reference = float(tight.eigenvalues[0])
    rel_err = abs(clf.sharpness_ - reference) / abs(reference)

    print_table(
        time_table(times, 1, "without", unit="fit"),
        title=f"fit time (medians of {args.repeats} rounds)",
    )
    extra = median(times["with"]["cpu"]) - median(times["without"]["cpu"])
    print_table(
        [
            {
                "sharpness_": clf.sharpness_,
                "reference (tol 1e-10)": reference,
                "relative error": rel_err,
                "n_matvec": info["n_matvec"],
                "reference n_matvec": tight.n_matvec,
                "residual": info["residual"],
                "converged": info["converged"],
                "sharpness-only cpu seconds (medians)": extra,
            }
        ],
        title="sharpness_ and how it converged",
    )
    print_checks(
        [check("fit with sharpness / fit without", times, "with", "without", 1.25)]
    )
    print(
        f"target: relative accuracy <= 1e-3: {'met' if rel_err <= 1e-3 else 'NOT met'}"
    )
    print(f"(reference computation alone took {t_tight:.3f} s)")

    # Against the dense Hessian on a small network, in float64.
    torch.manual_seed(0)
    small = torch.nn.Sequential(
        torch.nn.Linear(64, 8), torch.nn.Tanh(), torch.nn.Linear(8, 10)
    ).double()
    Xs = torch.tensor(X[:200], dtype=torch.float64)
    ys = torch.tensor(y[:200])
    params = {k: v.detach() for k, v in small.named_parameters()}
    flat = torch.cat([v.reshape(-1) for v in params.values()])
    shapes = [(k, v.shape, v.numel()) for k, v in params.items()]

    def loss_of(theta):
        chunks, offset = {}, 0
        for name, shape, n in shapes:
            chunks[name] = theta[offset : offset + n].reshape(shape)
            offset += n
        logits = torch.func.functional_call(small, chunks, (Xs,))
        return F.cross_entropy(logits, ys)

    dense = torch.func.hessian(loss_of)(flat)
    exact = float(torch.linalg.eigvalsh(dense)[-1])
    lanczos = float(hessian_eigenvalues(small, F.cross_entropy, Xs, ys).eigenvalues[0])
    print_table(
        [
            {
                "n_params": flat.numel(),
                "eigvalsh": exact,
                "Lanczos": lanczos,
                "relative error": abs(lanczos - exact) / abs(exact),
            }
        ],
        title="small float64 network: Lanczos against the dense Hessian",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
