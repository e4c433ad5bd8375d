"""Fits on a busy machine: the slowdown when another process keeps a core busy.

Target: with the default thread policy (``n_threads=None``), a fit takes at most 1.5x
its time on a quiet machine while a competing process spins on a core (a Python
subprocess in a busy loop), for

* the iris pipeline: ``StandardScaler`` then ``DynamicalLossClassifier()``;
* a 20-epoch MLP on 4000 x 40 rows (``make_classification``, seed 0), defaults
  otherwise.

Each round times every contender quiet, then with the competitor running (started
before, stopped after); wall time, medians over the rounds. For information, the iris
fit with torch's own thread setting (``n_threads=-1``: as many threads as cores),
quiet and busy, once each (it can take seconds on a busy machine).

``--crossover`` measures instead what the policy's constant rests on (see
``skdynloss/_threads.py``): an Adam step of a ``width -> width -> 10`` network on
``rows`` rows, 1 against 2 threads, quiet and busy.

Unlike the other scripts, this one leaves torch's thread setting alone (the policy
under test chooses it), so ``--threads`` only caps what torch may use.

    python benchmarks/bench_threads.py [--repeats 5]
    python benchmarks/bench_threads.py --crossover
"""

import contextlib
import os
import subprocess
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness  # noqa: E402
import torch  # noqa: E402
from _harness import median, print_checks, print_header, print_table  # noqa: E402
from sklearn.datasets import load_iris, make_classification  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from skdynloss import DynamicalLossClassifier  # noqa: E402

_SPIN = "import os, sys\nparent = int(sys.argv[1])\nwhile os.getppid() == parent: pass"


