"""Training and prediction speed of DynamicalLossClassifier against hand-written loops.

Sections (all contenders of a section are timed side by side, interleaved, in this one
process, with the same thread count):

full-batch  the paper's regime: spiral (300 x 2, 3 classes), 2 -> 100 -> ReLU -> 3,
            full-batch gradient descent (sgd, momentum 0, lr 1), amplitude 70, period
            steps/4, ``--steps`` steps. skdynloss (A=70 and A=1) vs hand loop (a) plain
            cross-entropy and (b) the same dynamical loss by hand with a per-step record,
            and plain skorch (defaults, ``--skorch-steps`` steps).
mini-batch  digits (1797 x 64, standardised), 64 -> 100 -> 10, batch 64, Adam 1e-3,
            ``--epochs`` epochs: skdynloss (A=70 and A=1), hand loops (a) and (b),
            plain skorch defaults, scikit-learn's MLPClassifier.
cnn         (``--cnn``) digits as 1 x 8 x 8 images, module="cnn", batch 64, Adam 1e-3.
predict     predict_proba / predict on ``--predict-rows`` rows vs the fitted module_
            applied directly to a tensor (softmax / argmax), under torch.no_grad().

Targets checked at the end: full batch within 1.3x of the hand loop; dynamical loss
overhead (A=70 vs A=1) at most 5 %; predict_proba within 1.5x of the module.

    python benchmarks/bench_training.py            # full run, about 3-4 minutes on 2 cores
    python benchmarks/bench_training.py --quick    # under a minute
    python benchmarks/bench_training.py --device cuda --cnn
"""

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

SK70, SK1 = "skdynloss A=70", "skdynloss A=1"
HAND_CE, HAND_DYN = "hand (a) CE", "hand (b) dynamical+record"
HAND_FUSED = "hand (a') CE, fused optimizer"
SKORCH, SKLEARN = "skorch defaults", "sklearn MLPClassifier"


def parse_args(argv=None):
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="small sizes, < 60 s on 2 cores"
    )
    p.add_argument("--steps", type=int, default=None, help="full-batch steps (2000)")
    p.add_argument("--period", type=float, default=None, help="period (steps / 4)")
    p.add_argument("--amplitude", type=float, default=70.0)
    p.add_argument(
        "--skorch-steps", type=int, default=None, help="steps of plain skorch (200)"
    )
    p.add_argument("--epochs", type=int, default=None, help="mini-batch epochs (20)")
    p.add_argument("--cnn", action="store_true", help="also time a CNN on digits")
    p.add_argument("--cnn-epochs", type=int, default=None, help="CNN epochs (10)")
    p.add_argument("--predict-rows", type=int, default=100_000)
    p.add_argument(
        "--repeats", type=int, default=None, help="timed rounds (7; 3 with --quick)"
    )
    p.add_argument(
        "--sections",
        default="full-batch,mini-batch,cnn,predict",
        help="comma-separated subset of full-batch,mini-batch,cnn,predict",
    )
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "steps": 600 if quick else 2000,
        "skorch_steps": 40 if quick else 200,
        "epochs": 5 if quick else 20,
        "cnn_epochs": 2 if quick else 10,
        "repeats": 3 if quick else 7,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.period is None:
        args.period = args.steps / 4
    args.sections = set(args.sections.split(","))
    if not args.cnn:
        args.sections.discard("cnn")
    return args


