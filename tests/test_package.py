"""The package as users get it: a wheel that holds every module, and imports that point one way."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "fsdistill"

# The layers, lowest first: a module may import its own layer and the layers below it, never above.
LAYERS = [
    {"errors", "files"},
    {"config"},
    {"methods"},
    {"cli"},
    {"tasks"},
    {"data"},
    {"modeling"},
    {"distill"},
    {"train"},
    {"eval"},
    {"tools"},
]


def layer_of(module: str) -> int:
    top = module.split(".")[1]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path) -> set[str]:
    """fsdistill modules imported anywhere in a file (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fsdistill."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fsdistill."))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_layers_are_known_and_imports_point_down():
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in SOURCES} - {"__init__"}
    assert tops == set().union(*LAYERS), "a new subpackage needs its place in LAYERS"
    upward = [
        f"{module_name(p)} imports {m}"
        for p in SOURCES
        if p.name != "__init__.py" or p.parent != PACKAGE
        for m in package_imports(p)
        if layer_of(m) > layer_of(module_name(p))
    ]
    assert not upward, upward


def test_no_import_cycles_even_through_function_level_imports():
    """Lazy imports of heavy libraries (torch after config validation, vllm, datasets) are fine; a lazy
    import that dodges a cycle between our own modules is not."""
    graph = {module_name(p): {m for m in package_imports(p)} for p in SOURCES}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_they_import_from_it(tmp_path):
    """Built and installed the way users get it (not the editable install): every .py under src/fsdistill
    is in the wheel, and importing each module from the installed copy, outside the repository, works."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("*.whl")
    in_wheel = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    in_tree = {str(p.relative_to(PACKAGE.parent)) for p in SOURCES}
    assert in_wheel == in_tree

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    modules = sorted(module_name(p) for p in SOURCES)
    code = (
        "import importlib, sys\n"
        f"target = {str(target)!r}\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(target + '/'), (name, module.__file__)\n"
        "print(len(sys.modules))\n"
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=outside, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
