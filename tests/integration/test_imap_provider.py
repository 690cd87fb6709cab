"""The IMAP provider against the lab's Dovecot, with real logins of the people concerned (no mocks)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

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
from mailstate.errors import ProviderError
from mailstate.lab import Lab
from mailstate.lab.testing import imap_login, make_person
from mailstate.model.change import Action, Change
from mailstate.model.rights import RIGHTS
from mailstate.providers.imap.provider import ImapProvider, desired_owners_of
from mailstate.reconciler.plan.diff import diff

TODAY = date(2026, 11, 23)
FOLDER = "Văn bản đến/2026"
MESSAGE = b"From: a@lab.example.gov.vn\r\nSubject: test\r\n\r\nnoi dung\r\n"


class Agency:
    """A small agency in the lab: unit qlcn (head bangnv, delegate thuytt), people with own passwords."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.passwords: dict[str, str] = {}
        st = State(root=Path("."), organization=Organization(name="Lab", domain=lab.info["domain"]))
        st.units["qlcn"] = Unit(
            id="qlcn", name="Phòng Quản lý Công nghiệp", head="bangnv", delegates=["thuytt"]
        )
        for pid, name in (
            ("bangnv", "Nguyễn Văn Bằng"),
            ("thuytt", "Trần Thị Thủy"),
            ("tuanlm", "Lê Minh Tuấn"),
            ("hoapt", "Phạm Thị Hoa"),
            ("thanhtra", "Thanh Tra Sở"),
            ("anvq", "Võ Quốc An"),
        ):
            st.people[pid] = Person(id=pid, name=name, unit="qlcn")
        st.groups["toanso"] = Group(id="toanso", name="Toàn sở", members=["tuanlm", "group:lanhdao"])
        st.groups["lanhdao"] = Group(id="lanhdao", name="Lãnh đạo", members=["hoapt"])
        st.shared_folders.append(
            SharedFolder(
                mailbox="unit:qlcn",
                path=FOLDER,
                purpose="Văn bản đến của phòng",
                read=["group:toanso"],
                write=["anvq"],
            )
        )
        st.access_grants.append(
            AccessGrant(
                mailbox="bangnv",
                to="thanhtra",
                rights="read",
                until=date(2026, 12, 31),
                reason="Quyết định 12/QĐ-TTr",
            )
        )
        self.state = st
        for pid, person in st.people.items():
            self.passwords[pid] = "Pw-" + secrets.token_urlsafe(12)
            make_person(lab, pid, self.passwords[pid], cn=person.name, unit=person.unit, quota=2 * 1024**3)
        self.passwords["qlcn"] = "Pw-" + secrets.token_urlsafe(12)
        make_person(
            lab, "qlcn", self.passwords["qlcn"], cn="Phòng QLCN", container="mailboxes", quota=10 * 1024**3
        )

    def login(self, user: str) -> IMAPClient:
        return imap_login(self.lab, user, self.passwords[user])


def converge(provider: ImapProvider, state: State, as_of: date = TODAY) -> list[Change]:
    """Plan the IMAP kinds with the central diff and apply them (folders first, then rights)."""
    snap = provider.read()
    changes, _unlisted = diff(project_imap(state, as_of), snap.records, unmanaged=snap.unmanaged)
    changes = sorted(changes, key=lambda c: (c.action.phase, c.kind != "shared_folder", c.key))
    for change in changes:
        provider.apply(change)
    return changes


@pytest.fixture
def agency(lab_env: dict[str, str], clean_lab: Lab) -> Agency:
    return Agency(clean_lab)


@pytest.fixture(params=["doveadm-bulk", "imap-only"])
def provider(agency: Agency, request: pytest.FixtureRequest) -> Iterator[ImapProvider]:
    """The provider both ways: discovery through doveadm over SSH, and every mailbox over IMAP."""
    p = ImapProvider.from_state(agency.state, **({} if request.param == "doveadm-bulk" else {"bulk": False}))
    assert (p.bulk is not None) == (request.param == "doveadm-bulk")
    try:
        yield p
    finally:
        p.close()