@contextlib.contextmanager
def competitor(on=True):
    """A process spinning in a busy loop on the last core, for the length of the
    block (the fit may run on the others)."""
    if not on:
        yield
        return
    # It spins while its parent lives: a benchmark killed mid-run leaves no spinner.
    proc = subprocess.Popen([sys.executable, "-c", _SPIN, str(os.getpid())])
    with contextlib.suppress(AttributeError, OSError):  # no affinity on macOS
        os.sched_setaffinity(proc.pid, {max(os.sched_getaffinity(0))})
    time.sleep(0.3)  # let it start spinning
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def wall(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def clocks(fn):
    """(wall, process CPU) seconds of fn()."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def workloads(quick):
    X_iris, y_iris = load_iris(return_X_y=True)
    n = 400 if quick else 4000
    X, y = make_classification(
        n_samples=n, n_features=40, n_informative=20, n_classes=3, random_state=0
    )
    X = StandardScaler().fit_transform(X)

    def iris(**params):
        clf = DynamicalLossClassifier(random_state=0, **params)
        return lambda: make_pipeline(StandardScaler(), clf).fit(X_iris, y_iris)

    def mlp(**params):
        clf = DynamicalLossClassifier(random_state=0, max_epochs=20, **params)
        return lambda: clf.fit(X, y)

    return iris, mlp, X.shape


CONTROL = "MLPClassifier iris pipeline (control)"


def control():
    from sklearn.neural_network import MLPClassifier

    X, y = load_iris(return_X_y=True)
    clf = MLPClassifier(random_state=0)
    return lambda: make_pipeline(StandardScaler(), clf).fit(X, y)


def crossover(args):
    print_header(
        "Thread crossover: an Adam step, 1 against 2 threads",
        args,
        {"network": "width -> width -> 10, ReLU, Adam (fused)", "timing": "best of 3"},
    )
    torch.manual_seed(0)

    def step_time(rows, width, threads, reps):
        torch.set_num_threads(threads)
        net = torch.nn.Sequential(
            torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 10)
        )
        opt = torch.optim.Adam(net.parameters(), fused=True)
        X, y = torch.randn(rows, width), torch.randint(0, 10, (rows,))

        def one():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(X), y).backward()
            opt.step()

        for _ in range(3):
            one()
        return min(wall(lambda: [one() for _ in range(reps)]) for _ in range(3)) / reps

    sizes = [(64, 40), (64, 100), (256, 100), (64, 512), (1024, 256), (512, 512)]
    if not args.quick:
        sizes += [(4096, 256), (1024, 1024)]
    rows_out = []
    for rows, width in sizes:
        macs = width * width + width * 10
        reps = 3 if args.quick else max(3, int(2e8 / (rows * macs)))
        row = {"rows": rows, "width": width, "work (rows x MACs)": f"{rows * macs:.1e}"}
        for busy in (False, True):
            with competitor(busy):
                t1 = step_time(rows, width, 1, reps)
                t2 = step_time(rows, width, 2, reps)
            label = "busy" if busy else "quiet"
            row[f"{label} 1 thread ms"] = t1 * 1e3
            row[f"{label} 2 threads ms"] = t2 * 1e3
            row[f"{label} 2/1"] = f"{t2 / t1:.2f}x"
        rows_out.append(row)
        print(f"    rows {rows}, width {width}: quiet 2/1 {row['quiet 2/1']}, busy 2/1 "
              f"{row['busy 2/1']}", file=sys.stderr, flush=True)  # fmt: skip
    print_table(rows_out)


def main(argv=None):
    p = _harness.parser(__doc__.splitlines()[0], repeats=5)
    p.set_defaults(threads=torch.get_num_threads())
    p.add_argument("--crossover", action="store_true", help="measure the crossover")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = 1
    torch.set_num_threads(args.threads)
    if args.crossover:
        return crossover(args)
    iris, mlp, shape = workloads(args.quick)
    print_header(
        "Busy machine: fit time with a competing process, default thread policy",
        args,
        {
            "iris": "StandardScaler + DynamicalLossClassifier() (defaults)",
            "MLP": f"make_classification {shape}, DynamicalLossClassifier(max_epochs=20)",
            "competitor": "a Python busy loop on the last core, started before each busy run",
            "timing": f"wall time, medians of {args.repeats} rounds (quiet, then busy)",
        },
    )
    warnings.simplefilter("ignore")
    contenders = {
        "iris pipeline": iris(),
        "4000 x 40 MLP, 20 epochs": mlp(),
        CONTROL: control(),
    }
    for fn in contenders.values():
        fn()  # untimed: the first fit of a process pays torch's one-off imports
    times = {name: {"quiet": [], "busy": []} for name in contenders}
    for r in range(args.repeats):
        for name, fn in contenders.items():
            times[name]["quiet"].append(clocks(fn))
            with competitor():
                times[name]["busy"].append(clocks(fn))
        print(f"    round {r + 1}/{args.repeats}", file=sys.stderr, flush=True)
    rows, checks = [], []
    for name, t in times.items():
        quiet, busy = (median([w for w, _ in t[k]]) for k in ("quiet", "busy"))
        cpu_quiet, cpu_busy = (median([c for _, c in t[k]]) for k in ("quiet", "busy"))
        rows.append(
            {
                "fit": name,
                "quiet s": quiet,
                "busy s": busy,
                "slowdown": f"{busy / quiet:.2f}x",
                "busy rounds s": f"{min(w for w, _ in t['busy']):.3g}-"
                f"{max(w for w, _ in t['busy']):.3g}",
                "CPU quiet s": cpu_quiet,
                "CPU busy s": cpu_busy,
            }
        )
        if name == CONTROL:
            control_slowdown = busy / quiet
            continue
        checks.append(
            {
                "check": f"{name}: busy / quiet",
                "wall": f"{busy / quiet:.2f}x",
                "CPU": f"{cpu_busy / cpu_quiet:.2f}x",
                "target": "<= 1.50x",
                "verdict": "met" if busy / quiet <= 1.5 else "NOT met",
                "verdict on CPU": "met" if cpu_busy / cpu_quiet <= 1.5 else "NOT met",
            }
        )
    default = iris(n_threads=-1)
    quiet, cpu_quiet = clocks(default)
    with competitor():
        busy, cpu_busy = clocks(default)
    rows.append(
        {
            "fit": f"iris pipeline, n_threads=-1 ({torch.get_num_threads()} threads)",
            "quiet s": quiet,
            "busy s": busy,
            "slowdown": f"{busy / quiet:.2f}x",
            "busy rounds s": "(one round, info)",
            "CPU quiet s": cpu_quiet,
            "CPU busy s": cpu_busy,
        }
    )
    for row in checks:
        slowdown = float(row["wall"].rstrip("x"))
        row["/ control"] = f"{slowdown / control_slowdown:.2f}x"
    print_table(rows, title="Fit time (wall), quiet and with a competing process")
    print_checks(checks, title="Targets (ratios of medians)")
    print(
        "The wall clock is the target's. The CPU clock counts the process's own work\n"
        "(a thread spinning for a core that another process holds inflates it). The\n"
        "control, MLPClassifier on the iris pipeline, has no torch threads: its slowdown\n"
        "is what the machine itself does to a single-threaded program when the\n"
        "competitor runs (on a virtual machine whose cores share physical ones, more\n"
        "than 1x); '/ control' divides it out."
    )
    print(f"after the runs: {_harness.load_note()}")


if __name__ == "__main__":
    main()
