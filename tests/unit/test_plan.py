"""Plan: apply order, safety thresholds (DESIGN §6.3), and the versioned JSON form."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

import pytest

from mailstate.desired_state.projection import Desired
from mailstate.errors import MailstateError, UnsafePlan
from mailstate.model import i18n
from mailstate.model.change import Action, Change
from mailstate.model.records import Record
from mailstate.reconciler.plan.diff import change_id, diff
from mailstate.reconciler.plan.plan import SCHEMA_PATH, SCHEMA_VERSION, Plan, SafetyLimits, order


def ch(action: Action, kind: str, key: str, deps: tuple[str, ...] = (), provider: str = "ldap") -> Change:
    return Change(
        id=change_id(action, kind, key, provider),
        action=action,
        kind=kind,
        key=key,
        provider=provider,
        before=None,
        after=None,
        reasons=("test",),
        depends_on=deps,
    )


def labels(changes: list[Change]) -> list[str]:
    return [f"{c.action.label} {c.kind} {c.key} {c.provider}" for c in changes]


# --------------------------------------------------------------------------------------------------
# Order


def test_unit_before_people_and_parent_before_child() -> None:
    """Dependencies win over phase/kind/key: parent unit, then child unit, then the person in it."""
    parent = ch(Action.CREATE, "unit", "zz")
    child = ch(Action.CREATE, "unit", "aa", (parent.id,))
    person = ch(Action.CREATE, "person", "a", (child.id,))
    got = order([person, child, parent])
    assert [c.key for c in got] == ["zz", "aa", "a"]


def test_group_after_its_members() -> None:
    """A group comes after the people, unit mailboxes and nested groups it names."""
    p = ch(Action.CREATE, "person", "zzz")
    m = ch(Action.CREATE, "unit_mailbox", "yyy")
    inner = ch(Action.CREATE, "group", "b", (p.id,))
    outer = ch(Action.CREATE, "group", "a", (p.id, m.id, inner.id))
    got = order([outer, inner, m, p])
    assert got.index(outer) > max(got.index(p), got.index(m), got.index(inner))
    assert got.index(inner) > got.index(p)


def test_acl_after_mailbox() -> None:
    """A grant on a mailbox comes after the mailbox's creation."""
    box = ch(Action.CREATE, "unit_mailbox", "qlcn")
    acl = ch(Action.GRANT, "acl", "unit:qlcn/INBOX#a", (box.id,), "imap")
    assert order([acl, box]) == [box, acl]


def test_removal_phases_without_dependencies() -> None:
    """Independent changes follow the phases: revoke, unlock, create, update, grant, lock, archive, delete."""
    cs = [
        ch(Action.DELETE, "person", "a"),
        ch(Action.ARCHIVE, "person", "b", provider="ssh"),
        ch(Action.LOCK, "person", "c"),
        ch(Action.GRANT, "acl", "d#x", provider="imap"),
        ch(Action.UPDATE, "person", "e"),
        ch(Action.CREATE, "person", "f"),
        ch(Action.UNLOCK, "person", "g"),
        ch(Action.REVOKE, "acl", "h#x", provider="imap"),
    ]
    got = order(cs)
    assert [c.action.label for c in got] == [
        "revoke", "unlock", "create", "update", "grant", "lock", "archive", "delete"
    ]


def test_revoke_lock_archive_delete_from_diff() -> None:
    """A mailbox removal from the diff applies as revoke → lock → archive → delete (mail, then entry)."""
    desired = Desired(as_of=date(2026, 11, 23))
    desired.remove(("person", "x"), ["MOST art.13.2b: left"])
    live = {
        ("person", "x"): Record("person", "x", {"address": "x@a.vn", "locked": False}, "ldap", "u"),
        ("acl", "x/INBOX#y"): Record("acl", "x/INBOX#y", {"rights": "lr"}, "imap", "u"),
    }
    changes, _ = diff(desired, live)
    got = order(changes)
    assert labels(got) == [
        "revoke acl x/INBOX#y imap",
        "lock person x ldap",
        "archive person x ssh",
        "delete person x ssh",
        "delete person x ldap",
    ]


