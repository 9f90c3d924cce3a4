#!/usr/bin/env bash
# The README's main job: set up, build the default corpus (tokenizer + shards), train, then score.
# On a machine with an NVIDIA GPU it trains configs/default-gpu.toml; otherwise configs/tiny-cpu.toml
# (a few minutes on 2 cores). Extra arguments go to `pgolf train` (e.g. --set train.iterations=50).
set -euo pipefail
cd "$(dirname "$0")/.."
# Without a GPU the CUDA kernels are never used: skip compiling them (minutes on a small machine).
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  HAVE_GPU=1
  scripts/setup.sh --build-dir build
else
  HAVE_GPU=0
  scripts/setup.sh --build-dir build --cpu-only
fi
PGOLF=build/pgolf
$PGOLF version
$PGOLF data default --out data-local/default
if [ "$HAVE_GPU" = 1 ] && $PGOLF version | grep -q "cuda: on"; then
  CONFIG=configs/default-gpu.toml
else
  CONFIG=configs/tiny-cpu.toml
fi
RUN_DIR=runs/main-$(date +%Y%m%d-%H%M%S)
echo "main job: training $CONFIG into $RUN_DIR"
$PGOLF train --config "$CONFIG" --run-dir "$RUN_DIR" "$@"
# Quantize + pack the trained model into an artifact, then score the artifact alone (sliding window).
$PGOLF pack "$RUN_DIR"
SEQ_LEN=$(sed -n 's/^seq_len *= *\([0-9]*\).*/\1/p' "$RUN_DIR/config.toml" | head -1)
SEQ_LEN=${SEQ_LEN:-1024}
VAL=$(sed -n 's/^val *= *"\(.*\)".*/\1/p' "$RUN_DIR/config.toml" | head -1)
TOKENIZER=$(sed -n 's/^tokenizer *= *"\(.*\)".*/\1/p' "$RUN_DIR/config.toml" | head -1)
$PGOLF eval --artifact "$RUN_DIR/final_model.pgolf" --val "$VAL" --tokenizer "$TOKENIZER" \
  --mode sliding --context "$SEQ_LEN" --stride $((SEQ_LEN / 4)) --json "$RUN_DIR/eval.json"
$PGOLF report "$RUN_DIR" || echo "main job: report not written"
echo "main job: done; results in $RUN_DIR (config.toml, metrics.jsonl, final_model.pgolf, eval.json, report.html)"
