"""Training time of DynamicalLossClassifier against a hand-written torch loop.

Two regimes, each timed side by side in interleaved rounds (``_harness.interleaved``):

full-batch  the paper's: the spiral (300 x 2, 3 classes), 2 -> 100 -> ReLU -> 3,
            plain gradient descent (SGD, momentum 0, lr 1), 2000 steps, amplitude 70,
            period 500 (one epoch is one step);
mini-batch  digits standardised (1797 x 64, 10 classes), 64 -> 100 -> ReLU -> 10,
            Adam lr 1e-3, batch 64, 20 epochs, amplitude 70, period 5.

Contenders: ``reference``, a torch loop written from the formula (``_harness.
reference_fit``: torch's fused SGD/Adam, the same dynamical loss and per-epoch record);
``skdynloss`` starting from a deep copy of the reference's initial module; the same with
one empty skorch Callback in ``callbacks=[...]``; for information, the reference without
its record (what the record costs) and scikit-learn's MLPClassifier on the same work. Targets: skdynloss <= 1.2x the reference,
with the empty callback <= 1.1x without, in both regimes.

Before timing, a float64 run of 100 full-batch steps checks that the reference loop and
the fit agree: per-epoch loss, cross-entropy, accuracy, class weights, clock time and
the final parameters (max |difference| printed; it must be below 1e-6).

    python benchmarks/bench_training.py                 # ~1.5 min on one core
    python benchmarks/bench_training.py --quick         # a few seconds
    python benchmarks/bench_training.py --sections mini-batch --repeats 21

``--baseline DIR/NAME`` adds another copy of the package (say an older commit:
``git archive <commit> skdynloss | tar -x -C /tmp/old && mv /tmp/old/skdynloss
/tmp/old/skdynloss_old``; it must use relative imports) as the contender "baseline".
"""

import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from skorch.callbacks import Callback  # noqa: E402

SECTIONS = ("full-batch", "mini-batch")


class EmptyCallback(Callback):
    """A user callback whose own code costs nothing."""


def agreement(steps=100, period=20.0):
    """Largest |difference| between the reference's record and the fit's, in float64."""
    X, y = H.spiral("float64")
    net = H.mlp(2, (100,), 3, seed=1, dtype="float64")
    ref, record = H.reference_fit(
        X, y, copy.deepcopy(net), epochs=steps, amplitude=70.0, period=period, lr=1.0
    )
    clf = H.estimator(
        module=H.Copies(net), optimizer="sgd", momentum=0.0, lr=1.0, batch_size=-1,
        max_epochs=steps, amplitude=70.0, period=period, dtype="float64",
    ).fit(X, y)  # fmt: skip
    diffs = {
        key: float(np.max(np.abs(np.asarray(record[key], float) - clf.dynamics_[key])))
        for key in record
    }
    diffs["parameters"] = max(
        float((a.detach() - b.detach()).abs().max())
        for a, b in zip(ref.parameters(), clf.module_.parameters(), strict=True)
    )
    return diffs


def regime(name, args, device):
    """(config, contenders, epochs) of one regime."""
    quick = args.quick
    if name == "full-batch":
        X, y = H.spiral(args.dtype)
        epochs = 200 if quick else args.steps
        train = {"optimizer": "sgd", "lr": 1.0, "momentum": 0.0, "batch_size": -1}
        widths, period = (100,), epochs / 4
        mlp = {"solver": "sgd", "lr": 1.0, "batch_size": len(y)}
        config = f"spiral {X.shape}, 2-100-3, SGD lr 1, full batch, {epochs} steps"
    else:
        X, y = H.digits(args.dtype)
        epochs = 4 if quick else args.epochs
        train = {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "batch_size": 64}
        widths, period = (100,), epochs / 4
        mlp = {"solver": "adam", "lr": 1e-3, "batch_size": 64}
        config = f"digits {X.shape}, 64-100-10, Adam lr 1e-3, batch 64, {epochs} epochs"
    n_classes = int(y.max()) + 1
    net = H.mlp(X.shape[1], widths, n_classes, dtype=args.dtype).to(device)
    dyn = {"amplitude": 70.0, "period": period}
    common = {**train, **dyn, "max_epochs": epochs, "device": args.device}
    common.update(dtype=args.dtype, module=H.Copies(net))
    fitted = {}

    def ours(callbacks=None):
        def run():
            fitted["skdynloss"] = H.estimator(**common, callbacks=callbacks).fit(X, y)

        return run

    def reference():
        H.reference_fit(
            X, y, copy.deepcopy(net), epochs=epochs, device=device, **train, **dyn
        )

    def bare():
        H.reference_fit(X, y, copy.deepcopy(net), epochs=epochs, device=device,
                        record=False, **train, **dyn)  # fmt: skip

    if args.baseline:
        Baseline = H.load_package(args.baseline).DynamicalLossClassifier
        params = {**common, "compute_sharpness": False, "random_state": 0}
        contenders_extra = {"baseline": lambda: Baseline(**params).fit(X, y)}
    else:
        contenders_extra = {}

    sk = H.sklearn_mlp(hidden=widths, epochs=epochs, **mlp)
    contenders = {
        "reference": reference,
        "skdynloss": ours(),
        "skdynloss + empty callback": ours([EmptyCallback()]),
        "reference without record": bare,
        **contenders_extra,
    }
    if device.type == "cpu":
        contenders["sklearn MLPClassifier"] = lambda: H.quiet_fit(sk, X, y)
    config = f"{config}; amplitude 70, period {period:g}"
    return config, contenders, epochs, fitted


