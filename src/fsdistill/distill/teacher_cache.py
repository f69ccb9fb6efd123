"""A per-example cache of the teacher's top-K targets, in memory or memory-mapped on disk.

Why it is exact: the teacher is frozen, and with per_example or fixed shots (also shuffled answers and the
0-shot teacher) an example's teacher input is the same at every visit, so its top-K ids and values at the
answer positions are too. The reference schedule (1,000 steps x 32 examples = 4.3 epochs of GSM8K) runs
the teacher on each example ~4 times; with the cache, once. per_batch shots change the input every step
and are refused (config check).

What is stored per example (row of the training split), for its n answer tokens:
    ids (n, K) int32, values (n, K) in the logits dtype (bf16 under bf16 training), and, when the loss
    uses a tail bucket, logsumexp (n,) float32; plus a fingerprint of the teacher's token ids.
A lookup checks the fingerprint and n against the batch, so a cache built from other prompts (another
tokenizer, template, shot draw) is refused, never used. Values equal what the live teacher would give
for that example up to floating-point rounding that depends on the batch it was computed in (padding
width); with one example per batch they are bit-identical.

Disk layout (teacher.cache_dir, written by scripts/precompute_teacher.py into a temporary folder that is
renamed into place when complete, so a crash never leaves a half-written cache under the real name):
    meta.json    key (what the cache was built for: model, precision, tokenizer, data, shots, K), sizes
    index.npy    int64 (R, 4): row, offset, answer tokens, fingerprint
    ids.npy      int32 (P, K)
    values.npy   (P, K): float32, float16, or bfloat16 stored as int16 bits
    lse.npy      float32 (P,) (only with a tail bucket)
Size: P x K x (4 + 2) bytes in bf16, e.g. GSM8K train (~1.9 M answer tokens with Qwen3's tokenizer) at
K = 256: ~2.9 GB; at K = 64 ~0.7 GB. Lower distill.top_k to shrink it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from fsdistill.config import TEACHER_INPUT_KEYS, Config, config_identity, identity_differences
from fsdistill.data.batch import Batch
from fsdistill.data.teacher_prompt import TeacherContext
from fsdistill.distill.alignment import answer_positions
from fsdistill.distill.losses import TeacherTargets
from fsdistill.distill.objective import target_spec
from fsdistill.errors import UserError
from fsdistill.files import install_folder, remove, sha256_file, write_json_atomic
from fsdistill.modeling.identity import weights_identity
from fsdistill.modeling.loading import teacher_model_settings

FORMAT = 1


class TeacherCacheError(UserError):
    """A teacher cache that does not match the config or the data (stale, incomplete or corrupt)."""


def fingerprint(ids) -> int:
    """A 64-bit digest of a token id sequence (int32 bytes), as a signed int64."""
    data = np.asarray(ids, dtype=np.int32).tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


# What may differ between the config a cache was built for and the one that reads it (config_identity
# patterns): settings that do not change an example's teacher targets. The rest (model, dtype and
# precision, tokenizer and chat template, task and data, length limits, the exemplar protocol, the
# teacher's model and context) is its key, with the targets' shape (top-K, tail-bucket temperature) from
# distill.*.
CACHE_MAY_DIFFER = (
    "training.*",
    "!training.seed",  # draws the validation rows
    "!training.mixed_precision",
    "lora.*",
    "distill.*",
    "teacher.*",
    *(f"!{key}" for key in TEACHER_INPUT_KEYS),
    "output.*",
    "eval.*",
    "task.max_new_tokens",
    "task.stop_strings",
    "data.num_workers",
    "data.group_by_length",
    "model.gradient_checkpointing",
)


def cache_key(cfg: Config) -> dict:
    """What a cache's contents depend on; a disk cache built under another key is refused. The teacher's
    weights identity (sha256 of their files, or the Hub revision: the base model's, or teacher.model's) is
    part of it: other weights under the same name give other targets; so is the sha256 of every text the
    teacher's context reads. (A tokenizer change shows in each entry's fingerprint of its ids.)"""
    spec = target_spec(cfg)
    context = TeacherContext.from_config(cfg.teacher)
    return {
        "format": FORMAT,
        **config_identity(cfg, CACHE_MAY_DIFFER),
        "weights": weights_identity(teacher_model_settings(cfg) or cfg.model),
        **({"teacher_context": context.identity()} if context is not None else {}),
        "targets.top_k": spec.top_k,
        "targets.logsumexp_temperature": spec.logsumexp_temperature,
    }


@dataclass
class CachedEntry:
    """One example's targets, on the CPU: ids (n, K) int32, values (n, K), lse (n,) float32 or None."""

    ids: torch.Tensor
    values: torch.Tensor
    lse: Optional[torch.Tensor]
    fingerprint: int

    @property
    def length(self) -> int:
        return self.ids.shape[0]


