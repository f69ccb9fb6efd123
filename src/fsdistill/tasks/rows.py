"""Reading a split's rows (local JSONL or a Hub dataset) and holding out a validation set.

A row keeps its position in the source split (`row`, 0-based: line number - 1 in a JSONL file). Few-shot
selection is keyed by it, so a subset (data.max_train_examples) or a held-out validation set leaves
every other row's exemplars unchanged. What a row must contain is the task's business: each task passes
a `parse` function that turns one JSON object into an Example or raises DataError naming what is wrong.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from fsdistill.errors import UserError
from fsdistill.tasks.base import Example

# parse(obj, row, where) -> Example; `where` names the file and line (or Hub split and row) for errors.
RowParser = Callable[[object, int, str], Example]


class DataError(UserError):
    """A malformed data file or row; the message names the file and line."""


MAX_REPORTED = 20  # bad lines named in one error; the count covers them all


def read_jsonl(path: Path, parse: RowParser) -> list[Example]:
    """Every non-empty line of a JSONL file as an Example. Every bad line (bytes that are not UTF-8, not
    JSON, a row the task refuses) is found before anything fails, and reported together naming
    file:line, so a damaged file is mended in one pass."""
    examples, problems = [], []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                problems.append(f"{where}: not UTF-8 text (byte {e.start}: {raw[e.start : e.start + 1]!r})")
                continue
            if not line.strip():
                continue
            try:
                examples.append(parse(json.loads(line), lineno - 1, where))
            except json.JSONDecodeError as e:
                problems.append(f"{where}: not valid JSON ({e.msg})")
            except DataError as e:
                problems.append(str(e))
    if len(problems) == 1:
        raise DataError(problems[0])
    if problems:
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise DataError(f"{path}: {len(problems)} malformed lines:\n  {shown}{more}")
    if not examples:
        raise DataError(f"{path}: no rows")
    return examples


def _local_split_file(source: Path, split: str) -> Path:
    if source.is_dir():
        path = source / f"{split}.jsonl"
        if not path.is_file():
            found = sorted(p.name for p in source.glob("*.jsonl"))
            raise DataError(f"{source}: no {split}.jsonl for split '{split}' (found: {found or 'nothing'})")
        return path
    return source


def _load_hub_split(source: str, hub_config: str, split: str, parse: RowParser) -> list[Example]:
    import datasets  # heavy: only when the Hub is the source

    try:
        ds = datasets.load_dataset(source, hub_config, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types; the user needs the cause
        raise DataError(
            f"data.source '{source}' (config '{hub_config}', split '{split}') could not be loaded from the Hub: "
            f"{type(e).__name__}: {e}. Offline, point data.source at a local folder with {split}.jsonl."
        ) from None
    return [parse(obj, i, f"{source}[{split}] row {i}") for i, obj in enumerate(ds)]


def load_split(source: str, split: str, hub_config: str, parse: RowParser) -> list[Example]:
    """All rows of a split: `source` is a local folder ({split}.jsonl), a local JSONL file, or a Hub id;
    a `split` that is itself a path to a .jsonl file is read as that file.

    A single local file serves as every split asked for; the caller decides whether that is meaningful
    (evaluation refuses to score the training file: eval.evaluate.test_split_source).
    """
    if split.endswith(".jsonl"):
        if not Path(split).expanduser().is_file():
            raise DataError(f"split file '{split}': no such file")
        return read_jsonl(Path(split).expanduser(), parse)
    path = Path(source).expanduser()
    if path.exists():
        return read_jsonl(_local_split_file(path, split), parse)
    if source.endswith(".jsonl") or source.startswith((".", "/", "~")):
        raise DataError(f"data.source '{source}': no such file or folder")
    return _load_hub_split(source, hub_config, split, parse)


def data_files(source: str, splits: list[str]) -> list[Path]:
    """The local files behind `source` for these splits (for provenance hashes); [] for a Hub source."""
    path = Path(source).expanduser()
    files = {Path(s).expanduser() for s in splits if s.endswith(".jsonl")}
    if path.exists():
        files |= {_local_split_file(path, s) for s in splits if not s.endswith(".jsonl")}
    return sorted(files)


def split_train_validation(
    examples: list[Example], validation_size: int, seed: int
) -> tuple[list[Example], list[Example]]:
    """Hold out `validation_size` seeded rows of the training split for honest checkpoint selection."""
    if validation_size == 0:
        return examples, []
    if validation_size >= len(examples):
        raise DataError(
            f"data.validation_size={validation_size} leaves no training rows (the split has {len(examples)})"
        )
    held = set(random.Random(f"validation:{seed}").sample(range(len(examples)), validation_size))
    train = [e for i, e in enumerate(examples) if i not in held]
    validation = [e for i, e in enumerate(examples) if i in held]
    return train, validation


def training_rows(cfg, task) -> tuple[list[Example], list[Example]]:
    """(train, validation) of a config: the first data.max_train_examples rows of the training split,
    minus data.validation_size rows held out (seeded by training.seed). Training, its teacher cache and
    evaluation all cut the split this one way."""
    d = cfg.data
    rows = task.load(d.source, d.train_split, d.hub_config)
    if d.max_train_examples is not None:
        rows = rows[: d.max_train_examples]
    return split_train_validation(rows, d.validation_size, cfg.training.seed)
