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
#   bash scripts/run_on_policy_experiment.sh   # ~30 min on 2 CPU cores (README: "On-policy distillation")
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=experiments/on_policy
RUNS=$OUT/runs
REUSED=experiments/twostep
CFG=configs/twostep
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
LOGS=$OUT/logs
TIMING=()
start=$(date +%s)
phase_start=$start
phase() {
  local now; now=$(date +%s)
  TIMING+=("\"$1\": $(( now - phase_start ))")
  phase_start=$now
}
lanes() {  # two commands side by side (one thread each), logging to $LOGS/NAME_{a,b}.log
  local name=$1 a=$2 b=$3
  bash -c "$a" > "$LOGS/${name}_a.log" 2>&1 & local pa=$!
  bash -c "$b" > "$LOGS/${name}_b.log" 2>&1 & local pb=$!
  local status=0
  wait "$pa" || status=$?
  wait "$pb" || status=$?
  if [ "$status" != 0 ]; then echo "error: a lane of '$name' failed; see $LOGS/${name}_*.log" >&2; exit 2; fi
}

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

total=$(( $(date +%s) - start ))
printf '{"seconds": {%s}, "total_seconds": %d, "machine": "shared 2-core CPU, two 1-thread lanes"}\n' \
    "$(IFS=,; echo "${TIMING[*]}")" "$total" > "$OUT/timing.json"
echo "experiment finished in $total s"
