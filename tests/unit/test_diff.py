"""The central diff as data: diff_cases/*.json, each {desired, absent, live, expected changes in order}."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from mailstate.desired_state.projection import Desired
from mailstate.model.change import Action
from mailstate.model.records import Record
from mailstate.reconciler.plan.diff import change_id, diff, normalise, scrub
from mailstate.reconciler.plan.plan import order

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


# --------------------------------------------------------------------------------------------------
# The desired side: projection of a small state repository


STATE_FILES = {
    "mailstate.toml": """\
[organization]
name = "Sở Công Thương tỉnh Bình Định"
domain = "sct.binhdinh.gov.vn"

[quota]
person = "2 GiB"
unit = "10 GiB"
overrides = { bangnv = "5 GiB", "unit:qlcn" = "20 GiB" }
""",
    "units/qlcn.toml": """\
[unit]
id = "qlcn"
name = "Phòng Quản lý Công nghiệp"
head = "bangnv"
address = "qlcn@sct.binhdinh.gov.vn"

[[person]]
id = "bangnv"
name = "Nguyễn Văn Bằng"
title = "Trưởng phòng"
address = "bangnv@sct.binhdinh.gov.vn"
old_addresses = ["bang.nv@sct.binhdinh.gov.vn"]

[[person]]
id = "thuytt"
name = "Trần Thị Thủy"
address = "thuytt@sct.binhdinh.gov.vn"
left_on = 2025-01-01

[[person]]
id = "hoalt"
name = "Lê Thị Hoa"
address = "hoalt@sct.binhdinh.gov.vn"
suspended = "phiếu sự cố 27"

[[group]]
id = "lanhdao"
name = "Lãnh đạo"
address = "lanhdao@sct.binhdinh.gov.vn"
members = ["bangnv"]

