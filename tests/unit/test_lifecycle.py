"""Lifecycle decisions as data: lifecycle_cases/*.toml, each {person or unit, as_of, facts, expected}."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from mailstate.desired_state.lifecycle import Decision, as_date, decide, decide_person
from mailstate.desired_state.schema import Lifecycle, Organization, Person, Regulation, State, Unit
from mailstate.model.i18n import use
from mailstate.model.regulation import RULES

CASES = sorted((Path(__file__).parent / "lifecycle_cases").glob("*.toml"))


def _state(case: dict[str, Any]) -> tuple[State, str]:
    state = State(
        root=Path("."),
        organization=Organization(name="Sở Công Thương", domain="sct.binhdinh.gov.vn", language="en",
                                  regulation=case.get("regulation")),
        lifecycle=Lifecycle.model_validate(case.get("lifecycle") or {}),
    )
    if "person" in case:
        p = Person.model_validate(case["person"])
        state.people[p.id] = p
        return state, p.id
    u = Unit.model_validate(case["unit"])
    state.units[u.id] = u
    return state, f"unit:{u.id}"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_lifecycle_case(path: Path) -> None:
    """Each case's decision (locked, remove, stored lock reason, reasons naming their rule) is as expected."""
    case = tomllib.loads(path.read_text(encoding="utf-8"))
    state, ref = _state(case)
    got = decide(state, ref, case["as_of"], case.get("facts"))
    exp = case["expected"]
    with use("en"):
        texts = [r.text() for r in got.reasons]
    assert (got.locked, got.remove) == (exp["locked"], exp["remove"]), (case["description"], got)
    if "lock_reason" in exp:  # "" = no reason stored with the lock
        assert (got.lock_reason or "") == exp["lock_reason"]
    if "refuse_mail" in exp:  # "" = mail is delivered
        assert (got.refuse_mail or "") == exp["refuse_mail"], (case["description"], got)
    if got.refuse_mail:
        assert got.locked and got.refuse_mail.isascii(), "refused only to a locked leaver (ASCII text)"
    for fragment in exp.get("reasons_contain", []):
        assert any(fragment in t for t in texts), (fragment, texts)
    for fragment in exp.get("reasons_exclude", []):
        assert not any(fragment in t for t in texts), (fragment, texts)
        assert fragment not in (got.lock_reason or ""), (fragment, got.lock_reason)
    if "reasons_count" in exp:
        assert len(got.reasons) == exp["reasons_count"], got.reasons
    if got.remove:
        assert got.locked, "a removal always locks first"
    if not got.locked:
        assert got.lock_reason is None


def test_cases_exist() -> None:
    """The data directory holds the lifecycle cases (a glob that finds nothing would test nothing)."""
    assert len(CASES) >= 15


def test_lock_reason_is_stable_across_days() -> None:
    """The lock reason stored in the directory does not change from one day to the next."""
    state = State(root=Path("."), organization=Organization(name="X", domain="x.gov.vn"))
    p = Person(id="bangnv", name="Nguyễn Văn Bằng", left_on=date(2026, 10, 1))
    a = decide_person(p, state, date(2027, 1, 5))
    b = decide_person(p, state, date(2027, 3, 9))
    assert a.locked and b.locked
    assert a.lock_reason == b.lock_reason


def test_every_reason_names_a_rule() -> None:
    """Every reason carries a known rule code and names either its article or the setting behind it."""
    for path in CASES:
        case = tomllib.loads(path.read_text(encoding="utf-8"))
        state, ref = _state(case)
        got: Decision = decide(state, ref, case["as_of"], case.get("facts"))
        for r in got.reasons:
            assert r.rule in RULES, (path.name, r.code)
            with use("vi"):
                text = r.text()
            assert ("Điều " in text and "Quyết định" in text) or f"theo `{RULES[r.rule]}`" in text, text


