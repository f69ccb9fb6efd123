"""Small file and provenance helpers every part of the package shares: one of each.

- :func:`write_text_atomic` / :func:`write_json_atomic`: a file holds either its old or its complete new
  content, never a torn one (temporary file in the same folder, fsync, rename, fsync of the folder).
- :func:`sha256_file`: the hash used for data files, weights and checkpoint files.
- :func:`git_state`: the commit of the checkout the package runs from, and whether it is dirty.
- :func:`package_versions`: installed versions of the packages results depend on.
- :func:`file_lock`: an exclusive lock (one writer of a run folder, of a result file).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "vllm")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` so that a crash leaves either the old or the complete new file.

    The temporary name is unique per call, so two processes writing the same path never share a
    temporary file; the last rename wins. The file gets the mode any new file gets (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temporary_file(path.parent, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def create_temporary_file(folder: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """(fd, path) of a new file with a unique name in `folder`, opened for writing.

    Not tempfile.mkstemp: it creates files readable by their owner only (0600), whatever the umask, so
    every record a run wrote would be unreadable to the rest of a shared group folder. Here the mode is
    0666 less the umask, as for any file a program creates.
    """
    for _ in range(100):
        tmp = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free temporary name {prefix}*{suffix}")


def create_temporary_folder(parent: Path, prefix: str) -> Path:
    """A new folder with a unique name in `parent`, of mode 0777 less the umask (tempfile.mkdtemp's is
    0700: a model folder renamed from it would be private in a shared group folder)."""
    for _ in range(100):
        folder = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            folder.mkdir(mode=0o777)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}: no free temporary name {prefix}*")


def write_json_atomic(path: str | Path, obj: Any, indent: int = 2) -> None:
    """JSON through write_text_atomic; serialised first, so a non-serialisable object touches no file."""
    write_text_atomic(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def fsync_dir(folder: str | Path) -> None:
    """Persist a rename inside `folder` (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replaceable_folder(path: Path, is_ours: Callable[[Path], bool]) -> bool:
    """Whether a command may replace `path` (with --overwrite): it does not exist, is an empty folder, or is a
    folder `is_ours` recognises as one the project wrote. Never a file, never a folder of someone else's."""
    if not path.exists():
        return True
    return path.is_dir() and (not any(path.iterdir()) or is_ours(path))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    """Output of a read-only git command run in this package's folder, or None outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """{"commit": the checkout's HEAD or None, "dirty": whether tracked files differ from it, or None}."""
    commit = _git("rev-parse", "HEAD")
    # --no-optional-locks: reading the status must not rewrite the checkout's index.
    status = _git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package, None when it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class LockHeld(Exception):
    """Another process holds the lock; `holder` is what it wrote into the lock file (host, pid, ...)."""

    def __init__(self, path: Path, holder: str):
        self.path, self.holder = path, holder
        super().__init__(f"{path} is locked by {holder or 'another process'}")


@contextlib.contextmanager
def file_lock(path: str | Path, *, wait: bool = True, holder: dict | None = None):
    """An exclusive `fcntl.flock` on `path` (created if missing) for the duration of the block.

    wait=False raises LockHeld at once, naming the holder, when another process holds it. `holder` (e.g.
    host and pid) is written into the file while held, for that message. The kernel releases the lock when
    the process dies, however it dies (kill -9 included), so a stale lock file never blocks anyone.
    Caveat: flock is reliable on local filesystems; on NFS it depends on the client (Linux >= 2.6.12 maps it
    to POSIX byte-range locks, which the server must support) and on some network filesystems it is a no-op.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockHeld(path, os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()) from None
        if holder is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            os.fsync(fd)
        yield
    finally:
        os.close(fd)  # releases the lock
