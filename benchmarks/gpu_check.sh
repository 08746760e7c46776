#!/usr/bin/env bash
# GPU check, under 8 minutes on one GPU and without Ray (issue #12 item 8):
#   1. the machine: python, torch, the GPU, bf16 support;
#   2. the Python packages `irstdlab train --no-ray` imports (torch, torchvision, numpy, pyyaml,
#      opencv-python-headless, pillow, dadaptation for the paper preset's DAdaptAdam). Nothing is
#      downloaded: a missing one is installed from wheels in .whl/ (pip --no-index) when that folder
#      exists, into a scratch folder put on PYTHONPATH; otherwise the check stops naming what is missing;
#   3. images/s of BAFE-Net R18 and FCOS R18 at 512x512, fp32 and bf16 (benchmarks/gpu_throughput.py);
#   3b. several trials per GPU: total training images/s of 1 and of 4 BAFE-Net R18 processes (bf16, batch 2,
#      512x512) sharing the GPU at once, and each one's peak memory (gpu_throughput.py --packed 1,4), as a
#      search with --gpus-per-worker 0.25 packs them;
#   4. one epoch of paper_bafenet_r18 on real DenseSIRST data (`irstdlab train --no-ray`) and its test mAP07.
#      It starts from ImageNet weights when torch's hub cache holds resnet18-f37072fd.pth, else from
#      random weights with trainable BN (said so in the output).
#
# Usage, from the repository root:
#   bash benchmarks/gpu_check.sh [SIRSTdevkit]      # or DATA=/path/to/SIRSTdevkit bash benchmarks/gpu_check.sh
# The data root defaults to the first of shared/data/DenseSIRST-mini/SIRSTdevkit,
# ../shared/data/DenseSIRST-mini/SIRSTdevkit and .data/DenseSIRST-mini/SIRSTdevkit that exists.
# Everything goes to stdout and, when $OUT is set, to $OUT/gpu_check.log; the last line of stdout is
# one JSON object {"gpu_check": {...}} with every step's status and numbers. Exit 0 only if every step passed.
# Per-step limits (seconds, 480 together): machine 20, packages 40, throughput 120, packing 90, epoch 210.
# Tiny CPU rehearsal of the same script: GPU_CHECK_CPU=1 bash benchmarks/gpu_check.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/irstdlab-gpu-check.XXXXXX")
LOG=/dev/null
if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    LOG="$OUT/gpu_check.log"
fi
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1

# The CPU rehearsal shrinks every size; the GPU run uses the real ones.
if [[ "${GPU_CHECK_CPU:-0}" == 1 ]]; then
    BENCH_ARGS=(--device cpu --size 128 --batch 2 --iters 2 --warmup 1)
    PACK_ARGS=(--device cpu --size 128 --batch 2 --warmup 1 --seconds 2)
    TRAIN_ARGS=(--set train.device=cpu --set data.size=128 --set data.repeat=1 --set train.max_iters_per_epoch=2
                --set data.num_workers=0)
else
    BENCH_ARGS=(--device cuda --size 512 --batch 8 --iters 20 --warmup 3)
    PACK_ARGS=(--device cuda --size 512 --batch 2 --warmup 5 --seconds 20)
    TRAIN_ARGS=(--set train.device=cuda)
fi

# irstdlab.* is a namespace over the top-level folders (pyproject's package-dir): link them, no install.
mkdir -p "$WORK/ns/irstdlab" "$WORK/pydeps"
for part in harness models datasets search_spaces leaderboards; do ln -s "$ROOT/$part" "$WORK/ns/irstdlab/$part"; done
export PYTHONPATH="$WORK/ns:$WORK/pydeps${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}

declare -A STATUS=()
FAILED=0
LIMIT=60
limited() { timeout --kill-after=10 "$LIMIT" "$@"; }  # every command of a step runs under its limit
step() {  # step NAME SECONDS COMMAND...: record ok / failed (exit code) / timed out
    local name=$1 rc=0
    LIMIT=$2
    shift 2
    echo "=== $name (limit ${LIMIT}s)"
    "$@" || rc=$?
    if [[ $rc == 0 ]]; then STATUS[$name]=ok
    elif [[ $rc == 124 || $rc == 137 ]]; then STATUS[$name]="timed out after ${LIMIT}s"; FAILED=1
    else STATUS[$name]="failed (exit $rc)"; FAILED=1
    fi
    echo "=== $name: ${STATUS[$name]}"
}

# 1. the machine
step machine 20 limited "$PY" -c '
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
if torch.cuda.is_available():
    print("GPU", torch.cuda.get_device_name(0), "| bf16", torch.cuda.is_bf16_supported())
else:
    print("no CUDA device visible")
'