def test_order_is_deterministic() -> None:
    """The same changes in any input order give the same apply order."""
    cs = [ch(Action.CREATE, k, key) for k in ("unit", "person", "group") for key in ("b", "a", "c")]
    assert order(cs) == order(list(reversed(cs))) == order(cs[3:] + cs[:3])


def test_creations_kind_order_and_removals_reversed() -> None:
    """Among equal phases, units come before people when created; people before units when deleted."""
    got = order([ch(Action.CREATE, "person", "a"), ch(Action.CREATE, "unit", "z")])
    assert [c.kind for c in got] == ["unit", "person"]
    got = order([ch(Action.DELETE, "unit", "a"), ch(Action.DELETE, "person", "z")])
    assert [c.kind for c in got] == ["person", "unit"]


def test_cycle_does_not_hang() -> None:
    """Two groups naming each other are both ordered (the cycle is broken deterministically)."""
    a_id = change_id(Action.CREATE, "group", "a", "ldap")
    b_id = change_id(Action.CREATE, "group", "b", "ldap")
    a = ch(Action.CREATE, "group", "a", (b_id,))
    b = ch(Action.CREATE, "group", "b", (a_id,))
    got = order([b, a])
    assert [c.key for c in got] == ["a", "b"]


# --------------------------------------------------------------------------------------------------
# Safety


def destructive_plan(n_locks: int, live_mailboxes: int, **limits: Any) -> Plan:
    cs = [ch(Action.LOCK, "person", f"p{i}") for i in range(n_locks)]
    # the removal chain of one mailbox counts once
    cs += [ch(Action.ARCHIVE, "person", "p0", provider="ssh"), ch(Action.DELETE, "person", "p0")]
    cs += [ch(Action.CREATE, "person", "new")]
    return Plan.build(cs, live_mailboxes=live_mailboxes, safety=SafetyLimits(**limits))


def test_safe_plan_passes() -> None:
    """Locks below both thresholds pass without --allow-destructive."""
    destructive_plan(3, 100).raise_if_unsafe(False)


def test_count_threshold() -> None:
    """More mailboxes locked or removed than max_destructive_count stops, saying how many and what to do."""
    plan = destructive_plan(11, 1000)
    assert len(plan.destructive_mailboxes()) == 11
    with pytest.raises(UnsafePlan) as exc, i18n.use("en"):
        plan.raise_if_unsafe(False)
    msg = str(exc.value)
    assert "11 mailboxes" in msg and "max_destructive_count = 10" in msg and "--allow-destructive" in msg
    plan.raise_if_unsafe(True)


def test_count_equal_to_threshold_passes() -> None:
    """Exactly max_destructive_count mailboxes is allowed (the rule is "more than")."""
    destructive_plan(10, 1000).raise_if_unsafe(False)


def test_share_threshold() -> None:
    """Locking 4 of 12 live mailboxes (33% > 30%) stops even under the count threshold."""
    with pytest.raises(UnsafePlan) as exc, i18n.use("en"):
        destructive_plan(4, 12).raise_if_unsafe(False)
    assert "33% of the 12 live mailboxes" in str(exc.value)
    with pytest.raises(UnsafePlan) as exc:
        destructive_plan(4, 12).raise_if_unsafe(False)
    assert "khóa hoặc xóa 4 hộp thư (33% trong 12 hộp thư đang có" in str(exc.value)
    assert "max_destructive_share = 30%" in str(exc.value)


def test_share_not_applied_below_min_existing() -> None:
    """With fewer live mailboxes than min_existing, the share rule does not apply (4 of 9 passes)."""
    destructive_plan(4, 9).raise_if_unsafe(False)


def test_thresholds_from_state_safety() -> None:
    """The plan takes its thresholds from [safety] (a stricter count of 2 stops 3 locks)."""
    from mailstate.desired_state.schema import Safety

    cs = [ch(Action.LOCK, "person", f"p{i}") for i in range(3)]
    plan = Plan.build(cs, live_mailboxes=1000, safety=Safety(max_destructive_count=2))
    with pytest.raises(UnsafePlan):
        plan.raise_if_unsafe()


def test_unlock_and_acl_revokes_are_not_destructive() -> None:
    """Unlocks and ACL revokes never trip the mailbox threshold."""
    cs = [ch(Action.UNLOCK, "person", f"p{i}") for i in range(50)]
    cs += [ch(Action.REVOKE, "acl", f"x/INBOX#p{i}", provider="imap") for i in range(50)]
    Plan.build(cs, live_mailboxes=20).raise_if_unsafe(False)


