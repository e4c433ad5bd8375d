"""The one timing harness of the skdynloss benchmarks, and their independent references.

* setup: ``parser`` (``--device``, ``--threads``, ``--dtype``, ``--repeats``,
  ``--quick``), ``setup``, ``print_header`` (versions, commit, threads, device, load);
* timing: ``interleaved`` runs every contender once untimed, then ``repeats`` rounds in
  which every contender runs once (the first one rotating), reading wall and process
  CPU time around each run with the device synchronised;
* results: ``time_table`` (median and spread per unit of work, ratio of medians to a
  reference), ``check`` / ``print_checks`` (a ratio of medians against its target,
  with the range of the per-round paired ratios), ``print_table``;
* data: the paper's spiral generated here from its description, digits standardised;
* references: ``reference_fit``, a torch loop written from the formula of
  the formula of the dynamical loss (the user guide's "The class weights") with
  torch alone. Nothing in this file imports a
  function, constant or seed derivation from skdynloss: the package is measured against
  an independent reference, never against itself. Only ``estimator`` (the contender)
  and ``print_header`` (its version) import skdynloss.

Scripts import this module as ``_harness`` (each puts its own folder on ``sys.path``)
before they import skdynloss: it puts the repository root first on ``sys.path``, so that
the scripts measure the checkout they are in.
"""

import argparse
import copy
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# A benchmark measures the checkout it lives in, whatever copy of skdynloss is installed.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# ----------------------------------------------------------------- setup and header


def parser(description, repeats=7):
    p = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    return add_common_arguments(p, repeats)


def add_common_arguments(p, repeats=7, quick=True):
    """--device, --threads, --dtype; --repeats unless ``repeats`` is None; --quick."""
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--threads", type=int, default=1, help="torch and BLAS threads (all contenders)"
    )
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    if repeats is not None:
        p.add_argument("--repeats", type=int, default=repeats, help="timed rounds")
    if quick:
        p.add_argument(
            "--quick", action="store_true", help="small sizes, for the tests"
        )
    return p


def setup(args):
    """Apply --threads, check --device (exit status 2 without CUDA); the torch.device."""
    if args.threads < 1:
        sys.exit("error: --threads must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "error: --device cuda was requested but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda})"
        )
    torch.set_num_threads(args.threads)
    try:  # the BLAS behind scikit-learn gets the same number of threads
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.zeros(1, device=device)  # the CUDA context, outside any timing
        sync(device)
    return device


def print_header(title, args, config):
    import sklearn
    import skorch

    import skdynloss

    print("=" * 78)
    print(title)
    print("=" * 78)
    print(f"python {platform.python_version()} on {platform.platform()}")
    print(
        f"torch {torch.__version__} | skorch {skorch.__version__} | scikit-learn "
        f"{sklearn.__version__} | numpy {np.__version__} | skdynloss {skdynloss.__version__}"
    )
    print(f"skdynloss source: {source_state(skdynloss.__file__)}")
    print(
        f"torch threads: {torch.get_num_threads()}; CPU cores visible: {os.cpu_count()}"
    )
    if args.device == "cuda":
        print(
            f"device: cuda ({torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda})"
        )
    else:
        print(f"device: cpu ({platform.processor() or platform.machine()})")
    rounds = getattr(args, "repeats", None)
    rounds = f"timed rounds: {rounds}; " if rounds is not None else ""
    print(f"dtype: {args.dtype}; {rounds}{load_note()}")
    for key, value in config.items():
        print(f"  {key}: {value}")
    print(flush=True)


