"""The desired side of the IMAP kinds (shared_folder, acl), projected from the TOML. Pure.

``project_imap(state, as_of) -> Desired`` (reconciler.desired merges it into ``project()``):
- unit mailboxes: the head gets ``full`` and each delegate ``delegate`` rights (MIC art.6, BĐ art.13.1,
  MOST art.14) on ``INBOX`` — which every folder without an ACL of its own inherits (Dovecot
  ``acl_defaults_from_inbox = yes``) — and on every shared folder of that mailbox;
- shared folders (MIC art.7): a ``shared_folder`` record (``purpose``) and, for every login the ``read``
  and ``write`` lists reach (groups expanded recursively), an acl with ``read`` / ``write`` rights;
- access grants (MOST art.18.9) still running on ``as_of``: their rights on INBOX and on the shared
  folders of that mailbox; a grant that has ended (``until < as_of``) is put in ``absent`` with its
  reason and date, so the diff revokes it with that reason.

When one login gets rights from several sources on one folder, it gets their union and ``why`` names
every source. Each record carries ``_depends_on`` (never diffed): the mailbox it lives in and, for an
acl on a shared folder, that folder's record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from mailstate.desired_state.model import Source, State, inbox_canonical
from mailstate.providers.imap import (
    INBOX,
    acl_key,
    expand_refs,
    folder_key,
    mailbox_record_ref,
    rights_letters,
)
from mailstate.reconciler.change import Record
from mailstate.reconciler.desired import Desired


@dataclass
class _Acl:
    ref: str
    folder: str
    login: str
    unit: str | None
    rights: set[str] = field(default_factory=set)
    why: list[tuple[str, Source | None]] = field(default_factory=list)

    def give(self, rights: str, why: str, source: Source | None) -> None:
        self.rights |= set(rights_letters(rights))
        if all(w != why for w, _ in self.why):
            self.why.append((why, source))

    @property
    def source(self) -> Source | None:
        return self.why[0][1] if self.why else None

    def reasons(self) -> list[str]:
        """Each source of the right, prefixed with where it is written (file:line)."""
        return [f"{src}: {w}" if src else w for w, src in self.why]


def owner_unit(state: State, ref: str) -> str | None:
    """The unit a mailbox belongs to: ``unit:<id>`` → id, a person → their unit."""
    if ref.startswith("unit:"):
        return ref[5:]
    person = state.people.get(ref)
    return person.unit if person else None


def _folders_of(state: State) -> dict[str, list[str]]:
    """Shared folder paths by mailbox reference, in TOML order, as the server names them (``inbox/X`` is
    ``INBOX/X``: one folder, keyed once)."""
    out: dict[str, list[str]] = {}
    for sf in state.shared_folders:
        path = inbox_canonical(sf.path)
        if path not in out.setdefault(sf.mailbox, []):
            out[sf.mailbox].append(path)
    return out


def project_imap(state: State, as_of: date) -> Desired:
    """Project shared folders, delegation and access grants into shared_folder / acl records."""
    out = Desired(as_of=as_of)
    acls: dict[tuple[str, str, str], _Acl] = {}
    folders = _folders_of(state)

    def give(
        ref: str, folder: str, logins: Iterable[str], rights: str, why: str, source: Source | None
    ) -> None:
        owner = ref.removeprefix("unit:")
        for login in sorted(set(logins)):
            if login == owner:
                continue  # the owner has every right on their own mailbox already
            k = (ref, folder, login)
            if k not in acls:
                acls[k] = _Acl(ref, folder, login, owner_unit(state, ref))
            acls[k].give(rights, why, source)

    def everywhere(ref: str) -> list[str]:
        return [INBOX, *folders.get(ref, [])]

    def give_refs(
        ref: str, folder: str, refs: Iterable[str], rights: str, why: str, source: Source | None
    ) -> set[str]:
        """Give ``rights`` to every login ``refs`` reach. A unit mailbox reached (directly or through a
        group) is also reached through the people who use it — its head and delegates log in as
        themselves, nobody logs in as the unit (MIC art.6) — so they get the rights too."""
        logins = expand_refs(refs, state.groups)
        give(ref, folder, logins, rights, why, source)
        for uid, users in unit_users(logins, ref, folder, why, source).items():
            give(ref, folder, users, rights, f"{why} (through unit:{uid}: its head and delegates)", source)
            logins |= set(users)
        return logins

    dropped: dict[tuple[str, str, str], tuple[str, Source | None]] = {}
    """Rights the TOML would give but a dissolved unit no longer does: revoked, saying why (the rule)."""

    def dissolved(uid: str) -> str | None:
        """Why unit ``uid`` no longer gives rights, or None when it is not dissolved on ``as_of``."""
        unit = state.units[uid]
        if unit.dissolved_on is None or unit.dissolved_on > as_of:
            return None
        return (f"{state.lifecycle.citation('dissolved')}: unit {uid} dissolved on "
                f"{unit.dissolved_on.isoformat()}")

    def unit_users(logins: Iterable[str], ref: str = "", folder: str = "", why: str = "",
                   source: Source | None = None) -> dict[str, list[str]]:
        """The head and delegates of every unit (not dissolved) among ``logins``; those of a dissolved
        one are noted in ``dropped`` for ``ref``/``folder``, with the rule."""
        out: dict[str, list[str]] = {}
        for uid in sorted(set(logins) & state.units.keys()):
            unit = state.units[uid]
            users = ([unit.head] if unit.head else []) + list(unit.delegates)
            dissolution = dissolved(uid)
            if dissolution is None:
                out[uid] = users
            elif ref:
                for user in users:
                    why_not = f"{dissolution}: no rights through unit:{uid} any more ({why})"
                    dropped.setdefault((ref, folder, user), (why_not, source))
        return out

    # Delegation of unit mailboxes.
    for uid, unit in sorted(state.units.items()):
        ref = f"unit:{uid}"
        dissolution = dissolved(uid)
        if dissolution is not None:
            for folder in everywhere(ref):
                for user in ([unit.head] if unit.head else []) + list(unit.delegates):
                    why_not = (f"{dissolution}: its head and delegates no longer use its mailbox (locked; "
                               "its mail is kept, then archived)")
                    dropped.setdefault((ref, folder, user), (why_not, unit.source))
            continue
        for folder in everywhere(ref):
            if unit.head:
                give(
                    ref,
                    folder,
                    [unit.head],
                    "full",
                    f"MIC art.6, MOST art.14: {unit.head} heads unit {uid}",
                    unit.source,
                )
            give(
                ref,
                folder,
                unit.delegates,
                "delegate",
                f"MIC art.6, BĐ art.13.1: delegate of unit {uid}",
                unit.source,
            )

    # Shared folders.
    for sf in state.shared_folders:
        key = folder_key(sf.mailbox, sf.path)
        rec = Record(
            "shared_folder",
            key,
            {"purpose": sf.purpose or None, "_depends_on": (mailbox_record_ref(sf.mailbox),)},
            "imap",
            owner_unit(state, sf.mailbox),
        )
        out.add(
            rec,
            [f"{sf.source}: MIC art.7.1: shared folder '{sf.path}' of {sf.mailbox} ({sf.purpose})"],
            sf.source,
        )
        give_refs(
            sf.mailbox,
            inbox_canonical(sf.path),
            sf.read,
            "read",
            f"MIC art.7.1: reader of shared folder '{sf.path}'",
            sf.source,
        )
        give_refs(
            sf.mailbox,
            inbox_canonical(sf.path),
            sf.write,
            "write",
            f"MIC art.7.1: writer of shared folder '{sf.path}'",
            sf.source,
        )

    # Access grants.
    ended: dict[tuple[str, str, str], tuple[str, Source | None, str]] = {}
    for grant in state.access_grants:
        if grant.until >= as_of:
            for folder in everywhere(grant.mailbox):
                give_refs(
                    grant.mailbox,
                    folder,
                    [grant.to],
                    grant.rights,
                    f"MOST art.18.9: access grant ({grant.rights}) until {grant.until.isoformat()}: "
                    f"{grant.reason}",
                    grant.source,
                )
        else:
            logins = expand_refs([grant.to], state.groups)
            for users in unit_users(logins).values():
                logins |= set(users)
            for folder in everywhere(grant.mailbox):
                for login in sorted(logins):
                    ended[(grant.mailbox, folder, login)] = (
                        f"MOST art.18.9: access grant to {grant.to} on {grant.mailbox} ({grant.rights}) "
                        f"ended "
                        f"{grant.until.isoformat()} ({grant.reason}); {grant.source}",
                        grant.source,
                        rights_letters(grant.rights),
                    )

    for acl in acls.values():
        depends = [mailbox_record_ref(acl.ref)]
        if acl.folder != INBOX:
            depends.append(f"shared_folder:{folder_key(acl.ref, acl.folder)}")
        rec = Record(
            "acl",
            acl_key(acl.ref, acl.folder, acl.login),
            {
                "rights": "".join(sorted(acl.rights)),
                "why": "; ".join(w for w, _ in acl.why),
                "_depends_on": tuple(depends),
            },
            "imap",
            acl.unit,
        )
        reasons = acl.reasons()
        gone = ended.get((acl.ref, acl.folder, acl.login))
        if gone and not set(gone[2]) <= acl.rights:
            # the login keeps rights from another source, but fewer: the ended grant explains the cut
            reasons.append(gone[0])
        out.add(rec, reasons, acl.source)

    for (ref, folder, login), (reason, source, _letters) in ended.items():
        k = ("acl", acl_key(ref, folder, login))
        if k not in out.records:
            out.remove(k, [reason], source)
    for (ref, folder, login), (reason, source) in dropped.items():
        k = ("acl", acl_key(ref, folder, login))
        if k not in out.records:
            out.remove(k, [f"{source}: {reason}" if source else reason], source)
    return out
