"""Acceptance checks of the IMAP projection (pure): what a reviewer reads in a plan about ending grants."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from mailstate.desired_state.projection_imap import project_imap
from mailstate.desired_state.schema import (
    AccessGrant,
    Group,
    Organization,
    Person,
    SharedFolder,
    State,
    Unit,
)
from mailstate.model.rights import RIGHTS


def _state() -> State:
    st = State(root=Path("."), organization=Organization(name="Sở NN", domain="snn.quangtri.gov.vn"))
    st.units["kh"] = Unit(id="kh", name="Phòng Kế hoạch", head="ducle", delegates=["namnh"])
    for pid in ("ducle", "namnh"):
        st.people[pid] = Person(id=pid, name=f"Người {pid}", unit="kh")
    st.access_grants.append(
        AccessGrant(
            mailbox="unit:kh", to="namnh", rights="full", until=date(2026, 12, 15), reason="Quyền tạm thời"
        )
    )
    return st


def test_ended_grant_is_cited_when_the_login_keeps_fewer_rights() -> None:
    """A delegate whose `full` grant ended is cut back to delegate rights; the plan cites the ended grant."""
    d = project_imap(_state(), date(2026, 12, 20))
    ref = ("acl", "unit:kh/INBOX#namnh")
    assert d.records[ref].attrs["rights"] == RIGHTS["delegate"]
    assert any(r.rule == "grant.ended" for r in d.reasons[ref])
    assert any("2026-12-15" in r and "Quyền tạm thời" in r for r in _en(d.reasons[ref]))


def test_running_grant_is_not_cited_as_ended() -> None:
    """While the grant runs, the delegate has full rights and no reason speaks of an ended grant."""
    d = project_imap(_state(), date(2026, 12, 15))
    ref = ("acl", "unit:kh/INBOX#namnh")
    assert d.records[ref].attrs["rights"] == RIGHTS["full"]
    assert not any("ended" in r for r in _en(d.reasons[ref]))


def test_ended_grant_inside_other_rights_is_not_cited() -> None:
    """An ended read grant to someone who keeps delegate rights (a superset) adds no reason."""
    st = _state()
    st.access_grants[0] = AccessGrant(
        mailbox="unit:kh", to="namnh", rights="read", until=date(2026, 12, 15), reason="Đọc tạm"
    )
    d = project_imap(st, date(2026, 12, 20))
    assert not any("ended" in r for r in _en(d.reasons[("acl", "unit:kh/INBOX#namnh")]))


def test_unit_mailbox_in_a_read_list_reaches_its_head_and_delegates() -> None:
    """`unit:kh` as a reader (directly or in a group) gives read rights to the people using that mailbox."""
    st = _state()
    st.units["vp"] = Unit(id="vp", name="Văn phòng", head="hungnv")
    st.people["hungnv"] = Person(id="hungnv", name="Nguyễn Văn Hùng", unit="vp")
    st.groups["nhan"] = Group(id="nhan", name="Nơi nhận", members=["unit:kh"])
    st.shared_folders.append(
        SharedFolder(mailbox="unit:vp", path="Hồ sơ/Quý IV", purpose="Lưu", read=["group:nhan"], write=[])
    )
    d = project_imap(st, date(2026, 11, 23))
    acl = {k: r.attrs["rights"] for (kind, k), r in d.records.items() if kind == "acl"}
    assert acl["unit:vp/Hồ sơ/Quý IV#kh"] == "lr"
    assert acl["unit:vp/Hồ sơ/Quý IV#ducle"] == "lr"
    assert acl["unit:vp/Hồ sơ/Quý IV#namnh"] == "lr"
    assert any("through unit unit:kh" in r for r in _en(d.reasons[("acl", "unit:vp/Hồ sơ/Quý IV#namnh")]))


def test_folder_path_is_quoted_verbatim_in_reasons() -> None:
    """A path with a backslash, quotes and an apostrophe appears in the plan exactly as in the TOML."""
    st = _state()
    path = "Hồ sơ/\"Trích dẫn\" \\ v1.2/Bà Hai's"
    st.shared_folders.append(SharedFolder(mailbox="unit:kh", path=path, purpose="Lưu", read=["namnh"]))
    d = project_imap(st, date(2026, 11, 23))
    folder_reasons = d.reasons[("shared_folder", f"unit:kh/{path}")]
    assert any(f"shared folder '{path}' of unit:kh" in r for r in _en(folder_reasons))
    assert any(f"shared folder '{path}'" in r for r in _en(d.reasons[("acl", f"unit:kh/{path}#namnh")]))


def test_revoke_reason_names_the_head_handover_and_the_removed_delegate() -> None:
    """Revoking the old head's or a removed delegate's rights cites the handover, not the general rule."""
    from mailstate.desired_state.projection import Desired
    from mailstate.model.records import Record
    from mailstate.reconciler.plan.diff import diff

    unit_live = Record("unit", "tt", {"head": "hoatt", "delegates": ("binhvt", "yenlt")}, "ldap", "tt")
    unit_new = Record("unit", "tt", {"head": "binhvt", "delegates": ()}, "ldap", "tt")
    live = {("unit", "tt"): unit_live}
    for login in ("hoatt", "yenlt", "stranger"):
        rec = Record("acl", f"unit:tt/INBOX#{login}", {"rights": "lr", "why": None}, "imap", "tt")
        live[("acl", rec.key)] = rec
    want = Desired(as_of=date(2026, 11, 23))
    want.add(unit_new, ["units/tt.toml:1: unit tt"])
    changes, _ = diff(want, live)
    why = {c.key: " ".join(_en(c.reasons)) for c in changes if c.kind == "acl"}
    assert "hoatt no longer heads unit tt (head now: binhvt)" in why["unit:tt/INBOX#hoatt"]
    assert "yenlt is no longer a delegate of unit tt" in why["unit:tt/INBOX#yenlt"]
    assert "rights not given in the TOML are removed" in why["unit:tt/INBOX#stranger"]


def test_folder_key_treats_a_first_level_inbox_in_any_case_as_inbox() -> None:
    """`inbox/Con` is the server's `INBOX/Con` (INBOX is case-insensitive); other levels keep their case."""
    from mailstate.model.records import folder_key

    assert folder_key("lantt", "inbox/Con") == "lantt/INBOX/Con"
    assert folder_key("lantt", "Inbox") == "lantt/INBOX"
    assert folder_key("lantt", "Hồ sơ/inbox") == "lantt/Hồ sơ/inbox"
    assert folder_key("lantt", "Inboxes/x") == "lantt/Inboxes/x"


