"""The training engine: stacks against a hand-written stacked loop, and a CNN grid.

Two sections, each timed side by side in interleaved rounds (``_harness.interleaved``,
one torch thread unless ``--threads``):

stack     the paper's regime: the spiral (300 x 2, 3 classes), K networks 2 -> 100 ->
          ReLU -> 3 (K in ``--stacks``, default 1, 8 and 16), full-batch gradient
          descent (fused SGD, lr 0.1), 300 steps, amplitudes spread over 1..70, period
          50 (a sixth of the run). Contenders: ``reference``, K models written from the formula (parameters
          stacked by hand into (K, ...) tensors, ``torch.baddbmm`` per layer, the
          weighted cross-entropy of each model at its own class weights from
          ``_harness.weight_schedule``, the sum of the K losses stepped by torch's
          fused SGD, the per-epoch record summed on the device); ``fit_lockstep`` of K
          estimators; and at K = 1 the estimator's own ``fit``. The table gives the
          time per model-step and the ratio to the reference.
cnn-grid  a grid of 16 candidates (4 amplitudes x 4 periods) x 5 folds of
          ``module="cnn"`` on scikit-learn's 8x8 digits (Adam 1e-3, batches of 64,
          ``--cnn-epochs`` epochs): LockstepGridSearchCV against GridSearchCV(n_jobs=1),
          and whether their ``mean_test_score`` agree.

    python benchmarks/bench_engine.py              # ~5 min on one core
    python benchmarks/bench_engine.py --quick      # seconds
    python benchmarks/bench_engine.py --sections stack --stacks 1 8 16 32

The reference is written from the formula and imports nothing of the package.
"""

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

SECTIONS = ("stack", "cnn-grid")


def stacked_reference(X, y, K, *, steps, amplitudes, period, lr, seed=0):
    """K MLPs 2-100-3 trained at once by full-batch gradient descent, by hand."""
    X = torch.as_tensor(X)
    y = torch.as_tensor(y)
    n, n_classes = len(y), int(y.max()) + 1
    g = torch.Generator().manual_seed(seed)
    dtype = X.dtype
    shapes = [(100, X.shape[1]), (100,), (n_classes, 100), (n_classes,)]
    params = [
        (0.1 * torch.randn(K, *s, generator=g, dtype=dtype)).requires_grad_()
        for s in shapes
    ]
    t = np.arange(steps, dtype=np.float64)
    plain_from = steps - period
    G = np.stack(
        [H.weight_schedule(t, n_classes, a, period, plain_from) for a in amplitudes],
        axis=1,
    )  # (steps, K, C)
    W = torch.as_tensor(G, dtype=dtype)
    opt = torch.optim.SGD(params, lr=lr, fused=True)
    xb = X.T.expand(K, *X.T.shape)  # (K, F, n): each model's batch, class-major below
    yb = y.expand(K, n)
    stats = torch.zeros(K, 3, dtype=torch.float64)
    for k in range(steps):
        w1, b1, w2, b2 = params
        h = torch.relu(torch.baddbmm(b1.unsqueeze(2), w1, xb))
        out = torch.baddbmm(b2.unsqueeze(2), w2, h)  # (K, C, n)
        log_p = torch.log_softmax(out, dim=1)
        ce = -log_p.gather(1, yb.unsqueeze(1)).squeeze(1)  # (K, n)
        # F_k = (1/P) sum_mu Gamma_{k, y_mu} CE_mu: a plain mean over the batch.
        losses = (W[k].gather(1, yb) * ce).mean(dim=1)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        with torch.no_grad():
            correct = (out.max(dim=1).indices == yb).sum(dim=1)
            stats += torch.stack(
                (losses.double(), ce.sum(dim=1).double(), correct.double()), dim=1
            )
    return stats.tolist()


