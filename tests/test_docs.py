"""Every link in the documentation pages leads somewhere: relative files exist and #anchors name a heading of
the page they point into (GitHub's anchor rule). The front page stays a front page."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "realness/README.md", "realness/core/README.md", "realness/dream/README.md", "realness/reward.md",
         "describe/README.md", "training/README.md", "eval/README.md", "tests/README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(text: str) -> set[str]:
    out, fence = set(), False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and re.match(r"^#{1,6} ", line):
            out.add(re.sub(r"[^\w\- ]", "", re.sub(r"^#+ ", "", line).strip().lower()).replace(" ", "-"))
    return out


def _links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code blocks are code
    return LINK.findall(text)


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        path = ROOT / page
        for target in _links(path.read_text()):
            if re.match(r"^[a-z]+:", target):  # http(s), mailto: not checked offline
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{page}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
                broken.append(f"{page}: {target} (no such heading)")
    assert broken == []


def test_the_front_page_is_short_and_points_at_every_page():
    front = (ROOT / "README.md").read_text()
    assert len(front.splitlines()) <= 250
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in _links(front) if not re.match(r"^[a-z]+:", t)}
    assert {(ROOT / p).resolve() for p in PAGES if p != "README.md"} <= linked
    assert "../shared" not in "".join((ROOT / p).read_text() for p in PAGES)  # outside readers have no ../shared
