"""The result tables of README.md, compute.md and the docs/ pages, rendered from the committed JSON (never
typed in).

A table lives between two markers naming its kind and its file (relative to the document's folder):

    <!-- summary-table: experiments/twostep/summary.json -->
    ...  rewritten from that file
    <!-- end summary-table -->

Kinds: `summary` (an experiment's summary JSON: accuracy and paired tests), `summary-reading` (the same
JSON's paired tests as sentences with their verdict), `before-after` (pairs of summaries, before and after,
their paths separated by spaces: the same runs' accuracy in both), `system-prompts`
(scripts/select_system_prompt.py's choice on validation), `bench-step` (scripts/bench_step.py),
`bench-on-policy` (scripts/bench_step.py --on_policy), `bench-generation-backends` (several runs of
scripts/bench_step.py --on_policy made with vLLM importable: hf's and vLLM's sampled tokens / s), `bench-shared-context` (scripts/bench_step.py
--shared_context), `bench-repeats` (several runs of one benchmark, their paths separated by spaces: each
ratio's median and range), `bench-compare` (scripts/bench_compare_evals.py: compare_evals.py on a million
paired examples), `vllm-agreement` (scripts/vllm_agreement.py), `vllm-colocation` (several runs of
scripts/vllm_colocation.py).

The figures quoted in the prose are rendered the same way, from inline markers
(`<!-- value: first-step experiments/twostep/icl_eval.json base@2 -->62.0%<!-- end value -->`;
fsdistill.tools.prose_figures).

    python scripts/gen_result_tables.py            # rewrite the tables and the prose figures
    python scripts/gen_result_tables.py --check    # exit 1 if one differs from its JSON (CI)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.files import write_text_atomic
from fsdistill.tools.prose_figures import render_figures

# A developer command: the documents of the checkout this package is installed from (pip install -e .).
REPO = Path(__file__).resolve().parents[3]
DOCUMENTS = ("README.md", "compute.md", "docs/*.md")  # the patterns documents() expands
BLOCK = re.compile(
    r"(<!-- (?P<kind>[a-z-]+)-table: (?P<path>[^>]+?) -->\n)(?P<body>.*?)(<!-- end (?P=kind)-table -->)",
    re.DOTALL,
)


MANY_FILES = (
    "bench-repeats",
    "bench-generation-backends",
    "before-after",
    "vllm-colocation",
)  # kinds whose renderer reads a list of files


def renderers() -> dict:
    """{kind: function(result dict) -> Markdown}; imported here so --help stays light."""
    from fsdistill.eval.summary import before_after_markdown, summary_markdown, summary_reading
    from fsdistill.eval.system_prompts import system_prompts_markdown
    from fsdistill.tools.bench import bench_markdown, repeats_markdown
    from fsdistill.tools.bench_compare import compare_bench_markdown
    from fsdistill.tools.bench_on_policy import generation_backends_markdown, on_policy_markdown
    from fsdistill.tools.bench_shared_context import shared_context_markdown
    from fsdistill.tools.vllm_agreement import agreement_markdown
    from fsdistill.tools.vllm_colocation import colocation_markdown

    return {
        "summary": summary_markdown,
        "summary-reading": summary_reading,
        "system-prompts": system_prompts_markdown,
        "before-after": before_after_markdown,
        "bench-step": bench_markdown,
        "bench-on-policy": on_policy_markdown,
        "bench-generation-backends": generation_backends_markdown,
        "bench-shared-context": shared_context_markdown,
        "bench-repeats": repeats_markdown,
        "bench-compare": compare_bench_markdown,
        "vllm-agreement": agreement_markdown,
        "vllm-colocation": colocation_markdown,
    }


def render(text: str, root: Path, where: str) -> str:
    """The document with every table block and every prose figure (fsdistill.tools.prose_figures)
    rewritten from its JSON (paths relative to root)."""
    kinds = renderers()

    def table(match: re.Match) -> str:
        kind, names = match["kind"], match["path"].split()
        if kind not in kinds:
            raise UserError(f"{where}: unknown table kind {kind!r} (known: {', '.join(kinds)})")
        if len(names) != 1 and kind not in MANY_FILES:
            raise UserError(f"{where}: a {kind}-table reads one file, got {len(names)}")
        results = []
        for name in names:
            try:
                results.append(json.loads((root / name).read_text(encoding="utf-8")))
            except (OSError, ValueError) as e:
                raise UserError(f"{where}: {kind}-table {name}: cannot read it ({e})") from None
        table = kinds[kind](results if kind in MANY_FILES else results[0])
        return match.group(1) + "\n" + table + "\n" + match.group(5)

    return render_figures(BLOCK.sub(table, text), root, where)


def documents(repo: Path) -> list[Path]:
    """The Markdown files a checkout's tables and figures live in: README.md, compute.md and every docs/
    page (a page without markers renders to itself), so a table moved to a new page stays checked."""
    return [path for pattern in DOCUMENTS for path in sorted(repo.glob(pattern))]


def stale_lines(text: str, new: str, most: int = 10) -> list[str]:
    """'LINE: as written' of the first lines that differ from their rendering (for --check's message)."""
    old_lines, new_lines = text.splitlines(), new.splitlines()
    differ = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    if not differ and len(old_lines) != len(new_lines):
        differ = [min(len(old_lines), len(new_lines))]
    return [f"{i + 1}: {old_lines[i][:160]}" for i in differ[:most] if i < len(old_lines)]


@exit_on_user_error
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a table or prose figure differs from its JSON"
    )
    parser.add_argument(
        "documents",
        nargs="*",
        help=f"Markdown files (default: {', '.join(DOCUMENTS)} of this checkout)",
    )
    args = parser.parse_args(argv)
    paths = [Path(d) for d in args.documents] or documents(REPO)
    stale = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        new = render(text, path.parent, str(path))
        if new == text:
            continue
        if args.check:
            stale.append(str(path))
            for line in stale_lines(text, new):
                print(f"{path}:{line}", file=sys.stderr)
        else:
            write_text_atomic(path, new)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}: run python scripts/gen_result_tables.py", file=sys.stderr)
        sys.exit(1)
    if args.check:
        print("the tables and prose figures match their JSON")