class MemoryStore:
    """Entries by training row, filled as examples are first seen; `new` lists rows since the last share."""

    def __init__(self):
        self.entries: dict[int, CachedEntry] = {}
        self.new: list[int] = []

    def get(self, row: int) -> Optional[CachedEntry]:
        return self.entries.get(row)

    def put(self, row: int, entry: CachedEntry) -> None:
        self.entries[row] = entry
        self.new.append(row)

    def take_new(self) -> list[tuple[int, CachedEntry]]:
        out = [(r, self.entries[r]) for r in self.new]
        self.new = []
        return out

    def add_shared(self, items: list[tuple[int, CachedEntry]]) -> None:
        for row, entry in items:
            self.entries.setdefault(row, entry)


class DiskStore(MemoryStore):
    """A complete cache folder, memory-mapped read-only; rows it lacks are computed and kept in memory."""

    def __init__(self, path: Path, expected_key: dict):
        super().__init__()
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise TeacherCacheError(
                f"teacher.cache_dir {path}: no teacher cache there (no meta.json); write one with "
                f"`python scripts/precompute_teacher.py --config CONFIG` (same config)"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            saved_key, sha256 = meta["key"], meta["sha256"]
        except (ValueError, KeyError, TypeError) as e:
            raise TeacherCacheError(
                f"{meta_path}: not the record of a complete teacher cache of this version ({e}); rebuild it with "
                "scripts/precompute_teacher.py --overwrite"
            ) from None
        diffs = identity_differences(saved_key, expected_key, "cache", "config")
        if diffs:
            raise TeacherCacheError(
                f"teacher.cache_dir {path} was built for another setting and would give wrong targets:\n    "
                + "\n    ".join(diffs)
                + "\n  rebuild it with scripts/precompute_teacher.py, or point teacher.cache_dir elsewhere"
            )
        for name, digest in sha256.items():  # truncated or altered arrays (zeroed values...) are refused
            if not (path / name).is_file() or sha256_file(path / name) != digest:
                raise TeacherCacheError(
                    f"teacher.cache_dir {path}: {name} is missing, truncated or altered (its sha256 differs from "
                    "meta.json); rebuild the cache with scripts/precompute_teacher.py --overwrite"
                )
        self.path = path
        self.meta = meta
        index = np.load(path / "index.npy")
        self.index = {int(r): (int(o), int(n), int(fp)) for r, o, n, fp in index}
        self.ids = np.load(path / "ids.npy", mmap_mode="r")
        self.values = np.load(path / "values.npy", mmap_mode="r")
        self.lse = np.load(path / "lse.npy", mmap_mode="r") if "lse.npy" in sha256 else None
        self.values_dtype = meta["values_dtype"]

    def get(self, row: int) -> Optional[CachedEntry]:
        if row in self.entries:
            return self.entries[row]
        if row not in self.index:
            return None
        offset, n, fp = self.index[row]
        values = torch.from_numpy(np.array(self.values[offset : offset + n]))
        if self.values_dtype == "bfloat16":
            values = values.view(torch.bfloat16)
        lse = None if self.lse is None else torch.from_numpy(np.array(self.lse[offset : offset + n]))
        return CachedEntry(torch.from_numpy(np.array(self.ids[offset : offset + n])), values, lse, fp)


def open_store(cfg: Config) -> MemoryStore:
    if cfg.teacher.cache == "memory":
        return MemoryStore()
    return DiskStore(Path(cfg.teacher.cache_dir), cache_key(cfg))


_NUMPY_VALUES = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.int16}


