#!/usr/bin/env bash
# Context distillation beyond exemplars on a CPU: SmolLM2-135M-Instruct (real weights) on the twostep task,
# beside the twostep experiment, whose base, SFT and 2-shot distillation results are reused (same model, task,
# data, steps, seeds and evaluation; scripts/run_twostep_experiment.sh):
#   (a) privileged context (OPSD): the teacher sees the row's own worked answer; on-policy, without gold CE
#       (privileged_on_policy) and with it (privileged_on_policy_ce); the control: another row's worked answer
#       (other_row_context);
#   (b) another model as teacher: the exported SFT checkpoint (sft_seed1 at its step chosen on validation) with
#       its 2 exemplars teaches a fresh student, off-policy (sft_teacher);
#   (c) system-prompt distillation: candidate system prompts (configs/teacher_context/system_prompts/) scored
#       0-shot on the 200 validation problems with and without, one chosen by a paired test
#       (scripts/select_system_prompt.py; none chosen: (c) stops there), distilled on-policy
#       (system_prompt), and only the chosen one scored on test.
# Every run: 100 steps of 4 problems, seed 1, checkpoints 50 and 100 chosen on validation, then scored on the
# 500 test problems (greedy, 40 new tokens, 0-shot answers); paired tests; figures (teacher_context_figures.sh).
#
#   bash scripts/run_twostep_experiment.sh           # once: its results (and sft_seed1's checkpoints) are reused
#   bash scripts/run_teacher_context_experiment.sh   # 51 min on 2 CPU cores, measured (timing_one_pass.json)
#   SMOKE=1 bash scripts/run_teacher_context_experiment.sh   # the whole pipeline in minutes: 4 steps, 20
#                                                            # problems, into runs/teacher_context_smoke
#
# Where $REUSED has no results (a smoke run), the references it needs (base model 0/2-shot, sft_seed1,
# distill_seed1) are made first with the same protocol; where its results exist but sft_seed1's checkpoint
# does not (a fresh checkout), sft_seed1 is trained again (same config and seed) for the teacher export.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
  OUT=${OUT:-runs/teacher_context_smoke}
  REUSED=${REUSED:-$OUT/reused}
  TRAIN=(training.max_steps=4 training.save_every=2)
  N=(--n_samples 20)
else
  OUT=${OUT:-experiments/teacher_context}
  REUSED=${REUSED:-experiments/twostep}
  TRAIN=()
  N=()
fi
RUNS=$OUT/runs
CFG=configs/teacher_context
TWOSTEP=configs/twostep
PROMPTS=$CFG/system_prompts
TEACHER=$OUT/teacher_sft_seed1
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LOGS=$OUT/logs
. scripts/experiment_lanes.sh   # phase, lanes, write_timing

