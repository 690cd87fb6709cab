"""Acceptance (pure parts of the reconcile core): extra values of single-valued fields, entries left
without a password, and what a --scope covers."""

from __future__ import annotations

import pytest

from mailstate.desired_state.projection import Desired
from mailstate.model.change import Action
from mailstate.model.records import Record
from mailstate.providers.ldap.parse import parse_person
from mailstate.reconciler.plan.diff import diff, differing_fields
from mailstate.reconciler.plan.scope import ScopeFilter

ENTRY = {
    "objectClass": ["inetOrgPerson", "inetLocalMailRecipient", "mailstateAccount"],
    "uid": ["sonlh"],
    "cn": ["Lý Hoàng Sơn"],
    "title": ["Trưởng phòng"],
    "telephoneNumber": ["0255 1", "0255 2"],
    "mail": ["SonLH@x.gov.vn"],
    "mailLocalAddress": ["sonlh@X.gov.vn"],
}


def test_an_extra_value_of_a_single_valued_field_differs() -> None:
    """Two telephoneNumber values read as both (not the first), so the wanted single one is a change."""
    rec = parse_person(ENTRY)
    assert rec.attrs["phone"] == ("0255 1", "0255 2")
    assert rec.attrs["address"] == "sonlh@x.gov.vn" and rec.attrs["aliases"] == ()
    assert differing_fields({"phone": "0255 1", "title": "Trưởng phòng", "address": "sonlh@x.gov.vn"},
                            rec.attrs) == ["phone"]


def test_two_mail_values_read_as_both_and_neither_is_an_alias() -> None:
    """Several `mail` values are one differing address, and none of them counts among the aliases."""
    rec = parse_person({**ENTRY, "mail": ["a@x.gov.vn", "b@x.gov.vn"], "mailLocalAddress": ["a@x.gov.vn"]})
    assert rec.attrs["address"] == ("a@x.gov.vn", "b@x.gov.vn") and rec.attrs["aliases"] == ()
    assert differing_fields({"address": "a@x.gov.vn"}, rec.attrs) == ["address"]


def test_a_person_without_a_password_is_created_again() -> None:
    """A live person flagged `_no_password` that is otherwise equal plans a create (which sets a password)."""
    want = Desired()
    want.add(Record("person", "sonlh", {"name": "Lý Hoàng Sơn"}, "ldap", "ktht"), ["units/ktht.toml:8"])
    live = Record("person", "sonlh", {"name": "Lý Hoàng Sơn", "_no_password": True}, "ldap", "ktht")
    changes, _ = diff(want, {live.ref: live})
    assert [(c.action, c.key) for c in changes] == [(Action.CREATE, "sonlh")]
    with_password = Record("person", "sonlh", {"name": "Lý Hoàng Sơn"}, "ldap", "ktht")
    assert diff(want, {live.ref: with_password})[0] == []


def test_scope_covers_aliases_and_groups_of_its_people() -> None:
    """A live alias pointing at a scoped address and a group named in the scope's groups are covered."""
    sf = ScopeFilter(units=frozenset({"ktht"}), people=frozenset({"tuanh"}), groups=frozenset({"cntt3"}),
                     addresses=frozenset({"tuan.ho@x.gov.vn"}))
    assert sf.covers(Record("alias", "tuanh@x.gov.vn", {"target": "Tuan.Ho@x.gov.vn"}, "ldap"))
    assert not sf.covers(Record("alias", "other@x.gov.vn", {"target": "other2@x.gov.vn"}, "ldap"))
    assert sf.covers(Record("group", "cntt3", {"members": ("hungpq",)}, "ldap"))
    assert not sf.covers(Record("group", "lanhdao", {"members": ("tinlv",)}, "ldap"))


@pytest.mark.usefixtures("english")  # asserts validation's English texts
def test_a_phone_slapd_would_refuse_is_a_validation_error() -> None:
    """telephoneNumber is a PrintableString in LDAP: a '*' or a marked letter is refused by validation,
    not by slapd in the middle of an apply; ordinary Vietnamese numbers pass."""
    import pytest
    from pydantic import ValidationError

    from mailstate.desired_state.schema import Person

    assert Person(id="a", name="Lê Văn Tí", phone="(+84) 255 3822-123", mobile="0905 123 456").phone
    for bad in ("(+84) 255 * 1", "máy lẻ 12", "0255#1"):
        with pytest.raises(ValidationError, match="not a telephone number"):
            Person(id="a", name="Lê Văn Tí", phone=bad)
    with pytest.raises(ValidationError, match="not a telephone number"):
        Person(id="a", name="Lê Văn Tí", mobile="0905;123")


def test_display_name_and_other_login_names_are_drift() -> None:
    """A displayName unlike cn reads into the name (so it is repaired), and another uid value — another
    login name for the same mailbox — is flagged and planned as a create that rewrites the entry."""
    rec = parse_person({**ENTRY, "displayName": ["Sếp Sơn"], "uid": ["sonlh", "boss"]},
                       "uid=sonlh,ou=people,dc=x,dc=gov,dc=vn")
    assert rec.key == "sonlh"
    assert rec.attrs["name"] == ("Lý Hoàng Sơn", "Sếp Sơn")
    assert rec.attrs["_other_uids"] == ("boss",)
    want = Desired()
    want.add(Record("person", "sonlh", {"title": "Trưởng phòng"}, "ldap", "ktht"))
    changes, _ = diff(want, {rec.ref: rec})
    assert [(c.action, c.key) for c in changes] == [(Action.CREATE, "sonlh")]
    assert any(r.rule == "naming.login_names" and "boss" in r.text() for r in changes[0].reasons)


def test_markdown_calls_out_a_lock_with_its_rule_not_its_toml_line() -> None:
    """The lock call-out of the Markdown plan shows the reason naming the rule (MIC art.5.3 …), not the
    TOML line that defines the person, which the diff lists first."""
    from datetime import date

    from mailstate.reconciler.plan.plan import Plan
    from mailstate.reconciler.plan.render import render

    want = Desired(as_of=date(2026, 11, 23))
    from mailstate.model.i18n import use
    from mailstate.model.reason import reason, source
    from mailstate.model.regulation import preset

    attrs = {"name": "Đỗ Văn Nam", "locked": True, "lock_reason": "left on 2026-08-01"}
    why = [source("person", "units/vp.toml:28", id="namdv", name="Đỗ Văn Nam"),
           reason("lifecycle.lock_after_leaving.locked", preset("mic-1862"), left_on="2026-08-01")]
    want.add(Record("person", "namdv", attrs, "ldap", "vp"), why)
    live = {("person", "namdv"): Record("person", "namdv", {**attrs, "locked": False, "lock_reason": None},
                                        "ldap", "vp")}
    changes, unlisted = diff(want, live)
    plan = Plan.build(changes, unlisted, as_of=date(2026, 11, 23), live=live, organization="x.vn")
    with use("en"):
        text = render(plan, "markdown")
    callout = text.split("### ⚠", 1)[1].split("###", 1)[0]
    assert "namdv" in callout
    assert "left on 2026-08-01 (Article 5 clause 3, Quyết định 1862/QĐ-BTTTT)" in callout
    assert "units/vp.toml:28" not in callout