def source_state(package_file):
    """Commit of the checkout holding the package, and whether it has local changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(package_file)))

    def git(*cmd):
        return subprocess.run(
            ["git", *cmd], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        head, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain")
        engine = git("log", "-1", "--format=%h", "--", "skdynloss")
    except (OSError, subprocess.SubprocessError):
        return f"{root} (not a git checkout)"
    changed = [line[3:] for line in dirty.splitlines() if "skdynloss/" in line]
    return f"{root} at {head or '?'} (skdynloss/ last changed in {engine or '?'})" + (
        f" + uncommitted changes in {', '.join(changed)}" if changed else ""
    )


def load_note():
    try:
        one, five, _ = os.getloadavg()
    except OSError:  # pragma: no cover
        return "load average unavailable"
    return f"load average (1, 5 min): {one:.2f}, {five:.2f} on {os.cpu_count()} cores"


# ----------------------------------------------------------------------- timing


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """(wall, cpu) seconds of ``fn()``. The process CPU time does not count waiting for
    a core, so with one thread it is the steadier clock on a shared machine; with CUDA
    only the wall time means anything."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(contenders, device, repeats, warmup=1, verbose=True):
    """Time callables side by side: {name: {"wall": [...], "cpu": [...]}} per round.

    Every contender runs ``warmup`` times untimed, then once per round, the first one
    rotating from round to round so that drift and other processes' load hit all alike.
    """
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    times = {name: {"wall": [], "cpu": []} for name in names}
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(i + r) % len(names)]
            wall, cpu = timed(contenders[name], device)
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
        if verbose:
            print(f"    round {r + 1}/{repeats}", file=sys.stderr, flush=True)
    return times


def median(values):
    return statistics.median(values)


def spread(values):
    """Half the range over the median, in percent: how far single rounds stray."""
    return 50.0 * (max(values) - min(values)) / median(values)


def paired(times, a, b, metric):
    """Per-round ratios a/b (both ran in the same round, close in time)."""
    return [x / y for x, y in zip(times[a][metric], times[b][metric], strict=True)]


# ------------------------------------------------------------------------ tables


def time_table(times, units, reference, unit="epoch", scale=1e3, scale_name="ms"):
    """Rows: median time per unit (wall, cpu), spread, ratio of medians to reference."""
    rows = []
    for name, t in times.items():
        n = units[name] if isinstance(units, dict) else units
        ref_n = units[reference] if isinstance(units, dict) else units
        row = {"contender": name, f"{unit}s": n}
        for metric in ("wall", "cpu"):
            row[f"{metric} median {scale_name}/{unit}"] = median(t[metric]) / n * scale
            row[f"{metric} +-%"] = f"{spread(t[metric]):.0f}%"
        for metric in ("wall", "cpu"):
            ref = median(times[reference][metric]) / ref_n
            row[f"/ {reference} ({metric})"] = f"{median(t[metric]) / n / ref:.2f}x"
        rows.append(row)
    return rows


def check(label, times, a, b, target=None):
    """A target row: ratio of the medians of a and b (wall, cpu), the range of the
    per-round paired ratios, and whether the target (a ratio at most ``target``) is met
    on the medians of both clocks (None: for information)."""
    row = {"check": label}
    verdicts = []
    for metric in ("wall", "cpu"):
        r = median(times[a][metric]) / median(times[b][metric])
        p = paired(times, a, b, metric)
        row[f"{metric} median"] = f"{r:.2f}x"
        row[f"{metric} rounds"] = f"{min(p):.2f}-{max(p):.2f}"
        verdicts.append(target is None or r <= target)
    row["target"] = "(info)" if target is None else f"<= {target:.2f}x"
    row["verdict"] = "" if target is None else verdict_of(verdicts)
    return row


def verdict_of(oks):
    """'met' when every clock meets the target, 'NOT met' when none does."""
    if all(oks):
        return "met"
    return "NOT met" if not any(oks) else "mixed (rerun)"


def verdict(ratio, target):
    return "met" if ratio <= target else "NOT met"


def print_checks(rows, title="Targets (ratio of medians; rounds: per-round range)"):
    print_table(rows, title=title)
    judged = [r for r in rows if r.get("verdict")]
    met = sum(r["verdict"] == "met" for r in judged)
    print(f"{met} of {len(judged)} targets met\n", flush=True)


def print_table(rows, columns=None, title=None):
    """``rows`` (a list of dicts) as an aligned plain-text table."""
    if title:
        print(title)
    columns = columns or (list(rows[0]) if rows else [])
    cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [
        max([len(str(c))] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)
    ]
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print(
            "  ".join(
                v.rjust(w) if _numeric(v) else v.ljust(w)
                for v, w in zip(r, widths, strict=True)
            )
        )
    print(flush=True)


def _fmt(v):
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def _numeric(s):
    try:
        float(s.rstrip("x%"))
        return True
    except ValueError:
        return False