def main(argv=None):
    p = H.parser(__doc__.splitlines()[0], repeats=7)
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--steps", type=int, default=2000, help="full-batch steps")
    p.add_argument("--epochs", type=int, default=20, help="mini-batch epochs")
    p.add_argument(
        "--baseline",
        help="another copy of the package, renamed, timed side by side as 'baseline' "
        "(e.g. /tmp/old/skdynloss_old from `git archive <commit> skdynloss`)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 3)
    device = H.setup(args)
    sections = [s for s in args.sections.split(",") if s]
    if unknown := set(sections) - set(SECTIONS):
        p.error(f"unknown sections {sorted(unknown)}")
    _, opt_kind = H.fastest_optimizer("adam", [torch.zeros(1, device=device)], 1e-3)
    H.print_header(
        "Training: skdynloss against a hand-written torch loop",
        args,
        {
            "reference": f"torch loop from the formula, torch.optim {opt_kind} SGD/Adam",
            "skdynloss": "DynamicalLossClassifier(compute_sharpness=False, "
            "module=a deep copy of the reference's initial module)",
            "sections": ", ".join(sections),
        },
    )
    diffs = agreement(steps=30 if args.quick else 100)
    H.print_table(
        [{"record field": k, "max |difference|": f"{v:.3g}"} for k, v in diffs.items()],
        title="Agreement, float64, spiral, full batch: reference loop vs fit",
    )
    worst = max(diffs.values())
    print(f"agreement max |difference| = {worst:.3g} (target < 1e-6: "
          f"{'met' if worst < 1e-6 else 'NOT met'})\n")  # fmt: skip

    checks = []
    for name in sections:
        config, contenders, epochs, fitted = regime(name, args, device)
        print(f"--- {name}: {config}", flush=True)
        times = H.interleaved(contenders, device, repeats=args.repeats)
        H.warn_if_short(fitted["skdynloss"], epochs, "skdynloss")
        unit = "step" if name == "full-batch" else "epoch"
        scale, scale_name = (1e6, "us") if unit == "step" else (1e3, "ms")
        H.print_table(
            H.time_table(times, epochs, "reference", unit, scale, scale_name),
            title=f"{name} (per {unit}; +-%: half the range of the rounds)",
        )
        checks.append(H.check(f"{name}: skdynloss / reference", times,
                              "skdynloss", "reference", 1.2))  # fmt: skip
        checks.append(H.check(f"{name}: empty callback / without", times,
                              "skdynloss + empty callback", "skdynloss", 1.1))  # fmt: skip
        checks.append(H.check(f"{name}: reference / reference without record",
                              times, "reference", "reference without record"))  # fmt: skip
        if "baseline" in times:
            checks.append(H.check(f"{name}: skdynloss / baseline", times,
                                  "skdynloss", "baseline"))  # fmt: skip
            checks.append(H.check(f"{name}: baseline / reference", times,
                                  "baseline", "reference"))  # fmt: skip
        if "sklearn MLPClassifier" in times:
            checks.append(H.check(f"{name}: skdynloss / MLPClassifier", times,
                                  "skdynloss", "sklearn MLPClassifier"))  # fmt: skip
    H.print_checks(checks)
    print(H.load_note())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
