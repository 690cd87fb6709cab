"""--scope unit:X on every example agency: a scoped plan is the full plan filtered to the scope — the same
changes (identical, in the same order), never one the full plan does not hold, and every change of X's
objects, on both sides of a transfer. Pure: the live side is made of records (the integration test
test_accept_reconcile_examples.py reads it from real servers)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from mailstate.desired_state.loader import load_state
from mailstate.desired_state.schema import State
from mailstate.model.change import Change
from mailstate.model.provider import Snapshot
from mailstate.model.records import Record
from mailstate.reconciler.pipeline import plan_from
from mailstate.reconciler.plan.plan import plan_changes, plan_unlisted

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "mailstate.toml").is_file())
DAY = date(2026, 6, 1)
LATER = date(2028, 1, 1)


def _js(c: Change) -> str:
    return json.dumps(c.to_json(), sort_keys=True, ensure_ascii=False, default=str)


def _plan(state: State, snaps: dict[str, Snapshot], scope: list[str] | None, day: date = DAY) -> Any:
    return plan_from(state, EXAMPLES, snaps, scope_units=scope, as_of=day)


def _converged(state: State) -> dict[str, Snapshot]:
    """The live side an apply of the example leaves: every created record, as the plan's `after` says."""
    snaps = {"ldap": Snapshot("ldap"), "imap": Snapshot("imap")}
    for c in plan_changes(_plan(state, {"ldap": Snapshot("ldap"), "imap": Snapshot("imap")}, None)):
        snaps[c.provider].add(Record(c.kind, c.key, dict(c.after or {}), c.provider, c.unit))
    return snaps


def _drifted(state: State) -> tuple[dict[str, Snapshot], str, str, str, str]:
    """The converged live side with a person of unit A still under unit B live (a transfer B → A not
    applied yet) and a right on a folder of unit C's mailbox given by hand to a person of unit D."""
    snaps = _converged(state)
    people = sorted(state.people.values(), key=lambda p: p.id)
    mover = people[0]
    a = mover.unit or ""
    b = next(u for u in sorted(state.units) if u != a)
    rec = snaps["ldap"].records[("person", mover.id)]
    snaps["ldap"].add(Record("person", mover.id, {**rec.attrs, "unit": b}, "ldap", b))
    c = sorted(state.units)[-1]
    outsider = next(p for p in reversed(people) if p.unit not in (c, a, b))
    key = f"unit:{c}/INBOX#{outsider.id}"
    snaps["imap"].add(Record("acl", key, {"rights": "lr"}, "imap", c))
    return snaps, a, b, c, outsider.unit or ""


def _check_filtered(state: State, snaps: dict[str, Snapshot], day: date) -> dict[str, list[Change]]:
    """Every unit's scoped plan is a sub-sequence of the full plan (identical changes, same order) holding
    every change of that unit; two units at once are the union of both; no change is in nobody's scope."""
    full = _plan(state, snaps, None, day)
    order = [_js(c) for c in plan_changes(full)]
    position = {j: i for i, j in enumerate(order)}
    scoped: dict[str, list[Change]] = {}
    for uid in sorted(state.units):
        plan = _plan(state, snaps, [uid], day)
        got = [_js(c) for c in plan_changes(plan)]
        missing = [j for j in got if j not in position]
        assert not missing, (uid, missing[:3])  # a change the full plan does not hold
        assert [position[j] for j in got] == sorted(position[j] for j in got), uid  # the full plan's order
        own = [_js(c) for c in plan_changes(full) if c.unit == uid]
        assert set(own) <= set(got), (uid, sorted(set(own) - set(got))[:3])
        unlisted = {(r.kind, r.key) for r in plan_unlisted(full)}
        assert {(r.kind, r.key) for r in plan_unlisted(plan)} <= unlisted
        scoped[uid] = plan_changes(plan)
    covered = {_js(c) for cs in scoped.values() for c in cs}
    assert [j for j in order if j not in covered] == []
    units = sorted(state.units)
    for first, second in zip(units, units[1:], strict=False):
        both = [_js(c) for c in plan_changes(_plan(state, snaps, [first, second], day))]
        union = {_js(c) for c in scoped[first] + scoped[second]}
        assert both == [j for j in order if j in union], (first, second)
    return scoped


@pytest.mark.parametrize("name", NAMES)
def test_scoped_plans_are_the_full_plan_filtered(name: str) -> None:
    """Against an empty live side, a converged one, a drifted one, and the lifecycle of a later date."""
    state = load_state(EXAMPLES / name)
    _check_filtered(state, {"ldap": Snapshot("ldap"), "imap": Snapshot("imap")}, DAY)

    converged = _converged(state)
    assert plan_changes(_plan(state, converged, None)) == []
    for uid in sorted(state.units):
        plan = _plan(state, converged, [uid])
        assert plan_changes(plan) == [] and plan_unlisted(plan) == [], uid

    drifted, a, b, c, d = _drifted(state)
    scoped = _check_filtered(state, drifted, DAY)
    mover = sorted(state.people)[0]
    for uid in (a, b):  # the transfer is in both units' plans, as an update (the person exists)
        moves = [ch for ch in scoped[uid] if (ch.kind, ch.key) == ("person", mover)]
        assert [(ch.action.label, ch.fields) for ch in moves] == [("update", ("unit",))], uid
    for uid in sorted(set(state.units) - {a, b}):
        assert all((ch.kind, ch.key) != ("person", mover) for ch in scoped[uid]), uid
    for uid in (c, d):  # the right given by hand is revoked in the plans of both units it touches
        assert any(ch.kind == "acl" and ch.action.label == "revoke" for ch in scoped[uid]), uid

    _check_filtered(state, converged, LATER)
