"""Run folders: which folders are ours, one writer at a time, and deleting only what a run wrote.

A run folder (output.dir) holds:
  run.json           name, method, config, identity, checkpoints so far, status (the project's marker)
  config.yaml        the resolved config, written at start
  metrics.jsonl      one JSON line per logged optimizer step
  samples.jsonl      rollouts only: a few sampled answers per logged step (rollout.log_samples)
  tensorboard/       event files (output.log_with)
  ranks/rank{r}.json what process r saw (rows per step) and a digest of its trainable parameters
  checkpoint-{step}/ see checkpoint.py; checkpoint.json lists every file of the checkpoint
  .fsdistill.lock    held by the run's main process while it runs

Rules (tests/test_safety.py):
  - A folder is ours when its run.json has this project's schema (name, method, config, status); runs
    written by earlier versions count. An empty folder, or a missing one, is free.
  - A folder that is not empty and not ours is refused, --overwrite or not: nothing in it is touched.
  - A run of ours needs --resume (continue) or --overwrite (start again), checkpoints or not.
  - --overwrite deletes only what a run writes: the records above, event files, rank files, checkpoint
    folders' own files (those checkpoint.json lists; for checkpoints of earlier versions, the names the
    project writes), crashed saves' temporary folders and the rollout adapters (rollout_adapter/rank{r}/);
    a file of anyone else stays where it is.
  - Every deletion goes through files.remove, contained in the run folder: a name that leaves it ('..', an
    absolute path, as a crafted checkpoint.json may list) or a symbolic link on the way (a checkpoint folder,
    a file) is refused, exit 2, before anything is deleted. A folder holding such a thing is refused when
    a launch checks it (check_output_dir), before any work; a symlinked checkpoint never counts as one.
  - The main process holds an exclusive flock on .fsdistill.lock for the run's life (see files.file_lock
    for the network-filesystem caveat); a second launch into the folder is refused naming the holder.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import socket
import time
from contextlib import AbstractContextManager
from pathlib import Path

from fsdistill.errors import UserError
from fsdistill.files import LockHeld, contained, file_lock, remove

LOCK = ".fsdistill.lock"
RUN_RECORDS = ("run.json", "config.yaml", "metrics.jsonl", "samples.jsonl")
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TEMP_RE = re.compile(r"^\.checkpoint-(\d+)\.tmp(-[\w.-]+)?$")
# A transformers model folder's files (weights, config, tokenizer): also what an export or a converted
# model of earlier versions holds (tools/export.py, tools/smollm2.py).
MODEL_FILES = (
    "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json", "config.json",
    "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "chat_template.jinja", "vocab.json", "merges.txt", "added_tokens.json", "tokenizer.model",
)  # fmt: skip
# The names of the files a checkpoint holds, of this version and earlier ones (which did not list their
# files in checkpoint.json; nor does a crashed save's incomplete temporary folder).
CHECKPOINT_FILES = (
    "checkpoint.json", "config.yaml", "training_state.pt", "rng_state_*.pt", "README.md",
    "adapter_model.safetensors", "adapter_config.json", *MODEL_FILES, "training_state.safetensors",
    "training_state.json", "rng_state_*.safetensors", "rng_state_*.json", "model_shard_*.safetensors",
    "model_shard_*.json", "optimizer_shard_*.safetensors", "optimizer_shard_*.json",
)  # fmt: skip
# What peft's save_pretrained writes for the rollout engine (train/rollouts.py): rollout_adapter/rank{r}/.
ROLLOUT_ADAPTER = "rollout_adapter"
ROLLOUT_ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "README.md")


def is_our_run(run_dir: Path) -> bool:
    """run.json of this project's schema (name, method, config, status), of this or an earlier version."""
    try:
        manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"name", "method", "config", "status"} <= manifest.keys()


def is_checkpoint(path: Path) -> bool:
    """A complete checkpoint folder of this project: checkpoint-{step}/ holding checkpoint.json (never a
    symbolic link: the project does not write one, and reading or pruning through it would leave the run)."""
    return (
        CHECKPOINT_RE.match(path.name) is not None
        and not path.is_symlink()
        and path.is_dir()
        and (path / "checkpoint.json").is_file()
    )


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    if not run_dir.is_dir():
        return []
    found = [(int(CHECKPOINT_RE.match(p.name).group(1)), p) for p in run_dir.iterdir() if is_checkpoint(p)]
    return sorted(found)