def full_batch(args, device, dtype, summary):
    X, y = C.spiral(dtype)
    last = {}
    n_steps, period, amp = args.steps, args.period, args.amplitude
    common = dict(
        module="mlp",
        hidden=(100,),
        optimizer="sgd",
        lr=1.0,
        momentum=0.0,
        batch_size=-1,
        device=device,
    )

    def ours(amplitude):
        def run():
            clf = C.skdynloss_classifier(
                epochs=n_steps,
                amplitude=amplitude,
                period=period,
                dtype=args.dtype,
                **common,
            )
            clf.fit(X, y)
            C.check_fitted(clf, n_steps, f"skdynloss A={amplitude:g}")
            last[amplitude] = clf

        return run

    def hand(variant, impl=None):
        def run():
            last[variant] = C.hand_fit(
                X,
                y,
                variant=variant,
                optimizer_impl=impl,
                n_classes=3,
                epochs=n_steps,
                amplitude=amp,
                period=period,
                dtype=dtype,
                **common,
            )[1]

        return run

    def skorch_run():
        net = C.skorch_classifier(
            n_features=2,
            n_classes=3,
            epochs=args.skorch_steps,
            dtype=dtype,
            **common,
        )
        net.fit(X, y)

    contenders = {
        SK70: ours(amp),
        SK1: ours(1.0),
        HAND_CE: hand("ce"),
        HAND_FUSED: hand("ce", impl="fused"),
        HAND_DYN: hand("dynamical"),
        SKORCH: skorch_run,
    }
    units = {name: n_steps for name in contenders}
    units[SKORCH] = args.skorch_steps
    print(
        f"[full batch] spiral 300 x 2, 2-100-3 MLP, sgd lr=1 momentum=0, batch=-1, "
        f"{n_steps} steps (skorch: {args.skorch_steps}), amplitude={amp:g}, "
        f"period={period:g} (last period static, as fit does)",
        flush=True,
    )
    times = C.interleaved(contenders, device, repeats=args.repeats)
    C.print_table(
        C.result_rows(times, units, HAND_CE, unit="step", scale=1e6, scale_name="us"),
        title="Full batch (per gradient-descent step; ratio = best time per step "
        "over hand (a)'s)",
    )
    print_same_work(last[amp], last["dynamical"])
    add = _adder(summary, times, units)
    add("full batch: skdynloss / hand (a) CE", SK70, HAND_CE, 1.3)
    add(
        "full batch: skdynloss / hand (a') CE, fused optimizer (info)",
        SK70,
        HAND_FUSED,
        None,
    )
    add("full batch: skdynloss / hand (b) dynamical+record", SK70, HAND_DYN, 1.3)
    add("full batch: amplitude 70 / amplitude 1", SK70, SK1, 1.05)
    add("full batch: plain skorch / hand (a) CE (info)", SKORCH, HAND_CE, None)