[[group]]
id = "toanso"
name = "Toàn Sở"
address = "toanso@sct.binhdinh.gov.vn"
members = ["unit:qlcn", "thuytt", "hoalt", "group:lanhdao"]
""",
}


def load_small_state(tmp_path: Path) -> Any:
    from mailstate.desired_state.loader import load_state

    for name, text in STATE_FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    return load_state(tmp_path)


def test_projection_records(tmp_path: Path) -> None:
    """Units, unit mailboxes, people and groups are projected with normalised attributes and quotas."""
    from mailstate.desired_state.projection import project

    d = project(load_small_state(tmp_path), date(2026, 11, 23), folders=False)
    p = d.records[("person", "bangnv")].attrs
    assert (p["name"], p["given"], p["family"], p["unit"]) == ("Nguyễn Văn Bằng", "Bằng", "Nguyễn", "qlcn")
    assert p["quota"] == 5 * 1024**3 and p["locked"] is False and p["lock_reason"] is None
    assert d.records[("person", "hoalt")].attrs["quota"] == 2 * 1024**3
    assert d.records[("unit_mailbox", "qlcn")].attrs["quota"] == 20 * 1024**3
    assert d.records[("unit", "qlcn")].attrs["address"] == "qlcn@sct.binhdinh.gov.vn"
    assert any(r.startswith("units/qlcn.toml:") and "person bangnv (Nguyễn Văn Bằng)" in r
               for r in _en(d.reasons[("person", "bangnv")]))


def test_projection_lifecycle(tmp_path: Path) -> None:
    """A person who left long ago is absent (with its rule); a suspended one is locked, stable reason."""
    from mailstate.desired_state.projection import project

    d = project(load_small_state(tmp_path), date(2026, 11, 23), folders=False)
    assert ("person", "thuytt") not in d.records
    assert any(r.rule == "lifecycle.remove_after_leaving" for r in d.absent[("person", "thuytt")])
    h = d.records[("person", "hoalt")].attrs
    assert h["locked"] is True and h["lock_reason"] == "tạm khóa: phiếu sự cố 27, theo `suspended`"


def test_projection_group_expansion(tmp_path: Path) -> None:
    """delivers_to expands nested groups and unit mailboxes and leaves out members being removed."""
    from mailstate.desired_state.projection import project

    d = project(load_small_state(tmp_path), date(2026, 11, 23), folders=False)
    toanso = d.records[("group", "toanso")].attrs
    assert toanso["members"] == ("group:lanhdao", "hoalt", "thuytt", "unit:qlcn")
    assert toanso["delivers_to"] == (
        "bangnv@sct.binhdinh.gov.vn", "hoalt@sct.binhdinh.gov.vn", "qlcn@sct.binhdinh.gov.vn"
    )
    assert d.records[("group", "lanhdao")].attrs["delivers_to"] == ("bangnv@sct.binhdinh.gov.vn",)


def test_projection_old_addresses(tmp_path: Path) -> None:
    """A listed old address is an alias without expiry; an address changed live is kept keep_old_address."""
    from mailstate.desired_state.projection import project

    state = load_small_state(tmp_path)
    live_addresses = {"hoa.lt@sct.binhdinh.gov.vn": "hoalt", "hoalt@sct.binhdinh.gov.vn": "hoalt"}
    d = project(state, date(2026, 11, 23), live_addresses, folders=False)
    listed = d.records[("alias", "bang.nv@sct.binhdinh.gov.vn")].attrs
    assert listed["target"] == "bangnv@sct.binhdinh.gov.vn" and listed["expires"] is None
    moved = d.records[("alias", "hoa.lt@sct.binhdinh.gov.vn")].attrs
    assert moved["target"] == "hoalt@sct.binhdinh.gov.vn" and moved["expires"] == "2027-05-23"
    assert d.records[("person", "hoalt")].attrs["aliases"] == ("hoa.lt@sct.binhdinh.gov.vn",)
    assert d.records[("person", "bangnv")].attrs["aliases"] == ("bang.nv@sct.binhdinh.gov.vn",)


def test_projection_alias_expiry_read_back(tmp_path: Path) -> None:
    """The expiry already set live is kept (it does not move day by day), and past it the alias is absent."""
    from mailstate.desired_state.projection import project

    state = load_small_state(tmp_path)
    old = "hoa.lt@sct.binhdinh.gov.vn"
    live = {("alias", old): Record("alias", old, {"target": "hoalt@sct.binhdinh.gov.vn",
                                                  "expires": "2027-01-10"}, "ldap", "qlcn")}
    d = project(state, date(2026, 12, 1), live=live, folders=False)
    assert d.records[("alias", old)].attrs["expires"] == "2027-01-10"
    d = project(state, date(2027, 1, 10), live=live, folders=False)
    assert ("alias", old) not in d.records
    assert any("expired by 2027-01-10" in r for r in _en(d.absent[("alias", old)]))
    changes, _ = diff(d, live)
    assert [(c.action.label, c.key) for c in changes if c.key == old] == [("delete", old)]


def _as_live(d: Any) -> dict[Any, Record]:
    """What a provider would read back after applying ``d`` (private attributes dropped)."""
    return {
        ref: Record(r.kind, r.key, {k: v for k, v in r.attrs.items() if not k.startswith("_")},
                    r.provider, r.unit)
        for ref, r in d.records.items()
    }


def test_address_change_converges_and_expires(tmp_path: Path) -> None:
    """An address change plans the alias once, then nothing for months, then removes it at expiry."""
    from mailstate.desired_state.projection import project

    state = load_small_state(tmp_path)
    old = "hoa.lt@sct.binhdinh.gov.vn"
    d0 = project(state, date(2026, 11, 23), folders=False)
    live = _as_live(d0)
    person = live[("person", "hoalt")]
    live[("person", "hoalt")] = Record("person", "hoalt", {**person.attrs, "address": old}, "ldap", "qlcn")

    d1 = project(state, date(2026, 11, 23), live=live, folders=False)
    changes, _ = diff(d1, live)
    got = sorted((c.action.label, c.kind, c.key, tuple(sorted(c.fields))) for c in changes)
    assert got == [("create", "alias", old, ()), ("update", "person", "hoalt", ("address", "aliases"))]

    live = _as_live(d1)  # applied
    for day in (date(2026, 11, 24), date(2027, 3, 1), date(2027, 5, 22)):
        changes, _ = diff(project(state, day, live=live, folders=False), live)
        assert changes == [], (day, changes)

    d2 = project(state, date(2027, 5, 23), live=live, folders=False)
    changes, _ = diff(d2, live)
    got = sorted((c.action.label, c.kind, c.key, tuple(sorted(c.fields))) for c in changes)
    assert got == [("delete", "alias", old, ()), ("update", "person", "hoalt", ("aliases",))]
    live = _as_live(d2)
    changes, _ = diff(project(state, date(2027, 5, 24), live=live, folders=False), live)
    assert changes == []


def test_projection_never_hands_out_an_address_held_live_by_someone_else(tmp_path: Path) -> None:
    """An address an unmanaged live entry holds (the LDAP 'addresses' fact) is not given to a new person."""
    from mailstate.desired_state.projection import project

    files = dict(STATE_FILES)
    files["units/kh.toml"] = (
        '[unit]\nid = "kh"\nname = "Phòng Kế hoạch"\n\n[[person]]\nid = "hungnv"\nname = "Nguyễn Văn Hùng"\n'
    )
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    from mailstate.desired_state.loader import load_state

    state = load_state(tmp_path)
    free = project(state, date(2026, 11, 23), folders=False)
    assert free.records[("person", "hungnv")].attrs["address"] == "hungnv@sct.binhdinh.gov.vn"
    facts = {"addresses": {"hungnv@sct.binhdinh.gov.vn": "uid=hungnv,ou=legacy"}}
    taken = project(state, date(2026, 11, 23), facts=facts, folders=False)
    assert taken.records[("person", "hungnv")].attrs["address"] == "hungnv2@sct.binhdinh.gov.vn"


def test_old_address_now_someone_elses_is_not_kept(tmp_path: Path) -> None:
    """An old address that is now another owner's address is not kept as an alias for its former owner."""
    from mailstate.desired_state.projection import project

    state = load_small_state(tmp_path)
    taken = "hoalt@sct.binhdinh.gov.vn"  # pinned to hoalt in the TOML, once held by bangnv
    live = {("alias", taken): Record("alias", taken, {"target": "bangnv@sct.binhdinh.gov.vn",
                                                      "expires": "2027-06-01"}, "ldap", "qlcn")}
    d = project(state, date(2026, 11, 23), live=live, folders=False)
    assert ("alias", taken) not in d.records
    assert any("now the address of hoalt" in r for r in _en(d.absent[("alias", taken)]))
    assert taken not in d.records[("person", "bangnv")].attrs["aliases"]
    changes, _ = diff(d, live)
    got = [(c.action.label, c.key) for c in changes if c.kind == "alias" and c.key == taken]
    assert got == [("delete", taken)]


