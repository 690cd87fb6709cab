"""The pure parts of archive verification: reading ``doveadm -f pager fetch … text`` back message by message,
what a manifest records, which live messages an archive holds, UID sets for the expunge."""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from datetime import date

import pytest

from mailstate.providers.doveadm.parse import (
    MANIFEST_SUFFIX,
    FetchFormatError,
    Manifest,
    Message,
    _archive_order,
    archive_mismatches,
    covered_by,
    entries_digest,
    latest_manifest_name,
    read_fetch_stream,
    uid_set,
)

BOX = "30e7391d0db5146b6c2e000083ecc375"
TEXTS = [
    b"Subject: a\n\nno newline at end",
    b"Subject: b\n\nform\x0c\nfeed \xff\xfe bytes\n\x0c\n",  # a record separator inside the text
    b"Subject: c\n\n",
]


def _record(uid: int, text: bytes, size: int | None = None, guid: str | None = None) -> bytes:
    head = (
        f"mailbox-guid: {BOX}\nuid: {uid}\nguid: {guid or f'{uid:032x}'}\n"
        f"size.physical: {len(text) if size is None else size}\ntext:\n"
    )
    return head.encode() + text


def _pager(*records: bytes) -> io.BytesIO:
    """doveadm's pager output: records joined by a form feed line, none after the last."""
    return io.BytesIO(b"\f\n".join(records))


def test_every_message_is_read_in_full_and_digested() -> None:
    got = list(read_fetch_stream(_pager(*(_record(i + 1, t) for i, t in enumerate(TEXTS)))))
    assert [m.uid for m in got] == [1, 2, 3]
    assert [m.size for m in got] == [len(t) for t in TEXTS]
    assert [m.sha256 for m in got] == [hashlib.sha256(t).hexdigest() for t in TEXTS]
    assert list(read_fetch_stream(io.BytesIO(b""))) == []


@pytest.mark.parametrize(
    "stream",
    [
        # the storage file is gone: doveadm prints the field names with the values shifted, no text
        _pager(
            _record(1, TEXTS[0]),
            f"mailbox-guid: {BOX}\nuid: 2\nguid: x\nsize.physical: 3\ntext: {BOX}\n".encode(),
        ),
        _pager(_record(1, TEXTS[0], size=len(TEXTS[0]) + 5)),  # text shorter than its size (cut)
        _pager(_record(1, TEXTS[0], size=len(TEXTS[0]) - 3)),  # text longer than its size
        _pager(_record(1, TEXTS[0]), b""),  # a separator and nothing after it
        io.BytesIO(f"uid: 1\nmailbox-guid: {BOX}\n".encode()),  # fields out of order
        _pager(_record(1, TEXTS[0], guid="a\tb")),  # a control character in a GUID
        io.BytesIO(_record(1, TEXTS[0]).replace(b"uid: 1", b"uid: x")),
    ],
    ids=["no-text", "short", "long", "trailing-separator", "order", "guid", "uid"],
)
def test_a_message_that_does_not_read_back_exactly_is_an_error(stream: io.BytesIO) -> None:
    with pytest.raises(FetchFormatError):
        list(read_fetch_stream(stream))


def _msg(uid: int, guid: str, text: bytes, box: str = BOX) -> Message:
    return Message(box, uid, guid, len(text), hashlib.sha256(text).hexdigest())


def test_only_identical_copies_count_as_archived() -> None:
    """A live message is held by the archive only with the same mailbox, GUID, size and text; one archived
    copy covers one live copy (a duplicate in the same folder needs its own)."""
    archived = [_msg(1, "g1", b"one"), _msg(2, "g2", b"two"), _msg(3, "g3", b"three")]
    live = [
        _msg(10, "g1", b"one"),
        _msg(11, "g1", b"one"),  # a second copy: not held
        _msg(12, "g2", b"TWO"),  # other text: not held
        _msg(13, "g3", b"three", box="f" * 32),  # other folder: not held
        _msg(14, "g4", b"new"),  # arrived later: not held
    ]
    held, not_held = covered_by(live, Counter(m.entry for m in archived))
    assert [m.uid for m in held] == [10]
    assert [m.uid for m in not_held] == [11, 12, 13, 14]
    mismatch = archive_mismatches(live, archived)
    assert len(mismatch) == 1 and mismatch[0].startswith("g2 ")
    assert archive_mismatches(live[:1], archived) == []  # g2, g3 no longer live: not comparable, not failed


