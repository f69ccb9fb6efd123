#!/usr/bin/env bash
# The whole pipeline on a CPU in a few minutes: a tiny random-weight Qwen3 (2 layers, hidden 64, the
# real Qwen3 tokenizer) trained with SFT and with few-shot distillation on real GSM8K, its checkpoints
# and the base model scored with the hf backend on a 16-question test subset, and the figures.
# It checks the plumbing; a random 2-layer model scores ~0% and says nothing about the method.
#
#   bash scripts/demo_cpu.sh              # writes runs/demo/ (untracked): results, run folders, figures/
#   bash scripts/demo_cpu.sh --refresh    # rewrites the committed copy: experiments/demo/ and assets/demo/
#   bash scripts/demo_cpu.sh --print-paths
#
# Data and tokenizer come from ../shared (beside the repo) when present, else from the Hub.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=runs/demo
FIGS=runs/demo/figures
PRINT_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --refresh) OUT=experiments/demo; FIGS=assets/demo ;;
    --print-paths) PRINT_ONLY=1 ;;
    *) echo "error: unknown argument '$arg' (--refresh rewrites the committed copy)" >&2; exit 2 ;;
  esac
done
if [ "$PRINT_ONLY" = 1 ]; then echo "$OUT $FIGS"; exit 0; fi
RUNS=$OUT/runs
SHARED=../shared
ARGS=()
if [ -d "$SHARED/data/gsm8k" ] && [ -d "$SHARED/tokenizers/qwen3" ]; then
  ARGS=(data.source="$SHARED/data/gsm8k" model.tokenizer="$SHARED/tokenizers/qwen3")
  export HF_HUB_OFFLINE=1
fi
export TOKENIZERS_PARALLELISM=false

mkdir -p "$RUNS"
start=$(date +%s)
# 30 steps at a high learning rate, so the loss curves move (the tiny configs' 8 steps are for tests).
TRAIN=(training.max_steps=30 training.save_every=10 training.lr=1e-2 training.warmup_steps=3 training.log_every=1
       output.log_with=[])
python src/training/train_baseline.py --config configs/tiny/base.yaml --output_dir "$RUNS/sft" --overwrite "${TRAIN[@]}" "${ARGS[@]}"
python src/training/train_online_v1.py --config configs/tiny/online_v1.yaml --output_dir "$RUNS/distill" --overwrite "${TRAIN[@]}" "${ARGS[@]}"

rm -f "$OUT/icl_eval.json" "$OUT/checkpoints_eval.json"
python scripts/eval_icl.py --config configs/tiny/online_v1.yaml --output "$OUT/icl_eval.json" --teacher_forced "${ARGS[@]}"
python scripts/eval_checkpoints.py --config configs/tiny/online_v1.yaml --conditions sft distill \
    --base_dir "$RUNS" --output "$OUT/checkpoints_eval.json" --teacher_forced "${ARGS[@]}"

bash scripts/demo_figures.sh "$OUT" "$FIGS"
echo "demo finished in $(( $(date +%s) - start )) s: results in $OUT, figures in $FIGS"
