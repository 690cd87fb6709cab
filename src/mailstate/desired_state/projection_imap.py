"""The desired side of the IMAP kinds (shared_folder, acl), projected from the TOML. Pure.

``project_imap(state, as_of) -> Desired`` (projection merges it into ``project()``):
- unit mailboxes: the head gets ``full`` and each delegate ``delegate`` rights (rules ``handover.head``,
  ``delegation.delegate``) on ``INBOX`` — which every folder without an ACL of its own inherits (Dovecot
  ``acl_defaults_from_inbox = yes``) — and on every shared folder of that mailbox;
- shared folders (``shared_folder.*``): a ``shared_folder`` record (``purpose``) and, for every login the
  ``read`` and ``write`` lists reach (groups expanded recursively), an acl with ``read`` / ``write`` rights;
- access grants (``grant.access``) still running on ``as_of``: their rights on INBOX and on the shared
  folders of that mailbox; a grant that has ended (``until < as_of``) is put in ``absent`` with its
  reason and date, so the diff revokes it with that reason.

When one login gets rights from several sources on one folder, it gets their union and ``why`` names
every source. Each record carries ``_depends_on`` (never diffed): the mailbox it lives in and, for an
acl on a shared folder, that folder's record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date

from mailstate.desired_state.desired import Desired
from mailstate.desired_state.schema import State
from mailstate.model.i18n import use
from mailstate.model.reason import Reason, reason
from mailstate.model.records import INBOX, Record, acl_key, folder_key, inbox_canonical, mailbox_record_ref
from mailstate.model.rights import expand_refs, rights_letters
from mailstate.model.settings import Source

FOLDER_KINDS = ("shared_folder", "acl")
"""The kinds projected here: projected only when a provider in use carries them out."""


@dataclass
class _Acl:
    ref: str
    folder: str
    login: str
    unit: str | None
    rights: set[str] = field(default_factory=set)
    why: list[tuple[Reason, Source | None]] = field(default_factory=list)

    def give(self, rights: str, why: Reason, source: Source | None) -> None:
        self.rights |= set(rights_letters(rights))
        if all(w != why for w, _ in self.why):
            self.why.append((why, source))

    @property
    def source(self) -> Source | None:
        return self.why[0][1] if self.why else None

    def reasons(self) -> list[Reason]:
        """Each source of the right, prefixed with where it is written (file:line)."""
        return [replace(w, where=str(src)) if src else w for w, src in self.why]


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
    reg = state.rules

    def why_text(why: list[tuple[Reason, Source | None]]) -> str:
        """Stored with the ACL: in the organisation's language (not --lang), so it does not drift."""
        with use(state.language):
            return "; ".join(w.text() for w, _ in why)

    acls: dict[tuple[str, str, str], _Acl] = {}
    folders = _folders_of(state)

    def give(
        ref: str, folder: str, logins: Iterable[str], rights: str, why: Reason, source: Source | None
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
        ref: str, folder: str, refs: Iterable[str], rights: str, why: Reason, source: Source | None
    ) -> set[str]:
        """Give ``rights`` to every login ``refs`` reach. A unit mailbox reached (directly or through a
        group) is also reached through the people who use it — its head and delegates log in as
        themselves, nobody logs in as the unit — so they get the rights too."""
        logins = expand_refs(refs, state.groups)
        give(ref, folder, logins, rights, why, source)
        for uid, users in unit_users(logins, ref, folder, why, source).items():
            give(ref, folder, users, rights, reason("delegation.through_unit", text=why, unit=f"unit:{uid}"),
                 source)
            logins |= set(users)
        return logins

    dropped: dict[tuple[str, str, str], tuple[Reason, Source | None]] = {}
    """Rights the TOML would give but a dissolved unit no longer does: revoked, saying why (the rule)."""

    def dissolved(uid: str) -> date | None:
        """The day unit ``uid`` was dissolved, or None when it is not dissolved on ``as_of``."""
        unit = state.units[uid]
        if unit.dissolved_on is None or unit.dissolved_on > as_of:
            return None
        return unit.dissolved_on

    def unit_users(logins: Iterable[str], ref: str = "", folder: str = "", why: Reason | None = None,
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
                    why_not = reason("lifecycle.dissolved.no_rights_through", reg, unit=f"unit:{uid}",
                                     dissolved_on=dissolution, text=why or "")
                    dropped.setdefault((ref, folder, user), (why_not, source))
        return out

    # Delegation of unit mailboxes.
    for uid, unit in sorted(state.units.items()):
        ref = f"unit:{uid}"
        dissolution = dissolved(uid)
        if dissolution is not None:
            for folder in everywhere(ref):
                for user in ([unit.head] if unit.head else []) + list(unit.delegates):
                    why_not = reason("lifecycle.dissolved.mailbox_unused", reg, unit=uid,
                                     dissolved_on=dissolution)
                    dropped.setdefault((ref, folder, user), (why_not, unit.source))
            continue
        for folder in everywhere(ref):
            if unit.head:
                give(
                    ref,
                    folder,
                    [unit.head],
                    "full",
                    reason("handover.head", reg, login=unit.head, unit=uid),
                    unit.source,
                )
            give(
                ref,
                folder,
                unit.delegates,
                "delegate",
                reason("delegation.delegate", reg, unit=uid),
                unit.source,
            )

    # Shared folders.
    for sf in state.shared_folders:
        key = folder_key(sf.mailbox, sf.path)
        rec = Record(
            "shared_folder",
            key,
            {"purpose": sf.purpose or None, "_depends_on": (mailbox_record_ref(sf.mailbox),)},
            "",
            owner_unit(state, sf.mailbox),
        )
        out.add(
            rec,
            [reason("shared_folder.folder", reg, sf.source, path=sf.path, mailbox=sf.mailbox,
                    purpose=sf.purpose)],
            sf.source,
        )
        give_refs(
            sf.mailbox,
            inbox_canonical(sf.path),
            sf.read,
            "read",
            reason("shared_folder.reader", reg, path=sf.path),
            sf.source,
        )
        give_refs(
            sf.mailbox,
            inbox_canonical(sf.path),
            sf.write,
            "write",
            reason("shared_folder.writer", reg, path=sf.path),
            sf.source,
        )

    # Access grants.
    ended: dict[tuple[str, str, str], tuple[Reason, Source | None, str]] = {}
    for grant in state.access_grants:
        if grant.until >= as_of:
            for folder in everywhere(grant.mailbox):
                give_refs(
                    grant.mailbox,
                    folder,
                    [grant.to],
                    grant.rights,
                    reason("grant.access", reg, rights=grant.rights, until=grant.until.isoformat(),
                           text=grant.reason),
                    grant.source,
                )
        else:
            logins = expand_refs([grant.to], state.groups)
            for users in unit_users(logins).values():
                logins |= set(users)
            for folder in everywhere(grant.mailbox):
                for login in sorted(logins):
                    ended[(grant.mailbox, folder, login)] = (
                        reason("grant.ended", reg, to=grant.to, mailbox=grant.mailbox, rights=grant.rights,
                               until=grant.until.isoformat(), text=grant.reason, where=str(grant.source)),
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
                "why": why_text(acl.why),
                "_depends_on": tuple(depends),
            },
            "",
            acl.unit,
        )
        reasons = acl.reasons()
        gone = ended.get((acl.ref, acl.folder, acl.login))
        if gone and not set(gone[2]) <= acl.rights:
            # the login keeps rights from another source, but fewer: the ended grant explains the cut
            reasons.append(gone[0])
        out.add(rec, reasons, acl.source)

    for (ref, folder, login), (why, source, _letters) in ended.items():
        k = ("acl", acl_key(ref, folder, login))
        if k not in out.records:
            out.remove(k, [why], source)
    for (ref, folder, login), (why_not, source) in dropped.items():
        k = ("acl", acl_key(ref, folder, login))
        if k not in out.records:
            out.remove(k, [replace(why_not, where=str(source)) if source else why_not], source)
    return out
