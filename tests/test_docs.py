"""The README and the docs/ pages link to each other, to compute.md, to figures and to code: every relative
link and image must name a file of the checkout, and every #anchor a heading of the page it points to
(GitHub's anchors: the heading lower-cased, punctuation dropped, spaces to hyphens)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return [REPO / "README.md", REPO / "compute.md", *sorted((REPO / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code (where brackets are not links)."""
    text = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"`[^`\n]*`", "", text)


def anchor(heading: str) -> str:
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(text), flags=re.MULTILINE):
        slug, n = anchor(heading), 1
        while slug in found:  # GitHub numbers repeated headings: slug, slug-1, slug-2
            slug, n = f"{anchor(heading)}-{n}", n + 1
        found.add(slug)
    return found


def broken_links(page: Path) -> list[str]:
    problems, text = [], page.read_text(encoding="utf-8")
    for target in LINK.findall(prose(text)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve()
        if path and (not file.exists() or REPO not in (file, *file.parents)):
            problems.append(f"{page.name}: {target}: no such file in the checkout")
        elif fragment and fragment not in anchors(file.read_text(encoding="utf-8") if path else text):
            problems.append(
                f"{page.name}: {target}: no heading #{fragment} in {file.name if path else page.name}"
            )
    return problems


def test_every_relative_link_and_image_resolves():
    checked = [page for page in pages() if LINK.search(prose(page.read_text(encoding="utf-8")))]
    assert {"README.md", "results.md", "reproduce.md"} <= {p.name for p in checked}
    problems = [problem for page in pages() for problem in broken_links(page)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "link, problem",
    [
        ("[results](results.md#no-such-heading)", "no heading #no-such-heading"),
        ("![figure](../assets/no_such.png)", "no such file"),
        ("![figure](assets/twostep/accuracy.png)", "no such file"),  # the README's path, from docs/
        ("[readme](../README.md#install)", None),
        ("[twostep](results.md#accuracy-on-a-cpu-smollm2-135m-on-the-twostep-task)", None),
        ("[figure](../assets/twostep/accuracy.png)", None),
        ("[here](#a-heading)", None),
        ("`[not a link](nowhere.md)`", None),
    ],
)
def test_a_broken_link_or_anchor_is_named(link, problem, tmp_path, monkeypatch):
    page = REPO / "docs" / "_link_probe.md"
    monkeypatch.setattr(Path, "read_text", _reading({page: f"# A heading\n\nSee {link}.\n"}))
    found = broken_links(page)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and problem in found[0], found


def _reading(fake: dict[Path, str]):
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        return fake[self] if self in fake else real(self, *args, **kwargs)

    return read_text


def test_anchors_follow_github():
    assert (
        anchor("A real model on a CPU: SmolLM2-135M-Instruct")
        == "a-real-model-on-a-cpu-smollm2-135m-instruct"
    )
    assert (
        anchor("The original's command, and what a run writes")
        == "the-originals-command-and-what-a-run-writes"
    )
    assert anchor("`rollout.source` and *more*") == "rolloutsource-and-more"
    assert anchors("# Same\n## Same\n```\n# not a heading\n```\n") == {"same", "same-1"}
