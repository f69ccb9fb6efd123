"""Few-shot distillation: CE + λ·distillation from the same frozen model with k exemplars in its prompt.

    accelerate launch src/training/train_online_v1.py --config configs/online_v1.yaml --output_dir experiments/online_v1

The teacher runs live (no cache) under no_grad: the LoRA student with its adapter off, or a frozen copy
of the initial weights for full fine-tuning. The controls (fewshot.k=0, fewshot.shuffle_answers=true)
run through train_ablation.py.
"""

from __future__ import annotations

from fsdistill.cli import check_few_shot_distillation, parse_training_cli
from fsdistill.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None) -> None:
    args, cfg, source = parse_training_cli(__doc__.splitlines()[0], argv)
    method = check_few_shot_distillation(cfg, source)
    from fsdistill.training.core import train  # torch loads only after the config is valid

    train(cfg, method, resume=args.resume, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
