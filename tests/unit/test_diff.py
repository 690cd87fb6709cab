"""The central diff as data: diff_cases/*.json, each {desired, absent, live, expected changes in order}."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from mailstate.reconciler.change import Action, Record
from mailstate.reconciler.desired import Desired
from mailstate.reconciler.diff import change_id, diff, normalise, scrub
from mailstate.reconciler.plan import order

CASES = sorted((Path(__file__).parent / "diff_cases").glob("*.json"))


def _record(d: dict[str, Any]) -> Record:
    attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in d["attrs"].items()}
    return Record(d["kind"], d["key"], attrs, d.get("provider", ""), d.get("unit"))


def run_case(case: dict[str, Any]) -> tuple[list[Any], list[Record]]:
    desired = Desired(as_of=date.fromisoformat(case["as_of"]))
    for d in case["desired"]:
        rec = _record(d)
        desired.add(rec, [f"case: {rec.kind} {rec.key}"])
    for a in case.get("absent", []):
        desired.remove((a["kind"], a["key"]), a["reasons"])
    live = {r.ref: r for r in map(_record, case["live"])}
    changes, unlisted = diff(desired, live, manage_unlisted=case.get("manage_unlisted", False))
    return order(changes), unlisted


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_diff_case(path: Path) -> None:
    """Each case yields exactly the expected changes in apply order, with fields, values, dependencies."""
    case = json.loads(path.read_text(encoding="utf-8"))
    changes, unlisted = run_case(case)
    got = [(c.action.label, c.kind, c.key) for c in changes]
    want = [(e["action"], e["kind"], e["key"]) for e in case["expected"]]
    assert got == want, case["description"]
    for c, e in zip(changes, case["expected"], strict=True):
        if "provider" in e:
            assert c.provider == e["provider"], (c.id, c.provider)
        if "fields" in e:
            assert sorted(c.fields) == sorted(e["fields"]), c
        if "before" in e:
            assert dict(c.before or {}) == e["before"]
        if "after" in e:
            assert dict(c.after or {}) == e["after"]
        if "depends_on" in e:
            assert sorted(c.depends_on) == sorted(changes[i].id for i in e["depends_on"]), c
        assert c.reasons, f"{c.action.label} {c.kind} {c.key} has no reason"
    assert sorted([r.kind, r.key] for r in unlisted) == sorted(case["unlisted"])


def test_cases_exist() -> None:
    """The data directory holds the diff cases (a glob that finds nothing would test nothing)."""
    assert len(CASES) >= 20


def test_every_dependency_comes_first() -> None:
    """In every case's ordered output, each change comes after every change it depends on."""
    for path in CASES:
        changes, _ = run_case(json.loads(path.read_text(encoding="utf-8")))
        seen: set[str] = set()
        for c in changes:
            assert set(c.depends_on) <= seen, (path.name, c)
            seen.add(c.id)


def test_change_ids_are_stable_and_distinct() -> None:
    """The same change gets the same id twice; the ssh and ldap deletes of one mailbox get different ids."""
    a = change_id(Action.DELETE, "person", "bangnv", "ldap")
    assert a == change_id(Action.DELETE, "person", "bangnv", "ldap")
    assert a != change_id(Action.DELETE, "person", "bangnv", "ssh")
    assert a.startswith("c") and len(a) == 11


def test_second_diff_after_apply_is_empty() -> None:
    """Once the live side equals the desired side (as a provider would read it back), nothing is planned."""
    case = json.loads((Path(__file__).parent / "diff_cases" / "create_unit_then_person.json").read_text())
    desired = Desired(as_of=date(2026, 11, 23))
    for d in case["desired"]:
        desired.add(_record(d))
    live = {ref: Record(r.kind, r.key, dict(r.attrs), r.provider, r.unit)
            for ref, r in desired.records.items()}
    changes, unlisted = diff(desired, live)
    assert changes == [] and unlisted == []


@pytest.mark.parametrize(
    ("name", "a", "b", "equal"),
    [
        ("address", "BangNV@X.VN", "bangnv@x.vn", True),
        ("name", "Bằng", "Ba\u0300\u0306ng", False),
        ("name", "Bằng", "Ba\u0306\u0300ng", True),
        ("name", "Bằng", "bằng", False),
        ("members", ("a", "b"), ["b", "a"], True),
        ("aliases", (), None, True),
        ("title", "", None, True),
        ("quota", 1024, 2048, False),
        ("locked", False, None, False),
    ],
)
def test_normalise(name: str, a: Any, b: Any, equal: bool) -> None:
    """Values compare normalised: addresses ignore case, text is NFC, sets ignore order, '' is None."""
    assert (normalise(name, a) == normalise(name, b)) is equal


def test_scrub_nested() -> None:
    """Secret-like attribute names are redacted at any depth, other values kept."""
    out = scrub({"name": "x", "password_file": "/p", "nested": {"secret": "s", "ok": 1}})
    assert out == {"name": "x", "password_file": "<redacted>", "nested": {"secret": "<redacted>", "ok": 1}}