# -------------------------------------------------------------------------- data


def spiral(dtype="float32", points=100, classes=3, noise=0.2, seed=0):
    """The paper's 3-class spiral, generated here from its description: per class j,
    radius linspace(0, 1, 100), angle linspace(2 pi j/3, 2 pi j/3 + 4 pi, 100) plus
    0.2 N(0, 1) noise (seed 0); x = r (sin a, cos a)."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for j in range(classes):
        r = np.linspace(0.0, 1.0, points)
        start = 2 * np.pi * j / classes
        a = np.linspace(start, start + 4 * np.pi, points) + noise * rng.standard_normal(
            points
        )
        X.append(np.c_[r * np.sin(a), r * np.cos(a)])
        y.append(np.full(points, j))
    return np.concatenate(X).astype(dtype), np.concatenate(y).astype(np.int64)


def digits(dtype="float32"):
    """scikit-learn's digits (1797 x 64, 10 classes), standardised."""
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X).astype(dtype), y.astype(np.int64)


# --------------------------------------------------------------------- reference


def mlp(n_features, widths, n_classes, seed=0, dtype="float32"):
    """A ReLU MLP built with torch alone (torch's default initialisation, seed ``seed``)."""
    torch.manual_seed(seed)
    sizes = [n_features, *widths]
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(sizes[-1], n_classes))
    return torch.nn.Sequential(*layers).to(DTYPES[str(dtype)])


class Copies:
    """``module=Copies(net)``: the estimator builds a fresh deep copy of ``net`` for every
    fit, so that it starts from the reference's very parameters (a plain class, so that
    estimators using it can be cloned and pickled)."""

    def __init__(self, net):
        self.net = net

    def __call__(self, n_features, n_classes):
        return copy.deepcopy(self.net)


def weight_schedule(t, n_classes, amplitude, period, plain_from=math.inf):
    """Gamma_c(t) of the dynamical loss's formula, for an array of times: shape (len(t), C).

    tau = t mod T; focus c = floor(t / T) mod C; raw focus weight the triangle
    1 -> A -> 1 over a period, others 1; normalised to sum to C. From ``plain_from`` on
    (the static last period) every weight is 1.
    """
    t = np.asarray(t, dtype=np.float64)
    tau = np.mod(t, period)
    up = 1 + 2 * (amplitude - 1) * tau / period
    down = 2 * amplitude - 1 - 2 * (amplitude - 1) * tau / period
    w = np.where(tau < period / 2, up, down)
    focus = np.floor(t / period).astype(np.int64) % n_classes
    G = np.repeat((n_classes / (w + n_classes - 1))[:, None], n_classes, axis=1)
    G[np.arange(len(t)), focus] = n_classes * w / (w + n_classes - 1)
    G[t >= plain_from - 1e-9] = 1.0
    return G


def fastest_optimizer(name, params, lr, momentum=0.0, device="cpu"):
    """torch.optim.SGD or Adam in torch's fastest own implementation on ``device``:
    fused (one kernel for all parameters) where torch offers it, else foreach."""
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[name]
    extra = {"momentum": momentum} if name == "sgd" else {}
    params = list(params)
    try:
        return cls(params, lr=lr, fused=True, **extra), "fused"
    except (RuntimeError, ValueError):
        return cls(params, lr=lr, foreach=True, **extra), "foreach"


