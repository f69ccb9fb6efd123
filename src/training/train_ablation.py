"""Causal controls of few-shot distillation: zero_shot_teacher, shuffled_answers (or few_shot).

accelerate launch src/training/train_ablation.py --config configs/ablation_zeroshot_teacher.yaml --output_dir experiments/zeroshot
accelerate launch src/training/train_ablation.py --config configs/online_v1.yaml --condition shuffled_answers --output_dir ...
"""

from fsdistill.train.entry import train_ablation

if __name__ == "__main__":
    train_ablation()
