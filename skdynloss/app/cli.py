"""The ``skdynloss`` command (also ``python -m skdynloss``).

``skdynloss demo`` runs, offline and on built-in data only, a small version of the
experiments of Ruiz-Garcia et al. (ICML 2021): it prints how the dynamical loss compares
with cross-entropy and with scikit-learn's classifiers, and saves one figure of the
training dynamics. ``skdynloss --version`` prints the version.

The experiments themselves live in :mod:`skdynloss.experiments` and the figure in
:func:`skdynloss.plotting.plot_spiral_comparison`; this module parses the arguments and
prints. Tables go to stdout, progress bars to stderr (``--quiet`` turns them off).
"""

import argparse
import os
import sys
import time
from contextlib import contextmanager

import numpy as np

from . import experiments
from ._arguments import positive_int, writable_folder

DEFAULT_FIGURE = "skdynloss-demo.png"


# --------------------------------------------------------------------------- helpers


@contextmanager
def _single_threaded():
    """One thread for torch and for BLAS: fastest for these small networks, and fair.

    The previous settings are restored, so calling ``main`` in-process leaves the
    caller's thread settings as they were.
    """
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(previous)


def _table(header, rows, aligns):
    """Format a plain-text table; ``aligns`` holds "<" or ">" per column."""
    widths = [
        max(len(str(cell)) for cell in column)
        for column in zip(header, *rows, strict=True)
    ]

    def line(cells):
        return "  ".join(
            f"{cell:{align}{width}}"
            for cell, align, width in zip(cells, aligns, widths, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _n_cpus():
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _mean_std(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


# --------------------------------------------------------------------- the sections


def _spiral_header(cfg, out):
    amp, per = f"{cfg['amplitude']:g}", f"{cfg['period']:g}"
    print(
        "[1/3] Under-parameterised network: training accuracy on the paper's spiral\n"
        f"      (make_spiral(): 300 points, 3 classes), MLP 2-{cfg['hidden']}-3, "
        f"full-batch gradient descent,\n"
        f"      lr={cfg['lr']:g} (2/lr={2 / cfg['lr']:.3g}), {cfg['epochs']} steps, "
        f"float64. Dynamical loss: A={amp}, T={per} steps,\n"
        "      last period plain cross-entropy (as in the paper). Same initialisation "
        "per seed.\n",
        file=out,
    )


def _spiral_report(result, quick, out):
    cfg = result.config
    amp, per = f"{cfg['amplitude']:g}", f"{cfg['period']:g}"
    rows = [
        [
            str(c.seed),
            f"{c.accuracy:.3f}",
            f"{d.accuracy:.3f}",
            f"{d.accuracy - c.accuracy:+.3f}",
            f"{c.sharpness:.3f}",
            f"{d.sharpness:.3f}",
        ]
        for c, d in zip(result.cross_entropy, result.dynamical, strict=True)
    ]
    m_ce, s_ce = _mean_std([f.accuracy for f in result.cross_entropy])
    m_dyn, s_dyn = _mean_std([f.accuracy for f in result.dynamical])
    m_diff, s_diff = _mean_std(result.differences)
    rows.append(
        [
            "mean +- std",
            f"{m_ce:.3f} +- {s_ce:.3f}",
            f"{m_dyn:.3f} +- {s_dyn:.3f}",
            f"{m_diff:+.3f} +- {s_diff:.3f}",
            "",
            "",
        ]
    )
    header = [
        "seed",
        "cross-entropy (A=1)",
        f"dynamical (A={amp}, T={per})",
        "difference",
        "sharpness CE",
        "sharpness dyn",
    ]
    print(_table(header, rows, ["<", ">", ">", ">", ">", ">"]), file=out)
    print(
        "      (training accuracy at the end of training; sharpness: top Hessian "
        "eigenvalue\n       of the unweighted cross-entropy at the end)",
        file=out,
    )
    print(f"  Result: {result.conclusion}", file=out)
    print(f"  Final sharpness: {result.sharpness_conclusion}", file=out)
    if quick:
        full = experiments.SPIRAL
        print(
            f"  (--quick: {cfg['epochs']} steps instead of {full['epochs']} and "
            f"{cfg['n_seeds']} seeds instead of {full['n_seeds']}, too short to "
            "show the effect;\n   run without --quick for the real comparison.)",
            file=out,
        )
    print(file=out)


def _digits_header(cfg, out):
    per = f"{cfg['period']:g}"
    print(
        "[2/3] Held-out data: digits (load_digits: 1797 8x8 images, 10 classes), "
        "stratified\n      75/25 split, StandardScaler + model in a Pipeline.\n"
        f"      Networks: one hidden layer of 100, Adam lr=1e-3, batch 64, "
        f"{cfg['epochs']} epochs (MLPClassifier:\n      at most {cfg['mlp_iter']}, "
        "stopping early when the loss stalls); "
        f"dynamical period T={per} (epochs).\n",
        file=out,
    )


def _digits_report(result, out):
    rows = [
        [
            m.name,
            "-" if m.n_epochs is None else str(m.n_epochs),
            f"{m.test_accuracy:.3f}",
            f"{m.train_accuracy:.3f}",
            f"{m.fit_time:.2f}",
            "-" if m.sharpness is None else f"{m.sharpness:.3f}",
        ]
        for m in result.models
    ]
    header = ["model", "epochs", "test acc", "train acc", "fit time (s)", "sharpness"]
    print(_table(header, rows, ["<", ">", ">", ">", ">", ">"]), file=out)
    print(
        f"      One split, {result.n_train} train / {result.n_test} test images: one "
        f"test image is {1 / result.n_test:.4f} of\n      accuracy. Fit times are "
        "single-threaded (torch and BLAS). Sharpness: top Hessian\n      eigenvalue "
        "of the unweighted training cross-entropy at the end of training.",
        file=out,
    )
    print(f"  Result: {result.conclusion}", file=out)
    print(file=out)


def _figure_section(result, path, out):
    from matplotlib.figure import Figure

    from ..plotting import plot_spiral_comparison

    # A Figure of its own, without pyplot: no global state, any backend.
    fig = plot_spiral_comparison(result, fig=Figure())
    fig.savefig(path, dpi=100)
    print(f"[3/3] Figure saved to {os.path.abspath(path)}", file=out)


# --------------------------------------------------------------------------- demo


def _demo(args, out=None):
    out = sys.stdout if out is None else out
    from .. import __version__

    quick = args.quick
    spiral_cfg = experiments.SPIRAL_QUICK if quick else experiments.SPIRAL
    digits_cfg = experiments.DIGITS_QUICK if quick else experiments.DIGITS
    n_jobs = args.n_jobs
    if n_jobs is None:
        n_jobs = 1 if quick else min(_n_cpus(), 2 * spiral_cfg["n_seeds"])
    progress = not args.quiet
    start = time.perf_counter()
    print(
        f"skdynloss {__version__} demo (seed {args.seed}{', --quick' if quick else ''}): "
        "dynamical loss functions\n(Ruiz-Garcia, Zhang, Schoenholz & Liu, ICML 2021, "
        "arXiv:2102.03793) against cross-entropy.\n",
        file=out,
    )
    can_plot = _has_matplotlib()
    if not can_plot:
        print(
            "Note: matplotlib is not installed, so no figure will be saved "
            "(pip install 'skdynloss[plots]').\n",
            file=out,
        )
    with _single_threaded():
        _spiral_header(spiral_cfg, out)
        # Flush before a progress bar starts on stderr, so that the two interleave in
        # order on a terminal.
        out.flush()
        spiral = experiments.spiral_comparison(
            config=spiral_cfg,
            seed=args.seed,
            n_jobs=n_jobs,
            keep_first=can_plot,
            progress=progress,
        )
        _spiral_report(spiral, quick, out)
        _digits_header(digits_cfg, out)
        out.flush()
        digits = experiments.digits_comparison(
            config=digits_cfg, seed=args.seed, progress=progress
        )
        _digits_report(digits, out)
        out.flush()
        if can_plot:
            _figure_section(spiral, args.out, out)
        else:
            print("[3/3] Figure skipped: matplotlib is not installed.", file=out)
    elapsed = time.perf_counter() - start
    print(
        f"\nDemo finished in {elapsed:.1f} s ({n_jobs} worker process"
        f"{'es' if n_jobs > 1 else ''} for the spiral fits).",
        file=out,
    )
    out.flush()
    return 0


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"expected 0 <= seed < 2**31, got {value}")
    return value


def build_parser():
    """The argument parser of the ``skdynloss`` command."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="skdynloss",
        description=(
            "Dynamical loss functions (Ruiz-Garcia et al., ICML 2021) for scikit-learn."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"skdynloss {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="compare the dynamical loss with cross-entropy on built-in data",
        description=(
            "Offline demo on built-in data. (1) The paper's spiral with a network too "
            "narrow for it: training accuracy of cross-entropy vs the dynamical loss "
            "over several seeds, full-batch gradient descent. (2) Digits, held-out "
            "test accuracy: the classifier with and without the dynamical loss vs "
            "scikit-learn's MLPClassifier and LogisticRegression. (3) One figure of "
            "the training dynamics. Progress bars on stderr show how far it has got. "
            "One to two minutes on a 2-core CPU (54-132 s measured; longer while "
            "other work keeps the cores busy); --quick takes seconds but trains too "
            "briefly to show the effect."
        ),
    )
    demo.add_argument(
        "--out",
        default=DEFAULT_FIGURE,
        metavar="FIGURE.png",
        help=f"where to save the figure (default: {DEFAULT_FIGURE})",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="a much shorter run (seconds), for smoke tests; too short to show the effect",
    )
    demo.add_argument(
        "--seed", type=_seed, default=0, help="base random seed (default: 0)"
    )
    demo.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars on stderr (the results on stdout are the same)",
    )
    demo.add_argument(
        "--n-jobs",
        type=positive_int,
        default=None,
        help=(
            "worker processes for the spiral fits (default: the number of CPUs, "
            "1 with --quick); results do not depend on it"
        ),
    )
    demo.set_defaults(func=_demo)
    reproduce = commands.add_parser(
        "reproduce",
        add_help=False,
        help="regenerate the paper's figures and tables (fig4, width, generalisation)",
        description="See 'skdynloss reproduce --help'.",
    )
    # Its own parser (skdynloss.reproduce) reads the rest, --help included.
    reproduce.add_argument("rest", nargs=argparse.REMAINDER)
    reproduce.set_defaults(func=_reproduce)
    return parser


def _reproduce(args):
    from .reproduce import main as reproduce_main

    return reproduce_main(args.rest)


def main(argv=None):
    """Run the ``skdynloss`` command.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments without the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    status : int
        The exit status, 0 on success. Invalid arguments exit through argparse
        (``SystemExit`` with status 2), as ``--version`` and ``--help`` do (status 0).
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv[:1] == ["reproduce"]:
        # Its own parser reads everything after the name (argparse's REMAINDER would
        # not take a leading option such as --help).
        return _reproduce(argparse.Namespace(rest=argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo" and _has_matplotlib():
        _check_figure_path(parser, args.out)
    return args.func(args)


def _check_figure_path(parser, path):
    """Refuse at once, before any fit, a figure path that savefig could not write:
    an unknown format, a folder, a place where no file can be written (missing
    folders are created)."""
    from matplotlib.figure import Figure

    path = os.fspath(path)
    formats = Figure().canvas.get_supported_filetypes()
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension not in formats:
        parser.error(
            f"--out {path}: the figure's format is chosen by the extension, one of "
            f"{', '.join('.' + f for f in sorted(formats))}"
        )
    if os.path.isdir(path):
        parser.error(
            f"--out {path} is a folder; give a file name such as {path}/fig.png"
        )
    try:
        writable_folder(os.path.dirname(os.path.abspath(path)))
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise PermissionError(f"{path} exists and is not writable")
    except OSError as exc:
        parser.error(f"--out {path}: {exc}")


if __name__ == "__main__":
    raise SystemExit(main())
