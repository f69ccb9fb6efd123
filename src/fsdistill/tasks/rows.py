"""Reading a split's rows (local JSONL, JSON, CSV or Parquet, or a Hub dataset) and the validation set.

A row keeps its position in the source split (`row`, 0-based: line number - 1 in a JSONL file, record
number - 1 otherwise). Few-shot selection is keyed by it, so a subset (data.max_train_examples) or a
held-out validation set leaves every other row's exemplars unchanged. What a row must contain is the
task's business: each task passes a `parse` function that turns one record (a dict) into an Example or
raises DataError naming what is wrong. JSONL is read here, line by line, so a bad line is named by its
number (and bytes that are not UTF-8 are caught); JSON, CSV and Parquet files and Hub datasets are read
with `datasets` (a missing value there arrives as None, which tasks treat as an absent field).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection
from pathlib import Path

from fsdistill.errors import UserError
from fsdistill.files import sha256_file
from fsdistill.tasks.base import Example

# parse(obj, row, where) -> Example; `where` names the file and line (or Hub split and row) for errors.
RowParser = Callable[[object, int, str], Example]


class DataError(UserError):
    """A malformed data file or row; the message names the file and line."""


# Beside a folder's split files: which version of the data they are (recorded in result files' provenance).
DATA_VERSION_FILE = "data_version.json"


class MissingField(DataError):
    """A row without a field the task reads (`field`, which the config key `key` names). When no row of a
    file has it, the config most likely names the wrong field: raise_problems then says so once, naming
    the key, the fields the first row has and `fix`, instead of once per row."""

    def __init__(self, message: str, field: str, key: str, fix: str, have: Collection[str]):
        super().__init__(message)
        self.field, self.key, self.fix, self.have = field, key, fix, sorted(have)


MAX_REPORTED = 20  # bad lines named in one error; the count covers them all
# Local file formats, by extension; a folder source holds {split}{extension}.
EXTENSIONS = {".jsonl": None, ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def raise_problems(path, problems: list[str | DataError], unit: str = "lines", rows: int = 0) -> None:
    """One DataError for every problem found in a file of `rows` rows (up to MAX_REPORTED named), or
    nothing; a field that every row lacks is one error (missing_everywhere)."""
    missing = missing_everywhere(path, problems, rows)
    if missing is not None:
        raise missing
    problems = [str(p) for p in problems]
    if len(problems) == 1:
        raise DataError(problems[0])
    if problems:
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise DataError(f"{path}: {len(problems)} malformed {unit}:\n  {shown}{more}")


def missing_everywhere(path, problems: list[str | DataError], rows: int) -> DataError | None:
    """The error for a field that no row of the file has (every one of its `rows` rows failed on it), or
    None: a wrong task.*_field, reported once with the fields the first row has, not once per row."""
    missing = [p for p in problems if isinstance(p, MissingField)]
    if not rows or len(missing) < rows or len({(p.field, p.key) for p in missing}) != 1:
        return None
    first = missing[0]
    return DataError(
        f"{path}: no row has the field '{first.field}' that {first.key} names (all {rows} rows lack it); "
        f"the first row's fields are {first.have}: {first.fix}"
    )


def read_jsonl(path: Path, parse: RowParser) -> list[Example]:
    """Every non-empty line of a JSONL file as an Example. Every bad line (bytes that are not UTF-8, not
    JSON, a row the task refuses) is found before anything fails, and reported together naming
    file:line, so a damaged file is mended in one pass."""
    examples, problems, rows = [], [], 0
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
            rows += 1
            try:
                examples.append(parse(json.loads(line), lineno - 1, where))
            except json.JSONDecodeError as e:
                problems.append(f"{where}: not valid JSON ({e.msg})")
            except DataError as e:
                problems.append(e)
    raise_problems(path, problems, rows=rows)
    if not examples:
        raise DataError(f"{path}: no rows")
    return examples


def parse_records(records, parse: RowParser, where: Callable[[int], str], name: str) -> list[Example]:
    """Every record (a dict) through `parse`, all problems reported together; `where(i)` names record i."""
    examples, problems, rows = [], [], 0
    for i, obj in enumerate(records):
        rows += 1
        try:
            examples.append(parse(obj, i, where(i)))
        except DataError as e:
            problems.append(e)
    raise_problems(name, problems, "rows", rows)
    if not examples:
        raise DataError(f"{name}: no rows")
    return examples


def read_with_datasets(path: Path, parse: RowParser) -> list[Example]:
    """A local JSON, CSV or Parquet file through `datasets`' builders; record i is named 'row i+1'."""
    import datasets  # heavy: only for these formats

    builder = EXTENSIONS[path.suffix]
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as e:  # noqa: BLE001 - datasets raises many types; the user needs the cause
        raise DataError(f"{path}: could not be read as {builder}: {type(e).__name__}: {e}") from None
    return parse_records(ds, parse, lambda i: f"{path} row {i + 1}", str(path))


def read_file(path: Path, parse: RowParser) -> list[Example]:
    """A local data file of any supported format (by extension; anything else is read as JSONL)."""
    if EXTENSIONS.get(path.suffix) is None:
        return read_jsonl(path, parse)
    return read_with_datasets(path, parse)


