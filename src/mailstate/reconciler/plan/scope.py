"""Scope: which records a scoped plan (``--scope unit:<id>``) covers; it is the full plan filtered."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from mailstate.desired_state.schema import State
from mailstate.errors import MailstateError
from mailstate.model.change import Change
from mailstate.model.provider import Snapshot
from mailstate.model.records import Record, record_addresses


class _Filtered(Protocol):
    changes: list[Change]
    unlisted: list[Record]


P = TypeVar("P", bound=_Filtered)


def parse_scope(values: Iterable[str] | None) -> list[str] | None:
    """Unit ids from ``unit:<id>`` values (None when no scope is given: everything)."""
    if not values:
        return None
    units: list[str] = []
    for value in values:
        kind, _, ident = value.partition(":")
        if kind != "unit" or not ident:
            raise MailstateError(f"--scope {value!r}: expected unit:<id>")
        units.append(ident)
    return sorted(set(units))


_REF_SPLIT = re.compile(r"[/#]")


@dataclass
class ScopeFilter:
    """Which records a scoped plan covers: the units, their people and mailboxes, objects naming them.

    A scoped plan is the full plan filtered (``scope_plan``): a change belongs to the scope when its
    desired record or its live record is covered, so a change whose before or after touches the scope is
    in it (a person transferred from one unit to another is in both units' plans)."""

    units: frozenset[str]
    people: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    """Groups naming an object of the scope in the TOML or live (both sides of such a group are planned)."""
    addresses: frozenset[str] = frozenset()
    """Addresses of the scope's people and unit mailboxes (TOML and live): an alias pointing at one is in."""

    def names(self) -> set[str]:
        return set(self.people) | {f"unit:{u}" for u in self.units}

    def covers(self, record: Record) -> bool:
        if record.unit is not None and record.unit in self.units:
            return True
        if record.kind in ("unit", "unit_mailbox") and record.key in self.units:
            return True
        if record.kind == "person" and record.key in self.people:
            return True
        names = self.names()
        attrs = record.attrs
        if record.kind == "unit":  # a unit headed or delegated by a person of the scope names them
            return attrs.get("head") in names or any(d in names for d in attrs.get("delegates") or ())
        if record.kind == "group":
            return (
                record.key in self.groups
                or any(m in names for m in attrs.get("members") or ())
                or any(str(a).lower() in self.addresses for a in attrs.get("delivers_to") or ())
            )
        if record.kind == "alias":
            targets = {t.strip().lower() for t in str(attrs.get("target") or "").split(",")}
            return str(attrs.get("_owner") or "") in names or bool(targets & self.addresses)
        if record.kind in ("shared_folder", "acl", "grant", "quota"):
            head = _REF_SPLIT.split(record.key, 1)[0]
            if head in names:
                return True
            if record.kind == "acl":
                ident = record.key.rsplit("#", 1)[-1]
                return ident in names or ident.removeprefix("unit:") in self.units
        return False


def scope_filter(
    scope_units: list[str] | None, state: State, snapshots: Mapping[str, Snapshot]
) -> ScopeFilter | None:
    if scope_units is None:
        return None
    people = {pid for pid, p in state.people.items() if (p.unit or "") in scope_units}
    live_records = [rec for snap in snapshots.values() for rec in snap.records.values()]
    for rec in live_records:
        if rec.kind == "person" and (rec.unit in scope_units or rec.attrs.get("unit") in scope_units):
            people.add(rec.key)
    names = people | {f"unit:{u}" for u in scope_units}
    groups = {gid for gid, g in state.groups.items() if any(m in names for m in g.members)}
    addresses: set[str] = set()
    for pid in people:
        person = state.people.get(pid)
        addresses.update(a.lower() for a in ([person.address] if person and person.address else []))
    for u in scope_units:
        unit = state.units.get(u)
        addresses.update(a.lower() for a in ([unit.address] if unit and unit.address else []))
    for rec in live_records:
        if rec.kind == "group" and any(m in names for m in rec.attrs.get("members") or ()):
            groups.add(rec.key)
        in_scope = rec.key in people if rec.kind == "person" else rec.key in scope_units
        if rec.kind in ("person", "unit_mailbox") and in_scope:
            addresses.update(a.lower() for a in record_addresses(rec))
    return ScopeFilter(
        units=frozenset(scope_units),
        people=frozenset(people),
        groups=frozenset(groups),
        addresses=frozenset(addresses),
    )


def _ref_key(kind: str, key: str) -> tuple[str, str]:
    return (kind, key.strip().lower() if kind == "alias" else key)  # as the diff matches them


def scope_plan(
    plan: P, sf: ScopeFilter, desired: Mapping[tuple[str, str], Record], live: Mapping[Any, Record]
) -> P:
    """The full ``plan`` filtered to the scope, in place: the changes whose desired or live record the
    scope covers (in the full plan's order, unchanged), and the unlisted records it covers."""
    sides = [{_ref_key(*ref): rec for ref, rec in side.items()} for side in (desired, live)]

    def touches(change: Change) -> bool:
        ref = _ref_key(change.kind, change.key)
        return any((rec := side.get(ref)) is not None and sf.covers(rec) for side in sides)

    plan.changes = [c for c in plan.changes if touches(c)]
    plan.unlisted = [rec for rec in plan.unlisted if sf.covers(rec)]
    return plan
