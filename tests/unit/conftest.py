"""Fixtures for the unit tests: small state repositories written into tmp_path."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

ORG = """\
[organization]
name = "Sở Công Thương tỉnh Bình Định"
domain = "sct.binhdinh.gov.vn"
"""

WriteState = Callable[[dict[str, str]], Path]


@pytest.fixture
def org() -> str:
    """A minimal mailstate.toml: the organisation only."""
    return ORG


@pytest.fixture
def write_state(tmp_path: Path) -> WriteState:
    """Write {relative path: TOML text (dedented)} into a fresh state dir and return the dir."""

    def write(files: dict[str, str]) -> Path:
        root = tmp_path / "state"
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        return root

    return write