def test_without_a_citation_the_reason_states_the_rule_and_its_setting() -> None:
    """An organisation whose regulation has no article for a rule: the reason names the TOML setting,
    in Vietnamese with dd/mm/yyyy dates and "3 tháng"; no other agency's article is borrowed."""
    state = State(root=Path("."), organization=Organization(name="Sở X tỉnh Phú Yên", domain="x.gov.vn",
                                                            regulation="monre-2019"))
    p = Person(id="annv", name="Nguyễn Văn An", left_on=date(2026, 8, 15))
    got = decide_person(p, state, date(2026, 12, 1))
    with use("vi"):
        text = got.reasons[0].text()
    assert text == "nghỉ việc từ 15/08/2026, đã quá 3 tháng; sẽ xóa từ 16/08/2027, theo `lock_after_leaving`"
    assert got.lock_reason == "nghỉ việc từ 15/08/2026, theo `lock_after_leaving`"


def test_own_decision_is_cited_as_a_vietnamese_official_reads_it() -> None:
    """[regulation] names the agency's own decision; the citation reads "Điều 13 khoản 2 điểm b, …"."""
    state = State(
        root=Path("."),
        organization=Organization(name="Sở X tỉnh Phú Yên", domain="x.gov.vn", regulation="most-4105"),
        regulation=Regulation(decision="Quyết định 25/2021/QĐ-UBND tỉnh Phú Yên",
                              articles={"lifecycle.remove_after_leaving": "13.2.b"}),
    )
    p = Person(id="annv", name="Nguyễn Văn An", left_on=date(2025, 8, 15))
    got = decide_person(p, state, date(2026, 12, 1))
    with use("vi"):
        text = got.reasons[0].text()
    assert text.endswith("(Điều 13 khoản 2 điểm b, Quyết định 25/2021/QĐ-UBND tỉnh Phú Yên)"), text
    assert "4105" not in text  # the preset's articles belong to its own decision


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-02T07:15:00Z", date(2026, 3, 2)),
        ("2026-03-02", date(2026, 3, 2)),
        (date(2026, 3, 2), date(2026, 3, 2)),
        ("", None),
        (None, None),
        ("not a date", None),
    ],
)
def test_as_date(value: Any, expected: date | None) -> None:
    """Fact values (ISO datetimes, dates, junk) become dates, or None when they are not dates."""
    assert as_date(value) == expected


# The agency's day: an instant recorded in UTC (a last login, an entry's createTimestamp) counts on the day
# it was where the agency is — the host's local zone, the one ``date.today()`` gives the plan.
HANOI = "Asia/Ho_Chi_Minh"  # UTC+7 all year


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-02-28T23:30:00Z", date(2026, 3, 1)),  # 06:30 in Hà Nội
        ("2026-02-28T16:59:59+00:00", date(2026, 2, 28)),  # 23:59:59 in Hà Nội
        ("2026-02-28T17:00:00+00:00", date(2026, 3, 1)),
        (datetime(2026, 8, 31, 20, 0, tzinfo=UTC), date(2026, 9, 1)),
        ("2026-02-28", date(2026, 2, 28)),  # a date stays that date
    ],
)
def test_an_instant_counts_on_the_agencys_day(in_zone: Any, value: Any, expected: date) -> None:
    in_zone(HANOI)
    assert as_date(value) == expected


def test_a_login_just_after_midnight_in_hanoi_is_not_counted_from_the_day_before(in_zone: Any) -> None:
    """Logged in at 06:30 on 01/03 in Hà Nội (23:30 UTC on 28/02): 6 months without a login end at the end
    of 01/09, so the lock is due on 02/09 — counted from the UTC day it would come on 29/08."""
    in_zone(HANOI)
    state = State(root=Path("."), organization=Organization(name="Bộ KH&CN", domain="most.gov.vn",
                                                           language="en", regulation="most-4105"),
                  lifecycle=Lifecycle.model_validate({"lock_after_inactivity": "6 months"}))
    p = Person.model_validate({"id": "hung.pv", "name": "Phạm Văn Hùng"})
    state.people[p.id] = p
    facts = {"last_login": {"hung.pv": "2026-02-28T23:30:00+00:00"}}
    assert not decide_person(p, state, date(2026, 9, 1), facts).locked
    assert decide_person(p, state, date(2026, 9, 2), facts).locked