def checkpoint_step(checkpoint: Path | None) -> int:
    """The optimizer steps a checkpoint folder holds (0 for None: a fresh start)."""
    return 0 if checkpoint is None else int(CHECKPOINT_RE.match(checkpoint.name).group(1))


def check_output_dir(run_dir: Path, resume: bool | str, overwrite: bool) -> Path | None:
    """The checkpoint to resume from (None: a fresh start), or UserError: a folder that is a file, a
    foreign folder, a run of ours without --resume/--overwrite, a --resume with nothing to resume.
    Touches nothing, so it runs before any model is loaded."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--output_dir {run_dir} is a file, not a folder")
    if (run_dir / LOCK).is_file():  # a run at work there: say so first, whatever the flags
        try:
            with file_lock(run_dir / LOCK, wait=False):
                pass
        except LockHeld as e:
            raise UserError(_held_message(run_dir, e.holder)) from None
    ours = is_our_run(run_dir)
    occupied = run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir())
    if occupied and not ours:
        raise UserError(
            f"--output_dir {run_dir} is not empty and is not a run folder of this project (no run.json of ours): "
            "nothing in it was touched; choose an empty or new folder"
        )
    if ours:  # what --overwrite, pruning and a re-save may delete: refused now, not halfway through a run
        check_removal(run_dir)
    if isinstance(resume, str):
        checkpoint = Path(resume)
        contained(checkpoint.parent, checkpoint.name)  # a link to a checkpoint is refused, not followed
        if not is_checkpoint(checkpoint):
            raise UserError(
                f"--resume {resume}: not a checkpoint of this project (checkpoint-STEP/ with checkpoint.json)"
            )
        return checkpoint
    existing = list_checkpoints(run_dir)
    if resume:
        if not existing:
            raise UserError(f"--resume: {run_dir} holds no checkpoint to resume from")
        return existing[-1][1]
    if ours and not overwrite:
        steps = [s for s, _ in existing]
        held = f"checkpoints (steps {steps})" if steps else "a run without checkpoints"
        raise UserError(
            f"{run_dir} already holds {held}; pass --resume to continue the run or --overwrite to delete what "
            "the run wrote and start again"
        )
    return None


def _matching(folder: Path, patterns: tuple[str, ...]) -> list[str]:
    """Names in `folder` matching `patterns`, links included (so that the deletion refuses them)."""
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if (p.is_symlink() or p.is_file()) and any(fnmatch.fnmatch(p.name, pat) for pat in patterns)
    )


def _listed_files(checkpoint: Path) -> list[str] | None:
    """The file names checkpoint.json lists (None: no readable listing, a checkpoint of an earlier version
    or an incomplete one). Names are not trusted: the deletion refuses any that leaves the folder."""
    try:
        listed = json.loads((checkpoint / "checkpoint.json").read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(listed, (dict, list)) or not all(isinstance(n, str) for n in listed):
        raise UserError(f"{checkpoint / 'checkpoint.json'}: its 'files' are not a list of file names")
    return list(listed)


def checkpoint_removal(run_dir: Path, name: str) -> tuple[list[str], list[str]]:
    """(files, folders) relative to run_dir that deleting checkpoint `name` removes: the files its
    checkpoint.json lists (and itself), or, for a checkpoint of an earlier version or an incomplete one, the
    names a checkpoint's files have; and the consolidated copy of a sharded checkpoint (consolidated/,
    written later for evaluation). No file is hashed: the names alone decide, inside the checkpoint."""
    checkpoint = run_dir / name
    files, folders = [], []
    for sub in ("consolidated", "consolidated.tmp"):
        found = _matching(checkpoint / sub, (*CHECKPOINT_FILES, "consolidated.json"))
        files += [f"{name}/{sub}/{n}" for n in found]
        folders.append(f"{name}/{sub}")
    listed = _listed_files(checkpoint)
    if listed is None:
        listed = _matching(checkpoint, CHECKPOINT_FILES)
    files += [f"{name}/{n}" for n in [*listed, "checkpoint.json"]]
    return files, [*folders, name]


def rollout_adapter_removal(run_dir: Path, ranks: list[int] | None = None) -> tuple[list[str], list[str]]:
    """(files, folders) of the rollout adapters (rollout_adapter/rank{r}/, those of `ranks` or all)."""
    base = run_dir / ROLLOUT_ADAPTER
    if ranks is None:
        found = base.iterdir() if base.is_dir() else ()
        names = sorted(p.name for p in found if re.fullmatch(r"rank\d+", p.name))
    else:
        names = [f"rank{r}" for r in ranks]
    files = [f"{ROLLOUT_ADAPTER}/{r}/{n}" for r in names for n in _matching(base / r, ROLLOUT_ADAPTER_FILES)]
    return files, [*(f"{ROLLOUT_ADAPTER}/{r}" for r in names), ROLLOUT_ADAPTER]


def run_removal(run_dir: Path) -> tuple[list[str], list[str]]:
    """(files, folders) relative to run_dir that --overwrite removes (see the module docstring). A
    checkpoint-{step} or a temporary that is a link is listed, for the deletion to refuse it."""
    files, folders = [], []
    for path in sorted(run_dir.iterdir()) if run_dir.is_dir() else ():
        complete = is_checkpoint(path) or (CHECKPOINT_RE.match(path.name) and path.is_symlink())
        if complete or (TEMP_RE.match(path.name) and (path.is_dir() or path.is_symlink())):
            more, empty = checkpoint_removal(run_dir, path.name)
            files += more
            folders += empty
    for sub, patterns in (("tensorboard", ("events.out.tfevents.*",)), ("ranks", ("rank*.json",))):
        files += [f"{sub}/{n}" for n in _matching(run_dir / sub, patterns)]
        folders.append(sub)
    more, empty = rollout_adapter_removal(run_dir)
    return [*files, *more, *RUN_RECORDS], [*folders, *empty]


def check_removal(run_dir: Path) -> None:
    """Refuse (PathRefused, exit 2) a run folder where what the project may delete passes a link or a
    crafted name leaves the folder: checked before any work, deleting nothing."""
    files, folders = run_removal(run_dir)
    for name in (*files, *folders):
        contained(run_dir, name)


def remove_checkpoint(checkpoint: Path) -> None:
    """Delete a checkpoint's own files (checkpoint_removal), then the folder if that emptied it."""
    remove(checkpoint.parent, *checkpoint_removal(checkpoint.parent, checkpoint.name))