def is_file_split(split: str) -> bool:
    """A split given as a file path rather than a split name (data.test_split=held_out.csv)."""
    return split.endswith(tuple(EXTENSIONS))


def _local_split_file(source: Path, split: str) -> Path:
    if source.is_dir():
        for extension in EXTENSIONS:
            path = source / f"{split}{extension}"
            if path.is_file():
                return path
        found = sorted(p.name for p in source.iterdir() if p.suffix in EXTENSIONS)
        raise DataError(
            f"{source}: no {split}.jsonl for split '{split}' (nor .json, .csv, .parquet; found: {found or 'nothing'})"
        )
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
    return parse_records(ds, parse, lambda i: f"{source}[{split}] row {i}", f"{source}[{split}]")


def load_split(source: str, split: str, hub_config: str, parse: RowParser) -> list[Example]:
    """All rows of a split: `source` is a local folder ({split}.jsonl, .json, .csv or .parquet), a local
    file, or a Hub id; a `split` that is itself a path to such a file is read as that file.

    A single local file serves as every split asked for; the caller decides whether that is meaningful
    (evaluation refuses to score the training file: eval.evaluate.test_split_source).
    """
    if is_file_split(split):
        if not Path(split).expanduser().is_file():
            raise DataError(f"split file '{split}': no such file")
        return read_file(Path(split).expanduser(), parse)
    path = Path(source).expanduser()
    if path.exists():
        return read_file(_local_split_file(path, split), parse)
    if is_file_split(source) or source.startswith((".", "/", "~")):
        raise DataError(f"data.source '{source}': no such file or folder")
    return _load_hub_split(source, hub_config, split, parse)


def split_file(source: str, split: str) -> Path | None:
    """The local file behind one split of `source` (a split given as a file path is that file); None for a
    split of a Hub dataset."""
    if is_file_split(split):
        return Path(split).expanduser()
    path = Path(source).expanduser()
    return _local_split_file(path, split) if path.exists() else None


def data_roles(cfg, evaluated: str | None = None) -> dict[str, str]:
    """{role: split} of every split a config's training (evaluated None) or evaluation of the `evaluated`
    split reads: train; validation when it is a split of its own (held-out rows are part of train); the
    test split when it is the one evaluated; exemplar_pool, fewshot.pool or else the training split."""
    d = cfg.data
    roles = {"train": d.train_split}
    if d.validation_split is not None:
        roles["validation"] = d.validation_split
    if evaluated == "test":
        roles["test"] = d.test_split
    roles["exemplar_pool"] = cfg.fewshot.pool if cfg.fewshot.pool is not None else d.train_split
    return roles


def read_version_record(path: Path) -> dict:
    """A data folder's DATA_VERSION_FILE: a JSON object saying which version of the data its files are."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: cannot read it as JSON ({e})") from None
    if not isinstance(record, dict):
        raise DataError(
            f"{path}: expected a JSON object naming the data's version, got {type(record).__name__}"
        )
    return record


def data_provenance(source: str, roles: dict[str, str]) -> dict:
    """What a result file records about its data (fsdistill.eval.results.collect_provenance):

    data_sha256   {file: sha256} of every local file behind `roles`' splits (None for a Hub dataset)
    data_files    {role: file}: which file served as train, validation, test, exemplar_pool
    data_version  {record: its content} of each DATA_VERSION_FILE beside those files (a generator's note
                  of the data version and seed, e.g. fsdistill.tools.twostep's), None when there is none
    """
    files = {role: split_file(source, split) for role, split in roles.items()}
    files = {role: path for role, path in files.items() if path is not None}
    records = sorted({p.parent / DATA_VERSION_FILE for p in files.values()})
    versions = {str(r): read_version_record(r) for r in records if r.is_file()}
    return {
        "data_sha256": {str(p): sha256_file(p) for p in sorted(set(files.values()))} or None,
        "data_files": {role: str(p) for role, p in files.items()} or None,
        "data_version": versions or None,
    }


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


def training_rows(
    cfg, task, need: tuple[str, ...] = ("answer",), validation_need: tuple[str, ...] = ("gold",)
) -> tuple[list[Example], list[Example]]:
    """(train, validation) of a config: the first data.max_train_examples rows of the training split,
    minus data.validation_size rows held out (seeded by training.seed); or, with data.validation_split,
    that split as the validation set. Training, its teacher cache and evaluation all cut the split this
    one way. `need` is what every training row must have (tasks.base.NEEDS): the worked answer by
    default, which training on gold answers and training rows serving as exemplars both read;
    `validation_need` what a data.validation_split row must have (scoring reads its gold)."""
    d = cfg.data
    rows = task.load(d.source, d.train_split, d.hub_config, need)
    if d.max_train_examples is not None:
        rows = rows[: d.max_train_examples]
    if d.validation_split is not None:
        return rows, task.load(d.source, d.validation_split, d.hub_config, validation_need)
    return split_train_validation(rows, d.validation_size, cfg.training.seed)


def exemplar_pool(cfg, task, train: list[Example]) -> list[Example]:
    """The rows exemplars are drawn from: fewshot.pool (a split name of data.source or a file), whose
    rows must all have worked answers, else the training rows."""
    if cfg.fewshot.pool is None:
        return train
    return task.load(cfg.data.source, cfg.fewshot.pool, cfg.data.hub_config, ("answer",))
