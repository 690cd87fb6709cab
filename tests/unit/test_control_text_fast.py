"""``control_text`` answers at once for printable text: it may, only because every character the TOML must
not hold (mailstate.text.CONTROL_CLASS) is one ``str.isprintable`` refuses."""

from __future__ import annotations

import sys

import pytest

from mailstate.model.settings import control_text
from mailstate.text import CONTROL_RE

REFUSED = [chr(c) for c in range(sys.maxunicode + 1) if CONTROL_RE.match(chr(c))]


def test_every_refused_character_is_not_printable() -> None:
    assert len(REFUSED) > 70
    assert [f"U+{ord(ch):04X}" for ch in REFUSED if ch.isprintable()] == []


@pytest.mark.parametrize("ch", REFUSED)
def test_every_refused_character_is_still_refused(ch: str, english: None) -> None:
    message = control_text(f"Phòng{ch}Kế toán")
    assert message is not None and "at character 6" in message


@pytest.mark.parametrize("text", ["Nguyễn Văn Bằng", "a\u00a0b", "x\u200by", ""])
def test_text_without_them_passes(text: str) -> None:
    assert control_text(text) is None
