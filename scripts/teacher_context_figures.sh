#!/usr/bin/env bash
# The teacher-context experiment's paired tests, summary and figures, from its result files and the twostep
# experiment's (reused: base model, SFT, 2-shot distillation): seconds, no model loaded.
#   OUT (default experiments/teacher_context), REUSED (experiments/twostep), ON_POLICY (experiments/on_policy:
#   the same on-policy recipe with the 2-exemplar teacher, compared where it exists); figures go to
#   assets/teacher_context for the committed experiment, else to $OUT/figures.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-experiments/teacher_context}
REUSED=${REUSED:-experiments/twostep}
if [ "$OUT" = experiments/teacher_context ]; then
  FIGS=assets/teacher_context
  ON_POLICY=${ON_POLICY:-experiments/on_policy}  # its 2-exemplar on-policy runs
else
  FIGS=$OUT/figures
  ON_POLICY=${ON_POLICY:-}
fi
MODEL="SmolLM2-135M-Instruct on twostep"
mkdir -p "$FIGS"
runs_like() {  # FILE PREFIX: the comma-separated conditions of FILE starting with PREFIX (the reused seeds)
  python -c "import json, sys; r = json.load(open(sys.argv[1]))['results']; \
print(','.join(sorted({e['condition'] for e in r if e['condition'].startswith(sys.argv[2])})))" "$1" "$2"
}
ran() {  # RUN: whether RUN has test results in $OUT/test_eval.json (a run not trained or not evaluated,
         # e.g. one the time ran out for, is left out of the summary and figures)
  python -c "import json, sys; r = json.load(open(sys.argv[1]))['results']; \
sys.exit(not any(e['condition'] == sys.argv[2] for e in r))" "$OUT/test_eval.json" "$1"
}
SFT=$(runs_like "$REUSED/test_eval.json" sft_seed)
DISTILL=$(runs_like "$REUSED/test_eval.json" distill_seed)
EVALS=("$REUSED/test_eval.json" "$OUT/test_eval.json")
SELECTED=("$REUSED/selected.json" "$OUT/selected.json")
GROUP_ARGS=(--group "LoRA SFT=$SFT" --group "SFT + 2-shot distillation (same model)=$DISTILL")
COMPARE=()
CONDITIONS=()
RUNS=()
if [ -f "$ON_POLICY/test_eval.json" ]; then  # the on-policy runs with the 2-exemplar teacher, for comparison
  EVALS+=("$ON_POLICY/test_eval.json")
  SELECTED+=("$ON_POLICY/selected.json")
  GROUP_ARGS+=(--group "on-policy, 2-exemplar teacher, no gold=on_policy_seed1"
               --group "on-policy, 2-exemplar teacher + gold CE=on_policy_ce_seed1")
fi
if ran privileged_on_policy_seed1; then
  GROUP_ARGS+=(--group "privileged context, on-policy, no gold=privileged_on_policy_seed1")
  COMPARE+=(--compare privileged_on_policy_seed1:sft_seed1 --compare privileged_on_policy_seed1:distill_seed1
            --compare privileged_on_policy_seed1:base@0 --compare privileged_on_policy_seed1:base@2)
  [ -f "$ON_POLICY/test_eval.json" ] && COMPARE+=(--compare privileged_on_policy_seed1:on_policy_seed1)
  CONDITIONS+=("privileged_on_policy_seed1:privileged, no gold")
  RUNS+=(--run "$OUT/runs/privileged_on_policy_seed1:privileged context, no gold")
fi
if ran privileged_on_policy_ce_seed1; then
  GROUP_ARGS+=(--group "privileged context, on-policy + gold CE=privileged_on_policy_ce_seed1")
  COMPARE+=(--compare privileged_on_policy_ce_seed1:sft_seed1 --compare privileged_on_policy_ce_seed1:distill_seed1)
  [ -f "$ON_POLICY/test_eval.json" ] && COMPARE+=(--compare privileged_on_policy_ce_seed1:on_policy_ce_seed1)
  CONDITIONS+=("privileged_on_policy_ce_seed1:privileged + gold CE")
  RUNS+=(--run "$OUT/runs/privileged_on_policy_ce_seed1:privileged context + gold CE")
fi
if ran other_row_context_seed1; then
  GROUP_ARGS+=(--group "other row's context (control), on-policy=other_row_context_seed1")
  COMPARE+=(--compare privileged_on_policy_seed1:other_row_context_seed1)
  CONDITIONS+=("other_row_context_seed1:other row's context")
  RUNS+=(--run "$OUT/runs/other_row_context_seed1:other row's context (control)")
fi
if ran sft_teacher_seed1; then
  GROUP_ARGS+=(--group "SFT checkpoint as teacher (teacher.model)=sft_teacher_seed1")
  COMPARE+=(--compare sft_teacher_seed1:sft_seed1 --compare sft_teacher_seed1:distill_seed1)
  CONDITIONS+=("sft_teacher_seed1:SFT checkpoint as teacher")
fi
if [ -f "$OUT/system_prompt_test.json" ]; then  # the base model with the chosen system prompt, on test
  EVALS+=("$OUT/system_prompt_test.json")
  COMPARE+=(--compare base_system_prompt@0:base@0)
fi
if ran system_prompt_seed1; then
  GROUP_ARGS+=(--group "system prompt distilled, on-policy=system_prompt_seed1")
  COMPARE+=(--compare system_prompt_seed1:base_system_prompt@0 --compare system_prompt_seed1:base@0
            --compare system_prompt_seed1:sft_seed1)
  CONDITIONS+=("system_prompt_seed1:system prompt distilled")
  RUNS+=(--run "$OUT/runs/system_prompt_seed1:system prompt distilled")
fi
python scripts/summarize_evals.py --icl "$REUSED/icl_eval.json" --evals "${EVALS[@]}" \
    --selected "${SELECTED[@]}" "${GROUP_ARGS[@]}" "${COMPARE[@]}" \
    --output "$OUT/summary.json"
python scripts/gen_summary_fig.py --summary "$OUT/summary.json" --out "$FIGS/accuracy.png" \
    --title "$MODEL: what the teacher sees, test accuracy (0-shot answers)"
if [ ${#CONDITIONS[@]} = 0 ]; then exit 0; fi  # no new run has test results: the summary only
python scripts/gen_ablation_fig.py --evals "$OUT/validation_eval.json" --conditions "${CONDITIONS[@]}" \
    --out_curve "$FIGS/validation_curve.png" --out_bar "$FIGS/validation_best.png" \
    --title "$MODEL (validation)"
if [ ${#RUNS[@]} = 0 ]; then exit 0; fi  # no on-policy run: no training curves
python scripts/gen_loss_fig.py "${RUNS[@]}" --key rollout/accuracy --out "$FIGS/rollout_accuracy.png" \
    --title "$MODEL: accuracy of the student's own samples in training"
python scripts/gen_loss_fig.py "${RUNS[@]}" --key train/divergence --out "$FIGS/divergence.png" \
    --title "$MODEL: reverse KL(student || teacher with its context) on the student's samples"