def remove_stale_temporaries(run_dir: Path) -> None:
    """Crashed saves' temporary folders (main process, under the run lock: nobody else is writing)."""
    for path in sorted(run_dir.iterdir()) if run_dir.is_dir() else ():
        if TEMP_RE.match(path.name) and (path.is_dir() or path.is_symlink()):
            remove_checkpoint(path)


def remove_rollout_adapter(run_dir: Path, rank: int) -> None:
    """This process's rollout adapter folder (written for the vLLM engine), when the run ends."""
    remove(run_dir, *rollout_adapter_removal(run_dir, [rank]))


def clear_run_dir(run_dir: Path) -> None:
    """--overwrite: delete what a run of ours wrote (see the module docstring); everything else stays. Every
    name is checked before the first deletion, so a refused one leaves the folder as it was."""
    if run_dir.is_dir():
        remove(run_dir, *run_removal(run_dir))


def run_lock(run_dir: Path) -> AbstractContextManager:
    """The run's exclusive lock (main process), recording who holds it; a second writer gets UserError."""
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return _RunLock(run_dir / LOCK, holder)


class _RunLock:
    def __init__(self, path: Path, holder: dict):
        self.path, self.holder, self.inner = path, holder, None

    def __enter__(self):
        self.inner = file_lock(self.path, wait=False, holder=self.holder)
        try:
            self.inner.__enter__()
        except LockHeld as e:
            raise UserError(_held_message(self.path.parent, e.holder)) from None
        return self

    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)


def _held_message(run_dir: Path, holder: str) -> str:
    return (
        f"{run_dir} is being written by another run ({holder or 'holder unknown'}); wait for it to finish or "
        "use another --output_dir (nothing was touched)"
    )
