"""The training entry points (src/training/train_*.py and the fsdistill-train-* commands).

Each parses the command line, validates the config and checks that it describes a method the entry point
runs (fsdistill.methods) before torch is imported; then the one recipe trains it.
"""

from __future__ import annotations

from fsdistill.cli import parse_training_cli
from fsdistill.errors import exit_on_user_error
from fsdistill.methods import check_entry_point

DESCRIPTIONS = {
    "train_baseline.py": "SFT baseline: cross-entropy on the answer tokens only (LoRA or full fine-tuning, as "
    "the config says). Teacher and distillation settings (fewshot.*, distill.*, teacher.*) are refused "
    "rather than ignored.",
    "train_online_v1.py": "Few-shot (and context) distillation: CE + λ·distillation from a frozen teacher "
    "that sees k exemplars and any teacher context (teacher.*: a system text, shared or per-row context, "
    "another model). The controls (fewshot.k=0, fewshot.shuffle_answers=true, teacher.shuffle_context=true) "
    "run through train_ablation.py.",
    "train_ablation.py": "Causal controls of distillation: zero_shot_teacher, shuffled_answers, "
    "other_row_context (or few_shot itself), from the config (fewshot.k=0 with no teacher context: "
    "zero_shot_teacher; fewshot.shuffle_answers=true: shuffled_answers; teacher.shuffle_context=true: "
    "other_row_context) or --condition, which sets those keys and is checked against the result.",
}


def run_entry_point(entry_point: str, argv=None) -> None:
    args, cfg, source = parse_training_cli(
        DESCRIPTIONS[entry_point], argv, with_condition=entry_point == "train_ablation.py"
    )
    method = check_entry_point(entry_point, cfg, source, getattr(args, "condition", None))
    from fsdistill.train.recipe import train  # torch loads only after the config is valid

    train(cfg, method.name, resume=args.resume, overwrite=args.overwrite)


@exit_on_user_error
def train_baseline(argv=None) -> None:
    run_entry_point("train_baseline.py", argv)


@exit_on_user_error
def train_online_v1(argv=None) -> None:
    run_entry_point("train_online_v1.py", argv)


@exit_on_user_error
def train_ablation(argv=None) -> None:
    run_entry_point("train_ablation.py", argv)
