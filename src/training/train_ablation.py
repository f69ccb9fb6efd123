"""Causal controls of few-shot distillation: zero_shot_teacher, shuffled_answers (or few_shot itself).

    accelerate launch src/training/train_ablation.py --config configs/ablation_zeroshot_teacher.yaml --output_dir experiments/zeroshot
    accelerate launch src/training/train_ablation.py --config configs/online_v1.yaml --condition shuffled_answers --output_dir ...

The condition comes from the config (fewshot.k=0: zero_shot_teacher; fewshot.shuffle_answers=true:
shuffled_answers; otherwise few_shot). --condition sets those keys and is checked against the result.
"""

from __future__ import annotations

from fsdistill.cli import method_of, parse_training_cli
from fsdistill.config import ConfigError
from fsdistill.errors import exit_on_user_error

CONDITION_METHOD = {
    "few_shot": "few_shot_distillation",
    "zero_shot_teacher": "zero_shot_teacher",
    "shuffled_answers": "shuffled_answers",
}


@exit_on_user_error
def main(argv=None) -> None:
    args, cfg, source = parse_training_cli(__doc__.splitlines()[0], argv, with_condition=True)
    method = method_of(cfg)
    if args.condition and CONDITION_METHOD[args.condition] != method:
        raise ConfigError(
            [
                f"--condition {args.condition} conflicts with the config, which describes {method} "
                "(fewshot.k=0 and fewshot.shuffle_answers=true cannot both hold)"
            ]
        )
    from fsdistill.training.core import train  # torch loads only after the config is valid

    train(cfg, method, resume=args.resume, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
