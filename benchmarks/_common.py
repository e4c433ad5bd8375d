"""Shared pieces of the skdynloss benchmarks: setup, timers, hand loops, data, tables.

Everything a benchmark compares skdynloss with lives here, so that the scripts time the
same reference code:

* :func:`hand_fit` -- the hand-written torch loops. ``variant="ce"`` is the loop a user
  would write for plain cross-entropy; ``variant="dynamical"`` computes the same
  dynamical loss as skdynloss by hand (weights precomputed with
  :func:`skdynloss.class_weights`, a plain mean of ``Gamma_y * CE``) and keeps a
  per-step record of loss, cross-entropy and accuracy, as skdynloss records them.
  Both use the same module class, dtype, device, optimizer and batching (tensor
  indexing, seeded ``randperm``) as skdynloss.
* :func:`interleaved` -- warm every contender up once, then time them in turn, round
  after round, so that drift (thermal, other processes) affects all of them equally.
* :func:`print_table` -- aligned plain-text tables.

Scripts import this module as ``_common`` (they run from any directory: each script puts
its own folder on ``sys.path``).
"""

import argparse
import math
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ----------------------------------------------------------------- setup and header


def add_common_arguments(parser):
    """Options every benchmark takes: device, threads, dtype."""
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the networks and data live (default: cpu)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch (and BLAS) threads for every contender (default: 1)",
    )
    parser.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default="float32",
        help="floating point type of networks and data (default: float32)",
    )
    return parser


def setup(args):
    """Apply --threads and check --device; return the torch.device.

    Fails with a clear message (exit status 2) when CUDA is asked for but unavailable.
    """
    if args.threads < 1:
        sys.exit("error: --threads must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "error: --device cuda was requested but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}). "
            "Run on a machine with an NVIDIA GPU and a CUDA build of torch, or use "
            "--device cpu."
        )
    torch.set_num_threads(args.threads)
    # numpy/scipy BLAS (scikit-learn's MLPClassifier) gets the same number of threads.
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.zeros(1, device=device)  # create the context outside any timing
        torch.cuda.synchronize(device)
    return device


def print_header(title, args, config):
    """Print versions, threads, device and the exact configuration of a run."""
    import sklearn
    import skorch

    import skdynloss

    print("=" * 78)
    print(title)
    print("=" * 78)
    print(f"python {platform.python_version()} on {platform.platform()}")
    print(
        f"torch {torch.__version__} | skorch {skorch.__version__} | "
        f"scikit-learn {sklearn.__version__} | numpy {np.__version__} | "
        f"skdynloss {skdynloss.__version__}"
    )
    print(f"skdynloss source: {source_state()}")
    print(
        f"torch threads: {torch.get_num_threads()} (--threads {args.threads}); "
        f"CPU cores visible: {os.cpu_count()}"
    )
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        print(
            f"device: cuda ({torch.cuda.get_device_name(0)}, "
            f"{props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})"
        )
    else:
        print(f"device: cpu ({platform.processor() or platform.machine()})")
    print(f"dtype: {args.dtype}")
    print("configuration:")
    for key, value in config.items():
        print(f"  {key}: {value}")
    print(flush=True)


def source_state():
    """Commit of the checkout and whether skdynloss/ has uncommitted changes."""
    import subprocess

    import skdynloss

    root = os.path.dirname(os.path.dirname(os.path.abspath(skdynloss.__file__)))
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "skdynloss"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return f"{root} (not a git checkout)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"{root} at {head or '?'}" + (
        f" + uncommitted changes in {', '.join(changed)}" if changed else ""
    )


# ----------------------------------------------------------------------- timing


