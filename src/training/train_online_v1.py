"""SFT + few-shot distillation from the same frozen model with k exemplars in its prompt.

accelerate launch src/training/train_online_v1.py --config configs/online_v1.yaml --output_dir experiments/online_v1
"""

from fsdistill.train.entry import train_online_v1

if __name__ == "__main__":
    train_online_v1()
