#!/usr/bin/env bash
# The twostep experiment's paired tests, seed summary and figures, from its result files
# (experiments/twostep/*.json and the runs' metrics.jsonl): seconds, no model loaded.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=experiments/twostep
FIGS=assets/twostep
MODEL="SmolLM2-135M-Instruct on twostep"
python scripts/summarize_evals.py --icl "$OUT/icl_eval.json" --evals "$OUT/test_eval.json" \
    --selected "$OUT/selected.json" \
    --group "LoRA SFT=sft_seed1,sft_seed2" \
    --group "SFT + 2-shot distillation=distill_seed1,distill_seed2" \
    --group "0-shot-teacher control=zeroshot_teacher_seed1" \
    --group "shuffled-answers control=shuffled_answers_seed1" \
    --compare distill_seed1:sft_seed1 --compare distill_seed2:sft_seed2 \
    --compare distill_seed1:base@2 --compare distill_seed2:base@2 \
    --compare sft_seed1:base@2 --compare sft_seed2:base@2 \
    --compare distill_seed1:zeroshot_teacher_seed1 --compare distill_seed1:shuffled_answers_seed1 \
    --output "$OUT/summary.json"
python scripts/gen_summary_fig.py --summary "$OUT/summary.json" --out "$FIGS/accuracy.png" \
    --title "$MODEL: test accuracy (trained models answer 0-shot)"
python scripts/gen_ablation_fig.py --evals "$OUT/validation_eval.json" \
    --conditions "sft_seed1:SFT (seed 1)" "sft_seed2:SFT (seed 2)" "distill_seed1:SFT + distillation (seed 1)" \
    "distill_seed2:SFT + distillation (seed 2)" "zeroshot_teacher_seed1:0-shot-teacher control" \
    "shuffled_answers_seed1:shuffled-answers control" \
    --out_curve "$FIGS/validation_curve.png" --out_bar "$FIGS/validation_best.png" \
    --title "$MODEL (validation, 200 problems)"
python scripts/gen_loss_fig.py --run "$OUT/runs/sft_seed1:SFT (seed 1)" --run "$OUT/runs/sft_seed2:SFT (seed 2)" \
    --run "$OUT/runs/distill_seed1:SFT + distillation (seed 1)" --run "$OUT/runs/distill_seed2:SFT + distillation (seed 2)" \
    --run "$OUT/runs/zeroshot_teacher_seed1:0-shot-teacher control" \
    --run "$OUT/runs/shuffled_answers_seed1:shuffled-answers control" \
    --out "$FIGS/loss_comparison.png" --title "$MODEL: training cross-entropy on the answer tokens"
