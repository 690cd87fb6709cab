"""Records: one managed object, desired or live, and the vocabulary naming them (kinds, references, keys).

Both sides of the diff are ``Record``s: the desired side is projected from the TOML
(desired_state.projection), the live side is parsed from what a provider read (pure functions in each
provider). Attributes are normalised by the side that builds them (addresses lower case, multi-valued
attributes as sorted tuples, text NFC), so the central diff compares like with like.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

KIND_ORDER = ("unit", "unit_mailbox", "person", "group", "alias", "shared_folder", "acl", "grant", "quota")
"""Creation order of kinds among changes otherwise equal; removals use it reversed."""

MAILBOX_KINDS = frozenset({"person", "unit_mailbox"})
"""The kinds that are a mailbox (a personal one, a unit's)."""


@dataclass(frozen=True)
class Record:
    """One managed object as a flat mapping of normalised attributes; ``provider`` owns it."""

    kind: str
    key: str
    attrs: Mapping[str, Any]
    provider: str = ""
    unit: str | None = None
    """The unit it belongs to (for grouping renderings and for --scope)."""

    @property
    def ref(self) -> tuple[str, str]:
        return (self.kind, self.key)


def split_name(name: str) -> tuple[str, str]:
    """(family, given) of a Vietnamese full name: its first and its last word (one word: both that word;
    no word: both empty). The directory's ``sn`` / ``givenName`` and the desired record's fields alike."""
    words = unicodedata.normalize("NFC", name).split()
    if not words:
        return "", ""
    return words[0], words[-1]


def record_addresses(record: Record) -> tuple[str, ...]:
    """Every address a live mailbox or group record holds: its primary address (a tuple when the entry
    holds several ``mail`` values) and its aliases, in that order, as written."""
    address = record.attrs.get("address")
    primaries = address if isinstance(address, tuple) else (address,)
    return tuple(str(a) for a in (*primaries, *(record.attrs.get("aliases") or ())) if a)


# --------------------------------------------------------------------------------------------------
# References (the TOML's way to name a mailbox or group)


def parse_ref(ref: str) -> tuple[Literal["person", "unit", "group"], str]:
    """Split a reference into (kind, id): "bangnv" → person, "unit:qlcn" → unit, "group:x" → group."""
    if ref.startswith("unit:"):
        return "unit", ref[5:]
    if ref.startswith("group:"):
        return "group", ref[6:]
    return "person", ref


# --------------------------------------------------------------------------------------------------
# Mailbox references, logins and keys

INBOX = "INBOX"


def login_of(ref: str) -> str:
    """The Dovecot user of a mailbox reference: ``bangnv`` → ``bangnv``, ``unit:qlcn`` → ``qlcn``."""
    kind, ident = parse_ref(ref)
    if kind == "group":
        raise ValueError(f"{ref!r} is a group: it has no mailbox")
    return ident


def mailbox_record_ref(ref: str) -> str:
    """The record the mailbox is (for depends_on): ``person:bangnv`` or ``unit_mailbox:qlcn``."""
    kind, ident = parse_ref(ref)
    if kind == "group":
        raise ValueError(f"{ref!r} is a group: it has no mailbox")
    return f"{'unit_mailbox' if kind == 'unit' else 'person'}:{ident}"


def folder_key(ref: str, folder: str) -> str:
    """Key of a shared_folder record: ``<mailbox ref>/<path>`` (path NFC; a first level ``inbox`` in any
    letter case is ``INBOX``, as IMAP servers treat it: ``inbox/Con`` is listed back as ``INBOX/Con``)."""
    path = unicodedata.normalize("NFC", folder)
    top, sep, rest = path.partition("/")
    if top.upper() == INBOX:
        path = INBOX + sep + rest
    return f"{ref}/{path}"


def acl_key(ref: str, folder: str, identifier: str) -> str:
    """Key of an acl record: ``<mailbox ref>/<folder>#<identifier>``."""
    return f"{folder_key(ref, folder)}#{identifier}"


@dataclass(frozen=True)
class AclKey:
    """A parsed acl key."""

    ref: str
    folder: str
    identifier: str

    @property
    def login(self) -> str:
        return login_of(self.ref)


def parse_folder_key(key: str) -> tuple[str, str]:
    """(mailbox ref, folder) from ``<mailbox ref>/<path>``; the ref never contains ``/``."""
    ref, sep, folder = key.partition("/")
    if not sep or not ref or not folder:
        raise ValueError(f"{key!r} is not <mailbox ref>/<folder>")
    return ref, folder


def parse_acl_key(key: str) -> AclKey:
    """Split ``<mailbox ref>/<folder>#<identifier>``; the identifier is after the last ``#``."""
    head, sep, identifier = key.rpartition("#")
    if not sep or not identifier:
        raise ValueError(f"{key!r} is not <mailbox ref>/<folder>#<identifier>")
    ref, folder = parse_folder_key(head)
    return AclKey(ref, folder, identifier)



def inbox_canonical(path: str) -> str:
    """A folder path as the IMAP server compares it: a first level ``inbox`` in any letter case is ``INBOX``
    (RFC 3501 §5.1), every other name exactly as written (``Inbox/X`` is ``INBOX/X``; ``Hồ sơ/inbox`` and
    ``INBOXES`` stay)."""
    top, sep, rest = path.partition("/")
    return "INBOX" + sep + rest if top.upper() == "INBOX" else path