class DiskCacheWriter:
    """Writes a cache folder: entries go to memory maps in `<dir>.tmp`, renamed into place by commit()."""

    def __init__(self, path: Path, key: dict, total_positions: int, top_k: int, with_lse: bool):
        self.path, self.key = path, key
        self.tmp = path.with_name(path.name + ".tmp")
        remove_cache_folder(self.tmp)  # left by an interrupted run: never renamed, so never used
        self.tmp.mkdir(parents=True)
        self.total, self.top_k = total_positions, top_k
        self.ids = np.lib.format.open_memmap(self.tmp / "ids.npy", "w+", np.int32, (total_positions, top_k))
        self.lse = (
            np.lib.format.open_memmap(self.tmp / "lse.npy", "w+", np.float32, (total_positions,))
            if with_lse
            else None
        )
        self.values = None  # opened at the first entry, whose dtype it takes
        self.values_dtype: Optional[torch.dtype] = None
        self.index: list[tuple[int, int, int, int]] = []
        self.offset = 0

    def add(self, row: int, entry: CachedEntry) -> None:
        n = entry.length
        if self.values is None:
            self.values_dtype = entry.values.dtype
            self.values = np.lib.format.open_memmap(
                self.tmp / "values.npy", "w+", _NUMPY_VALUES[entry.values.dtype], (self.total, self.top_k)
            )
        end = self.offset + n
        self.ids[self.offset : end] = entry.ids.numpy()
        values = entry.values.view(torch.int16) if entry.values.dtype == torch.bfloat16 else entry.values
        self.values[self.offset : end] = values.numpy()
        if self.lse is not None:
            self.lse[self.offset : end] = entry.lse.numpy()
        self.index.append((row, self.offset, n, entry.fingerprint))
        self.offset = end

    def commit(self, extra: dict) -> Path:
        if self.offset != self.total:
            raise RuntimeError(f"teacher cache: wrote {self.offset} of {self.total} positions")
        for array in (self.ids, self.values, self.lse):
            if array is not None:
                array.flush()
        np.save(self.tmp / "index.npy", np.asarray(self.index, dtype=np.int64).reshape(-1, 4))
        meta = {
            "key": self.key,
            "sha256": {f.name: sha256_file(f) for f in sorted(self.tmp.glob("*.npy"))},
            "values_dtype": str(self.values_dtype).replace("torch.", ""),
            "examples": len(self.index),
            "positions": self.total,
            "top_k": self.top_k,
            "bytes": sum(f.stat().st_size for f in self.tmp.iterdir()),
            **extra,
        }
        write_json_atomic(self.tmp / "meta.json", meta)
        # The old cache's own files go (anything else in its folder stays); meta.json, what makes the
        # folder a cache, comes last.
        ours = CACHE_FILES if is_cache_folder(self.path) else ()
        install_folder(self.tmp, self.path, ours, last="meta.json")
        return self.path


CACHE_FILES = ("meta.json", "index.npy", "ids.npy", "values.npy", "lse.npy")


def is_cache_folder(path: Path) -> bool:
    """A teacher cache this project wrote: meta.json with its key."""
    try:
        return "key" in json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def remove_cache_folder(path: Path) -> None:
    """Delete a cache folder's own files, then the folder if that emptied it (anything else stays)."""
    remove(path.parent, [f"{path.name}/{name}" for name in CACHE_FILES], [path.name])


# ------------------------------------------------------------------------------------------------
# The cached teacher
# ------------------------------------------------------------------------------------------------


def select_examples(batch, index: list[int]):
    """The sub-batch of examples `index`, re-padded to its own longest student and teacher sequences."""
    idx = torch.tensor(index, dtype=torch.long, device=batch.rows.device)
    s_width = max(int(batch.student_mask[idx].sum(1).max()), 1)
    t_width = max(int(batch.teacher_mask[idx].sum(1).max()), 1)
    return Batch(
        student_ids=batch.student_ids[idx, :s_width],
        student_mask=batch.student_mask[idx, :s_width],
        labels=batch.labels[idx, :s_width],
        teacher_ids=batch.teacher_ids[idx, :t_width],
        teacher_mask=batch.teacher_mask[idx, :t_width],
        student_answer_start=batch.student_answer_start[idx],
        teacher_answer_start=batch.teacher_answer_start[idx],
        answer_len=batch.answer_len[idx],
        rows=batch.rows[idx],
    )