# --------------------------------------------------------------------------------------------------
# JSON


def sample_plan() -> Plan:
    desired = Desired(as_of=date(2026, 11, 23))
    desired.add(Record("unit", "qlcn", {"name": "Phòng Quản lý Công nghiệp", "parent": None}, "ldap", "qlcn"),
                ["units/qlcn.toml:1: unit qlcn"])
    desired.add(Record("person", "bangnv", {"name": "Nguyễn Văn Bằng", "unit": "qlcn", "locked": False,
                                            "aliases": ("b@x.vn",)}, "ldap", "qlcn"),
                ["units/qlcn.toml:9: person bangnv"])
    desired.remove(("person", "thuytt"), ["MOST art.13.2b: left on 2025-01-01"])
    live = {
        ("person", "thuytt"): Record(
            "person", "thuytt", {"address": "thuytt@x.vn", "locked": False}, "ldap", "qlcn"
        ),
        ("group", "old"): Record("group", "old", {"address": "old@x.vn"}, "ldap", None),
    }
    changes, unlisted = diff(desired, live)
    plan = Plan.build(changes, unlisted, as_of=date(2026, 11, 23), scope=["unit:qlcn"], live=live,
                      organization="x.vn", unit_names={"qlcn": "Phòng Quản lý Công nghiệp"})
    plan.desired_fingerprint = "d" * 64
    plan.live_fingerprint = "e" * 64
    plan.live_digests = {"person:thuytt": "f" * 16}
    return plan


def check_against_schema(data: dict[str, Any]) -> None:
    """The subset of plan.schema.json checked without the jsonschema package: required keys and types."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    for key in schema["required"]:
        assert key in data, key
    assert data["schema_version"] == schema["properties"]["schema_version"]["const"]
    actions = set(schema["$defs"]["action"]["enum"])
    assert set(data["summary"]) <= actions
    id_re = re.compile(schema["$defs"]["change"]["properties"]["id"]["pattern"])
    for c in data["changes"]:
        for key in schema["$defs"]["change"]["required"]:
            assert key in c, key
        assert c["action"] in actions and id_re.match(c["id"])
        assert isinstance(c["reasons"], list) and all(isinstance(r, str) for r in c["reasons"])
    for r in data["unlisted"]:
        for key in schema["$defs"]["record"]["required"]:
            assert key in r, key


def test_json_round_trip() -> None:
    """to_json → JSON → from_json gives back the same changes, unlisted, fingerprints and thresholds."""
    plan = sample_plan()
    again = Plan.loads(json.dumps(plan.to_json(), ensure_ascii=False))
    assert [c.to_json() for c in again.changes] == [c.to_json() for c in plan.changes]
    assert [(r.kind, r.key) for r in again.unlisted] == [("group", "old")]
    assert again.as_of == plan.as_of and again.scope == ["unit:qlcn"]
    assert again.desired_fingerprint == "d" * 64 and again.live_digests == plan.live_digests
    assert again.live_mailboxes == 1 and again.safety == plan.safety
    assert again.to_json() == plan.to_json()


def test_json_matches_schema() -> None:
    """The JSON of a plan carries every key plan.schema.json requires, with valid actions and ids."""
    data = sample_plan().to_json()
    check_against_schema(data)
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:
        return
    jsonschema.validate(data, json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def test_summary_counts() -> None:
    """The summary counts changes per action in phase order."""
    plan = sample_plan()
    assert plan.summary == {"create": 2, "lock": 1, "archive": 1, "delete": 2}
    assert list(plan.to_json()["summary"]) == ["create", "lock", "archive", "delete"]


@pytest.mark.parametrize(
    "text",
    ['{"schema_version": 2, "changes": []}', "[]", "not json", '{"schema_version": 1}'],
)
def test_bad_plan_json_is_a_clear_error(text: str) -> None:
    """A file that is not a plan of this version is refused with a MailstateError, never a traceback."""
    with pytest.raises(MailstateError) as exc:
        Plan.loads(text)
    assert str(exc.value).startswith("plan file:")


def test_schema_version_constant() -> None:
    """The schema file and the code agree on the version."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION == 1
