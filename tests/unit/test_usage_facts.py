"""The facts the lifecycle counts from: a unit mailbox's use (anyone's work in it, delegates included) from
its folders' counters, and an entry's creation time from its createTimestamp."""

from __future__ import annotations

from typing import Any

import pytest

from mailstate.providers.doveadm.parse import (
    delegate_work,
    marked_work,
    parse_shared_grantees,
    unit_work,
)
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
    ("rows", "sign"),
    [
        ([], None),
        ([{"mailbox": "shared/vp/INBOX", "messages": "3", "unseen": "3"}], None),  # seen nothing
        ([{"mailbox": "shared/vp/INBOX", "messages": "0", "unseen": "0"}], None),
        ([{"mailbox": "shared/vp/INBOX", "messages": "3", "unseen": "1"}], "lantt: shared/vp/INBOX: 2 read"),
        ([{"mailbox": "shared/vp/Hồ sơ", "messages": "x", "unseen": "1"},
          {"mailbox": "shared/vp/Lưu", "messages": "1", "unseen": "0"}], "lantt: shared/vp/Lưu: 1 read"),
    ],
)
def test_delegate_work(rows: list[dict[str, str]], sign: str | None) -> None:
    """A delegate's read shows in their own (private) counters of the unit's folders."""
    assert delegate_work(rows, "lantt") == sign


@pytest.mark.parametrize(
    ("text", "sign"),
    [
        ("", None),
        ("mailbox\tflags\n", None),  # no message
        ("mailbox\tflags\nINBOX\t\nINBOX\t\\Recent\n", None),  # delivered, nobody looked
        ("mailbox\tflags\nINBOX\t\\Seen\n", None),  # a read: the counters' sign, not this one
        ("mailbox\tflags\nINBOX\t\\Recent \\Flagged\nINBOX\t\\Flagged\n", "INBOX: marked (\\Flagged 2)"),
        ("mailbox\tflags\nINBOX\t\\Answered\n", "INBOX: marked (\\Answered 1)"),
        ("mailbox\tflags\nINBOX\t\\Deleted \\Seen\n", "INBOX: marked (\\Deleted 1)"),
        ("mailbox\tflags\nHồ sơ\t$Todo NonJunk\n", "Hồ sơ: marked ($Todo 1, NonJunk 1)"),
        ("mailbox\tflags\nshared/hr/INBOX\t\\Flagged\n", None),  # another's mailbox it may see
    ],
)
def test_marked_work(text: str, sign: str | None) -> None:
    """A delegate who only marks mail (\\Flagged, \\Answered, \\Deleted, a keyword) leaves shared flags in the
    unit mailbox's own index: ``doveadm -f tab fetch 'mailbox flags'`` rows show it; delivery sets none."""
    from mailstate.providers.doveadm.parse import parse_doveadm_tab

    assert marked_work(parse_doveadm_tab(text), ["shared/"]) == sign


def test_shared_grantees() -> None:
    """Users named by the ACL shared dict, per owner; groups, anyone and malformed keys name no one."""
    text = (
        "key\tvalue\n"
        "shared/shared-boxes/user/lantt/vp\t1\n"
        "shared/shared-boxes/user/hungnv/vp\t1\n"
        "shared/shared-boxes/user/thaodp/kh\t1\n"
        "shared/shared-boxes/group/lanhdao/tt\t1\n"
        "shared/shared-boxes/anyone/tt\t1\n"
        "shared/shared-boxes/user/vp/vp\t1\n"
        "shared/shared-boxes/user/a/b/c\t1\n"
        "shared/last-login/vp\t1\n"
    )
    assert parse_shared_grantees(text) == {"vp": {"lantt", "hungnv"}, "kh": {"thaodp"}}


@pytest.mark.parametrize(
    ("value", "iso"),
    [(["20260501093000Z"], "2026-05-01"), ("20261231235959Z", "2026-12-31"), ([], None), (["garbage"], None)],
)
def test_created_of(value: object, iso: str | None) -> None:
    assert created_of(value) == iso


def test_an_entry_created_just_after_midnight_in_hanoi_was_created_that_day(in_zone: Any) -> None:
    """createTimestamp is UTC: an entry made at 06:00 on 01/03 in Hà Nội carries 20260228230000Z."""
    in_zone("Asia/Ho_Chi_Minh")
    assert created_of(["20260228230000Z"]) == "2026-03-01"
    assert created_of("20260228165959Z") == "2026-02-28"
