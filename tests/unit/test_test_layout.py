"""pytest imports test modules by their base name (rootdir-relative, no packages here): a name used in both
tests/unit and tests/integration stops the whole run at collection. Two merges brought such pairs; this
keeps them out."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_test_module_name_repeats_across_test_folders() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
