#!/usr/bin/env bash
# The whole GPU check in under 10 minutes, run from the repository root on a machine with a GPU:
#
#   bash benchmarks/gpu_check.sh             # install the [gpu] extra, time every case, run the paper task
#   bash benchmarks/gpu_check.sh --dry-run   # the same steps at debug size on any machine (the test suite)
#
# It prints the device, the seconds per update of every benchmarks/train_speed.py case in float32 and
# bfloat16 (XLA as `jit: auto` decides: on, on a GPU), and the seconds per update and score of a few
# minutes of the DMC proprio cartpole_balance paper command (with `auto`'s GPU choices: XLA, bfloat16).
# Everything it writes goes under $GPU_CHECK_DIR (default /tmp/gpu_check).
set -euo pipefail

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    *) echo "gpu_check.sh: unknown argument '$arg'; allowed: --dry-run" >&2; exit 2 ;;
  esac
done

OUT=${GPU_CHECK_DIR:-/tmp/gpu_check}
PY=${PYTHON:-python}
mkdir -p "$OUT"

if [[ $DRY_RUN == 1 ]]; then
  # Debug sizes: the same commands and reports, in about a minute on a laptop CPU.
  CASES=dmc_proprio:debug
  SPEED_FLAGS=(--precisions=float32 --updates=2 --warmup=1 --fill=300 --flops=false)
  PAPER_CONFIGS=debug
  PAPER_STEPS=600
  PAPER_SECONDS=900             # the debug run's 600 steps end it first
else
  echo "== installing the [gpu] extra (the CUDA build of the pinned TensorFlow)"
  $PY -m pip install -q -e ".[gpu]"
  CASES=atari100k:size1m,atari100k:size12m,dmc_proprio:size1m
  SPEED_FLAGS=(--precisions=float32,bfloat16 --updates=10 --warmup=2)
  PAPER_CONFIGS=size1m
  PAPER_STEPS=100000
  PAPER_SECONDS=240
fi

echo "== device"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import tensorflow as tf; print('TensorFlow', tf.__version__, '| GPUs:', \
[tf.config.experimental.get_device_details(d).get('device_name', d.name) for d in \
tf.config.list_physical_devices('GPU')] or 'none (CPU only)')" 2>/dev/null

echo "== train_speed.py: $CASES"
$PY benchmarks/train_speed.py --cases="$CASES" "${SPEED_FLAGS[@]}" \
  --out="$OUT/speed.json"

echo "== paper command: dmc_proprio cartpole_balance --configs=$PAPER_CONFIGS for at most ${PAPER_SECONDS}s"
LOGDIR="$OUT/cartpole_balance"
rm -rf "$LOGDIR"
# SIGTERM stops the run at a saved checkpoint (exit 143), which is how a timed run is meant to end.
status=0
timeout --signal=TERM "$PAPER_SECONDS" $PY reproduce/dmc_proprio.py --task=cartpole_balance \
  --configs="$PAPER_CONFIGS" --steps="$PAPER_STEPS" --logdir="$LOGDIR" > "$OUT/paper.log" 2>&1 || status=$?
if [[ $status != 0 && $status != 124 && $status != 143 ]]; then
  tail -n 20 "$OUT/paper.log"; echo "gpu_check.sh: the paper command failed with status $status" >&2; exit 1
fi
$PY benchmarks/run_speed.py --logdir="$LOGDIR"