def mini_batch(args, device, dtype, summary, cnn=False):
    from sklearn.exceptions import ConvergenceWarning

    X, y = C.digits(dtype)
    last = {}
    epochs = args.cnn_epochs if cnn else args.epochs
    period = max(epochs / 4, 0.5)
    amp = args.amplitude
    common = dict(
        module="cnn" if cnn else "mlp",
        hidden=(100,),
        image_shape=(1, 8, 8) if cnn else None,
        optimizer="adam",
        lr=1e-3,
        batch_size=64,
        device=device,
    )

    def ours(amplitude):
        def run():
            clf = C.skdynloss_classifier(
                epochs=epochs,
                amplitude=amplitude,
                period=period,
                dtype=args.dtype,
                **common,
            )
            clf.fit(X, y)
            C.check_fitted(clf, epochs, f"skdynloss A={amplitude:g}")
            last[amplitude] = clf

        return run

    def hand(variant, impl=None):
        def run():
            last[variant] = C.hand_fit(
                X,
                y,
                variant=variant,
                optimizer_impl=impl,
                n_classes=10,
                epochs=epochs,
                amplitude=amp,
                period=period,
                dtype=dtype,
                **common,
            )[1]

        return run

    def skorch_run():
        C.skorch_classifier(
            n_features=64, n_classes=10, epochs=epochs, dtype=dtype, **common
        ).fit(X, y)

    def sklearn_run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            C.sklearn_mlp(hidden=(100,), batch_size=64, epochs=epochs, lr=1e-3).fit(
                X, y
            )

    contenders = {SK70: ours(amp), SK1: ours(1.0)}
    contenders.update(
        {
            HAND_CE: hand("ce"),
            HAND_FUSED: hand("ce", impl="fused"),
            HAND_DYN: hand("dynamical"),
        }
    )
    if not cnn:
        contenders[SKORCH] = skorch_run
        contenders[SKLEARN + (" (cpu)" if device.type == "cuda" else "")] = sklearn_run
    units = {name: epochs for name in contenders}
    label = "CNN" if cnn else "Mini-batch"
    model = (
        "CNN (1x8x8 -> conv16 -> pool -> conv32 -> 100 -> 10)"
        if cnn
        else "64-100-10 MLP"
    )
    print(
        f"[{label.lower()}] digits 1797 x 64 standardised, {model}, adam lr=1e-3, "
        f"batch 64 ({C.steps_per_epoch(len(X), 64)} steps/epoch), {epochs} epochs, "
        f"amplitude={amp:g}, period={period:g} epochs",
        flush=True,
    )
    times = C.interleaved(contenders, device, repeats=args.repeats)
    C.print_table(
        C.result_rows(times, units, HAND_CE, unit="epoch"),
        title=f"{label} (per epoch; ratio = best time per epoch over hand (a)'s)",
    )
    print_same_work(last[amp], last["dynamical"])
    tag = "cnn" if cnn else "mini-batch"
    add = _adder(summary, times, units)
    add(f"{tag}: skdynloss / hand (a) CE (info)", SK70, HAND_CE, None)
    add(
        f"{tag}: skdynloss / hand (a') CE, fused optimizer (info)",
        SK70,
        HAND_FUSED,
        None,
    )
    add(f"{tag}: skdynloss / hand (b) dynamical+record (info)", SK70, HAND_DYN, None)
    add(f"{tag}: amplitude 70 / amplitude 1", SK70, SK1, 1.05)
    if not cnn:
        add(f"{tag}: plain skorch / hand (a) CE (info)", SKORCH, HAND_CE, None)
        sk = next(k for k in times if k.startswith(SKLEARN))
        add(f"{tag}: sklearn MLPClassifier / hand (a) CE (info)", sk, HAND_CE, None)
        # The target: faster than MLPClassifier on the same work.
        add(f"{tag}: skdynloss / sklearn MLPClassifier", SK70, sk, 1.00)


def predict(args, device, dtype, summary):
    X, y = C.digits(dtype)
    clf = C.skdynloss_classifier(
        module="mlp",
        hidden=(100,),
        optimizer="adam",
        lr=1e-3,
        batch_size=64,
        epochs=2,
        amplitude=args.amplitude,
        period=1.0,
        device=device,
        dtype=args.dtype,
    ).fit(X, y)
    rng = np.random.default_rng(0)
    X_big = rng.standard_normal((args.predict_rows, X.shape[1])).astype(X.dtype)
    module = clf.module_

    def direct_proba():
        with torch.no_grad():
            logits = module(torch.as_tensor(X_big, device=device))
            return torch.softmax(logits, dim=1).cpu().numpy()

    def direct_predict():
        with torch.no_grad():
            logits = module(torch.as_tensor(X_big, device=device))
            return clf.classes_[logits.argmax(dim=1).cpu().numpy()]

    # Same answers (the direct path's softmax runs in the model's dtype).
    np.testing.assert_allclose(
        clf.predict_proba(X_big), direct_proba(), rtol=1e-4, atol=1e-6
    )
    contenders = {
        "skdynloss predict_proba": lambda: clf.predict_proba(X_big),
        "module_ + softmax": direct_proba,
        "skdynloss predict": lambda: clf.predict(X_big),
        "module_ + argmax": direct_predict,
    }
    units = {name: 1 for name in contenders}
    print(
        f"[predict] 64-100-10 MLP fitted on digits; {args.predict_rows} rows x 64 "
        f"({X_big.nbytes / 2**20:.1f} MiB of {X_big.dtype}); direct = "
        "module_(torch.as_tensor(X)) under torch.no_grad(), softmax, .cpu().numpy()",
        flush=True,
    )
    times = C.interleaved(contenders, device, repeats=max(args.repeats, 5))
    C.print_table(
        C.result_rows(times, units, "module_ + softmax", unit="call"),
        title=f"Prediction on {args.predict_rows} rows (ratio over module_ + softmax)",
    )
    add = _adder(summary, times, units)
    add(
        "predict_proba / module_ + softmax",
        "skdynloss predict_proba",
        "module_ + softmax",
        1.5,
    )
    add(
        "predict / module_ + argmax (info)",
        "skdynloss predict",
        "module_ + argmax",
        None,
    )


