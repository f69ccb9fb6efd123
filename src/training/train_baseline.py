"""SFT baseline (cross-entropy only).

accelerate launch src/training/train_baseline.py --config configs/base.yaml --output_dir experiments/sft
"""

from fsdistill.train.entry import train_baseline

if __name__ == "__main__":
    train_baseline()
