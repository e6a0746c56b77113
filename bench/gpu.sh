#!/usr/bin/env bash
# Every figure that needs a GPU, in one run of a few minutes, ending with one summary block for BENCHMARKS.md.
#
#   bash bench/gpu.sh                          # on a GPU box: one GPU, all its cores
#   bash bench/gpu.sh --device cpu --quick     # the smoke test of the test suite (tiny sizes, a minute)
#
# Needs the project's runtime libraries (torch with CUDA, torchvision, timm, numpy, opencv, pillow, pyyaml,
# tqdm) and installs nothing; dvc, dvclive and segmentation-models-pytorch are not needed (the test suite runs
# this script with them blocked). The loader and pseudo-label figures read the real KITTI sample
# ($PSDIF_SHARED_DATA/kitti-mini, or --kitti DIR: drive 0001, 25 MB); without it they are skipped.
#
# Parts: (1) training step of the full model at 640x192, batch 12 (bench/train_step.py): fp32, bf16, bf16 +
# torch.compile, bf16 + compile with CUDA graphs; peak memory; batch-1 depth inference. (2) The training
# step's colour jitter on the device (eager, compiled) and its largest difference from the CPU reference.
# (3) The training loader: per-core CPU figures and a DataLoader with (cores - 1) workers (bench/loader.py).
# (4) Pseudo-labels: CPU per frame, DeepLabv3+ alone in bf16, the whole label_frames pipeline with
# (cores - 1) workers, bf16-vs-fp32 label agreement (bench/pseudolabel.py).
# A part that fails is reported in the summary and the script exits 1 after running the others.
set -uo pipefail

DEVICE=cuda
QUICK=0
KITTI="${PSDIF_SHARED_DATA:-}"
[ -n "$KITTI" ] && KITTI="$KITTI/kitti-mini"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --kitti) KITTI="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench/gpu.sh: unknown argument $1 (--device cpu|cuda, --quick, --kitti DIR)" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
CORES=$("$PY" -c "import os; print(len(os.sched_getaffinity(0)))")
WORKERS=$(( CORES > 1 ? CORES - 1 : 1 ))
LOG="$(mktemp)"
FAILED=()
trap 'rm -f "$LOG"' EXIT

run() {  # run a part, keep its output for the summary, remember a failure and go on
  local name="$1"; shift
  echo "+ $*"
  if ! "$@" 2>&1 | tee -a "$LOG"; then
    FAILED+=("$name")
    echo "!! $name failed" | tee -a "$LOG"
  fi
}

"$PY" - "$DEVICE" <<'EOF' | tee -a "$LOG"
import importlib.util, os, platform, sys
import torch
device = sys.argv[1]
name = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else platform.processor() or "cpu"
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("bench/gpu.sh: --device cuda but torch sees no CUDA device (use --device cpu for a smoke test)")
missing = [m for m in ("timm", "cv2", "PIL", "yaml", "tqdm", "torchvision") if importlib.util.find_spec(m) is None]
print(f"machine: {name}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}, python {platform.python_version()}"
      + (f"; MISSING: {', '.join(missing)}" if missing else ""))
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 2

if [ "$QUICK" = 1 ]; then
  STEP=(--variant full --msfan-size tiny --height 64 --width 96 --batch 2 --warmup 1 --steps 1)
  JITTER=(--batch 2)
  LOADER=(--repeat 1 --batch 4 --workers 1 --batches 2)
  LABELS=(--size 64x160 --batch 2 --steps 1 --frames 4 --workers 1 --repeat 1)
else
  STEP=(--variant full --batch 12 --height 192 --width 640 --warmup 5 --steps 20)
  JITTER=(--batch 12)
  LOADER=(--repeat 5 --batch 12 --workers "$WORKERS" --batches 100)
  LABELS=(--batch 8 --steps 10 --frames 1000 --workers "$WORKERS")
fi

# (1) the training step
run "train step fp32" "$PY" bench/train_step.py "${STEP[@]}" --device "$DEVICE" --inference
if [ "$DEVICE" = cuda ]; then
  run "train step bf16" "$PY" bench/train_step.py "${STEP[@]}" --device cuda --amp --inference
  run "train step bf16 compiled" "$PY" bench/train_step.py "${STEP[@]}" --device cuda --amp --compile --inference
  run "train step bf16 CUDA graphs" "$PY" bench/train_step.py "${STEP[@]}" --device cuda --amp --compile \
      --compile-mode reduce-overhead
fi

# (2) the jitter in the step
run "jitter" "$PY" bench/loader.py --jitter-device "$DEVICE" "${JITTER[@]}"
[ "$DEVICE" = cuda ] && run "jitter compiled" "$PY" bench/loader.py --jitter-device cuda --compile "${JITTER[@]}"

# (3) the loader, (4) pseudo-labels: real frames
if [ -n "$KITTI" ] && [ -d "$KITTI/2011_09_26" ]; then
  run "loader" "$PY" bench/loader.py --frames both --kitti "$KITTI" "${LOADER[@]}"
  run "pseudo-labels" "$PY" bench/pseudolabel.py --kitti "$KITTI" --device "$DEVICE" --precision bf16 --compare fp32 \
      "${LABELS[@]}"
else
  echo "loader and pseudo-label figures skipped: no KITTI sample (set PSDIF_SHARED_DATA or --kitti DIR)" | tee -a "$LOG"
  run "loader (generated frames)" "$PY" bench/loader.py --frames generated "${LOADER[@]}"
fi

echo
echo "===== bench/gpu.sh summary: $(date -u +%Y-%m-%dT%H:%MZ), $(hostname), --device $DEVICE$([ "$QUICK" = 1 ] && echo ' --quick') ====="
grep -E "^machine:|samples/s|depth inference|jitter_batch|per core|frames/s|agree|skipped|failed|^(real KITTI|generated) " "$LOG" \
  | grep -v "^+ " | sed 's/^  //'
[ ${#FAILED[@]} -eq 0 ] && echo "all parts ran" || echo "FAILED: ${FAILED[*]}"
echo "====="
[ ${#FAILED[@]} -eq 0 ]
