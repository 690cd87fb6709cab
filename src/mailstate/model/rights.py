"""The TOML's rights language: named rights as RFC 4314 letters, and who a list of references reaches.

l lookup, r read, s keep \\Seen, w write other flags, i insert (APPEND/COPY into), p post, k create
sub-folders, x delete the folder, t delete messages (\\Deleted), e expunge, a administer (change the ACL).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from mailstate.model.records import parse_ref

RIGHTS: Mapping[str, str] = {
    # read a folder or mailbox, without changing its state for the others: no "s" (seen flags are shared
    # in a shared mailbox, so a reader marking mail read would hide it from its owner).
    "read": "lr",
    # read and work in it: keep flags, append, delete and expunge messages; no sub-folders, no ACL changes.
    "write": "eilprstw",
    # a delegate of a unit mailbox (MIC art.6, BĐ art.13.1, MOST art.14): everything needed to use the
    # mailbox, including new folders ("k"), but neither deleting folders ("x") nor changing who may ("a").
    "delegate": "eiklprstw",
    # the unit head, and a "full" access grant: every right, ACL administration included.
    "full": "aeiklprstwx",
}
ALL_RIGHTS = frozenset(RIGHTS["full"])
OWNER_IDENTIFIERS = frozenset({"owner"})
"""ACL identifiers that stand for the mailbox owner (never listed as a grant)."""


def rights_letters(*names_or_letters: str) -> str:
    """The union of rights (names from ``RIGHTS`` or raw letters) as sorted RFC 4314 letters."""
    letters: set[str] = set()
    for item in names_or_letters:
        letters |= set(RIGHTS.get(item, item))
    unknown = letters - ALL_RIGHTS - set("cd")
    if unknown:
        raise ValueError(f"not RFC 4314 rights: {''.join(sorted(unknown))}")
    return normalise_rights("".join(letters))


def normalise_rights(letters: str) -> str:
    """Sorted RFC 4314 letters without the obsolete RFC 2086 ``c``/``d``: a server announcing RIGHTS=TEXK
    (Dovecot) adds ``c`` whenever ``k`` is there and ``d`` whenever one of ``x t e`` is, as aliases only."""
    return "".join(sorted(set(letters) - {"c", "d"}))


def rights_name(letters: str) -> str:
    """The name of a letter set when it is one of ``RIGHTS`` (for messages), else the letters themselves."""
    for name, value in RIGHTS.items():
        if value == letters:
            return name
    return letters


class HasMembers(Protocol):
    @property
    def members(self) -> Sequence[str]: ...




def expand_refs(refs: Iterable[str], groups: Mapping[str, HasMembers]) -> set[str]:
    """Every login a list of references reaches: people and unit mailboxes as themselves, groups expanded
    recursively to their members (a cycle is followed once; an unknown group reaches nobody — validation
    reports unknown references before this runs)."""
    out: set[str] = set()
    seen: set[str] = set()
    stack = list(refs)
    while stack:
        ref = stack.pop()
        kind, ident = parse_ref(ref)
        if kind != "group":
            out.add(ident)
            continue
        if ident in seen:
            continue
        seen.add(ident)
        group = groups.get(ident)
        if group is not None:
            stack.extend(group.members)
    return out


