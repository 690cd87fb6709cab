"""Fixtures for the unit tests: small state repositories written into tmp_path."""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ORG = """\
[organization]
name = "Sở Công Thương tỉnh Bình Định"
domain = "sct.binhdinh.gov.vn"
"""

WriteState = Callable[[dict[str, str]], Path]


def set_zone(zone: str | None) -> None:
    """The process's local time zone (``TZ``), which ``date.today()`` and a fact's instant → day use."""
    if zone is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = zone
    time.tzset()


@pytest.fixture(autouse=True, scope="session")
def _utc() -> Iterator[None]:
    """Unit tests run in UTC, whatever the machine's zone: a fact's ``…T00:00:00Z`` is that day. A test of
    another zone uses ``in_zone``."""
    before = os.environ.get("TZ")
    set_zone("UTC")
    yield
    set_zone(before)


@pytest.fixture
def in_zone() -> Iterator[Callable[[str], None]]:
    """Switch the local time zone for one test (back to UTC after)."""
    yield set_zone
    set_zone("UTC")


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
