#!/usr/bin/env bash
# Rebuild assets/demo/*.png from the demo's committed result files (experiments/demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=experiments/demo
python scripts/gen_main_fig.py --icl "$OUT/icl_eval.json" --evals "$OUT/checkpoints_eval.json" \
    --sft sft --distill distill --out assets/demo/main_comparison.png \
    --title "Tiny random-init Qwen3 (pipeline check, not the paper's numbers)"
python scripts/gen_loss_fig.py --run "$OUT/runs/sft:SFT" --run "$OUT/runs/distill:SFT + distillation" \
    --out assets/demo/loss_comparison.png
python scripts/gen_ablation_fig.py --evals "$OUT/checkpoints_eval.json" --conditions sft:SFT "distill:SFT + distillation" \
    --out_curve assets/demo/accuracy_curve.png --out_bar assets/demo/best_accuracy.png
