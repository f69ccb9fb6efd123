"""The README's result tables, rendered from the committed summary JSON (never typed in).

A table lives between two markers in README.md:

    <!-- summary-table: experiments/twostep/summary.json -->
    ...  (rewritten from that file by fsdistill.eval.summary.summary_markdown)
    <!-- end summary-table -->

    python scripts/gen_readme_tables.py            # rewrite the blocks
    python scripts/gen_readme_tables.py --check    # exit 1 if a block differs from its JSON (CI)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.eval.summary import summary_markdown
from fsdistill.files import write_text_atomic

# A developer command: the README of the checkout this package is installed from (pip install -e .).
REPO = Path(__file__).resolve().parents[3]
BLOCK = re.compile(
    r"(<!-- summary-table: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- end summary-table -->)", re.DOTALL
)


def render(readme: str, root: Path) -> str:
    """The README text with every summary-table block rewritten from its JSON (paths relative to root)."""

    def table(match: re.Match) -> str:
        path = root / match["path"]
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"README summary-table {match['path']}: cannot read it ({e})") from None
        return match.group(1) + "\n" + summary_markdown(summary) + "\n" + match.group(4)

    return BLOCK.sub(table, readme)


@exit_on_user_error
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    parser.add_argument("--readme", default=str(REPO / "README.md"))
    args = parser.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text(encoding="utf-8")
    if not BLOCK.search(text):
        raise UserError(f"{path}: no '<!-- summary-table: PATH -->' block")
    new = render(text, path.parent)
    if args.check:
        if new != text:
            print(f"{path} is stale: run python scripts/gen_readme_tables.py", file=sys.stderr)
            sys.exit(1)
        print(f"{path}: tables match their JSON")
        return
    if new != text:
        write_text_atomic(path, new)
    print(f"wrote {path}")
