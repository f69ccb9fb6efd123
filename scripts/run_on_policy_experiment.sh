#!/usr/bin/env bash
# On-policy context distillation on the twostep task (SmolLM2-135M-Instruct, real weights, CPU): three runs
# beside the twostep experiment's (scripts/run_twostep_experiment.sh), whose base, SFT and off-policy
# distillation results are reused (same model, task, data, steps, seed and evaluation):
#   on_policy        the student samples its answers, the 2-shot teacher grades every token (reverse KL over
#                    the student's top-256), no gold labels;
#   on_policy_ce     the same plus CE on the gold answers;
#   teacher_samples  the 2-shot teacher writes the answers, CE + lambda * top-256 logit MSE on them.
# Each: 100 steps of 4 problems, seed 1, checkpoints 50 and 100, chosen on the 200 validation problems, then
# scored on the 500 test problems (greedy, last_number); paired tests against the reused runs; figures.
#
#   bash scripts/run_twostep_experiment.sh     # once (its JSON is committed: experiments/twostep)
#   bash scripts/run_on_policy_experiment.sh   # ~30 min on 2 CPU cores (docs/results.md: "On-policy distillation on a CPU")
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=experiments/on_policy
RUNS=$OUT/runs
REUSED=experiments/twostep
CFG=configs/twostep
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LOGS=$OUT/logs
. scripts/experiment_lanes.sh   # phase, lanes, write_timing

python scripts/prepare_smollm2.py
python scripts/make_twostep_data.py --out data/twostep
mkdir -p "$RUNS" "$LOGS"
rm -f "$OUT"/{validation_eval,test_eval,selected,summary}.json
phase setup

train() {  # CONFIG RUN
  echo "python src/training/train_online_v1.py --config $CFG/$1.yaml --output_dir $RUNS/$2 --overwrite training.seed=1"
}
lanes training \
  "$(train on_policy on_policy_seed1) && $(train teacher_samples teacher_samples_seed1)" \
  "$(train on_policy_ce on_policy_ce_seed1)"
phase training

EVAL="python scripts/eval_checkpoints.py --config $CFG/distill.yaml --base_dir $RUNS"
lanes validation \
  "$EVAL --split validation --output $OUT/validation_eval.json --conditions on_policy_seed1 teacher_samples_seed1" \
  "$EVAL --split validation --output $OUT/validation_eval.json --conditions on_policy_ce_seed1"
python scripts/select_checkpoints.py --evals "$OUT/validation_eval.json" \
    --conditions on_policy_seed1 on_policy_ce_seed1 teacher_samples_seed1 --output "$OUT/selected.json"
phase validation_eval

lanes test \
  "$EVAL --selected $OUT/selected.json --output $OUT/test_eval.json --conditions on_policy_seed1 teacher_samples_seed1" \
  "$EVAL --selected $OUT/selected.json --output $OUT/test_eval.json --conditions on_policy_ce_seed1"
phase test_eval

bash scripts/on_policy_figures.sh
phase summary_and_figures

write_timing "$OUT/timing.json"
