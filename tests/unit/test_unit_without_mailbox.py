"""A unit without a unit mailbox (``mailbox = false``, as import writes a unit iRedMail has no mailbox
for) and an account disabled before mailstate (``suspended = { reason, disabled = true }``): what the
projection makes of them, what import writes for them, and the iRedMail read that must equal it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from mailstate.adopt.importer import DISABLED_BEFORE, _lock_fields
from mailstate.desired_state.loader import load_state
from mailstate.desired_state.naming import derive_addresses
from mailstate.desired_state.projection import project
from mailstate.desired_state.schema import Group, Organization, Person, State, Unit
from mailstate.errors import ValidationError
from mailstate.model.records import Record
from mailstate.providers.iredmail import parse as p

pytestmark = pytest.mark.usefixtures("english")  # the assertions quote English messages

D = "x.gov.vn"
DAY = date(2026, 11, 23)


def _state(*, mailbox: bool = True, disabled: bool = True) -> State:
    state = State(root=Path("."), organization=Organization(name="Sở X", domain=D))
    state.units["hc"] = Unit(id="hc", name="hc", mailbox=mailbox)
    state.people["an"] = Person(id="an", name="Nguyễn Văn An", unit="hc", address=f"an@{D}")
    state.people["cuong"] = Person(id="cuong", name="Lê Cường", unit="hc", address=f"cuong@{D}",
                                   suspended={"reason": DISABLED_BEFORE, "disabled": disabled})
    state.groups["phong-hc"] = Group(id="phong-hc", name="Phòng HC", address=f"phong-hc@{D}",
                                     members=["an", "cuong"])
    return state


def test_unit_without_mailbox_gets_no_mailbox_nor_address() -> None:
    state = _state(mailbox=False)
    assert "hc" not in derive_addresses(state).units
    desired = project(state, DAY, folders=False)
    assert ("unit_mailbox", "hc") not in desired.records
    assert desired.records[("unit", "hc")].attrs["address"] is None
    with_mailbox = project(_state(mailbox=True), DAY, folders=False)
    assert ("unit_mailbox", "hc") in with_mailbox.records  # the default: every unit has its mailbox


def test_mailbox_false_never_removes_a_live_unit_mailbox() -> None:
    live = {("unit_mailbox", "hc"): Record("unit_mailbox", "hc", {"address": f"hc@{D}"}, provider="ldap")}
    desired = project(_state(mailbox=False), DAY, folders=False, live=live)
    assert ("unit_mailbox", "hc") in desired.records and ("unit_mailbox", "hc") not in desired.absent


def test_disabled_before_is_locked_without_reason_and_gets_no_list_mail() -> None:
    desired = project(_state(), DAY, folders=False)
    cuong = desired.records[("person", "cuong")].attrs
    assert (cuong["locked"], cuong["lock_reason"], cuong["refuse_mail"]) == (True, None, None)
    assert desired.records[("group", "phong-hc")].attrs["delivers_to"] == (f"an@{D}",)
    plain = project(_state(disabled=False), DAY, folders=False)  # a suspension of mailstate's: mail delivered
    assert plain.records[("person", "cuong")].attrs["lock_reason"]
    assert plain.records[("group", "phong-hc")].attrs["delivers_to"] == (f"an@{D}", f"cuong@{D}")


def test_import_writes_a_hand_disabled_account_as_disabled_before() -> None:
    assert _lock_fields(None, refused=True) == {"suspended": {"reason": DISABLED_BEFORE, "disabled": True}}
    assert _lock_fields(None, refused=False) == {"suspended": "imported: locked in the directory"}


def test_iredmail_read_equals_the_projection() -> None:
    """The directory read of the same organisation (hc only as departmentNumber, cuong disabled by hand)
    gives the desired records' compared attributes: the import of it plans to nothing."""
    users = "ou=Users,domainName=x.gov.vn,o=domains,dc=x"

    def user(uid: str, name: str, status: str) -> dict[str, list[str]]:
        return p.normalize({"objectClass": ["mailUser"], "uid": uid, "mail": f"{uid}@{D}", "cn": name,
                            "departmentNumber": "hc", "accountStatus": status,
                            "enabledService": list(p.USER_SERVICES), "memberOfGroup": f"phong-hc@{D}"})

    found = p.DomainEntries(
        users={f"mail=an@{D},{users}": user("an", "Nguyễn Văn An", "active"),
               f"mail=cuong@{D},{users}": user("cuong", "Lê Cường", "disabled")},
        lists={f"mail=phong-hc@{D}": p.normalize({"mail": f"phong-hc@{D}", "cn": "Phòng HC"})})
    live = {(r.kind, r.key): r for r in p.parse_domain(found).records}
    desired = project(_state(mailbox=False), DAY, folders=False)
    for ref in [("unit", "hc"), ("group", "phong-hc")]:
        public = {k: v for k, v in live[ref].attrs.items() if not k.startswith("_")}
        assert public == desired.records[ref].attrs
    for field in ("locked", "lock_reason", "refuse_mail"):
        assert live[("person", "cuong")].attrs[field] == desired.records[("person", "cuong")].attrs[field]
    assert live[("unit", "hc")].attrs["_implicit"] and ("unit_mailbox", "hc") not in live


@pytest.mark.parametrize(("value", "label", "says"), [
    ('{ reason = "x", disabld = true }', "person.suspended.disabld", "unknown field 'disabld'"),
    ('{ reason = "a\\u001bb" }', "person.suspended.reason", "U+001B"),
    ('"a\\u001bb"', "person.suspended", "U+001B"),
    ("{ disabled = true }", "person.suspended.reason", "missing required field 'reason'"),
])
def test_suspended_errors_name_the_field_at_its_line(
    tmp_path: Path, value: str, label: str, says: str
) -> None:
    """Either form of ``suspended`` is refused at its line, the field named without pydantic's branch tag."""
    top = f'[organization]\nname = "Sở X"\ndomain = "{D}"\n'
    (tmp_path / "mailstate.toml").write_text(top, encoding="utf-8")
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "hc.toml").write_text(
        f'[unit]\nid = "hc"\nname = "HC"\n\n[[person]]\nid = "an"\nname = "An"\nunit = "hc"\n'
        f"suspended = {value}\n",
        encoding="utf-8")
    with pytest.raises(ValidationError) as exc:
        load_state(tmp_path)
    problems = [(pr.file, pr.line, pr.field, pr.message) for pr in exc.value.problems]
    assert any(f == "units/hc.toml" and line == 9 and fld == label and says in msg
               for f, line, fld, msg in problems), problems
    assert not any("<t" in fld for _, _, fld, _ in problems), problems
