"""Write the teacher top-K cache for a config in one batched pass (teacher.cache=disk reads it).

    python scripts/precompute_teacher.py --config configs/online_v1.yaml \
        teacher.cache=disk teacher.cache_dir=cache/qwen3_1.7b_8shot_top256
    accelerate launch src/training/train_online_v1.py --config configs/online_v1.yaml \
        teacher.cache=disk teacher.cache_dir=cache/qwen3_1.7b_8shot_top256 --output_dir runs/distill

Every training example of the config (the rows training can draw, minus validation and fixed exemplars,
minus the ones too long for data.max_*_len, which training drops too) is encoded exactly as training
encodes it, the examples are sorted by teacher length (longest first: an out-of-memory shows at once;
similar lengths share a batch, so little padding is run), and the frozen teacher runs under no_grad in
batches of --batch_size. Its top-K targets are written to memory maps in <cache_dir>.tmp, renamed to
cache_dir only when complete. The folder records what it was built for (model, precision, tokenizer,
data, shots, K); training refuses it under any other setting. Size: answer tokens x K x 6 bytes in bf16
(GSM8K train at K=256: ~2.9 GB). Only for shots that never change per example (not per_batch).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fsdistill.cli import add_config_args, config_from_args
from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.files import replaceable_folder


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_args(parser)
    parser.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="Examples per teacher forward (default: per_device_batch_size).",
    )
    parser.add_argument("--device", default=None, help="torch device; default cuda if available, else cpu.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing teacher.cache_dir.")
    args = parser.parse_intermixed_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch_size must be >= 1")
    return args


@exit_on_user_error
def main(argv=None) -> Path:
    args = parse_args(argv)
    cfg, _source = config_from_args(args)
    if cfg.teacher.cache != "disk":
        raise UserError(
            "give teacher.cache=disk and teacher.cache_dir=DIR (the same settings training will use)"
        )
    path = Path(cfg.teacher.cache_dir)
    if path.exists() and not args.overwrite:
        raise UserError(
            f"teacher.cache_dir {path} exists; pass --overwrite to replace it (nothing was written)"
        )
    from fsdistill.distill.teacher_cache import is_cache_folder

    if not replaceable_folder(path, is_cache_folder):
        raise UserError(
            f"teacher.cache_dir {path} is not a teacher cache of this project (no meta.json of ours): "
            "--overwrite replaces only a cache; choose another folder (nothing was touched)"
        )

    import torch
    from tqdm.auto import tqdm

    from fsdistill.data.batch import build_training_batches, collate
    from fsdistill.data.prompts import load_tokenizer
    from fsdistill.distill.alignment import answer_positions
    from fsdistill.distill.teacher import make_live_teacher
    from fsdistill.distill.teacher_cache import (
        DiskCacheWriter,
        cache_key,
        split_answers,
        teacher_fingerprints,
    )
    from fsdistill.modeling.answer_lm import AnswerLogitsLM
    from fsdistill.modeling.loading import (
        load_causal_lm,
        load_teacher_model,
        make_autocast,
        teacher_vocabulary,
    )

    tick = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
    batches = build_training_batches(cfg, tokenizer, with_teacher=True, num_processes=1)
    encoded = [batches.encode(row, 0, []) for row in tqdm(batches.order.rows, desc="encode", unit="ex")]
    kept = sorted((e for e in encoded if batches.fits(e)), key=lambda e: (-len(e.teacher_ids), e.row))
    dropped = [e.row for e in encoded if not batches.fits(e)]
    if not kept:
        raise UserError("every training example is over data.max_student_len / max_teacher_len")

    vocab_size = teacher_vocabulary(cfg, tokenizer)  # another model as teacher: checked before it loads
    if vocab_size is None:
        model = load_causal_lm(cfg.model)
    else:
        model = load_teacher_model(cfg, vocab_size, len(tokenizer))
    model = model.to(device).eval()
    model.requires_grad_(False)
    live = make_live_teacher(cfg, AnswerLogitsLM(model), None, vocab_size=vocab_size)
    live.self_check(len(tokenizer), device)
    spec = live.spec
    total = sum(e.answer_len for e in kept)
    writer = DiskCacheWriter(path, cache_key(cfg), total, spec.top_k, spec.logsumexp_temperature is not None)
    autocast = make_autocast(cfg.training.mixed_precision, device)
    size = args.batch_size or cfg.training.per_device_batch_size
    with tqdm(total=len(kept), desc="teacher", unit="ex") as progress:
        for start in range(0, len(kept), size):
            chunk = kept[start : start + size]
            batch = collate(chunk, tokenizer.pad_token_id).to(device)
            with autocast():
                answers = live.targets(batch, answer_positions(batch))
            lengths = [e.answer_len for e in chunk]
            for e, entry in zip(chunk, split_answers(answers, lengths, teacher_fingerprints(batch))):
                writer.add(e.row, entry)
            progress.update(len(chunk))
    out = writer.commit(
        {
            "command": [sys.argv[0], *(argv if argv is not None else sys.argv[1:])],
            "dropped_rows": dropped,
            "batch_size": size,
            "seconds": round(time.perf_counter() - tick, 1),
        }
    )
    size_gb = sum(f.stat().st_size for f in out.iterdir()) / 1e9
    print(
        f"wrote {out}: {len(kept)} examples, {total} answer tokens, K={spec.top_k}, {size_gb:.2f} GB "
        f"({len(dropped)} over the length limits, left out as training leaves them out)"
    )
    return out