def sync(device):
    """Wait for queued device work (CUDA); a no-op on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """Wall-clock and process CPU seconds ``fn()`` takes, device synchronised around it.

    The CPU time (``time.process_time``: all threads of this process) is the robust
    measure on a shared machine with ``--threads 1``: it does not count the time the
    process waited for a core. With CUDA only the wall time means anything.
    """
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(contenders, device, repeats=3, warmup=1, verbose=True):
    """Time several callables side by side.

    Each contender runs ``warmup`` times untimed; then ``repeats`` rounds run every
    contender once per round (the starting contender rotates from round to round), so
    drift and load from other processes affect all of them alike.

    Parameters
    ----------
    contenders : dict of str -> callable
    device : torch.device
    repeats, warmup : int

    Returns
    -------
    times : dict of str -> {"wall": [seconds...], "cpu": [seconds...]}
    """
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
        if verbose:
            print(f"    warmed up: {name}", file=sys.stderr, flush=True)
    times = {name: {"wall": [], "cpu": []} for name in names}
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(i + r) % len(names)]
            wall, cpu = timed(contenders[name], device)
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
        if verbose:
            print(f"    round {r + 1}/{repeats} done", file=sys.stderr, flush=True)
    return times


def best(ts):
    return min(ts)


def median(ts):
    return statistics.median(ts)


def load_note():
    """One line on how busy the machine is (other processes distort wall times)."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:  # pragma: no cover - not on every platform
        return "load average: unavailable"
    return (
        f"load average (1 min, 5 min): {one:.2f}, {five:.2f} on {os.cpu_count()} cores"
        + (
            "  -> machine shared: trust the CPU-time columns more than wall"
            if one > 0.75 * (os.cpu_count() or 1)
            else ""
        )
    )


# ------------------------------------------------------------------------ tables


def per_unit(times, units, metric="wall", stat=min):
    """Seconds per unit of work (step, epoch, row...) of every contender."""
    return {name: stat(t[metric]) / units[name] for name, t in times.items()}


def result_rows(times, units, reference, unit="step", scale=1e3, scale_name="ms"):
    """Rows for :func:`print_table`: per-unit times (best and median) and ratios.

    ``ratio`` columns divide a contender's best time per unit by the reference's.
    """
    wall = per_unit(times, units, "wall")
    wall_med = per_unit(times, units, "wall", median)
    cpu = per_unit(times, units, "cpu")
    rows = []
    for name in times:
        rows.append(
            {
                "contender": name,
                unit + "s": units[name],
                f"wall best {scale_name}/{unit}": wall[name] * scale,
                f"wall median {scale_name}/{unit}": wall_med[name] * scale,
                f"cpu best {scale_name}/{unit}": cpu[name] * scale,
                f"ratio vs {reference} (wall)": f"{wall[name] / wall[reference]:.2f}x",
                "(cpu)": f"{cpu[name] / cpu[reference]:.2f}x",
            }
        )
    return rows


def ratio(times, units, a, b, metric="wall", stat=min):
    """Time per unit of ``a`` over that of ``b`` (best of the rounds by default)."""
    pu = per_unit(times, units, metric, stat)
    return pu[a] / pu[b]


def print_table(rows, columns=None, title=None):
    """Print ``rows`` (list of dicts) as an aligned plain-text table."""
    if title:
        print(title)
    if columns is None:
        columns = list(rows[0]) if rows else []
    cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [
        max(len(str(c)), *(len(r[i]) for r in cells)) if cells else len(str(c))
        for i, c in enumerate(columns)
    ]
    line = "  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True))
    print(line)
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


def verdict(ratio, target):
    """'met' or 'NOT met' for a ratio that must be at most ``target``."""
    return "met" if ratio <= target else "NOT met"


# -------------------------------------------------------------------------- data


def spiral(dtype):
    """The paper's spiral: 300 x 2, 3 classes (seed 0)."""
    import skdynloss

    X, y = skdynloss.make_spiral()
    return X.astype(np.dtype(str(dtype).replace("torch.", ""))), y.astype(np.int64)


def digits(dtype):
    """scikit-learn's digits, standardised: 1797 x 64, 10 classes."""
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    return X.astype(np.dtype(str(dtype).replace("torch.", ""))), y.astype(np.int64)


