#!/usr/bin/env bash
# The teacher-context experiment's paired tests, summary and figures, from its result files and the twostep
# experiment's (reused: base model, SFT, 2-shot distillation): seconds, no model loaded.
#   OUT (default experiments/teacher_context), REUSED (experiments/twostep); figures go to
#   assets/teacher_context for the committed experiment, else to $OUT/figures.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-experiments/teacher_context}
REUSED=${REUSED:-experiments/twostep}
if [ "$OUT" = experiments/teacher_context ]; then FIGS=assets/teacher_context; else FIGS=$OUT/figures; fi
MODEL="SmolLM2-135M-Instruct on twostep"
mkdir -p "$FIGS"
runs_like() {  # FILE PREFIX: the comma-separated conditions of FILE starting with PREFIX (the reused seeds)
  python -c "import json, sys; r = json.load(open(sys.argv[1]))['results']; \
print(','.join(sorted({e['condition'] for e in r if e['condition'].startswith(sys.argv[2])})))" "$1" "$2"
}
SFT=$(runs_like "$REUSED/test_eval.json" sft_seed)
DISTILL=$(runs_like "$REUSED/test_eval.json" distill_seed)
EVALS=("$REUSED/test_eval.json" "$OUT/test_eval.json")
GROUP_ARGS=(--group "LoRA SFT=$SFT" --group "SFT + 2-shot distillation (same model)=$DISTILL"
        --group "privileged context, on-policy, no gold=privileged_on_policy_seed1"
        --group "privileged context, on-policy + gold CE=privileged_on_policy_ce_seed1"
        --group "other row's context (control), on-policy=other_row_context_seed1"
        --group "SFT checkpoint as teacher (teacher.model)=sft_teacher_seed1")
COMPARE=(--compare privileged_on_policy_seed1:sft_seed1 --compare privileged_on_policy_seed1:base@0
         --compare privileged_on_policy_seed1:other_row_context_seed1
         --compare privileged_on_policy_ce_seed1:sft_seed1 --compare privileged_on_policy_ce_seed1:distill_seed1
         --compare sft_teacher_seed1:sft_seed1 --compare sft_teacher_seed1:distill_seed1)
if [ -f "$OUT/system_prompt_test.json" ]; then
  EVALS+=("$OUT/system_prompt_test.json")
  GROUP_ARGS+=(--group "system prompt distilled, on-policy=system_prompt_seed1")
  COMPARE+=(--compare system_prompt_seed1:base_system_prompt@0 --compare system_prompt_seed1:base@0
            --compare base_system_prompt@0:base@0 --compare system_prompt_seed1:sft_seed1)
fi
python scripts/summarize_evals.py --icl "$REUSED/icl_eval.json" --evals "${EVALS[@]}" \
    --selected "$REUSED/selected.json" "$OUT/selected.json" "${GROUP_ARGS[@]}" "${COMPARE[@]}" \
    --output "$OUT/summary.json"
python scripts/gen_summary_fig.py --summary "$OUT/summary.json" --out "$FIGS/accuracy.png" \
    --title "$MODEL: what the teacher sees, test accuracy (0-shot answers)"
CONDITIONS=("privileged_on_policy_seed1:privileged, no gold" "privileged_on_policy_ce_seed1:privileged + gold CE"
            "other_row_context_seed1:other row's context" "sft_teacher_seed1:SFT checkpoint as teacher")
RUNS=(--run "$OUT/runs/privileged_on_policy_seed1:privileged context, no gold"
      --run "$OUT/runs/privileged_on_policy_ce_seed1:privileged context + gold CE"
      --run "$OUT/runs/other_row_context_seed1:other row's context (control)")
if [ -d "$OUT/runs/system_prompt_seed1" ]; then
  CONDITIONS+=("system_prompt_seed1:system prompt distilled")
  RUNS+=(--run "$OUT/runs/system_prompt_seed1:system prompt distilled")
fi
python scripts/gen_ablation_fig.py --evals "$OUT/validation_eval.json" --conditions "${CONDITIONS[@]}" \
    --out_curve "$FIGS/validation_curve.png" --out_bar "$FIGS/validation_best.png" \
    --title "$MODEL (validation)"
python scripts/gen_loss_fig.py "${RUNS[@]}" --key rollout/accuracy --out "$FIGS/rollout_accuracy.png" \
    --title "$MODEL: accuracy of the student's own samples in training"
python scripts/gen_loss_fig.py "${RUNS[@]}" --key train/divergence --out "$FIGS/divergence.png" \
    --title "$MODEL: reverse KL(student || teacher with its context) on the student's samples"