@pytest.mark.usefixtures("english")  # asserts validation's English texts
def test_reserved_acl_identifiers_are_refused_as_ids(tmp_path: Path) -> None:
    """A person or unit id that IMAP ACLs read as everyone (anyone, authenticated) or the owner is refused."""
    import pytest

    from mailstate.desired_state.loader import load_state
    from mailstate.errors import ValidationError

    (tmp_path / "units").mkdir()
    org = '[organization]\nname = "Sở NN"\ndomain = "snn.quangtri.gov.vn"\n'
    (tmp_path / "mailstate.toml").write_text(org)
    (tmp_path / "units" / "a.toml").write_text(
        '[unit]\nid = "authenticated"\nname = "Phòng A"\ndelegates = ["anyone"]\n\n'
        '[[person]]\nid = "anyone"\nname = "Nguyễn Văn Ai"\n\n[[person]]\nid = "owner"\nname = "Lê Văn Chủ"\n'
    )
    with pytest.raises(ValidationError) as info:
        load_state(tmp_path)
    got = {(p.file, p.line, p.field) for p in info.value.problems if "is reserved" in p.message}
    f = "units/a.toml"
    assert got == {(f, 2, "unit.id"), (f, 7, "person.id"), (f, 11, "person.id")}


def _en(reasons):  # type: ignore[no-untyped-def]
    """The reasons' texts in English."""
    from mailstate.model.i18n import use

    with use("en"):
        return [r.text() for r in reasons]