def classification(n_samples, n_features=20, n_classes=10, dtype=torch.float32):
    """make_classification with ``n_classes`` classes (seed 0)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=min(n_features, 10),
        n_classes=n_classes,
        random_state=0,
    )
    return X.astype(np.dtype(str(dtype).replace("torch.", ""))), y.astype(np.int64)


# --------------------------------------------------------------------- contenders


def make_module(kind, n_features, n_classes, hidden=(100,), image_shape=None):
    """The torch module skdynloss builds for ``module=kind``, built the same way."""
    from skdynloss._modules import CNN, MLP

    if kind == "mlp":
        return MLP(n_features, n_classes, tuple(hidden))
    if kind == "cnn":
        return CNN(tuple(image_shape), n_classes, tuple(hidden))
    raise ValueError(kind)


def make_optimizer(name, params, lr, momentum=0.0, impl="torch"):
    """SGD or Adam: ``impl="torch"`` is torch.optim's default implementation,
    ``"fused"`` torch's single-kernel one, ``"flat"`` the flat-buffer one that
    skdynloss's ``optimizer="sgd"``/``"adam"`` use (``skdynloss._optim``)."""
    if impl == "flat":
        from skdynloss._optim import FlatAdam, FlatSGD

        sgd, adam, extra = FlatSGD, FlatAdam, {}
    else:
        sgd, adam = torch.optim.SGD, torch.optim.Adam
        extra = {"fused": True} if impl == "fused" else {}
    if name == "sgd":
        return sgd(params, lr=lr, momentum=momentum, weight_decay=0.0, **extra)
    if name == "adam":
        return adam(params, lr=lr, weight_decay=0.0, **extra)
    raise ValueError(name)


def steps_per_epoch(n, batch_size):
    bs = n if batch_size in (-1, None) or batch_size >= n else batch_size
    return max(1, math.ceil(n / bs))


def dynamical_weights(
    epochs, spe, n_classes, amplitude, period, static_last_period=True
):
    """The per-step weights skdynloss applies, precomputed: array (epochs * spe, C).

    Step ``k`` runs at time ``k / spe`` (epochs); with ``static_last_period`` the last
    ``period`` epochs use plain cross-entropy (all weights 1), as the paper does and as
    ``DynamicalLossClassifier.fit`` does by default.
    """
    from skdynloss import class_weights

    times = np.arange(epochs * spe) / spe
    W = class_weights(
        times, n_classes=n_classes, amplitude=amplitude, period=period
    ).copy()
    if static_last_period:
        W[times >= epochs - period - 1e-9] = 1.0
    return W


def skdynloss_seeds(random_state=0):
    """The (initialisation, shuffling) seeds DynamicalLossClassifier draws from an int."""
    rng = np.random.RandomState(random_state)
    init_seed, shuffle_seed, _ = (
        int(s) for s in rng.randint(np.iinfo(np.int32).max, size=3)
    )
    return init_seed, shuffle_seed


def same_work(clf, record):
    """Largest difference between skdynloss's per-epoch record and hand loop (b)'s."""
    rec = np.asarray(record, dtype=float)
    d = clf.dynamics_
    if len(rec) != len(d["loss"]):
        return float("inf")
    return max(
        float(np.max(np.abs(rec[:, 0] - d["loss"]))),
        float(np.max(np.abs(rec[:, 1] - d["cross_entropy"]))),
        float(np.max(np.abs(rec[:, 2] - d["accuracy"]))),
    )


def _reduce_kept(lp, targets, loss_means, n, record):
    """Append (loss, cross-entropy, accuracy) of the kept epochs to record, and clear."""
    tg = targets[0] if len(targets) == 1 else torch.cat(targets)
    n_epochs = lp.shape[0] // n
    ce = F.nll_loss(lp, tg, reduction="none").view(n_epochs, n)
    correct = (lp.max(dim=1).indices == tg).view(n_epochs, n)
    ce_sums = ce.sum(dim=1, dtype=torch.float64).tolist()
    correct_sums = correct.sum(dim=1).tolist()
    for loss_mean, ce_sum, n_correct in zip(
        loss_means, ce_sums, correct_sums, strict=True
    ):
        record.append((loss_mean, ce_sum / n, n_correct / n))
    targets.clear()
    loss_means.clear()