def test_converges_and_second_read_plans_nothing(agency: Agency, provider: ImapProvider) -> None:
    """Applying the plan creates the folder and the rights; planning again right after finds nothing."""
    changes = converge(provider, agency.state)
    assert any(c.kind == "shared_folder" and c.action is Action.CREATE for c in changes)
    assert any(c.kind == "acl" and c.key == "unit:qlcn/INBOX#thuytt" for c in changes)
    assert converge(provider, agency.state) == []


def test_delegate_uses_unit_mailbox_with_own_password(agency: Agency, provider: ImapProvider) -> None:
    """A delegate logs in as themselves and opens, reads and files into shared/qlcn/INBOX."""
    owner = agency.login("qlcn")
    owner.append("INBOX", MESSAGE)
    owner.logout()
    converge(provider, agency.state)
    c = agency.login("thuytt")
    try:
        info = c.select_folder("shared/qlcn/INBOX")
        assert info[b"EXISTS"] == 1
        assert c.append("shared/qlcn/INBOX", MESSAGE)
        c.create_folder("shared/qlcn/Đã xử lý")  # a delegate may make folders ("k")
        with pytest.raises(IMAPClientError):
            c.setacl("shared/qlcn/INBOX", "anvq", "lr")  # but not hand out rights ("a")
    finally:
        c.logout()


def test_shared_folder_reader_writer_and_outsider(agency: Agency, provider: ImapProvider) -> None:
    """A reader (through nested groups) reads but cannot APPEND; a writer can; someone unlisted is refused."""
    converge(provider, agency.state)
    path = f"shared/qlcn/{FOLDER}"
    writer = agency.login("anvq")
    try:
        assert writer.append(path, MESSAGE)
    finally:
        writer.logout()
    reader = agency.login("hoapt")  # member of lanhdao, nested in toanso
    try:
        assert reader.select_folder(path, readonly=True)[b"EXISTS"] == 1
        assert reader.fetch([1], ["BODY.PEEK[]"])
        with pytest.raises(IMAPClientError):
            reader.append(path, MESSAGE)
    finally:
        reader.logout()
    outsider = agency.login("thanhtra")
    try:
        with pytest.raises(IMAPClientError):
            outsider.select_folder(path)
    finally:
        outsider.logout()


def test_vietnamese_folder_and_purpose_round_trip(agency: Agency, provider: ImapProvider) -> None:
    """The Vietnamese path comes back NFC from LIST, and the purpose is read back from METADATA."""
    converge(provider, agency.state)
    c = agency.login("qlcn")
    try:
        names = [name for _f, _d, name in c.list_folders()]
    finally:
        c.logout()
    assert FOLDER in names
    rec = provider.read().records[("shared_folder", f"unit:qlcn/{FOLDER}")]
    if provider.metadata_supported:
        assert rec.attrs["purpose"] == "Văn bản đến của phòng"
    else:
        pytest.skip("the lab's Dovecot has no METADATA: purpose is not stored")


def test_head_change_hands_over_mailbox(agency: Agency, provider: ImapProvider) -> None:
    """After a head change the old head is refused, the new head has full rights, every message stays."""
    owner = agency.login("qlcn")
    for _ in range(3):
        owner.append("INBOX", MESSAGE)
    owner.logout()
    converge(provider, agency.state)
    delegate = agency.login("thuytt")
    try:
        delegate.create_folder("shared/qlcn/Đã xử lý")  # Dovecot copies the INBOX ACL into the new folder
        delegate.append("shared/qlcn/Đã xử lý", MESSAGE)
    finally:
        delegate.logout()
    agency.state.units["qlcn"] = Unit(
        id="qlcn", name="Phòng Quản lý Công nghiệp", head="tuanlm", delegates=["thuytt"]
    )
    changes = converge(provider, agency.state)
    assert {(c.action, c.key) for c in changes} >= {
        (Action.REVOKE, "unit:qlcn/INBOX#bangnv"),
        (Action.GRANT, "unit:qlcn/INBOX#tuanlm"),
    }
    old = agency.login("bangnv")
    try:
        for folder in ("shared/qlcn/INBOX", "shared/qlcn/Đã xử lý"):
            with pytest.raises(IMAPClientError):
                old.select_folder(folder)
    finally:
        old.logout()
    new = agency.login("tuanlm")
    try:
        assert new.select_folder("shared/qlcn/INBOX")[b"EXISTS"] == 3
        assert new.select_folder("shared/qlcn/Đã xử lý")[b"EXISTS"] == 1
        rights = new.getacl("shared/qlcn/INBOX")
        assert (b"tuanlm", RIGHTS["full"]) in [
            (w, "".join(sorted(set(r.decode()) - {"c", "d"}))) for w, r in rights
        ]
    finally:
        new.logout()


