"""Python-level calls per optimizer step: the framework's overhead, counted, not timed.

On small networks most of a step's time is Python (skorch's bookkeeping, callbacks,
torch's own module and optimizer wrappers), and timings on a shared machine vary by
5-15 % from run to run, more than most single changes to that Python. This script
counts instead: with ``sys.setprofile`` it counts every Python function call and every
call into C made during a fit, for two lengths of the same fit, and reports the
difference per optimizer step (so the fixed cost of a fit cancels out). The count is
exact and repeatable, a proxy for time (calls differ in cost), and comparable across
commits.

Contenders: skdynloss (``DynamicalLossClassifier.fit`` from numpy arrays), hand loop
(a') (plain cross-entropy, torch's fused optimizer) and hand loop (b) (the same
dynamical loss, record and flat-buffer optimizer as skdynloss, by hand); see
``_common.py``.

    python benchmarks/bench_calls.py          # a few seconds
"""

import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import torch  # noqa: E402

OURS, HAND_CE, HAND_DYN = (
    "skdynloss",
    "hand (a') CE, fused optimizer",
    "hand (b) dynamical+record",
)


def count_calls(fn):
    """Number of Python calls and calls into C made by ``fn()``, by callee."""
    calls = collections.Counter()

    def profiler(frame, event, arg):
        if event == "call":
            calls[(frame.f_code.co_filename, frame.f_code.co_name)] += 1
        elif event == "c_call":
            calls[("<C>", getattr(arg, "__qualname__", repr(arg)))] += 1

    sys.setprofile(profiler)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def per_step(make_run, short, long, steps_per_epoch):
    """Calls per optimizer step: (count over ``long`` epochs - over ``short``) / steps."""
    make_run(2)()  # warm-up: imports and first-use paths are not counted
    a = count_calls(make_run(short))
    b = count_calls(make_run(long))
    return (sum(b.values()) - sum(a.values())) / ((long - short) * steps_per_epoch)


def sections(args):
    dtype = C.DTYPES[args.dtype]
    spiral = C.spiral(dtype)
    digits = C.digits(dtype)
    return [
        (
            "full batch (spiral, 2-100-3, sgd lr=1)",
            spiral,
            dict(optimizer="sgd", lr=1.0, momentum=0.0, batch_size=-1),
            3,
            1,
            (100, 300),
        ),
        (
            "mini-batch (digits, 64-100-10, adam, batch 64)",
            digits,
            dict(optimizer="adam", lr=1e-3, momentum=0.0, batch_size=64),
            10,
            C.steps_per_epoch(len(digits[0]), 64),
            (4, 10),
        ),
    ]


def main(argv=None):
    p = C.parser(__doc__.split("\n\n")[0])
    args = p.parse_args(argv)
    device = C.setup(args)
    dtype = C.DTYPES[args.dtype]
    C.print_header(
        "skdynloss call-count benchmark",
        args,
        {
            "method": "sys.setprofile; calls of a long fit minus a short one, per step",
            "skdynloss": "amplitude=70, period=epochs/4, compute_sharpness=False",
        },
    )
    rows = []
    for title, (X, y), opt, n_classes, spe, (short, long) in sections(args):
        common = dict(module="mlp", hidden=(100,), device=device, **opt)

        def ours(epochs, common=common, X=X, y=y):
            return lambda: C.skdynloss_classifier(
                epochs=epochs,
                amplitude=70.0,
                period=max(epochs / 4, 1.0),
                dtype=args.dtype,
                **common,
            ).fit(X, y)

        def hand(variant, common=common, X=X, y=y, n_classes=n_classes):
            return lambda epochs: (
                lambda: C.hand_fit(
                    X,
                    y,
                    variant=variant,
                    optimizer_impl="fused" if variant == "ce" else "flat",
                    n_classes=n_classes,
                    epochs=epochs,
                    amplitude=70.0,
                    period=max(epochs / 4, 1.0),
                    dtype=dtype,
                    **common,
                )
            )

        counts = {
            OURS: per_step(ours, short, long, spe),
            HAND_CE: per_step(hand("ce"), short, long, spe),
            HAND_DYN: per_step(hand("dynamical"), short, long, spe),
        }
        for name, value in counts.items():
            rows.append(
                {
                    "regime": title,
                    "contender": name,
                    "calls per step": f"{value:.1f}",
                    "vs (a')": f"{value - counts[HAND_CE]:+.1f}",
                }
            )
    C.print_table(rows, title="Python-level calls per optimizer step")


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = False
    main()