def hand_fit(
    X,
    y,
    *,
    variant,
    module,
    n_classes,
    hidden=(100,),
    image_shape=None,
    optimizer="sgd",
    lr=1.0,
    momentum=0.0,
    batch_size=-1,
    epochs=1,
    amplitude=70.0,
    period=10.0,
    device="cpu",
    dtype=torch.float32,
    seed=None,
    shuffle_seed=None,
    optimizer_impl=None,
):
    """A hand-written torch training loop, as close to the metal as a user would write it.

    Starts from numpy arrays (as ``fit`` does): moves them to ``device`` once, builds the
    module and optimizer, then trains for ``epochs`` epochs of mini-batches drawn by
    indexing the tensors with a seeded ``randperm`` (one full batch, unshuffled, when
    ``batch_size`` is -1).

    ``variant="ce"``: plain mean cross-entropy, nothing recorded; torch's default optimizer
    implementation unless ``optimizer_impl`` says otherwise (see :func:`make_optimizer`).
    ``variant="dynamical"``: the dynamical loss ``mean(Gamma_y * CE)``, computed with the
    same kernels as skdynloss (``nll_loss(log_softmax, weight=Gamma / P,
    reduction="sum")``, the weights of every step precomputed on the device and divided
    by the step's batch size P) and the same flat-buffer optimizer (unless ``optimizer_impl`` says otherwise),
    batches gathered once per epoch and sliced as skdynloss does, and a record like
    skdynloss's: every step's detached loss and log-probabilities are kept and reduced
    once, at the end, into per-epoch mean loss, mean cross-entropy and accuracy.

    ``seed`` and ``shuffle_seed`` (default: those skdynloss derives from
    ``random_state=0``, see :func:`skdynloss_seeds`) seed the initialisation and the
    shuffling, so that the hand loops start from the very parameters skdynloss starts
    from and visit the batches in the same order.

    Returns
    -------
    model : torch.nn.Module
    record : list of (loss, cross-entropy, accuracy) per epoch, or None
        Means over the epoch (``variant="dynamical"``).
    """
    X_t = torch.as_tensor(X, device=device).to(dtype)
    y_t = torch.as_tensor(y, device=device)
    n, n_features = X_t.shape
    default_init, default_shuffle = skdynloss_seeds(0)
    seed = default_init if seed is None else seed
    shuffle_seed = default_shuffle if shuffle_seed is None else shuffle_seed
    torch.manual_seed(seed)
    model = make_module(module, n_features, n_classes, hidden, image_shape)
    model = model.to(device=device, dtype=dtype)
    dynamical = variant == "dynamical"
    if optimizer_impl is None:
        optimizer_impl = "flat" if dynamical else "torch"
    opt = make_optimizer(optimizer, model.parameters(), lr, momentum, optimizer_impl)
    bs = n if batch_size in (-1, None) or batch_size >= n else batch_size
    spe = steps_per_epoch(n, batch_size)
    dynamical = variant == "dynamical"
    if dynamical:
        W = torch.as_tensor(
            dynamical_weights(epochs, spe, n_classes, amplitude, period),
            dtype=dtype,
            device=device,
        )
        # As skdynloss: 1/P folded into the weights of every step (P: its batch size).
        sizes = torch.tensor(
            [min(bs, n - start) for start in range(0, n, bs)], dtype=dtype
        ).to(device)
        W = W / sizes.repeat(epochs)[:, None]
        losses, targets, loss_means = [], [], []
        size_list = sizes.tolist()
        # Whole epochs of log-probabilities, at most about 2**19 numbers (as skdynloss).
        rows = n * max(1, min(epochs, (1 << 19) // (n * n_classes)))
        buf = torch.empty(rows, n_classes, dtype=dtype, device=device)
        fill = 0
        record = []
    elif variant != "ce":
        raise ValueError(variant)
    else:
        record = None
    generator = torch.Generator().manual_seed(shuffle_seed)
    step = 0
    for epoch in range(epochs):
        if bs >= n:
            batches = ((X_t, y_t),)
        elif dynamical:
            # As skdynloss: the epoch is gathered once, then sliced (same batches).
            order = torch.randperm(n, generator=generator).to(device)
            Xp, yp = X_t[order], y_t[order]
            batches = zip(Xp.split(bs), yp.split(bs), strict=True)
        else:
            order = torch.randperm(n, generator=generator).to(device)
            batches = ((X_t[idx], y_t[idx]) for idx in order.split(bs))
        for xb, yb in batches:
            logits = model(xb)
            if dynamical:
                log_probs = F.log_softmax(logits, dim=1)
                loss = F.nll_loss(log_probs, yb, weight=W[step], reduction="sum")
                # As skdynloss: keep the epoch's batch losses (read back once per
                # epoch), copy the log-probabilities into one buffer, and reduce many
                # epochs at once.
                losses.append(loss.detach())
                buf[fill : fill + yb.shape[0]].copy_(log_probs.detach())
                fill += yb.shape[0]
                targets.append(yb)
            else:
                loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if dynamical:
            values = (
                [losses[0].item()] if len(losses) == 1 else torch.stack(losses).tolist()
            )
            loss_means.append(
                sum(v * s for v, s in zip(values, size_list, strict=True)) / n
            )
            losses.clear()
            if fill + n > buf.shape[0] or epoch == epochs - 1:
                # As skdynloss: reduce many epochs at once, in bounded memory.
                _reduce_kept(buf[:fill], targets, loss_means, n, record)
                fill = 0
    return model, record


def skdynloss_classifier(
    *,
    module="mlp",
    hidden=(100,),
    image_shape=None,
    optimizer="sgd",
    lr=1.0,
    momentum=0.0,
    batch_size=-1,
    epochs=1,
    amplitude=70.0,
    period=10.0,
    device="cpu",
    dtype="float32",
    seed=0,
):
    """The DynamicalLossClassifier of a benchmark (compute_sharpness=False)."""
    from skdynloss import DynamicalLossClassifier

    return DynamicalLossClassifier(
        amplitude=amplitude,
        period=period,
        module=module,
        hidden_layer_sizes=tuple(hidden),
        image_shape=image_shape,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        batch_size=batch_size,
        max_epochs=epochs,
        device=str(device),
        dtype=dtype,
        random_state=seed,
        compute_sharpness=False,
    )


def skorch_classifier(
    *,
    n_features,
    n_classes,
    module="mlp",
    hidden=(100,),
    image_shape=None,
    optimizer="sgd",
    lr=1.0,
    momentum=0.0,
    batch_size=-1,
    epochs=1,
    device="cpu",
    dtype=torch.float32,
    seed=0,
):
    """Plain skorch NeuralNetClassifier with its defaults, except what must match.

    train_split=None (no 20 % hold-out), the same module, optimizer, learning rate and
    batch size; CrossEntropyLoss because the module returns logits (skorch's default
    NLLLoss expects probabilities). Data go through skorch's default DataLoader.
    """
    from skorch import NeuralNetClassifier

    torch.manual_seed(seed)
    net = make_module(module, n_features, n_classes, hidden, image_shape).to(dtype)
    kwargs = {"optimizer__momentum": momentum} if optimizer == "sgd" else {}
    return NeuralNetClassifier(
        module=net,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam,
        lr=lr,
        batch_size=batch_size,
        max_epochs=epochs,
        train_split=None,
        device=str(device),
        verbose=0,
        **kwargs,
    )


def sklearn_mlp(hidden=(100,), batch_size=64, epochs=20, lr=1e-3, seed=0):
    """scikit-learn's MLPClassifier running exactly ``epochs`` epochs of Adam."""
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(
        hidden_layer_sizes=tuple(hidden),
        solver="adam",
        learning_rate_init=lr,
        batch_size=batch_size,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=1000,
        random_state=seed,
    )


def check_fitted(clf, epochs, name):
    """Warn when a fit stopped early (divergence), which would make its timing short."""
    n_iter = getattr(clf, "n_iter_", epochs)
    if n_iter != epochs or getattr(clf, "diverged_", False):
        print(
            f"WARNING: {name} trained {n_iter} of {epochs} epochs "
            f"(diverged={getattr(clf, 'diverged_', False)}); its time is not comparable.",
            flush=True,
        )


def parser(description):
    p = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    return add_common_arguments(p)