def reference_fit(
    X,
    y,
    net,
    *,
    optimizer="sgd",
    lr=1.0,
    momentum=0.0,
    batch_size=-1,
    epochs=1,
    amplitude=70.0,
    period=10.0,
    static_last_period=True,
    device="cpu",
    seed=12345,
    record=True,
):
    """Train ``net`` (in place) with the dynamical loss, as a user would write it.

    F = (1/P) sum_mu Gamma_{y_mu}(t) CE(f(x_mu), y_mu) on every batch of P rows; the
    clock t advances by 1/steps_per_epoch at every optimizer step (step k of a fit runs
    at t = k / steps_per_epoch), and the last ``period`` epochs use plain
    cross-entropy. Batches: the whole data (``batch_size=-1``) or a seeded permutation
    split into ``batch_size`` rows. Optimizer: torch's fastest own SGD/Adam.

    The record, per epoch, as the estimator's ``dynamics_``: ``loss`` (the steps' F
    weighted by their batch sizes), ``cross_entropy`` and ``accuracy`` of the training
    batches from the same forward passes, before each update, ``class_weights`` (the
    mean over the epoch's steps) and ``time`` (the clock at the end of the epoch). The
    sums stay on the device and are read back once, after training.
    """
    X = torch.as_tensor(X, device=device).to(next(net.parameters()).dtype)
    y = torch.as_tensor(y, device=device)
    n, n_classes = len(y), int(y.max()) + 1
    bs = n if batch_size == -1 or batch_size >= n else batch_size
    spe = math.ceil(n / bs)
    t = np.arange(epochs * spe) / spe
    plain_from = epochs - period if static_last_period else math.inf
    G = weight_schedule(t, n_classes, amplitude, period, plain_from)
    W = torch.as_tensor(G, dtype=X.dtype, device=device)
    opt, _ = fastest_optimizer(optimizer, net.parameters(), lr, momentum, device)
    generator = torch.Generator().manual_seed(seed)
    stats = torch.empty(epochs * spe, 3, dtype=X.dtype, device=device)
    k = 0
    for _ in range(epochs):
        if bs == n:
            batches = ((X, y),)
        else:
            order = torch.randperm(n, generator=generator).to(device)
            batches = ((X[i], y[i]) for i in order.split(bs))
        for xb, yb in batches:
            log_p = F.log_softmax(net(xb), dim=1)
            # sum_mu Gamma_{y_mu} CE_mu (nll_loss does not normalise by the weights
            # with reduction="sum"), then a plain mean over the batch's P samples.
            weighted = F.nll_loss(log_p, yb, weight=W[k], reduction="sum")
            loss = weighted / len(yb)
            if record:
                lp = log_p.detach()
                ce = F.nll_loss(lp, yb, reduction="sum")
                correct = (lp.argmax(dim=1) == yb).sum(dtype=X.dtype)
                # one row per step, written in place: nothing allocated is kept
                torch.stack((weighted.detach(), ce, correct), out=stats[k])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            k += 1
    if not record:
        sync(device)
        return net, None
    sums = stats.view(epochs, spe, 3).sum(dim=1).double().cpu().numpy() / n
    record = {
        "epoch": np.arange(1, epochs + 1),
        "time": np.arange(1, epochs + 1, dtype=np.float64),
        "loss": sums[:, 0],
        "cross_entropy": sums[:, 1],
        "accuracy": sums[:, 2],
        "class_weights": G.reshape(epochs, spe, n_classes).mean(axis=1),
    }
    return net, record


# ------------------------------------------------------------------ contenders


def estimator(**params):
    """The contender: DynamicalLossClassifier without the sharpness computation."""
    from skdynloss import DynamicalLossClassifier

    params.setdefault("compute_sharpness", False)
    params.setdefault("random_state", 0)
    return DynamicalLossClassifier(**params)


def load_package(path):
    """Import the package directory ``path`` (another copy of skdynloss, renamed) under
    its directory name, to time two versions side by side in one process."""
    import importlib

    parent, name = os.path.split(os.path.abspath(path))
    if parent not in sys.path:
        sys.path.append(parent)
    return importlib.import_module(name)


def sklearn_mlp(*, hidden=(100,), solver="adam", lr=1e-3, batch_size=64, epochs=20):
    """scikit-learn's MLPClassifier running exactly ``epochs`` epochs, no L2 penalty."""
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(
        hidden_layer_sizes=tuple(hidden),
        solver=solver,
        learning_rate_init=lr,
        momentum=0.0,
        nesterovs_momentum=False,
        alpha=0.0,
        batch_size=batch_size,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=10**9,
        shuffle=True,
        random_state=0,
    )


def quiet_fit(model, X, y):
    """``model.fit(X, y)`` without the ConvergenceWarning of a fixed epoch budget."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


def warn_if_short(clf, epochs, name):
    """A fit that stopped early (divergence) would look fast: say so."""
    n_iter = getattr(clf, "n_iter_", epochs)
    if n_iter != epochs or getattr(clf, "diverged_", False):
        print(f"WARNING: {name} trained {n_iter} of {epochs} epochs", flush=True)
