"""Write docs/config.md, the reference table of every config key, generated from the schema.

python scripts/gen_config_docs.py            # rewrite docs/config.md
python scripts/gen_config_docs.py --check    # exit 1 if docs/config.md is stale (CI)
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from fsdistill.config import bound_text, schema_fields

# A developer command: the docs of the checkout this package is installed from (pip install -e .).
DOC = Path(__file__).resolve().parents[3] / "docs" / "config.md"


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        return f"{_type_name(next(a for a in args if a is not type(None)))} or null"
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _default(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str) and value == "???":
        return "**required**"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`" if value != "" else '`""`'


def render() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from the schema in `src/fsdistill/config.py` by `python scripts/gen_config_docs.py`; do not edit by hand",
        "(a test fails when this file and the schema disagree).",
        "",
        "Compose a config with `--config FILE` (a YAML file may say `inherit: BASE.yaml`, or `inherit: [MODEL.yaml,",
        "TASK.yaml]` with later entries winning), `--output_dir DIR` and `key.sub=value` overrides;",
        "`python scripts/show_config.py --config FILE` prints the result. A run records its resolved config",
        "(`config.yaml`, `run.json`); `eval_checkpoints.py` and `chat.py` read it from there.",
        "",
    ]
    section = None
    for key, tp, default, help_text, choices, bounds, finite, _alias, _unit in schema_fields():
        head = key.split(".")[0]
        if head != section:
            section = head
            lines += [
                "",
                f"## `{section}`",
                "",
                "| key | type | default | meaning |",
                "| --- | --- | --- | --- |",
            ]
        meaning = help_text + (f" One of: {', '.join(f'`{c}`' for c in choices)}." if choices else "")
        if bounds or finite:
            meaning += (
                f" Must be {'finite, ' if finite else ''}{bound_text(bounds) if bounds else ''}.".replace(
                    ", .", "."
                )
            )
        lines.append(f"| `{key}` | {_type_name(tp)} | {_default(default)} | {meaning.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is stale: run python scripts/gen_config_docs.py", file=sys.stderr)
            sys.exit(1)
        return
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
    print(f"wrote {DOC}")
