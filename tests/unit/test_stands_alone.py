"""The product stands alone: nothing a user reads — the code (messages, docstrings shown by help and the
editor schema), README, docs, examples — points to files outside the repository (the design notes, the
regulations digest, ../shared)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEXT = {".py", ".md", ".toml", ".po", ".json", ".yml", ".txt", ".service", ".timer", ""}
OUTSIDE = re.compile(r"DESIGN(\.md| §)|REGULATIONS(\.md| §)|\.\./shared|STYLE\.md|LAB-NOTES")


def test_nothing_points_outside_the_repository() -> None:
    places = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "examples").rglob("*"),
              *(ROOT / "src").rglob("*")]
    found = []
    for path in places:
        if not path.is_file() or path.suffix not in TEXT:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []
