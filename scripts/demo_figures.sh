#!/usr/bin/env bash
# The demo's figures from its result files: by default the committed ones (experiments/demo/ -> assets/demo/);
#   bash scripts/demo_figures.sh [RESULTS_DIR FIGURES_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-experiments/demo}
FIGS=${2:-assets/demo}
TITLE="Tiny random-init Qwen3 on GSM8K (pipeline check, not the paper's numbers)"
python scripts/gen_main_fig.py --icl "$OUT/icl_eval.json" --evals "$OUT/checkpoints_eval.json" \
    --sft sft --distill distill --out "$FIGS/main_comparison.png" --title "$TITLE"
python scripts/gen_loss_fig.py --run "$OUT/runs/sft:SFT" --run "$OUT/runs/distill:SFT + 2-shot distillation" \
    --out "$FIGS/loss_comparison.png" --title "Tiny random-init Qwen3: training cross-entropy on the answer tokens"
python scripts/gen_ablation_fig.py --evals "$OUT/checkpoints_eval.json" \
    --conditions sft:SFT "distill:SFT + 2-shot distillation" \
    --out_curve "$FIGS/accuracy_curve.png" --out_bar "$FIGS/best_accuracy.png" \
    --title "Tiny random-init Qwen3, SFT vs. distillation"
