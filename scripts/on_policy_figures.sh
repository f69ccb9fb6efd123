#!/usr/bin/env bash
# The on-policy experiment's paired tests, summary and figures, from its result files and the twostep
# experiment's (reused: base, SFT, off-policy distillation): seconds, no model loaded.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=experiments/on_policy
REUSED=experiments/twostep
FIGS=assets/on_policy
MODEL="SmolLM2-135M-Instruct on twostep"
mkdir -p "$FIGS"
python scripts/summarize_evals.py --icl "$REUSED/icl_eval.json" \
    --evals "$REUSED/test_eval.json" "$OUT/test_eval.json" \
    --selected "$REUSED/selected.json" "$OUT/selected.json" \
    --group "LoRA SFT=sft_seed1,sft_seed2" \
    --group "SFT + 2-shot distillation (gold answers)=distill_seed1,distill_seed2" \
    --group "on-policy, no gold (student samples)=on_policy_seed1" \
    --group "on-policy + gold CE=on_policy_ce_seed1" \
    --group "teacher samples (sequence-level)=teacher_samples_seed1" \
    --compare on_policy_seed1:distill_seed1 --compare on_policy_seed1:sft_seed1 \
    --compare on_policy_seed1:base@2 --compare on_policy_seed1:base@0 \
    --compare on_policy_ce_seed1:sft_seed1 --compare on_policy_ce_seed1:distill_seed1 \
    --compare teacher_samples_seed1:distill_seed1 --compare teacher_samples_seed1:sft_seed1 \
    --output "$OUT/summary.json"
python scripts/gen_summary_fig.py --summary "$OUT/summary.json" --out "$FIGS/accuracy.png" \
    --title "$MODEL: on-policy vs. off-policy distillation, test accuracy (0-shot answers)"
RUNS=(--run "$OUT/runs/on_policy_seed1:on-policy, no gold" --run "$OUT/runs/on_policy_ce_seed1:on-policy + gold CE"
      --run "$OUT/runs/teacher_samples_seed1:teacher samples")
python scripts/gen_loss_fig.py "${RUNS[@]}" --key rollout/accuracy --out "$FIGS/rollout_accuracy.png" \
    --title "$MODEL: accuracy of the answers sampled in training"
# The divergence is the run's own loss: reverse KL for the two on-policy runs, top-K logit MSE for the
# teacher-sample run (not comparable, so not drawn with them).
python scripts/gen_loss_fig.py "${RUNS[@]:0:4}" --key train/divergence --out "$FIGS/divergence.png" \
    --title "$MODEL: reverse KL(student || 2-shot teacher) over the student's top-256, on its own samples"
