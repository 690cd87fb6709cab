"""The desired side of the diff: the TOML state projected into Records (docs/records.md). Pure.

``project(state, as_of, live_addresses, facts=..., live=...)`` returns a ``Desired``:
- ``records``: every object that must exist, with its attributes normalised as docs/records.md says;
- ``reasons``: why each one exists ("units/qlcn.toml:12: person bangnv (Nguyễn Văn Bằng)", plus the
  lifecycle rule when it is locked);
- ``absent``: objects that must NOT exist (a mailbox past its removal date, an expired alias or grant),
  each with the rule that removes it — the diff turns them into revoke / lock → archive → delete;
- ``sources``: where each object was written.

LDAP kinds (unit, person, unit_mailbox, group, alias) are projected here; the IMAP kinds (shared_folder,
acl) by ``reconciler.desired_imap.project_imap`` when that module is present, merged in.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from mailstate.desired_state.desired import Desired, Ref
from mailstate.desired_state.lifecycle import Decision, decide_person, decide_unit_mailbox
from mailstate.desired_state.naming import derive_addresses
from mailstate.desired_state.projection_imap import owner_unit, project_imap
from mailstate.desired_state.schema import Person, State, Unit
from mailstate.gcpause import with_gc_paused
from mailstate.model.reason import Reason, as_reason, reason, source
from mailstate.model.records import MAILBOX_KINDS, Record, parse_ref, split_name
from mailstate.model.settings import Source, nfc


def _addr(value: str | None) -> str | None:
    return value.strip().lower() if value else None


def _opt(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        value = nfc(value.strip())
        return value or None
    return value


def ref_of(kind: str, key: str) -> str:
    """The TOML reference of a record: person → id, unit_mailbox → unit:<id>, group → group:<id>."""
    return {"unit_mailbox": f"unit:{key}", "group": f"group:{key}"}.get(kind, key)


def record_ref_of(ref: str) -> Ref:
    """The (kind, key) of the record a TOML reference names: "unit:qlcn" → ("unit_mailbox", "qlcn")."""
    kind, id_ = parse_ref(ref)
    return ({"unit": "unit_mailbox"}.get(kind, kind), id_)


def source_of(obj: Any) -> Source:
    """An object's Source, read straight from pydantic's private storage (the property is slow at 10k)."""
    private = getattr(obj, "__pydantic_private__", None) or {}
    src = private.get("_source")
    return src if isinstance(src, Source) else Source("<unknown>", 0)


def _where(src: Source) -> str:
    return f"{src.file}:{src.line}"


def _live_addresses_from(live: Mapping[Ref, Record]) -> dict[str, str]:
    """address → owner reference, from live person / unit_mailbox / group records."""
    out: dict[str, str] = {}
    for (kind, key), rec in live.items():
        if kind not in ("person", "unit_mailbox", "group"):
            continue
        owner = ref_of(kind, key)
        address = rec.attrs.get("address")  # a tuple when the entry holds several `mail` values
        primaries = address if isinstance(address, tuple) else (address,)
        for a in (*primaries, *(rec.attrs.get("aliases") or ())):
            if a:
                out[str(a).lower()] = owner
    return out


# --------------------------------------------------------------------------------------------------
# The projection


@with_gc_paused  # one record per person and mailbox: the collector only slows this down
def project(
    state: State,
    as_of: date,
    live_addresses: Mapping[str, str] | None = None,
    *,
    facts: Mapping[str, Any] | None = None,
    live: Mapping[Ref, Record] | None = None,
    folders: bool = True,
) -> Desired:
    """Project ``state`` on ``as_of`` into the desired records of every kind.

    ``live_addresses`` (address → owner reference, as naming.derive_addresses takes it) keeps live
    addresses from being renumbered; when None it is computed from ``live`` and the ``addresses`` fact
    (the LDAP provider's, which also names the addresses of entries mailstate does not manage).
    ``facts`` are the providers' read-only facts (``last_login``, ``created``) for the lifecycle rules.
    ``live`` (the live records, if read) lets an address change keep the old address as an alias with
    the expiry already set live. ``folders``: project the shared folders and their rights (False when no
    provider in use carries those kinds out).
    """
    live = live or {}
    if live_addresses is None:
        # the LDAP provider's ``addresses`` fact also covers unmanaged entries: never hand those out
        fact = (facts or {}).get("addresses")
        merged = _live_addresses_from(live) if live else {}
        if isinstance(fact, Mapping):
            merged.update({str(a).lower(): str(o) for a, o in fact.items()})
        live_addresses = merged or None
    addrs = derive_addresses(state, live=live_addresses)
    out = Desired(as_of=as_of, regulation=state.rules, language=state.language)

    def address_of(ref: str) -> str | None:
        kind, id_ = parse_ref(ref)
        table = {"person": addrs.people, "unit": addrs.units, "group": addrs.groups}[kind]
        return _addr(table.get(id_))

    # Units and their unit mailboxes -------------------------------------------------------------
    removed: set[str] = set()  # references of mailboxes being removed (no delivery to them)
    refused: set[str] = set()  # people who left whose mail is refused at RCPT (not in group deliveries)
    for unit in sorted(state.units.values(), key=lambda u: u.id):
        src = source_of(unit)
        address = address_of(f"unit:{unit.id}")
        out.add(
            Record(
                "unit",
                unit.id,
                {
                    "name": nfc(unit.name),
                    "parent": unit.parent,
                    "head": unit.head,
                    "delegates": tuple(sorted(set(unit.delegates))),
                    "address": address,
                },
                unit=unit.id,
            ),
            [source("unit", _where(src), id=unit.id, name=unit.name)],
            src,
        )
        if not unit.mailbox and ("unit_mailbox", unit.id) not in live:
            continue  # mailbox = false: none is created (one found live is kept, never removed by this)
        decision = decide_unit_mailbox(unit, state, as_of, facts)
        out.decisions[("unit_mailbox", unit.id)] = decision
        if decision.remove:
            removed.add(f"unit:{unit.id}")
            out.remove(("unit_mailbox", unit.id), decision.reasons, src)
            continue
        out.add(
            Record(
                "unit_mailbox",
                unit.id,
                {
                    "name": nfc(unit.name),
                    "address": address,
                    "aliases": (),
                    "quota": state.quota.overrides.get(f"unit:{unit.id}", state.quota.unit),
                    "locked": decision.locked,
                    "lock_reason": decision.lock_reason,
                    "refuse_mail": None,
                },
                unit=unit.id,
            ),
            [source("unit_mailbox", _where(src), id=unit.id, name=unit.name), *decision.reasons],
            src,
        )

    # People ---------------------------------------------------------------------------------------
    for person in sorted(state.people.values(), key=lambda p: p.id):
        src = source_of(person)
        decision = decide_person(person, state, as_of, facts)
        out.decisions[("person", person.id)] = decision
        if decision.remove:
            removed.add(person.id)
            out.remove(("person", person.id), decision.reasons, src)
            continue
        if decision.refuse_mail or person.disabled_before:  # a disabled account gets no list mail
            refused.add(person.id)
        out.add(
            _person_record(person, state, address_of(person.id), decision),
            [source("person", _where(src), id=person.id, name=person.name), *decision.reasons],
            src,
        )

    # Old addresses kept as aliases ---------------------------------------------------------------
    _project_aliases(state, as_of, out, live, live_addresses or {}, address_of, removed)

    # Groups ---------------------------------------------------------------------------------------
    for group in sorted(state.groups.values(), key=lambda g: g.id):
        src = source_of(group)
        delivers = sorted(_expand(state, f"group:{group.id}", address_of, removed | refused))
        gone = [
            reason("removal.rights_revoked.group_member", member=m,
                   text=(out.absent.get(record_ref_of(m)) or [reason("removal.rights_revoked.by_rule")])[0])
            for m in sorted(set(group.members)) if m in removed
        ]
        out.add(
            Record(
                "group",
                group.id,
                {
                    "name": nfc(group.name),
                    "address": address_of(f"group:{group.id}"),
                    "members": tuple(sorted(set(group.members))),
                    "delivers_to": tuple(delivers),
                },
                unit=None,
            ),
            [source("group", _where(src), id=group.id, name=group.name), *gone],
            src,
        )

    if folders:
        _merge_imap(state, as_of, out)
    return out


def _person_record(person: Person, state: State, address: str | None, decision: Decision) -> Record:
    family, given = split_name(person.name)
    return Record(
        "person",
        person.id,
        {
            "name": nfc(person.name),
            "given": given,
            "family": family,
            "unit": person.unit,
            "title": _opt(person.title),
            "phone": _opt(person.phone),
            "mobile": _opt(person.mobile),
            "backup_email": _addr(person.backup_email),
            "address": address,
            "aliases": (),
            "quota": state.quota.overrides.get(person.id, state.quota.person),
            "locked": decision.locked,
            "lock_reason": decision.lock_reason,
            "refuse_mail": decision.refuse_mail,
        },
        unit=person.unit,
    )


def _expand(
    state: State,
    ref: str,
    address_of: Any,
    removed: set[str],
    seen: set[str] | None = None,
) -> set[str]:
    """Every delivery address of a group: members' addresses, nested groups resolved (cycles cut)."""
    seen = set() if seen is None else seen
    if ref in seen:
        return set()
    seen.add(ref)
    kind, id_ = parse_ref(ref)
    group = state.groups.get(id_)
    if group is None:
        return set()
    out: set[str] = set()
    for member in group.members:
        mkind, _ = parse_ref(member)
        if mkind == "group":
            out |= _expand(state, member, address_of, removed, seen)
        elif member not in removed:
            a = address_of(member)
            if a:
                out.add(a)
    return out


def _project_aliases(
    state: State,
    as_of: date,
    out: Desired,
    live: Mapping[Ref, Record],
    live_addresses: Mapping[str, str],
    address_of: Any,
    removed: set[str],
) -> None:
    """Old addresses: kept as aliases (record ``alias``) and in the owner's ``aliases`` until they expire.

    - An address written in a person's ``old_addresses`` is kept while it is listed (no expiry of its own
      unless the live alias already carries one).
    - An address the owner has live but no longer desires (its address changed, e.g. a transfer under the
      Vĩnh Long scheme) is kept for ``keep_old_address`` from the day the change is first planned; the
      expiry is then read back from the live alias, so it does not move.
    - Past its expiry an alias is absent (deleted) and leaves the owner's ``aliases``.
    """
    keep = state.lifecycle.keep_old_address
    reg = state.rules
    domain = state.domain
    full_live = {
        (a if "@" in a else f"{a}@{domain}").strip().lower(): owner for a, owner in live_addresses.items()
    }
    by_owner: dict[str, set[str]] = {}
    for address, owner in full_live.items():
        by_owner.setdefault(owner, set()).add(address)
    # An owner read live: only its live primary address (`mail`) is an old address when it changes; a
    # `mailLocalAddress` with neither `mail` nor an alias entry behind it was not made by mailstate (an old
    # address it keeps always has its alias entry, created before the owner's address changes), so it
    # is drift to remove, not an address to keep delivering.
    for (kind, key), live_rec in live.items():
        if kind in ("person", "unit_mailbox"):
            primary = live_rec.attrs.get("address")
            primaries = primary if isinstance(primary, tuple) else (primary,)
            by_owner[ref_of(kind, key)] = {str(a).strip().lower() for a in primaries if a}
    live_alias = {k.lower(): r for (kind, k), r in live.items() if kind == "alias"}
    alias_of_owner: dict[str, set[str]] = {}
    alias_of_target: dict[str, set[str]] = {}
    for k, r in live_alias.items():
        o = _alias_owner(r, full_live)
        if o:
            alias_of_owner.setdefault(o, set()).add(k)
        for t in _targets(r):  # several when a value was added by hand: the update brings it back to one
            alias_of_target.setdefault(t, set()).add(k)

    owners: list[tuple[str, Ref, Source, list[str]]] = []
    for person in sorted(state.people.values(), key=lambda p: p.id):
        owners.append((person.id, ("person", person.id), source_of(person), list(person.old_addresses)))
    for unit in sorted(state.units.values(), key=lambda u: u.id):
        owners.append((f"unit:{unit.id}", ("unit_mailbox", unit.id), source_of(unit), []))

    current_of: dict[str, str] = {}  # every desired current address → its owner
    for owner, _ref, _src, _listed in owners:
        a = address_of(owner)
        if a:
            current_of[a] = owner
    for group_id in state.groups:
        a = address_of(f"group:{group_id}")
        if a:
            current_of.setdefault(a, f"group:{group_id}")

    for owner, rec_ref, src, listed in owners:
        current = address_of(owner)
        listed_full = {(a if "@" in a else f"{a}@{domain}").strip().lower() for a in listed}
        olds = (listed_full | by_owner.get(owner, set())) - {current}
        olds |= alias_of_owner.get(owner, set()) | (alias_of_target.get(current, set()) if current else set())
        olds -= {current}
        kept: list[str] = []
        for old in sorted(o for o in olds if o):
            holder = current_of.get(old)
            if holder is not None and holder != owner:
                out.remove(("alias", old), [reason("naming.address_taken", reg, address=old, holder=holder,
                                                   owner=owner)], src)
                continue
            la = live_alias.get(old)
            expires = (la.attrs.get("expires") if la is not None else None) or None
            if expires is None and old not in listed_full:
                expires = keep.after(as_of).isoformat()
            unit_of_owner = owner_unit(state, owner)
            if owner in removed:
                why = (out.absent.get(rec_ref) or [reason("removal.rights_revoked.by_rule")])[0]
                out.remove(("alias", old), [reason("removal.old_address", reg, _where(src), owner=owner,
                                                   text=as_reason(why))])
                continue
            if expires is not None and expires <= as_of.isoformat():
                out.remove(
                    ("alias", old),
                    [reason("naming.old_address_expired", reg, address=old, owner=owner, expires=expires,
                            duration=(keep.amount, keep.unit), as_of=as_of.isoformat())],
                    src,
                )
                continue
            why = (
                source("old_address", _where(src), address=old, owner=owner)
                if old in listed_full and expires is None
                else reason("naming.old_address_kept", reg, address=old, owner=owner, expires=expires,
                            duration=(keep.amount, keep.unit))
            )
            out.add(
                Record(
                    "alias",
                    old,
                    {"target": current, "expires": expires, "_owner": owner},
                    unit=unit_of_owner,
                ),
                [why],
                src,
            )
            kept.append(old)
        rec = out.records.get(rec_ref)
        if rec is not None and kept:
            attrs = dict(rec.attrs)
            attrs["aliases"] = tuple(sorted(kept))
            out.records[rec_ref] = Record(rec.kind, rec.key, attrs, rec.provider, rec.unit)


def _alias_owner(rec: Record, live_addresses: Mapping[str, str]) -> str | None:
    """Whose old address a live alias is: its ``_owner`` if the provider set it, else its target's owner."""
    owner = rec.attrs.get("_owner")
    if owner:
        return str(owner)
    return next((live_addresses[t] for t in _targets(rec) if t in live_addresses), None)


def _targets(rec: Record) -> list[str]:
    """The addresses a live alias delivers to (the ldap reader joins several with ", ")."""
    return [t.strip().lower() for t in str(rec.attrs.get("target") or "").split(",") if t.strip()]


def _merge_imap(state: State, as_of: date, out: Desired) -> None:
    """Merge the IMAP kinds projected by projection_imap.project_imap."""
    other = project_imap(state, as_of)
    removed_mailboxes = {ref_of(k, key): (k, key) for (k, key) in out.absent if k in MAILBOX_KINDS}
    removed_logins = {r.removeprefix("unit:"): r for r in removed_mailboxes}

    def rule(mailbox: str) -> Reason:
        """The rule that removes a mailbox (its lifecycle decision and citation), for what goes with it."""
        reasons = out.absent.get(removed_mailboxes[mailbox]) or []
        return as_reason(reasons[0]) if reasons else reason("removal.rights_revoked.by_rule")

    for ref, rec in list(other.records.items()):
        owner = rec.key.split("/", 1)[0]
        who = rec.key.rsplit("#", 1)[-1] if rec.kind == "acl" and "#" in rec.key else None
        if who is not None and who in removed_logins and owner not in removed_mailboxes:
            del other.records[ref]
            other.absent.setdefault(ref, []).append(reason("removal.rights_revoked", who=who, owner=owner,
                                                                   text=rule(removed_logins[who])))
        elif rec.kind == "acl" and owner in removed_mailboxes:
            # rights on a mailbox being removed are revoked first (ACLs before the mailbox: docs/plan-json.md)
            del other.records[ref]
            other.absent.setdefault(ref, []).append(reason("removal.rights_on_it", owner=owner,
                                                                   text=rule(owner)))
        elif rec.kind == "shared_folder" and owner in removed_mailboxes:
            # its mail goes with the mailbox, archived first; never deleted alone: the removal says so
            del other.records[ref]
            path = rec.key.split("/", 1)[1] if "/" in rec.key else rec.key
            src = other.sources.get(ref)
            out.absent[removed_mailboxes[owner]].append(
                reason("archive.before_removal.folder_goes_with", where=src, path=path)
            )
    out.merge(other)


def unit_of(state: State, unit_id: str | None) -> Unit | None:
    """The unit with this id, or None."""
    return state.units.get(unit_id) if unit_id else None