python scripts/prepare_smollm2.py
python scripts/make_twostep_data.py --out data/twostep
mkdir -p "$RUNS" "$LOGS" "$OUT/system_prompts" "$REUSED/runs"
rm -f "$OUT"/{validation_eval,test_eval,selected,summary,system_prompt_selection,system_prompt_test}.json
rm -f "$OUT"/system_prompts/*.json
phase setup

EVAL="python scripts/eval_checkpoints.py --config $TWOSTEP/distill.yaml ${N[*]}"
ICL="python scripts/eval_icl.py --config $TWOSTEP/distill.yaml ${N[*]}"
train() {  # ENTRY_POINT CONFIG RUNS_DIR RUN [overrides]
  echo "python src/training/$1 --config $2 --output_dir $3/$4 --overwrite training.seed=1 ${TRAIN[*]} ${*:5}"
}
json() {  # FILE EXPRESSION(d): a value read from a JSON file
  python -c "import json, sys; d = json.load(open(sys.argv[1])); print($2)" "$1"
}

# --- the reused references, made only where they are missing -----------------------------------------
if [ ! -f "$REUSED/test_eval.json" ]; then
  lanes references \
    "$ICL --output $REUSED/icl_eval.json --shots 0 2 && \
     $(train train_baseline.py $TWOSTEP/sft.yaml "$REUSED/runs" sft_seed1)" \
    "$(train train_online_v1.py $TWOSTEP/distill.yaml "$REUSED/runs" distill_seed1)"
  $EVAL --base_dir "$REUSED/runs" --split validation --output "$REUSED/validation_eval.json" \
      --conditions sft_seed1 distill_seed1
  python scripts/select_checkpoints.py --evals "$REUSED/validation_eval.json" --conditions sft_seed1 distill_seed1 \
      --output "$REUSED/selected.json"
  $EVAL --base_dir "$REUSED/runs" --selected "$REUSED/selected.json" --output "$REUSED/test_eval.json" \
      --conditions sft_seed1 distill_seed1
fi
SFT_STEP=$(json "$REUSED/selected.json" "d['selected']['sft_seed1']['step']")
if [ ! -f "$REUSED/runs/sft_seed1/checkpoint-$SFT_STEP/checkpoint.json" ]; then
  echo "sft_seed1's checkpoint-$SFT_STEP is not in $REUSED/runs: training it again (same config and seed)"
  eval "$(train train_baseline.py $TWOSTEP/sft.yaml "$REUSED/runs" sft_seed1)"
fi
python scripts/export_model.py --checkpoint "$REUSED/runs/sft_seed1/checkpoint-$SFT_STEP" --out "$TEACHER" --overwrite
phase references_and_teacher_export

# --- (c) system prompts on validation: with and without, paired; choose one or none --------------------
candidates=()
for file in "$PROMPTS"/*.txt; do candidates+=("$(basename "$file" .txt)"); done
half=$(( (${#candidates[@]} + 1) / 2 ))
score_prompts() {  # NAME...: each candidate's 0-shot validation accuracy, base model, its system prompt
  for name in "$@"; do
    echo "$ICL --split validation --shots 0 --condition $name --output $OUT/system_prompts/$name.json \
          task.system_prompt=\"\$(cat $PROMPTS/$name.txt)\" &&"
  done
  echo true
}
lanes system_prompts \
  "$ICL --split validation --shots 0 --condition none --output $OUT/system_prompts/none.json && \
   $(score_prompts "${candidates[@]:0:$half}")" \
  "$(score_prompts "${candidates[@]:$half}")"
scored=()
for name in "${candidates[@]}"; do scored+=("$OUT/system_prompts/$name.json"); done
python scripts/select_system_prompt.py --baseline "$OUT/system_prompts/none.json" --candidates "${scored[@]}" \
    --output "$OUT/system_prompt_selection.json"
CHOSEN=$(json "$OUT/system_prompt_selection.json" "d['chosen'] or ''")
if [ -z "$CHOSEN" ] && [ "$SMOKE" = 1 ]; then  # 20 problems rarely show a significant gain
  CHOSEN=${candidates[0]}
  echo "SMOKE: no candidate qualifies on ${N[1]} problems; distilling '$CHOSEN' anyway, to check the pipeline only"
fi
phase system_prompt_selection

# --- training: two lanes ------------------------------------------------------------------------------
A_RUNS=(privileged_on_policy_seed1 other_row_context_seed1)
B_RUNS=(privileged_on_policy_ce_seed1 sft_teacher_seed1)
lane_b="$(train train_online_v1.py $CFG/privileged_on_policy_ce.yaml "$RUNS" privileged_on_policy_ce_seed1) && \
        $(train train_online_v1.py $CFG/sft_teacher.yaml "$RUNS" sft_teacher_seed1 teacher.model="$TEACHER")"
if [ -n "$CHOSEN" ]; then
  B_RUNS+=(system_prompt_seed1)
  lane_b="$lane_b && $(train train_online_v1.py $CFG/system_prompt.yaml "$RUNS" system_prompt_seed1 \
          teacher.system_file="$PROMPTS/$CHOSEN.txt")"
else
  echo "no candidate system prompt gains significantly on validation: nothing is distilled for (c)"
fi
lanes training \
  "$(train train_online_v1.py $CFG/privileged_on_policy.yaml "$RUNS" privileged_on_policy_seed1) && \
   $(train train_ablation.py $CFG/other_row_context.yaml "$RUNS" other_row_context_seed1)" \
  "$lane_b"
phase training

lanes validation \
  "$EVAL --base_dir $RUNS --split validation --output $OUT/validation_eval.json --conditions ${A_RUNS[*]}" \
  "$EVAL --base_dir $RUNS --split validation --output $OUT/validation_eval.json --conditions ${B_RUNS[*]}"
python scripts/select_checkpoints.py --evals "$OUT/validation_eval.json" --conditions "${A_RUNS[@]}" "${B_RUNS[@]}" \
    --output "$OUT/selected.json"
phase validation_eval

chosen_on_test=true
if [ -n "$CHOSEN" ]; then  # only the chosen system prompt is scored on test
  chosen_on_test="$ICL --shots 0 --condition base_system_prompt --output $OUT/system_prompt_test.json \
                  task.system_prompt=\"\$(cat $PROMPTS/$CHOSEN.txt)\""
fi
lanes test \
  "$EVAL --base_dir $RUNS --selected $OUT/selected.json --output $OUT/test_eval.json --conditions ${A_RUNS[*]}" \
  "$EVAL --base_dir $RUNS --selected $OUT/selected.json --output $OUT/test_eval.json --conditions ${B_RUNS[*]} && \
   $chosen_on_test"
phase test_eval

OUT=$OUT REUSED=$REUSED bash scripts/teacher_context_figures.sh
phase summary_and_figures

write_timing "$OUT/timing.json"
