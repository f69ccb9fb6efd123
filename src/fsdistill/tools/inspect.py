"""Look before spending GPU hours: the resolved config (show_config) and exactly what the student and
the teacher see for one training example (show_batch; loads a tokenizer and the data, never a model).

    python scripts/show_config.py --config configs/online_v1.yaml training.lr=1e-4
    python scripts/show_batch.py --config configs/online_v1.yaml --index 0 \
        model.tokenizer=../shared/tokenizers/qwen3 data.source=../shared/data/gsm8k

show_batch prints the decoded student and teacher sequences with the answer part (the label positions)
between markers, token counts, the exemplar rows, and where each part of the teacher's context comes from
(teacher.*: system text, shared context file, per-row field, template).
"""

from __future__ import annotations

import argparse

from fsdistill.cli import add_config_args, config_from_args
from fsdistill.config import to_yaml
from fsdistill.errors import UserError, exit_on_user_error


@exit_on_user_error
def show_config(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Print the fully resolved config (all keys, defaults filled in) of a config file plus overrides."
    )
    add_config_args(parser)
    parser.add_argument("--sources", action="store_true", help="Also list where each set key came from.")
    args = parser.parse_intermixed_args(argv)  # overrides may sit before and after options
    cfg, source = config_from_args(args)
    print(to_yaml(cfg), end="")
    if args.sources:
        print("# set explicitly:")
        for key, where in sorted(source.items()):
            print(f"#   {key}: {where}")


START, END = "\u27e6", "\u27e7"  # ⟦ answer part ⟧


def marked(tokenizer, ids: list[int], answer_start: int) -> str:
    """The decoded sequence with the answer part (the tokens that carry labels) between ⟦ ⟧."""
    return tokenizer.decode(ids[:answer_start]) + START + tokenizer.decode(ids[answer_start:]) + END


@exit_on_user_error
def show_batch(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Show exactly what the student and the teacher see for one training example."
    )
    add_config_args(parser)
    parser.add_argument("--index", type=int, default=0, help="Position in the training order (step-major).")
    parser.add_argument("--step", type=int, default=None, help="Show the example at this step's first slot.")
    parser.add_argument("--sft", action="store_true", help="Show the student only (no teacher).")
    args = parser.parse_intermixed_args(argv)  # overrides may sit before and after options
    cfg, _ = config_from_args(args)

    from fsdistill.data.batch import build_training_batches  # loads transformers: after the config is valid
    from fsdistill.data.prompts import load_tokenizer

    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
    batches = build_training_batches(cfg, tokenizer, with_teacher=not args.sft, num_processes=1)
    g = batches.order.global_batch
    index = args.step * g if args.step is not None else args.index
    if index < 0:
        raise UserError(f"--index must be >= 0, got {index}")
    step, slot = divmod(index, g)
    step_rows = batches.order.step_rows(step)
    row = step_rows[slot]
    enc = batches.encode(row, step, step_rows)
    label_positions = list(range(enc.student_answer_start, len(enc.student_ids)))
    shot_rows = batches.shots.shot_rows(row, step, step_rows) if batches.shots else []

    print(f"# training example: step {step}, slot {slot}, row {row} of split '{cfg.data.train_split}'")
    if args.sft:
        print("# no teacher (--sft)")
    else:
        f = cfg.fewshot
        shuffle = f", answers shuffled ({f.shuffle_mode})" if f.shuffle_answers else ""
        pool = f"fewshot.pool {f.pool!r}" if f.pool is not None else "the training split"
        print(f"# exemplar rows of {pool} ({f.selection}{shuffle}): {shot_rows}")
        context = batches.prompts.teacher
        if context is not None:
            donor = batches.donors[row] if batches.donors else row
            for line in context.describe(row, donor):
                print(f"# teacher context: {line}")
    print(
        f"# student: {len(enc.student_ids)} tokens (max {cfg.data.max_student_len}); answer part: "
        f"{enc.answer_len} tokens, label positions {label_positions[0]}..{label_positions[-1]}"
    )
    if not args.sft:
        print(
            f"# teacher: {len(enc.teacher_ids)} tokens (max {cfg.data.max_teacher_len}); "
            f"answer part starts at {enc.teacher_answer_start}"
        )
    if not batches.fits(enc):
        print("# NOTE: this example exceeds a length limit and is dropped from training")
    print(f"\n===== STUDENT (answer part between {START} {END}) =====")
    print(marked(tokenizer, enc.student_ids, enc.student_answer_start))
    if not args.sft:
        print(f"\n===== TEACHER (answer part between {START} {END}) =====")
        print(marked(tokenizer, enc.teacher_ids, enc.teacher_answer_start))
