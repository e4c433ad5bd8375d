#!/usr/bin/env bash
# One prepared GPU check for skdynloss (about 3-5 minutes on one NVIDIA GPU).
#
# Run from anywhere inside the repository, on a machine with an NVIDIA GPU and a CUDA
# build of torch already installed:
#
#     bash benchmarks/run_gpu.sh
#
# It (1) prints the GPU and the versions, (2) installs this checkout in editable mode
# without dependencies if skdynloss is not importable (the machine may be offline:
# scikit-learn, skorch and scipy must already be installed, or wheels for them must be
# in $WHEELHOUSE, which is then used with --no-index), (3) runs the tests marked gpu
# (`pytest -m gpu`; "no tests collected" is not a failure), (4) runs the benchmarks of
# issue 9's targets on CUDA: training time against the reference loop with the empty
# callback, the cost per partial_fit call, and the size of fitted estimators.
#
# Everything printed also goes to "$OUT/gpu_report.txt" when $OUT is set.
# For a dry run of the script itself on a machine without a GPU:
#     BENCH_DEVICE=cpu BENCH_EXTRA=--quick bash benchmarks/run_gpu.sh
# Exit status: 0 when every step ran, else the number of steps that failed.

set -u -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    exec > >(tee "$OUT/gpu_report.txt") 2>&1
fi

PY="${PYTHON:-python}"
DEVICE="${BENCH_DEVICE:-cuda}"
# Extra options for the benchmarks (e.g. --quick); word splitting is intended.
read -r -a EXTRA <<< "${BENCH_EXTRA:-}"
FAILED=0
START=$SECONDS

step() {
    echo
    echo "######## $* ($((SECONDS - START)) s elapsed)"
}

# run NAME TIMEOUT_SECONDS COMMAND...: run one step, record failure, never abort.
run() {
    local name="$1" limit="$2"
    shift 2
    step "$name"
    echo "+ $*"
    timeout --signal=INT --kill-after=15 "$limit" "$@"
    local rc=$?
    if [[ $rc -eq 124 || $rc -eq 130 ]]; then
        echo "!!!! $name: timed out after ${limit} s"
        FAILED=$((FAILED + 1))
    elif [[ $rc -ne 0 ]]; then
        echo "!!!! $name: exit status $rc"
        FAILED=$((FAILED + 1))
    fi
    return 0
}

step "machine"
date -u
git rev-parse HEAD 2>/dev/null && git status --short 2>/dev/null | head -20
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,utilization.gpu --format=csv
DEVICE="$DEVICE" "$PY" - <<'EOF'
import os
import sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda)
print("cuda available:", torch.cuda.is_available())
if os.environ["DEVICE"] == "cpu":
    print("BENCH_DEVICE=cpu: dry run on the CPU")
    sys.exit(0)
if not torch.cuda.is_available():
    sys.exit("error: torch.cuda.is_available() is False: this script needs an NVIDIA GPU and a CUDA build of torch")
print("device:", torch.cuda.get_device_name(0))
EOF
if [[ $? -ne 0 ]]; then
    echo "!!!! no usable CUDA device: stopping"
    exit 1
fi

step "install"
if ! "$PY" -c "import skdynloss" 2>/dev/null; then
    if [[ -n "${WHEELHOUSE:-}" && -d "${WHEELHOUSE}" ]]; then
        "$PY" -m pip install --no-index --find-links "$WHEELHOUSE" -e . || FAILED=$((FAILED + 1))
    else
        "$PY" -m pip install -e . --no-deps || FAILED=$((FAILED + 1))
    fi
fi
"$PY" - <<'EOF'
import importlib
missing = []
for name in ("numpy", "scipy", "sklearn", "skorch", "skdynloss"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {getattr(mod, '__version__', '?')}")
    except ImportError as exc:
        missing.append(f"{name} ({exc})")
if missing:
    raise SystemExit("error: missing packages: " + ", ".join(missing)
                     + " -- install them (or set WHEELHOUSE to a folder of wheels)")
EOF
if [[ $? -ne 0 ]]; then
    echo "!!!! dependencies missing: stopping"
    exit 1
fi

step "tests marked gpu"
if "$PY" -c "import pytest" 2>/dev/null; then
    echo "+ $PY -m pytest -m gpu -q"
    timeout 120 "$PY" -m pytest -m gpu -q -p no:cacheprovider
    rc=$?
    if [[ $rc -eq 5 ]]; then
        echo "(no tests marked gpu were collected)"
    elif [[ $rc -ne 0 ]]; then
        echo "!!!! pytest -m gpu: exit status $rc"
        FAILED=$((FAILED + 1))
    fi
else
    echo "pytest is not installed: skipped"
fi

# Issue 9's targets on the device: training time against the reference loop and the
# empty-callback cost (7 rounds of both regimes), the cost per partial_fit call (1500
# calls each), the size of fitted estimators (CPU RSS is not measured on CUDA).
run "training benchmark on $DEVICE" 240 \
    "$PY" benchmarks/bench_training.py --device "$DEVICE" ${EXTRA[@]+"${EXTRA[@]}"}

run "partial_fit benchmark on $DEVICE" 180 \
    "$PY" benchmarks/bench_partial_fit.py --device "$DEVICE" --calls 1500 ${EXTRA[@]+"${EXTRA[@]}"}

run "size of fitted estimators on $DEVICE" 120 \
    "$PY" benchmarks/bench_memory.py --device "$DEVICE" --sections size --epochs 20 ${EXTRA[@]+"${EXTRA[@]}"}

step "done: $FAILED step(s) failed, $((SECONDS - START)) s in all"
exit "$FAILED"
