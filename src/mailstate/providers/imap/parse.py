"""The IMAP provider's pure part: records from what the server answered (GETACL, METADATA, QUOTA).

Unit-tested on recorded data in tests/unit/test_imap_pure.py.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from imapclient.response_parser import parse_response

from mailstate.model.records import INBOX, Record, acl_key
from mailstate.model.rights import OWNER_IDENTIFIERS, normalise_rights

if TYPE_CHECKING:
    pass

METADATA_ENTRY = "/shared/comment"


# --------------------------------------------------------------------------------------------------
# Parsing what the server said (pure)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def live_acl_records(
    ref: str, owner: str, folder: str, entries: Iterable[tuple[Any, Any]], unit: str | None = None
) -> list[Record]:
    """acl records from one folder's GETACL answer, leaving out the owner's own rights and the global
    entries (``#id``, ``-#id``: the administrator's global ACL file, which no SETACL or DELETEACL of a
    mailbox can change — mailstate manages the mailbox's own ACL only)."""
    out = []
    for who, what in entries:
        ident = _text(who)
        if ident == owner or ident in OWNER_IDENTIFIERS or ident.lstrip("-").startswith("#"):
            continue
        rights = normalise_rights(_text(what))
        if not rights:
            continue
        out.append(Record("acl", acl_key(ref, folder, ident), {"rights": rights, "why": None}, "imap", unit))
    return out


def _rights_by_ident(records: Iterable[Record]) -> dict[str, str]:
    return {r.key.rpartition("#")[2]: str(r.attrs["rights"]) for r in records}


def mailbox_acl_records(
    ref: str,
    owner: str,
    unit: str | None,
    acls: Mapping[str, Iterable[tuple[Any, Any]]],
    listed: Iterable[str] = (),
) -> tuple[list[Record], set[str]]:
    """The live acl records of one mailbox from the GETACL answers of all its folders.

    ``<ref>/INBOX#<id>`` stands for the whole mailbox (delegation, access grants): its rights are what ``id``
    holds on INBOX *and* on every folder the TOML does not list as a shared folder (the intersection), so a
    folder that misses a mailbox-wide right (Dovecot copies the parent's ACL into a new folder, which then
    no longer follows INBOX) shows as a difference and the grant is applied again to every folder.
    Listed shared folders have their own records. An identifier that has rights on an unlisted folder but
    none on INBOX gets a record of that folder (so it is revoked); such folders are returned as ``shared``.
    """
    listed = set(listed)
    per_folder = {f: _rights_by_ident(live_acl_records(ref, owner, f, e, unit)) for f, e in acls.items()}
    inbox = next((f for f in per_folder if f.upper() == INBOX), None)
    inbox_rights = per_folder.get(inbox, {}) if inbox else {}
    others = [f for f in per_folder if f != inbox and f not in listed]
    out: list[Record] = []
    shared: set[str] = set()
    for ident, letters in sorted(inbox_rights.items()):
        eff = set(letters)
        for f in others:
            eff &= set(per_folder[f].get(ident, ""))
        rights = "".join(sorted(eff))
        out.append(Record("acl", acl_key(ref, INBOX, ident), {"rights": rights, "why": None}, "imap", unit))
    for f in sorted(listed & set(per_folder)):
        for ident, letters in sorted(per_folder[f].items()):
            out.append(Record("acl", acl_key(ref, f, ident), {"rights": letters, "why": None}, "imap", unit))
    for f in others:
        for ident, letters in sorted(per_folder[f].items()):
            if ident not in inbox_rights:
                shared.add(f)
                out.append(
                    Record("acl", acl_key(ref, f, ident), {"rights": letters, "why": None}, "imap", unit)
                )
    return out, shared


def parse_metadata_value(data: Sequence[Any]) -> str | None:
    """The value of the one entry in an untagged ``METADATA <mailbox> (<entry> <value>)`` answer, as imaplib
    hands it over (a literal value arrives as a ``(head, literal)`` tuple); NIL or empty → None."""
    parsed = parse_response(list(data))
    if len(parsed) >= 2 and isinstance(parsed[1], tuple) and len(parsed[1]) >= 2:
        value = parsed[1][1]
        if value is None:
            return None
        text = unicodedata.normalize("NFC", _text(value))
        return text or None
    return None


def parse_quota_limit(quotas: Iterable[Any]) -> int | None:
    """The STORAGE limit in bytes (RFC 9208 counts KiB) from imapclient's Quota tuples; None if unlimited."""
    for q in quotas:
        if str(q.resource).upper() == "STORAGE":
            return int(q.limit) * 1024
    return None