def test_manifest_round_trip_and_tampering() -> None:
    entries = tuple(sorted(m.entry for m in [_msg(1, "g1", b"one"), _msg(2, "g2", b"two")]))
    count, digest = entries_digest(entries)
    assert entries_digest(reversed(entries)) == (count, digest)
    mf = Manifest("bangnv", "bangnv-2027-01-01", "mdbox:/a/bangnv-2027-01-01", "2027-01-01", count, digest,
                  "2027-01-01T00:00:00+00:00", messages=entries, mailboxes={BOX: "INBOX"}, extends=("x",))
    assert Manifest.from_json(mf.to_json()) == mf
    with pytest.raises(ValueError, match="do not match"):
        Manifest.from_json(mf.to_json().replace('"count": 2', '"count": 3'))
    old = '{"user": "u", "archive": "a", "location": "l", "date": "d", "count": 0, "digest": "x", ' \
          '"verified_at": "v", "algorithm": "sha256 over sorted \'mailbox<TAB>guid\' lines of doveadm fetch"}'
    with pytest.raises(ValueError, match="older format"):
        Manifest.from_json(old)


def test_uid_set() -> None:
    assert uid_set([7, 1, 2, 3, 9, 10, 3]) == "1:3,7,9:10"
    assert uid_set([5]) == "5"
    assert uid_set([]) == ""


def test_acl_files_name_owners_the_shared_dict_misses() -> None:
    """Mail roots from ``doveadm mailbox path -A``; owners from their ACL files: a negative right or one
    without lookup counts, the owner's own entries do not, a file under no known root is ignored."""
    from mailstate.providers.doveadm.parse import mail_roots, parse_acl_files

    roots = mail_roots(
        "username\tpath\nbangnv\t/m/bangnv/mdbox/mailboxes/INBOX/dbox-Mails\n"
        "bang\t/m/bang/mdbox/mailboxes/INBOX/dbox-Mails\nhoa\t/m/hoa/Maildir\n"
    )
    assert roots == {"/m/bangnv/mdbox": "bangnv", "/m/bang/mdbox": "bang", "/m/hoa/Maildir": "hoa"}
    grep = (
        b"/m/bangnv/mdbox/mailboxes/INBOX/dbox-Mails/dovecot-acl\0-user=khanh r\n"
        b"/m/bang/mdbox/mailboxes/INBOX/dbox-Mails/dovecot-acl\0user=bang lrwstipekxa\n"
        b"/m/bang/mdbox/mailboxes/INBOX/dbox-Mails/dovecot-acl\0owner lrwstipekxa\n"
        b"/m/hoa/Maildir/.L&AbA-u tr&Hu8-/dovecot-acl\0user=thuytt r\n"
        b"/elsewhere/dovecot-acl\0user=x lr\n"
    )
    assert parse_acl_files(grep, roots) == {"bangnv", "hoa"}


@pytest.mark.parametrize(
    ("name", "order"),
    [
        ("bangnv-2026-12-06", (date(2026, 12, 6), 1)),
        ("bangnv-2026-12-06.12", (date(2026, 12, 6), 12)),
        ("bangnv-2026-12-06.2/../../mail/bangnv", None),  # a path, not an archive name
        ("bangnv-2026-12-06/../x", None),
        ("bangnv-20261206", None),  # other ISO forms date.fromisoformat accepts
        ("bangnv-2026-W49-1", None),
        ("bangnv-2026-12-06.+2", None),
        ("bangnv-2026-12-06.٢", None),  # non-ASCII digits int() accepts
        ("bangnv2-2026-12-06", None),  # another user
    ],
)
def test_archive_names_are_exact(name: str, order: tuple[date, int] | None) -> None:
    """Only ``<user>-<YYYY-MM-DD>[.<n>]`` (ASCII) is an archive of the user: a manifest cannot name a path."""
    assert _archive_order(name, "bangnv") == order
    manifest = name + MANIFEST_SUFFIX
    assert latest_manifest_name([manifest], "bangnv") == (manifest if order else None)