def print_same_work(clf, record):
    """Show that hand loop (b) computes what skdynloss computes (same init and order)."""
    diff = C.same_work(clf, record)
    print(
        "check: hand (b) vs skdynloss per-epoch (loss, cross-entropy, accuracy), same "
        f"initial parameters and batch order: max |difference| = {diff:.3g}"
        + (
            ""
            if diff < 1e-3
            else "  <-- differs (expected only from non-deterministic CUDA kernels)"
        ),
        end="\n\n",
        flush=True,
    )


def _adder(summary, times, units):
    """A function that appends one check (both clocks, best and median) to ``summary``."""

    def add(check, a, b, target):
        item = dict(check=check, target=target)
        for metric in ("wall", "cpu"):
            item[metric + " best"] = C.ratio(times, units, a, b, metric)
            item[metric + " median"] = C.ratio(times, units, a, b, metric, C.median)
        summary.append(item)

    return add


def print_summary(summary):
    rows = []
    for item in summary:
        target = item["target"]
        row = {"check": item["check"]}
        for key in ("wall median", "wall best", "cpu median", "cpu best"):
            row[key] = f"{item[key]:.2f}x"
        row["target"] = "-" if target is None else f"<= {target:.2f}x"
        for key in ("wall median", "cpu median"):
            row[f"verdict ({key})"] = (
                "" if target is None else C.verdict(item[key], target)
            )
        rows.append(row)
    C.print_table(
        rows,
        title="Summary: ratios of the median and of the best of the rounds; verdicts "
        "on the medians. wall = perf_counter; cpu = process_time of this process (not "
        "counting time spent waiting for a core on a shared machine)",
    )


def main(argv=None):
    args = parse_args(argv)
    device = C.setup(args)
    dtype = C.DTYPES[args.dtype]
    config = {
        "sections": ", ".join(
            s
            for s in ("full-batch", "mini-batch", "cnn", "predict")
            if s in args.sections
        ),
        "quick": args.quick,
        "full batch": f"spiral 300x2, 2-100-3, sgd lr=1 momentum=0, batch=-1, "
        f"steps={args.steps}, skorch steps={args.skorch_steps}, "
        f"amplitude={args.amplitude:g}, period={args.period:g}",
        "mini-batch": f"digits, 64-100-10, adam lr=1e-3, batch=64, epochs={args.epochs}",
        "cnn": f"digits 1x8x8, adam lr=1e-3, batch=64, epochs={args.cnn_epochs}"
        if "cnn" in args.sections
        else "off (--cnn)",
        "predict rows": args.predict_rows,
        "timing": f"1 warm-up each, then {args.repeats} interleaved rounds "
        "(predict: at least 5); best and median reported",
        "skdynloss": "DynamicalLossClassifier(compute_sharpness=False, random_state=0)",
        "hand loops": "same module class/dtype/device/optimizer; tensor indexing; "
        "(a) torch's default optimizer kernels, (a') torch's fused ones, (b) the "
        "flat-buffer ones skdynloss uses; (b) precomputes Gamma with "
        "skdynloss.class_weights",
        C.load_note().split(":")[0]: C.load_note().split(":", 1)[1].strip(),
    }
    C.print_header("skdynloss training benchmark", args, config)
    summary = []
    if "full-batch" in args.sections:
        full_batch(args, device, dtype, summary)
    if "mini-batch" in args.sections:
        mini_batch(args, device, dtype, summary)
    if "cnn" in args.sections:
        mini_batch(args, device, dtype, summary, cnn=True)
    if "predict" in args.sections:
        predict(args, device, dtype, summary)
    print_summary(summary)
    print(C.load_note())


if __name__ == "__main__":
    main()