def test_grant_before_until_and_revoked_after(agency: Agency, provider: ImapProvider) -> None:
    """The inspector reads bangnv's mailbox before `until`; at a later as_of it is revoked with its reason."""
    converge(provider, agency.state)
    c = agency.login("thanhtra")
    try:
        assert c.select_folder("shared/bangnv/INBOX", readonly=True) is not None
    finally:
        c.logout()
    later = date(2027, 1, 1)
    snap = provider.read()
    changes, _ = diff(project_imap(agency.state, later), snap.records, unmanaged=snap.unmanaged)
    revoke = [ch for ch in changes if ch.key == "bangnv/INBOX#thanhtra"]
    assert revoke and revoke[0].action is Action.REVOKE
    assert any(r.rule == "grant.ended" and dict(r.params)["until"] == "2026-12-31" for r in revoke[0].reasons)
    converge(provider, agency.state, later)
    c = agency.login("thanhtra")
    try:
        with pytest.raises(IMAPClientError):
            c.select_folder("shared/bangnv/INBOX")
    finally:
        c.logout()


def test_rights_set_by_hand_are_revoked_and_unlisted_folder_reported(
    agency: Agency, provider: ImapProvider
) -> None:
    """A right given outside the TOML is revoked; an unlisted shared folder is reported, not deleted."""
    converge(provider, agency.state)
    owner = agency.login("qlcn")
    try:
        owner.create_folder("Riêng")
        owner.setacl("Riêng", "anvq", "lr")
        owner.setacl("INBOX", "hoapt", "lr")
    finally:
        owner.logout()
    snap = provider.read()
    changes, unlisted = diff(project_imap(agency.state, TODAY), snap.records, unmanaged=snap.unmanaged)
    assert {(c.action, c.key) for c in changes} == {
        (Action.REVOKE, "unit:qlcn/Riêng#anvq"),
        (Action.REVOKE, "unit:qlcn/INBOX#hoapt"),
    }
    assert "unit:qlcn/Riêng" in [r.key for r in unlisted]
    converge(provider, agency.state)
    owner = agency.login("qlcn")
    try:
        assert owner.folder_exists("Riêng")
    finally:
        owner.logout()
    with pytest.raises(ProviderError, match="never destroyed"):
        provider.apply(Change("x", Action.DELETE, "shared_folder", "unit:qlcn/Riêng", "imap", None, None))


def test_quota_read_back_through_getquotaroot(agency: Agency, provider: ImapProvider) -> None:
    """The limit the directory sets (mailstateQuota) shows as facts["quota"] through GETQUOTAROOT."""
    facts = provider.read().facts["quota"]
    assert facts["bangnv"] == 2 * 1024**3
    assert facts["qlcn"] == 10 * 1024**3


def test_quota_facts_can_be_left_out(agency: Agency) -> None:
    """With quota_facts=False no quota is read (the doveadm quota pass is most of a no-op bulk read)."""
    p = ImapProvider.from_state(agency.state, quota_facts=False)
    try:
        assert p.read().facts["quota"] == {}
    finally:
        p.close()


def test_wrong_master_password_fails_the_read(agency: Agency) -> None:
    """A read that cannot log in raises ProviderError without the password in the message."""
    p = ImapProvider.from_state(agency.state)
    p._password = "wrong-" + secrets.token_hex(4)
    with pytest.raises(ProviderError) as err:
        p.read()
    assert p._password not in str(err.value)


def test_untrusted_certificate_is_refused(agency: Agency) -> None:
    """TLS is verified: with a CA that did not sign the server's certificate the login is refused."""
    p = ImapProvider.from_state(agency.state)
    p.settings = p.settings.model_copy(update={"ca_file": None})  # system CAs only: the lab CA is unknown
    with pytest.raises(ProviderError, match="cannot log in"):
        p.connect("bangnv")