# 2. the packages (import name -> wheel name)
check_packages() {
    local missing
    missing=$(limited "$PY" -c '
import importlib
wanted = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "yaml": "pyyaml",
          "cv2": "opencv-python-headless", "PIL": "pillow", "dadaptation": "dadaptation"}
missing = []
for module, wheel in wanted.items():
    try:
        importlib.import_module(module)
    except Exception:
        missing.append(wheel)
print(" ".join(missing))
')
    if [[ -z "$missing" ]]; then echo "all packages present"; return 0; fi
    echo "missing: $missing"
    if [[ ! -d .whl ]]; then
        echo "no .whl/ folder with wheels for them (pip download them elsewhere, put them in .whl/)"; return 1
    fi
    # shellcheck disable=SC2086  # one word per package
    limited "$PY" -m pip install --quiet --no-index --no-deps --find-links .whl --target "$WORK/pydeps" $missing
}
step packages 40 check_packages

# 3. throughput
throughput() { limited "$PY" benchmarks/gpu_throughput.py "${BENCH_ARGS[@]}" | tee "$WORK/throughput.out"; }
step throughput 120 throughput
THROUGHPUT_JSON=$(tail -1 "$WORK/throughput.out" 2>/dev/null || true)

# 3b. several trials per GPU (--gpus-per-worker 0.25): 1 versus 4 processes at once
packing() { limited "$PY" benchmarks/gpu_throughput.py "${PACK_ARGS[@]}" --packed 1,4 | tee "$WORK/packing.out"; }
step packing 90 packing
PACKING_JSON=$(tail -1 "$WORK/packing.out" 2>/dev/null || true)

# 4. one epoch of the paper recipe on real data
DATA_ROOT=${1:-${DATA:-}}
if [[ -z "$DATA_ROOT" ]]; then
    for candidate in shared/data/DenseSIRST-mini/SIRSTdevkit ../shared/data/DenseSIRST-mini/SIRSTdevkit \
                     .data/DenseSIRST-mini/SIRSTdevkit; do
        if [[ -d "$candidate/PNGImages" ]]; then DATA_ROOT=$candidate; break; fi
    done
fi
WEIGHTS=()
HUB=$("$PY" -c 'import torch; print(torch.hub.get_dir())' 2>/dev/null || echo "")
if [[ -n "$HUB" && -f "$HUB/checkpoints/resnet18-f37072fd.pth" ]]; then
    INIT=imagenet
else
    INIT="random (no resnet18-f37072fd.pth in ${HUB:-the torch hub cache}/checkpoints)"
    WEIGHTS=(--set model.pretrained=null --set model.frozen_bn=false --set model.norm_eval=false)
fi
train_epoch() {
    if [[ -z "$DATA_ROOT" || ! -d "$DATA_ROOT/PNGImages" ]]; then
        echo "no DenseSIRST root (pass one as the first argument or DATA=...; it holds PNGImages/)"; return 2
    fi
    echo "data $DATA_ROOT; backbone init: $INIT"
    limited "$PY" -m irstdlab.harness.cli train paper_bafenet_r18 --no-ray --json --storage "$WORK/runs" --name epoch1 \
        --set "data.root=$DATA_ROOT" --set schedule.epochs=1 "${WEIGHTS[@]}" "${TRAIN_ARGS[@]}" \
        | tee "$WORK/train.out"
}
step epoch 210 train_epoch
TRAIN_JSON=$(tail -1 "$WORK/train.out" 2>/dev/null || true)

# summary: the last line of stdout
STATUS_JSON=$(for k in "${!STATUS[@]}"; do printf '%s\t%s\n' "$k" "${STATUS[$k]}"; done)
"$PY" - "$THROUGHPUT_JSON" "$TRAIN_JSON" "$INIT" "$DATA_ROOT" "$STATUS_JSON" "$PACKING_JSON" <<'EOF'
import json, sys
throughput, train, init, data, status, packing = sys.argv[1:7]
def load(text):
    try:
        return json.loads(text)
    except ValueError:
        return None
bench, run, pack = load(throughput), load(train), load(packing)
summary = {"steps": dict(line.split("\t", 1) for line in status.splitlines() if line), "data_root": data or None,
           "backbone_init": init, "throughput": bench["rows"] if bench else None,
           "hardware": bench.get("hardware") if bench else None, "packing": pack["rows"] if pack else None}
if run:
    m = run.get("metrics", {})
    summary["epoch"] = {k: m.get(k) for k in ("test/mAP07", "test/mAP12", "test/mAP75", "test/recall", "val/mAP07",
                                             "train/loss", "train/iterations", "images_per_s", "train/time_s")}
    summary["epoch"]["wall_time_s"] = run.get("wall_time_s")
print(json.dumps({"gpu_check": summary}, sort_keys=True))
EOF
rm -rf "$WORK"
exit "$FAILED"
