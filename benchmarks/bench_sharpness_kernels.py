"""Cost of the sharpness (top Hessian eigenvalue) on the digits MLP.

Sections (one process, same thread count throughout):

fit      the reference: a hand-written 20-epoch, batch-64 SGD fit (lr 0.1) of
         64 -> 100 -> ReLU -> 10 on digits (1797 x 64, standardised), the
         network whose sharpness is then measured.  Target: the whole sharpness
         computation costs at most 25 % of this fit.
hvp      one Hessian-vector product on all 1797 rows with each implementation
         considered: the graph of the gradient built once and differentiated
         again per vector (``retain_graph=True``; what ``hessian_operator`` uses),
         double backward recomputing forward and gradient per vector,
         forward-over-reverse ``torch.func.jvp(grad)``, reverse-over-reverse
         ``torch.func.vjp(grad)`` and ``torch.autograd.functional.hvp``.  All
         must agree with the first to float precision.
eigen    ``hessian_eigenvalues(k=1)`` end to end at several ``tol`` and ``ncv``:
         time, Hessian-vector products, the reported residual and the relative error
         against a tight (``tol=1e-10``) float64 reference.

The BLAS row matters with more than one thread (``--threads 2``): there
NumPy/SciPy's BLAS pool, woken by every ARPACK step, competes with torch's
spinning OpenMP workers.

    python benchmarks/bench_sharpness_kernels.py               # ~20 s, 1 thread
    python benchmarks/bench_sharpness_kernels.py --threads 2
    python benchmarks/bench_sharpness_kernels.py --device cuda
"""

import argparse
import copy
import os
import sys
from contextlib import nullcontext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as C  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.func import functional_call, grad, jvp, vjp  # noqa: E402

import skdynloss._sharpness as sharpness  # noqa: E402
from skdynloss import hessian_eigenvalues, hessian_operator  # noqa: E402

FIT = {"epochs": 20, "batch_size": 64, "optimizer": "sgd", "lr": 0.1}
TARGET = 0.25  # sharpness time / fit time


# ------------------------------------------------------------------ HVP kernels