def test_person_logs_in_only_with_own_password(agency: Agency) -> None:
    """Sanity of the lab: a wrong password is refused (the delegation tests rely on real logins)."""
    with pytest.raises(LoginError):
        imap_login(agency.lab, "thuytt", "not-" + agency.passwords["thuytt"])


def test_apply_is_idempotent(agency: Agency, provider: ImapProvider) -> None:
    """Applying the same grant, revoke and folder creation twice succeeds and leaves the same state."""
    converge(provider, agency.state)
    grant = Change("g", Action.GRANT, "acl", "unit:qlcn/INBOX#hoapt", "imap", None, {"rights": "lr"})
    revoke = Change("r", Action.REVOKE, "acl", "unit:qlcn/INBOX#hoapt", "imap", {"rights": "lr"}, None)
    folder = Change(
        "f",
        Action.CREATE,
        "shared_folder",
        f"unit:qlcn/{FOLDER}",
        "imap",
        None,
        {"purpose": "Văn bản đến của phòng"},
    )
    for change in (grant, grant, revoke, revoke, folder, folder):
        provider.apply(change)
    assert converge(provider, agency.state) == []


def test_bad_url_names_where_it_came_from(agency: Agency, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unusable URL is a clear error naming its source, not a traceback."""
    monkeypatch.setenv("MAILSTATE_IMAP_URL", "http://127.0.0.1:1")
    with pytest.raises(ProviderError, match="MAILSTATE_IMAP_URL: imap: url"):
        ImapProvider.from_state(agency.state)


def test_rights_the_shared_dict_misses_are_read_both_ways(agency: Agency, provider: ImapProvider) -> None:
    """On a person's mailbox that the TOML names for no folder, grant or unit (so the bulk path reads it only
    if discovered), a negative right (``-user``) and a right without lookup, set by hand, are read on the
    doveadm bulk path as on the IMAP-only path (Dovecot's shared dict records neither)."""
    login = sorted(set(agency.state.people) - desired_owners_of(agency.state))[0]
    owner = agency.login(login)
    try:
        owner.create_folder("Riêng")
        owner.setacl("INBOX", "-anvq", "r")
        owner.setacl("Riêng", "hoapt", "r")
    finally:
        owner.logout()
    keys = {r.key for r in provider.read().records.values() if r.kind == "acl" and login in r.key}
    assert any(k.endswith("INBOX#-anvq") for k in keys), keys
    assert any(k.endswith("Riêng#hoapt") for k in keys), keys


def test_rights_on_a_folder_by_its_name_need_no_folder_list(
    agency: Agency, provider: ImapProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grant or a revoke on a folder the server knows by the name given is one SETACL / DELETEACL — no LIST
    of the mailbox's folders (a first apply grants thousands); a folder it does not know is still looked up
    (a revoke there is done already, a grant refused)."""
    converge(provider, agency.state)
    lists: list[str] = []
    real = IMAPClient.list_folders

    def listed(self: IMAPClient, *args: object, **kwargs: object) -> object:
        lists.append("LIST")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(IMAPClient, "list_folders", listed)
    key = f"unit:qlcn/{FOLDER}#hoapt"
    grant = Change("g", Action.GRANT, "acl", key, "imap", None, {"rights": "lrs"})
    revoke = Change("r", Action.REVOKE, "acl", key, "imap", {"rights": "lrs"}, None)
    provider.apply(grant)
    reader = agency.login("hoapt")
    try:
        assert reader.select_folder(f"shared/qlcn/{FOLDER}", readonly=True)
    finally:
        reader.logout()
    provider.apply(revoke)
    assert lists == []
    gone = "unit:qlcn/Không có/2026#hoapt"
    provider.apply(Change("r2", Action.REVOKE, "acl", gone, "imap", {"rights": "lr"}, None))
    looked_up = len(lists)
    assert looked_up > 0
    with pytest.raises(ProviderError, match="SETACL"):
        provider.apply(Change("g2", Action.GRANT, "acl", gone, "imap", None, {"rights": "lr"}))
    assert len(lists) > looked_up
    converge(provider, agency.state)  # hoapt's right again (a reader through a group)
    assert converge(provider, agency.state) == []
