#!/usr/bin/env bash
# Rebuild assets/smollm2/*.png from the SmolLM2 experiment's committed result files (experiments/smollm2/).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=experiments/smollm2
CONDS=(sft:SFT "distill:SFT + 1-shot distillation")
RUNS=(--run "$OUT/runs/sft:SFT" --run "$OUT/runs/distill:SFT + 1-shot distillation")
if [ -f "$OUT/runs/zeroshot_teacher/run.json" ]; then
  CONDS+=("zeroshot_teacher:SFT + 0-shot-teacher distillation")
  RUNS+=(--run "$OUT/runs/zeroshot_teacher:SFT + 0-shot-teacher distillation")
fi
python scripts/gen_teacher_forced_fig.py --icl "$OUT/icl_eval.json" --evals "$OUT/checkpoints_eval.json" \
    --conditions "${CONDS[@]}" --metric nll --out assets/smollm2/nll_curve.png \
    --title "SmolLM2-135M-Instruct, GSM8K test: gold-answer NLL under the bare question"
python scripts/gen_teacher_forced_fig.py --icl "$OUT/icl_eval.json" --evals "$OUT/checkpoints_eval.json" \
    --conditions "${CONDS[@]}" --metric kl --out assets/smollm2/kl_curve.png \
    --title "SmolLM2-135M-Instruct, GSM8K test: distance to the 1-shot teacher"
python scripts/gen_loss_fig.py "${RUNS[@]}" --out assets/smollm2/loss_comparison.png \
    --title "SmolLM2-135M-Instruct: training CE on the answer tokens"