def stack_section(args, device):
    from sklearn.base import clone

    from skdynloss import DynamicalLossClassifier, fit_lockstep

    steps = 40 if args.quick else 300
    period = steps / 6
    X, y = H.spiral(args.dtype)
    base = DynamicalLossClassifier(
        hidden_layer_sizes=(100,),
        optimizer="sgd",
        momentum=0.0,
        lr=0.1,
        batch_size=-1,
        max_epochs=steps,
        period=period,
        dtype=args.dtype,
        compute_sharpness=False,
        device=str(device),
    )
    rows = []
    for K in args.stacks:
        amplitudes = np.geomspace(1.0, 70.0, K) if K > 1 else np.array([70.0])
        estimators = [
            clone(base).set_params(amplitude=float(a), random_state=i)
            for i, a in enumerate(amplitudes)
        ]
        contenders = {
            "reference": lambda K=K, a=amplitudes: stacked_reference(
                X, y, K, steps=steps, amplitudes=a, period=period, lr=0.1
            ),
            "fit_lockstep": lambda e=estimators: fit_lockstep(e, X, y),
        }
        if K == 1:
            contenders["fit"] = lambda e=estimators: e[0].fit(X, y)
        times = H.interleaved(contenders, device, args.repeats, verbose=False)
        ref = H.median(times["reference"]["cpu"])
        for name, t in times.items():
            per = {m: H.median(t[m]) / (K * steps) * 1e6 for m in ("wall", "cpu")}
            rows.append(
                {
                    "K": K,
                    "contender": name,
                    "wall us/model-step": f"{per['wall']:.1f}",
                    "cpu us/model-step": f"{per['cpu']:.1f}",
                    "/ reference (cpu)": f"{H.median(t['cpu']) / ref:.2f}x",
                    "+-%": f"{H.spread(t['cpu']):.0f}%",
                }
            )
        print(f"  K={K} done", file=sys.stderr, flush=True)
    H.print_table(rows, title=f"stack: spiral 2-100-3, full batch, {steps} steps")


def cnn_grid_section(args, device):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from skdynloss import DynamicalLossClassifier, LockstepGridSearchCV

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(args.dtype)
    if args.quick:
        X, y = X[:300], y[:300]
    epochs = 1 if args.quick else args.cnn_epochs
    clf = DynamicalLossClassifier(
        module="cnn",
        image_shape=(1, 8, 8),
        hidden_layer_sizes=(32,),
        optimizer="adam",
        lr=1e-3,
        batch_size=64,
        max_epochs=epochs,
        dtype=args.dtype,
        compute_sharpness=False,
        random_state=0,
        device=str(device),
    )
    grid = {"amplitude": [1, 5, 20, 70], "period": [0.25, 0.5, 1, 2]}
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    found = {}

    def run(cls, name):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            found[name] = cls(clf, grid, cv=cv, n_jobs=1).fit(X, y)

    contenders = {
        "GridSearchCV": lambda: run(GridSearchCV, "GridSearchCV"),
        "LockstepGridSearchCV": lambda: run(LockstepGridSearchCV, "Lockstep"),
    }
    times = H.interleaved(contenders, device, max(1, args.repeats // 3), verbose=False)
    a = found["Lockstep"].cv_results_["mean_test_score"]
    b = found["GridSearchCV"].cv_results_["mean_test_score"]
    agree = bool(np.allclose(a, b, atol=1e-6))
    rows = []
    for name, t in times.items():
        rows.append(
            {
                "contender": name,
                "wall s": f"{H.median(t['wall']):.2f}",
                "cpu s": f"{H.median(t['cpu']):.2f}",
            }
        )
    ratio = H.median(times["GridSearchCV"]["wall"]) / H.median(
        times["LockstepGridSearchCV"]["wall"]
    )
    H.print_table(
        rows,
        title=f"cnn-grid: 16 candidates x 5 folds, module='cnn' on digits, "
        f"{epochs} epochs",
    )
    print(
        f"LockstepGridSearchCV is {ratio:.2f}x faster than GridSearchCV(n_jobs=1) "
        f"(target >= 3x: {'met' if ratio >= 3 else 'NOT met'}); mean_test_score "
        f"{'agree' if agree else 'DIFFER'} (max |diff| {np.max(np.abs(a - b)):.1e})"
    )


def main(argv=None):
    p = H.parser(__doc__.splitlines()[0], repeats=5)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--stacks", nargs="+", type=int, default=[1, 8, 16])
    p.add_argument("--cnn-epochs", type=int, default=3)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 2)
        args.stacks = [k for k in args.stacks if k <= 8]
    device = H.setup(args)
    warnings.simplefilter("ignore", UserWarning)
    H.print_header(
        "skdynloss engine: stacks and a CNN grid",
        args,
        {"sections": " ".join(args.sections), "stacks": args.stacks},
    )
    if "stack" in args.sections:
        stack_section(args, device)
    if "cnn-grid" in args.sections:
        cnn_grid_section(args, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