def model_parameters(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(vector, params):
    sizes = [p.numel() for p in params]
    return [c.view_as(p) for c, p in zip(vector.split(sizes), params, strict=True)]


def hvp_kernels(model, X, y):
    """name -> callable(v) returning H v, v a flat tensor in the model's dtype."""
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    detached = {n: p.detach() for n, p in zip(names, params, strict=True)}

    def loss_of(param_dict):
        return F.cross_entropy(functional_call(model, param_dict, (X,)), y)

    op = hessian_operator(model, F.cross_entropy, X, y)

    def retained(v):
        # The library's operator, minus its numpy float64 boundary.
        return flat(op._hvp(unflat(v, params)))

    def double_backward(v):
        g = torch.autograd.grad(F.cross_entropy(model(X), y), params, create_graph=True)
        return flat(torch.autograd.grad(g, params, grad_outputs=unflat(v, params)))

    def func_jvp(v):
        tangent = dict(zip(names, unflat(v, params), strict=True))
        return flat(jvp(grad(loss_of), (detached,), (tangent,))[1].values())

    def func_vjp(v):
        _, pullback = vjp(grad(loss_of), detached)
        cotangent = dict(zip(names, unflat(v, params), strict=True))
        return flat(pullback(cotangent)[0].values())

    def functional_hvp(v):
        def loss_of_tuple(*ps):
            return loss_of(dict(zip(names, ps, strict=True)))

        vs = tuple(unflat(v, params))
        return flat(
            torch.autograd.functional.hvp(loss_of_tuple, tuple(detached.values()), vs)[
                1
            ]
        )

    return {
        "retained graph (skdynloss)": retained,
        "double backward": double_backward,
        "torch.func jvp(grad)": func_jvp,
        "torch.func vjp(grad)": func_vjp,
        "autograd.functional.hvp": functional_hvp,
    }


def bench_hvp(model, X, y, device, repeats, per_call):
    params = [p for p in model.parameters() if p.requires_grad]
    n = sum(p.numel() for p in params)
    g = torch.Generator(device=device).manual_seed(0)
    v = torch.randn(n, generator=g, device=device, dtype=params[0].dtype)

    build_times = [
        C.timed(lambda: hessian_operator(model, F.cross_entropy, X, y), device)
        for _ in range(repeats)
    ]
    kernels = hvp_kernels(model, X, y)
    reference = kernels["retained graph (skdynloss)"](v)
    contenders = {}
    rows = []
    for name, kernel in kernels.items():
        out = kernel(v)
        err = float((out - reference).norm() / reference.norm())
        rows.append({"implementation": name, "rel. diff vs retained": err})

        def run(kernel=kernel):
            for _ in range(per_call):
                kernel(v)

        contenders[name] = run
    times = C.interleaved(contenders, device, repeats=repeats, verbose=False)
    for row in rows:
        t = times[row["implementation"]]
        row["wall best ms/HVP"] = min(t["wall"]) / per_call * 1e3
        row["wall median"] = C.median(t["wall"]) / per_call * 1e3
        row["cpu best ms/HVP"] = min(t["cpu"]) / per_call * 1e3
    base = rows[0]["cpu best ms/HVP"]
    for row in rows:
        row["ratio (cpu)"] = f"{row['cpu best ms/HVP'] / base:.2f}x"
    C.print_table(rows, title=f"hvp: one product, n_params={n}, {len(X)} rows")
    wall, cpu = zip(*build_times, strict=True)
    print(
        f"retained graph, one-off graph build: wall best {min(wall) * 1e3:.2f} ms, "
        f"median {C.median(wall) * 1e3:.2f} ms; cpu best {min(cpu) * 1e3:.2f} ms\n"
    )


# ------------------------------------------------------------------ eigensolver


def bench_eigen(model, X, y, device, repeats):
    model64 = copy.deepcopy(model).double()
    exact = hessian_eigenvalues(
        model64, F.cross_entropy, X.double(), y, k=3, tol=1e-10
    ).eigenvalues
    print(
        "float64 reference (tol=1e-10): top-3 eigenvalues "
        + ", ".join(f"{v:.6f}" for v in exact)
        + f"; relative gap {(exact[0] - exact[1]) / exact[0]:.3f}\n"
    )
    settings = [
        ("tol=1e-3", {"tol": 1e-3}),
        ("tol=1e-4 (package)", {"tol": 1e-4}),
        ("tol=1e-4, ncv=6", {"tol": 1e-4, "ncv": 6}),
        ("tol=1e-4, ncv=12", {"tol": 1e-4, "ncv": 12}),
        ("tol=1e-4, ncv=20 (SciPy)", {"tol": 1e-4, "ncv": 20}),
        ("tol=1e-6", {"tol": 1e-6}),
    ]
    results, contenders = {}, {}
    for name, kwargs in settings:

        def run(kwargs=kwargs, name=name):
            results[name] = hessian_eigenvalues(
                model, F.cross_entropy, X, y, k=1, random_state=0, **kwargs
            )

        contenders[name] = run

    unlimited = "tol=1e-4, BLAS threads not limited"

    def run_unlimited():
        # What the package measured before limiting NumPy/SciPy BLAS to one
        # thread around ARPACK (see skdynloss._sharpness._SerialBlas).
        serial, sharpness._serial_blas = sharpness._serial_blas, nullcontext()
        try:
            results[unlimited] = hessian_eigenvalues(
                model, F.cross_entropy, X, y, k=1, random_state=0, tol=1e-4
            )
        finally:
            sharpness._serial_blas = serial

    contenders[unlimited] = run_unlimited
    settings.append((unlimited, {}))
    times = C.interleaved(contenders, device, repeats=repeats, verbose=False)
    rows = []
    for name, _ in settings:
        r = results[name]
        rows.append(
            {
                "setting": name,
                "wall best ms": min(times[name]["wall"]) * 1e3,
                "wall median": C.median(times[name]["wall"]) * 1e3,
                "cpu best ms": min(times[name]["cpu"]) * 1e3,
                "n_matvec": r.n_matvec,
                "residual": float(r.residuals[0]),
                "rel. error": abs(r.eigenvalues[0] - exact[0]) / exact[0],
                "converged": r.converged,
            }
        )
    ncv = sharpness._default_ncv(1, len(model_parameters(model)))
    C.print_table(rows, title=f"eigen: hessian_eigenvalues(k=1), default ncv={ncv}")
    return times


def main(argv=None):
    parser = C.add_common_arguments(argparse.ArgumentParser(description=__doc__), 7)
    parser.add_argument(
        "--per-call", type=int, default=10, help="HVPs per timed call (hvp section)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.per_call = 1, 2
    device = C.setup(args)
    dtype = C.DTYPES[args.dtype]
    C.print_header(
        "Sharpness kernels: Hessian-vector products and Lanczos on the digits MLP",
        args,
        {**FIT, "module": "64 -> 100 -> ReLU -> 10", "repeats": args.repeats},
    )
    X_np, y_np = C.digits(args.dtype)
    n_classes = int(y_np.max()) + 1

    def fit():
        net = C.mlp(X_np.shape[1], (100,), n_classes, dtype=args.dtype).to(device)
        # amplitude 1: plain cross-entropy
        return C.reference_fit(
            X_np, y_np, net, amplitude=1.0, period=1.0, device=device, **FIT
        )[0]

    model = fit()
    fit_times = C.interleaved({"fit": fit}, device, repeats=3, verbose=False)["fit"]
    fit_best = {metric: min(fit_times[metric]) for metric in ("wall", "cpu")}
    print(
        f"fit: 20 epochs, batch 64: wall best {fit_best['wall'] * 1e3:.0f} ms, "
        f"median {C.median(fit_times['wall']) * 1e3:.0f} ms; "
        f"cpu best {fit_best['cpu'] * 1e3:.0f} ms\n"
    )
    X = torch.as_tensor(X_np, device=device, dtype=dtype)
    y = torch.as_tensor(y_np, device=device)
    model.eval()

    bench_hvp(model, X, y, device, args.repeats, args.per_call)
    times = bench_eigen(model, X, y, device, args.repeats)

    for name in ("tol=1e-4 (package)", "tol=1e-3"):
        wall = min(times[name]["wall"]) / fit_best["wall"]
        cpu = min(times[name]["cpu"]) / fit_best["cpu"]
        print(
            f"sharpness ({name}) / fit, best times: wall {wall:.1%}, cpu {cpu:.1%} "
            f"(target <= {TARGET:.0%}: {C.verdict(min(wall, cpu), TARGET)})"
        )
    print(C.load_note())


if __name__ == "__main__":
    main()
