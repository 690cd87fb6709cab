"""The facts the lifecycle counts from: a unit mailbox's use (anyone's work in it, delegates included) from
its folders' counters, and an entry's creation time from its createTimestamp."""

from __future__ import annotations

import pytest

from mailstate.providers.doveadm.parse import unit_work
from mailstate.providers.ldap.parse import created_of


def _row(mailbox: str, messages: int, unseen: int, uidnext: int) -> dict[str, str]:
    return {"mailbox": mailbox, "messages": str(messages), "unseen": str(unseen), "uidnext": str(uidnext)}


@pytest.mark.parametrize(
    ("rows", "used"),
    [
        ([], False),
        ([_row("INBOX", 0, 0, 1), _row("Sent", 0, 0, 1)], False),  # new, empty
        ([_row("INBOX", 5, 5, 6), _row("Trash", 0, 0, 1)], False),  # mail delivered, nobody looked
        ([_row("INBOX", 5, 3, 6)], True),  # a delegate read two
        ([_row("INBOX", 4, 4, 6)], True),  # one moved out or deleted
        ([_row("INBOX", 3, 3, 4), _row("Hồ sơ", 1, 1, 2)], True),  # filed
        ([_row("INBOX", 2, 2, 3), _row("shared/hr/INBOX", 9, 0, 20)], False),  # others' mail it may see
    ],
)
def test_unit_work(rows: list[dict[str, str]], used: bool) -> None:
    assert (unit_work(rows, ["shared/"]) is not None) is used


@pytest.mark.parametrize(
    ("value", "iso"),
    [(["20260501093000Z"], "2026-05-01"), ("20261231235959Z", "2026-12-31"), ([], None), (["garbage"], None)],
)
def test_created_of(value: object, iso: str | None) -> None:
    assert created_of(value) == iso
