"""Containment: every deletion and replacement in the package goes through one helper (fsdistill/files.py),
which refuses a name that leaves its folder ('..', an absolute path) or passes a symbolic link, before
anything is deleted. The run-folder, export, cache and carry cases that use it are in test_safety.py,
test_export.py, test_teacher_cache.py and test_gpu_check.py."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from helpers import snapshot

from fsdistill.files import (
    PathRefused,
    contained,
    install_folder,
    remove,
    remove_made_folder,
    replace_path,
)

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fsdistill"
HELPER = PACKAGE / "files.py"

# os.X / shutil.X calls that delete or replace; and methods that do on a Path (unlink, rmdir, rename; a
# one-argument .replace is Path.replace: str.replace takes two).
MODULE_CALLS = {
    "os": {"remove", "unlink", "rmdir", "removedirs", "replace", "rename", "renames"},
    "shutil": {"rmtree", "move"},
}
METHODS = {"unlink", "rmdir", "rmtree", "rename"}


def deleting_calls(source: str) -> list[str]:
    """Each call in `source` that deletes or replaces a path, as 'line: text'."""
    tree = ast.parse(source)
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module in MODULE_CALLS
        for alias in node.names
        if alias.name in MODULE_CALLS[node.module]
    }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in imported:
            found.append(node)
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            if func.attr in MODULE_CALLS.get(owner, ()) or func.attr in METHODS:
                found.append(node)
            elif (
                func.attr == "replace"
                and len(node.args) == 1
                and not node.keywords
                and owner != "dataclasses"
            ):
                found.append(node)
    return [f"{n.lineno}: {ast.unparse(n)}" for n in found]


def test_the_scan_finds_every_way_to_delete_or_replace():
    source = (
        "import os, shutil\nfrom os import remove as rm\nfrom pathlib import Path\n"
        "os.remove(a)\nos.replace(a, b)\nshutil.rmtree(d)\nPath(a).unlink()\nd.rmdir()\n"
        "p.rename(q)\np.replace(q)\nrm(a)\nos.unlink(a)\nshutil.move(a, b)\n"
        "s.replace('a', 'b')\ndataclasses.replace(x)\n"
    )
    assert len(deleting_calls(source)) == 10  # the last two lines are not deletions


def test_no_module_deletes_or_replaces_but_through_the_helper():
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{call}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != HELPER
        for call in deleting_calls(path.read_text())
    ]
    assert not offenders, (
        "delete or replace through fsdistill.files (remove, replace_path, ...):\n" + "\n".join(offenders)
    )


@pytest.fixture
def tree(tmp_path) -> tuple[Path, Path]:
    """(folder the command owns, a victim folder beside it holding a file nobody may delete)."""
    folder, victim = tmp_path / "run", tmp_path / "victim"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "ours.txt").write_text("ours")
    (folder / "ours.txt").write_text("ours")
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    return folder, victim


@pytest.mark.parametrize(
    "name", ["../victim/keep.txt", "sub/../../victim/keep.txt", "ABSOLUTE", "", "./ours.txt"]
)
def test_a_name_that_leaves_the_folder_is_refused_and_nothing_is_deleted(tree, name):
    folder, victim = tree
    name = str(victim / "keep.txt") if name == "ABSOLUTE" else name
    before = snapshot(folder.parent)
    with pytest.raises(PathRefused, match="does not name a path inside"):
        remove(folder, ["ours.txt", name])  # the good name first: still nothing is deleted
    assert snapshot(folder.parent) == before


@pytest.mark.parametrize("where", ["folder_on_the_way", "the_file", "the_folder_removed"])
def test_a_symbolic_link_anywhere_on_the_way_is_refused_and_not_followed(tree, where):
    folder, victim = tree
    if where == "folder_on_the_way":
        (folder / "link").symlink_to(victim)
        files, folders = ["ours.txt", "link/keep.txt"], []
    elif where == "the_file":
        (folder / "link").symlink_to(victim / "keep.txt")
        files, folders = ["ours.txt", "link"], []
    else:
        (folder / "link").symlink_to(victim)
        files, folders = ["ours.txt"], ["link"]
    before = snapshot(folder.parent)
    with pytest.raises(PathRefused, match=f"{folder / 'link'} is a symbolic link"):
        remove(folder, files, folders)
    assert snapshot(folder.parent) == before and (folder / "link").is_symlink()
    with pytest.raises(PathRefused):
        contained(folder, "link")


def test_remove_deletes_the_files_and_only_the_folders_it_emptied(tree):
    folder, _ = tree
    (folder / "other").mkdir()
    (folder / "other" / "theirs.txt").write_text("theirs")
    assert remove(folder, ["sub/ours.txt", "ours.txt", "missing.txt"], ["sub", "other"]) == [
        "sub/ours.txt",
        "ours.txt",
    ]
    assert sorted(p.name for p in folder.iterdir()) == ["other"]
    assert (folder / "other" / "theirs.txt").read_text() == "theirs"


def test_replace_path_never_merges_into_or_deletes_a_folder_that_holds_files(tree):
    folder, _ = tree
    (folder / "new").mkdir()
    (folder / "new" / "a.txt").write_text("new")
    with pytest.raises(PathRefused, match="holds files this command did not write"):
        replace_path(folder, "new", "sub")
    assert (folder / "sub" / "ours.txt").read_text() == "ours" and (folder / "new" / "a.txt").exists()
    replace_path(folder, "new", "fresh")
    assert (folder / "fresh" / "a.txt").read_text() == "new"


def test_install_folder_keeps_what_it_did_not_write_and_refuses_a_clash(tmp_path):
    out, new = tmp_path / "out", tmp_path / ".out.tmp"
    for folder, names in ((out, ["model.bin", "mine.tex"]), (new, ["model.bin", "record.json"])):
        folder.mkdir()
        for name in names:
            (folder / name).write_text(f"{folder.name}:{name}")
    assert install_folder(new, out, ["model.bin"], last="record.json") == ["mine.tex"]
    assert not new.exists()
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        "model.bin": ".out.tmp:model.bin",
        "record.json": ".out.tmp:record.json",
        "mine.tex": "out:mine.tex",
    }
    new.mkdir()
    (new / "mine.tex").write_text("would land on the user's file")
    before = snapshot(tmp_path)
    with pytest.raises(PathRefused, match="mine.tex"):
        install_folder(new, out, ["model.bin", "record.json"])
    assert snapshot(tmp_path) == before
    # An out that holds only what the project wrote is replaced whole.
    (new / "mine.tex").unlink()
    (new / "model.bin").write_text("v3")
    (out / "mine.tex").unlink()
    assert install_folder(new, out, ["model.bin", "record.json"]) == []
    assert [p.name for p in out.iterdir()] == ["model.bin"] and not new.exists()


def test_remove_made_folder_removes_a_link_inside_without_following_it(tree, tmp_path):
    folder, victim = tree
    (folder / "sub" / "to_victim").symlink_to(victim)
    remove_made_folder(folder, "sub")
    assert not (folder / "sub").exists() and (victim / "keep.txt").read_text() == "keep"
    (tmp_path / "made_link").symlink_to(victim)
    with pytest.raises(PathRefused):
        remove_made_folder(tmp_path, "made_link")
    assert (victim / "keep.txt").exists() and os.path.islink(tmp_path / "made_link")