def test_rights_of_a_removed_person_are_revoked(tmp_path: Path) -> None:
    """When a delegate's mailbox is removed, the rights that delegate held on the unit mailbox are revoked."""
    from mailstate.desired_state.loader import load_state
    from mailstate.desired_state.projection import project

    files = dict(STATE_FILES)
    files["units/qlcn.toml"] = files["units/qlcn.toml"].replace('head = "bangnv"\n',
                                                              'head = "bangnv"\ndelegates = ["thuytt"]\n')
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    d = project(load_state(tmp_path), date(2026, 11, 23), folders=True)
    acl_refs = [ref for ref in d.records if ref[0] == "acl"]
    assert acl_refs, "the IMAP projection is there"
    assert not [ref for ref in acl_refs if ref[1].endswith("#thuytt")]
    revoked = [ref for ref in d.absent if ref[0] == "acl" and ref[1].endswith("#thuytt")]
    assert revoked and all("thuytt is being removed" in _en(d.absent[r])[-1] for r in revoked)


def _en(reasons):  # type: ignore[no-untyped-def]
    """The reasons' texts in English."""
    from mailstate.model.i18n import use

    with use("en"):
        return [r.text() for r in reasons]


def test_the_old_address_of_a_removed_person_goes_with_them(tmp_path: Path) -> None:
    """removal.old_address: a person being removed loses the old address they still answered to, citing
    the removal, whatever keep_old_address says."""
    from mailstate.desired_state.loader import load_state
    from mailstate.desired_state.projection import project

    files = dict(STATE_FILES)
    files["units/qlcn.toml"] = files["units/qlcn.toml"].replace(
        'address = "thuytt@sct.binhdinh.gov.vn"\n',
        'address = "thuytt@sct.binhdinh.gov.vn"\nold_addresses = ["thuy.tt@sct.binhdinh.gov.vn"]\n')
    assert files["units/qlcn.toml"] != STATE_FILES["units/qlcn.toml"]
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    d = project(load_state(tmp_path), date(2026, 11, 23), folders=False)
    ref = ("alias", "thuy.tt@sct.binhdinh.gov.vn")
    assert ref not in d.records
    assert [r.code for r in d.absent[ref]] == ["removal.old_address"]
    assert "thuytt is removed (left on 2025-01-01" in _en(d.absent[ref])[0]


def test_a_right_waits_for_the_mailbox_it_is_for() -> None:
    """A grant names whom it is for: it depends on that person's (or unit mailbox's) creation, so a parallel
    apply may set it before the directory's other people exist; anyone, a $group have no such dependency."""
    desired = Desired(as_of=date(2026, 12, 6))
    for rec in (
        Record("person", "tp", {"name": "Tạ Phương"}, "ldap", "vp"),
        Record("unit_mailbox", "kt", {"name": "Kế toán"}, "ldap", "kt"),
        Record("acl", "unit:vp/INBOX#tp", {"rights": "lr", "why": None}, "imap", "vp"),
        Record("acl", "unit:vp/INBOX#-kt", {"rights": "w", "why": None}, "imap", "vp"),
        Record("acl", "unit:vp/INBOX#anyone", {"rights": "l", "why": None}, "imap", "vp"),
        Record("acl", "unit:vp/INBOX#$ke-toan", {"rights": "l", "why": None}, "imap", "vp"),
    ):
        desired.add(rec, ["case"])
    live = {("unit_mailbox", "vp"): Record("unit_mailbox", "vp", {"name": "VP"}, "ldap", "vp")}
    changes, _ = diff(desired, live)
    by_key = {c.key: c for c in changes}
    assert by_key["tp"].id in by_key["unit:vp/INBOX#tp"].depends_on
    assert by_key["kt"].id in by_key["unit:vp/INBOX#-kt"].depends_on
    creations = {by_key["tp"].id, by_key["kt"].id}
    assert not creations & set(by_key["unit:vp/INBOX#anyone"].depends_on)
    assert not creations & set(by_key["unit:vp/INBOX#$ke-toan"].depends_on)
