#!/usr/bin/env bash
# One prepared check of the CUDA paths, for the first minutes a GPU machine is lent.
#
#   bash bench/gpu_check.sh [--dry-run] [--out DIR] [--python PY]
#
# 1. Finds a Python whose torch sees a GPU: --python, else .venv (if its torch has CUDA), else the
#    machine's python3. If only the CPU wheel is there and nvidia-smi sees a GPU, it tries the CUDA
#    build from PyPI into .venv; a machine without internet keeps going with what it has and says so.
# 2. `make test-gpu` (the tests marked `gpu`: mixed-precision training, resume, CPU/CUDA samples,
#    NCCL with two GPUs, peak memory), a 2-minute `bench/scaling.py --device cuda` (1 GPU, and 2 if
#    present) and `bench/train_throughput.py --device cuda`, each under a time limit.
# 3. Writes their JSON, logs and a one-screen summary (summary.txt) under --out
#    (default bench/results/gpu). Finishes in under 8 minutes on one H100/H200-class GPU.
#
# --dry-run prints what it would run, checks this script's syntax and that every option it passes
# exists in the scripts that receive it, and runs nothing on a GPU.
set -u -o pipefail
cd "$(dirname "$0")/.."

DRY=0
OUT=bench/results/gpu
PYTHON_CHOICE=""
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) [ $# -ge 2 ] || { echo "gpu_check: --out needs a folder" >&2; exit 2; }; OUT="$2"; shift ;;
        --python) [ $# -ge 2 ] || { echo "gpu_check: --python needs a path" >&2; exit 2; }; PYTHON_CHOICE="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check: unknown option $1 (valid: --dry-run, --out DIR, --python PY)" >&2; exit 2 ;;
    esac
    shift
done

bash -n "$0" || { echo "gpu_check: syntax error in $0" >&2; exit 2; }
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

# Does this Python import torch, and does torch see a GPU? Prints "cuda N", "cpu-wheel" or "none".
torch_state() {
    "$1" - <<'EOF' 2>/dev/null || echo none
import torch
print(f"cuda {torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu-wheel")
EOF
}

# --- 1. a Python with CUDA torch ------------------------------------------------------------------
PY=""
for candidate in "$PYTHON_CHOICE" .venv/bin/python python3; do
    [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 || continue
    state=$(torch_state "$candidate")
    if [ "${state%% *}" = cuda ]; then PY="$candidate"; break; fi
    [ -z "${FALLBACK:-}" ] && [ "$state" = cpu-wheel ] && FALLBACK="$candidate"
done
# Only where a GPU exists (nvidia-smi answers): elsewhere the CUDA build would be a useless multi-GB download.
if [ -z "$PY" ] && [ -x .venv/bin/python ] && [ "$DRY" = 0 ] && nvidia-smi -L >/dev/null 2>&1; then
    note "install: .venv has the CPU wheel of torch; trying the CUDA build from PyPI"
    if .venv/bin/python -m pip install --quiet --upgrade "torch>=2.3" >"$OUT/install.log" 2>&1 \
            && [ "$(torch_state .venv/bin/python | cut -d' ' -f1)" = cuda ]; then
        PY=.venv/bin/python
    else
        note "install: failed or still no GPU (no internet here?); see $OUT/install.log"
    fi
fi
if [ -z "$PY" ]; then
    PY="${FALLBACK:-python3}"
    note "python: $PY has no CUDA torch; the gpu tests will be skipped and the benchmarks say why"
else
    note "python: $PY ($(torch_state "$PY") GPU(s))"
fi
# The package itself: installed without dependencies (nothing is fetched) if this Python lacks it.
if [ "$DRY" = 0 ] && ! "$PY" -c "import kuramoto_diffusion" 2>/dev/null; then
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
    note "package: not installed for $PY; using PYTHONPATH=src"
fi
GPUS=$(torch_state "$PY" | awk '$1 == "cuda" {print $2}')
GPUS=${GPUS:-0}

# --- 2. the steps ---------------------------------------------------------------------------------
# name | seconds allowed | command
STEPS=(
    "gpu tests|240|make test-gpu PY=$PY STAMP= PYTEST_EXTRA=--junitxml=$OUT/gpu_tests.xml"
    "scaling 1 GPU|120|$PY bench/scaling.py --device cuda --processes 1 --steps 20 --out $OUT/scaling_cuda_1.json"
    "scaling 2 GPUs|120|$PY bench/scaling.py --device cuda --processes 1 2 --steps 20 --out $OUT/scaling_cuda_2.json"
    "train throughput|90|$PY bench/train_throughput.py --device cuda --steps 5 --out $OUT/train_throughput_cuda.json"
)

check_options() {  # every --option of a bench command must appear in that script's --help
    local command="$1" script help option
    script=$(echo "$command" | grep -o 'bench/[a-z_]*\.py') || return 0
    help=$("$PY" "$script" --help 2>&1) || { echo "  $script --help failed: $help" | tail -1; return 1; }
    for option in $(echo "$command" | grep -o -- '--[a-z-]*'); do
        grep -q -- "$option" <<<"$help" || { echo "  $script has no option $option"; return 1; }
    done
}

export GPU_CHECK_OUT="$OUT"  # the peak-memory test writes peak_memory.json here
STATUS=0
for entry in "${STEPS[@]}"; do
    IFS='|' read -r name seconds command <<<"$entry"
    if [ "$name" = "scaling 2 GPUs" ] && [ "$GPUS" -lt 2 ] && [ "$DRY" = 0 ]; then
        note "$name: skipped, $GPUS GPU(s) visible"; continue
    fi
    if [ "$DRY" = 1 ]; then
        echo "would run ($seconds s at most): $command"
        check_options "$command" || STATUS=2
        continue
    fi
    if [ "$GPUS" -lt 1 ] && [ "${name%% *}" != gpu ]; then
        note "$name: skipped, no CUDA GPU visible to $PY"; continue
    fi
    log="$OUT/$(echo "$name" | tr ' ' '_').log"
    start=$(date +%s)
    timeout "$seconds" bash -c "$command" >"$log" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    case $rc in
        0) note "$name: ok in ${took} s ($log)" ;;
        124) note "$name: stopped at its ${seconds} s limit ($log)"; STATUS=1 ;;
        *) note "$name: failed with exit $rc in ${took} s; last line: $(tail -1 "$log")"; STATUS=1 ;;
    esac
    grep -E "passed|failed|skipped|examples/s|MiB" "$log" | tail -4 | sed 's/^/    /' | tee -a "$SUMMARY"
done

if [ "$DRY" = 1 ]; then
    [ $STATUS = 0 ] && echo "dry run: syntax and options are fine" || echo "dry run: problems above"
    exit $STATUS
fi
note "outputs: $OUT (summary.txt, *.log, *.json, gpu_tests.xml)"
exit $STATUS