def teacher_fingerprints(batch) -> list[int]:
    """fingerprint() of each example's unpadded teacher ids."""
    ids, lengths = batch.teacher_ids.cpu().numpy(), batch.teacher_mask.sum(1).cpu().tolist()
    return [fingerprint(ids[b, :n]) for b, n in enumerate(lengths)]


def split_answers(answers: TeacherTargets, lengths: list[int], fingerprints: list[int]) -> list[CachedEntry]:
    """Top-K TeacherTargets of consecutive examples -> one CPU CachedEntry per example."""
    entries, start = [], 0
    for n, fp in zip(lengths, fingerprints):
        end = start + n
        lse = None if answers.logsumexp is None else answers.logsumexp[start:end].float().cpu()
        entries.append(
            CachedEntry(
                answers.topk_indices[start:end].to(torch.int32).cpu(),
                answers.topk_values[start:end].cpu(),
                lse,
                fp,
            )
        )
        start = end
    return entries


class CachedTeacher:
    """A LiveTeacher behind a per-example store: run only for examples the store lacks."""

    def __init__(self, live, store: MemoryStore):
        self.live = live
        self.store = store
        self.hits = 0
        self.misses = 0

    @property
    def vocab_size(self):
        """The live teacher's: the ids the cached targets cover (another model's shared ids) or None."""
        return self.live.vocab_size

    def self_check(self, vocab_size: int, device) -> None:
        self.live.self_check(vocab_size, device)

    def sampling_model(self):
        """The live teacher's model (the config refuses a cache with sampled answers; kept for the protocol)."""
        return self.live.sampling_model()

    def logits_at(self, batch, pos, token_ids: torch.Tensor) -> torch.Tensor:
        """Logits at arbitrary ids are not in the store (only the top-K are): the live teacher gives them."""
        return self.live.logits_at(batch, pos, token_ids)

    def targets(self, batch, pos) -> TeacherTargets:
        lengths = batch.answer_len.tolist()
        rows = batch.rows.tolist()
        prints = teacher_fingerprints(batch)
        entries: list[Optional[CachedEntry]] = [None] * len(rows)
        missing = []
        for b, (row, n, fp) in enumerate(zip(rows, lengths, prints)):
            if n == 0:
                continue
            entry = self.store.get(row)
            if entry is None:
                missing.append(b)
            elif entry.fingerprint != fp or entry.length != n:
                raise TeacherCacheError(
                    f"teacher cache entry of training row {row} was built from another teacher input "
                    f"({entry.length} answer tokens, fingerprint {entry.fingerprint}; the batch has {n}, {fp}): "
                    "the cache is stale for this data or prompt format; rebuild it"
                )
            else:
                entries[b] = entry
        self.hits += sum(1 for e in entries if e is not None)
        self.misses += len(missing)
        if missing:
            sub = select_examples(batch, missing)
            computed = self.live.targets(sub, answer_positions(sub))
            new = split_answers(computed, [lengths[b] for b in missing], [prints[b] for b in missing])
            for b, entry in zip(missing, new):
                self.store.put(rows[b], entry)
                entries[b] = entry
        kept = [e for e in entries if e is not None]
        device = batch.teacher_ids.device
        if not kept:
            return self.live.targets(batch, pos)  # no answer tokens at all
        lse = None if kept[0].lse is None else torch.cat([e.lse for e in kept]).to(device)
        return TeacherTargets(
            topk_values=torch.cat([e.values for e in kept]).to(device),
            topk_indices=torch.cat([e.ids for e in kept]).to(device, torch.long),
            logsumexp=lse,
            logsumexp_temperature=self.live.spec.logsumexp_temperature,
        )

    def prepare_step(self, micro_batches):
        """The live teacher's (a local model: nothing to fetch; a served teacher is refused with a cache)."""
        return self.live.prepare_step(micro_batches)

    def end_step(self, accelerator) -> None:
        """Share the entries this process filled during the step with the others (memory stores)."""
        if accelerator.num_processes == 1:
            self.store.new = []
            return
        from accelerate.utils import gather_object

        self.store.add_shared(gather_object(self.store.take_new()))

    def metrics(self) -> dict[str, float]:
        return {"teacher_cache_hit_rate": self.hits / max(self.hits + self.misses, 1)}
