"""Pure parts of the IMAP provider and of the IMAP projection: rights, keys, groups, parsing, project_imap."""

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
from mailstate.errors import ProviderError
from mailstate.model.records import parse_acl_key, parse_folder_key
from mailstate.model.rights import RIGHTS, expand_refs, normalise_rights, rights_letters
from mailstate.providers.doveadm.parse import (
    doveadm_rights_to_letters,
    parse_doveadm_acl,
    parse_doveadm_mailbox_list,
    parse_doveadm_tab,
)
from mailstate.providers.imap.parse import live_acl_records, mailbox_acl_records, parse_metadata_value
from mailstate.providers.imap.provider import parse_url

# Recorded from Dovecot 2.3.19.1 (doveadm -f tab …) in the lab.
ACL_GET_A = (
    "Username\tID\tGlobal\tRights\n"
    "qlcn\tuser=bangnv\t\tadmin create delete expunge insert lookup post read write "
    "write-deleted write-seen\n"
    "qlcn\tuser=thuytt\t\tcreate expunge insert lookup post read write write-deleted write-seen\n"
)
ACL_GET_U = "ID\tGlobal\tRights\nuser=tuan\t\tlookup read\n"
MAILBOX_LIST_A = (
    "Username\tmailbox\n"
    "bangnv\tshared/qlcn/Văn bản đến/2026\n"
    "bangnv\tINBOX\n"
    "qlcn\tSent\n"
    "qlcn\tVăn bản đến/2026\n"
    "qlcn\tINBOX\n"
)


def test_rights_mapping_letters() -> None:
    """Each named right maps to the documented RFC 4314 letters, sorted."""
    assert RIGHTS["read"] == "lr"
    assert RIGHTS["write"] == "eilprstw"
    assert RIGHTS["delegate"] == "eiklprstw"
    assert RIGHTS["full"] == "aeiklprstwx"
    assert rights_letters("read", "write") == "eilprstw"


def test_delegate_cannot_administer_or_delete_folders() -> None:
    """A delegate may use the unit mailbox but neither change its ACL (a) nor delete folders (x)."""
    assert "a" not in RIGHTS["delegate"] and "x" not in RIGHTS["delegate"]
    assert set(RIGHTS["read"]) < set(RIGHTS["write"]) < set(RIGHTS["full"])


def test_rights_letters_rejects_unknown() -> None:
    """A letter outside RFC 4314 is refused rather than sent to the server."""
    with pytest.raises(ValueError, match="not RFC 4314"):
        rights_letters("lrz")


def test_normalise_drops_obsolete_aliases() -> None:
    """Dovecot's answer 'keilprwtscd' (with RFC 2086 c/d aliases) normalises to the letters that were set."""
    assert normalise_rights("keilprwtscd") == "eiklprstw"
    assert normalise_rights("lr") == "lr"


def test_doveadm_right_names() -> None:
    """doveadm's right names map to letters; an unknown name raises."""
    assert doveadm_rights_to_letters("lookup read write-seen") == "lrs"
    assert (
        doveadm_rights_to_letters(
            "admin create delete expunge insert lookup post read write write-deleted write-seen"
        )
        == RIGHTS["full"]
    )
    with pytest.raises(ValueError):
        doveadm_rights_to_letters("lookup fly")


def test_acl_key_round_trip_with_slashes_and_unicode() -> None:
    """An acl key splits back into mailbox ref, a folder with '/' and Vietnamese, and the identifier."""
    k = parse_acl_key("unit:qlcn/Văn bản đến/2026#thuytt")
    assert (k.ref, k.folder, k.identifier, k.login) == ("unit:qlcn", "Văn bản đến/2026", "thuytt", "qlcn")
    assert parse_folder_key("bangnv/INBOX") == ("bangnv", "INBOX")
    with pytest.raises(ValueError):
        parse_acl_key("unit:qlcn/INBOX")
    with pytest.raises(ValueError):
        parse_folder_key("bangnv")


def test_group_expansion_is_recursive_and_cycle_safe() -> None:
    """Groups expand to people and unit mailboxes through nested groups, following a cycle once."""
    groups = {
        "a": Group(id="a", name="A", members=["bangnv", "group:b"]),
        "b": Group(id="b", name="B", members=["unit:qlcn", "group:a", "thuytt"]),
    }
    assert expand_refs(["group:a"], groups) == {"bangnv", "qlcn", "thuytt"}
    assert expand_refs(["tuan", "group:missing"], groups) == {"tuan"}


def test_live_acl_records_skip_owner() -> None:
    """GETACL entries become acl records, without the owner's own entry and with c/d dropped."""
    recs = live_acl_records(
        "unit:qlcn",
        "qlcn",
        "INBOX",
        [(b"bangnv", b"akxeilprwtscd"), (b"qlcn", b"lrwstipekxacd"), (b"owner", b"lr"),
         (b"#anyone", b"lr"), (b"-#bangnv", b"w")],  # global entries: the administrator's, not ours
        "qlcn",
    )
    assert [(r.key, r.attrs["rights"]) for r in recs] == [("unit:qlcn/INBOX#bangnv", "aeiklprstwx")]


def test_parse_doveadm_tab_and_acl() -> None:
    """Recorded `doveadm -f tab acl get -A` output parses into acl records keyed by mailbox ref."""
    rows = parse_doveadm_tab(ACL_GET_A)
    assert rows[0]["username"] == "qlcn" and rows[0]["id"] == "user=bangnv"
    recs = parse_doveadm_acl(ACL_GET_A, {"qlcn": ("unit:qlcn", "qlcn")})
    assert {r.key: r.attrs["rights"] for r in recs} == {
        "unit:qlcn/INBOX#bangnv": "aeiklprstwx",
        "unit:qlcn/INBOX#thuytt": "eiklprstw",
    }
    one = parse_doveadm_acl(
        ACL_GET_U, {"qlcn": ("unit:qlcn", "qlcn")}, folder="Văn bản đến/2026", user="qlcn"
    )
    assert [(r.key, r.attrs["rights"]) for r in one] == [("unit:qlcn/Văn bản đến/2026#tuan", "lr")]


def test_parse_doveadm_mailbox_list() -> None:
    """Recorded `doveadm -f tab mailbox list -A` groups folders by user, Vietnamese names intact."""
    got = parse_doveadm_mailbox_list(MAILBOX_LIST_A)
    assert got["qlcn"] == ["Sent", "Văn bản đến/2026", "INBOX"]
    assert "shared/qlcn/Văn bản đến/2026" in got["bangnv"]


def test_parse_metadata_literal_and_nil() -> None:
    """A METADATA answer with a UTF-8 literal gives the text (NFC); NIL gives None."""
    literal = [
        (b'"V&AQM-n b&HqM-n &AREevw-n/2026" (/shared/comment {34}', 'Văn bản đến của phòng "x"'.encode()),
        b")",
    ]
    assert parse_metadata_value(literal) == 'Văn bản đến của phòng "x"'
    assert parse_metadata_value([b"Sent (/shared/comment NIL)"]) is None


def test_parse_url_tls_by_default() -> None:
    """imaps is implicit TLS, imap is STARTTLS unless plain is explicitly allowed, other schemes refused."""
    assert parse_url("imaps://127.0.0.1:10993").tls
    assert parse_url("imap://h").starttls and not parse_url("imap://h", allow_plain=True).starttls
    with pytest.raises(ProviderError):
        parse_url("http://h")


def _state() -> State:
    st = State(root=Path("."), organization=Organization(name="Sở", domain="sct.binhdinh.gov.vn"))
    st.units["qlcn"] = Unit(id="qlcn", name="Phòng QLCN", head="bangnv", delegates=["thuytt"])
    for pid in ("bangnv", "thuytt", "tuan", "thanhtra"):
        st.people[pid] = Person(id=pid, name=f"Người {pid}", unit="qlcn")
    st.groups["toanso"] = Group(id="toanso", name="Toàn sở", members=["tuan", "group:lanhdao"])
    st.groups["lanhdao"] = Group(id="lanhdao", name="Lãnh đạo", members=["bangnv"])
    st.shared_folders.append(
        SharedFolder(
            mailbox="unit:qlcn",
            path="Văn bản đến/2026",
            purpose="Văn bản đến",
            read=["group:toanso"],
            write=["thuytt"],
        )
    )
    st.access_grants.append(
        AccessGrant(
            mailbox="bangnv", to="thanhtra", rights="read", until=date(2026, 12, 31), reason="QĐ 12/QĐ-TTr"
        )
    )
    return st


def test_project_imap_delegation_folders_and_grants() -> None:
    """Head gets full, delegate gets delegate rights on INBOX and the shared folder; readers via groups."""
    d = project_imap(_state(), date(2026, 11, 23))
    acl = {k: r.attrs["rights"] for (kind, k), r in d.records.items() if kind == "acl"}
    assert acl["unit:qlcn/INBOX#bangnv"] == RIGHTS["full"]
    assert acl["unit:qlcn/INBOX#thuytt"] == RIGHTS["delegate"]
    assert (
        acl["unit:qlcn/Văn bản đến/2026#bangnv"] == RIGHTS["full"]
    )  # head, and reader through group:lanhdao
    assert acl["unit:qlcn/Văn bản đến/2026#thuytt"] == rights_letters("delegate", "write")
    assert acl["unit:qlcn/Văn bản đến/2026#tuan"] == "lr"
    assert acl["bangnv/INBOX#thanhtra"] == "lr"
    folder = d.records[("shared_folder", "unit:qlcn/Văn bản đến/2026")]
    assert folder.attrs["purpose"] == "Văn bản đến" and folder.unit == "qlcn"
    why = d.records[("acl", "unit:qlcn/Văn bản đến/2026#bangnv")].attrs["why"]
    assert "bangnv là trưởng đơn vị qlcn" in why and "được đọc thư mục dùng chung 'Văn bản đến/2026'" in why
    deps = d.records[("acl", "unit:qlcn/Văn bản đến/2026#tuan")].attrs["_depends_on"]
    assert deps == ("unit_mailbox:qlcn", "shared_folder:unit:qlcn/Văn bản đến/2026")


def test_project_imap_expired_grant_is_absent_with_reason() -> None:
    """After `until`, the grant's acl is not desired but absent, citing MOST art.18.9, the date and reason."""
    d = project_imap(_state(), date(2027, 1, 1))
    assert ("acl", "bangnv/INBOX#thanhtra") not in d.records
    reasons = d.absent[("acl", "bangnv/INBOX#thanhtra")]
    assert [r.rule for r in reasons] == ["grant.ended"]
    assert any("2026-12-31" in r and "QĐ 12/QĐ-TTr" in r for r in _en(reasons))


def test_project_imap_head_change_moves_full_rights() -> None:
    """When the head changes, only the new head is projected with full rights; the old head is not."""
    st = _state()
    st.units["qlcn"] = Unit(id="qlcn", name="Phòng QLCN", head="tuan", delegates=["thuytt"])
    d = project_imap(st, date(2026, 11, 23))
    assert d.records[("acl", "unit:qlcn/INBOX#tuan")].attrs["rights"] == RIGHTS["full"]
    assert ("acl", "unit:qlcn/INBOX#bangnv") not in d.records


# --------------------------------------------------------------------------------------------------
# SSH provider, pure parts (recorded doveadm output)

NAMESPACE_CONFIG = """namespace inbox {
  inbox = yes
  prefix =
  separator = /
  type = private
}
namespace shared {
  inbox = no
  list = children
  location = mdbox:/tmp/gscratch/mail/%%n
  prefix = shared/%%n/
  separator = /
  type = shared
}
"""
DICT_ITER = (
    "key\tvalue\nshared/last-login/qlcn\t1795438926\nshared/last-login/bangnv\t1795438926\n"
    "shared/last-login-master/qlcn\t1795438999\n"
)


def test_last_login_parsing() -> None:
    """dict iter output becomes {user: ISO UTC time}; keys of another prefix (master logins) are ignored."""
    from mailstate.providers.doveadm.parse import last_login_prefix, parse_last_login

    prefix = last_login_prefix("last-login/%u")
    assert prefix == "shared/last-login/"
    got = parse_last_login(DICT_ITER, prefix)
    assert got == {"qlcn": "2026-11-23T13:02:06+00:00", "bangnv": "2026-11-23T13:02:06+00:00"}


def test_other_namespace_prefixes() -> None:
    """The shared namespace's static prefix is found, so removal never touches others' shared folders."""
    from mailstate.providers.doveadm.parse import other_namespace_prefixes

    assert other_namespace_prefixes(NAMESPACE_CONFIG) == ["shared/"]


def test_latest_manifest_and_command_quoting() -> None:
    """The newest manifest of exactly that user is picked; commands quote every word."""
    from mailstate.providers.doveadm.parse import doveadm_command, latest_manifest_name

    names = [
        "bangnv-2026-01-02.manifest.json",
        "bangnv-2026-03-01.manifest.json",
        "bangnv2-2027-01-01.manifest.json",
        "bangnv-2026-03-01",
        "bangnv-x.manifest.json",
    ]
    assert latest_manifest_name(names, "bangnv") == "bangnv-2026-03-01.manifest.json"
    assert latest_manifest_name(names, "thuytt") is None
    cmd = doveadm_command(
        "doveadm -c '/lab dir/dovecot.conf'", "fetch", "-u", "a;rm -rf /", "mailbox guid", "all"
    )
    assert cmd == "doveadm -c '/lab dir/dovecot.conf' fetch -u 'a;rm -rf /' 'mailbox guid' all"


def test_mailbox_wide_rights_are_the_intersection_over_unlisted_folders() -> None:
    """INBOX#id holds what id has on every unlisted folder; extra ids on a folder get that folder's record."""
    acls = {
        "INBOX": [(b"tuanlm", b"akxeilprwtscd"), (b"thuytt", b"keilprwtscd")],
        "Đã xử lý": [
            (b"bangnv", b"akxeilprwtscd"),
            (b"thuytt", b"keilprwtscd"),
        ],  # copied before the handover
        "Văn bản đến/2026": [(b"hoapt", b"lr")],  # listed: its own records
    }
    recs, shared = mailbox_acl_records("unit:qlcn", "qlcn", "qlcn", acls, listed=["Văn bản đến/2026"])
    got = {r.key: r.attrs["rights"] for r in recs}
    assert got == {
        "unit:qlcn/INBOX#tuanlm": "",  # missing on "Đã xử lý": the grant must be applied again
        "unit:qlcn/INBOX#thuytt": RIGHTS["delegate"],
        "unit:qlcn/Văn bản đến/2026#hoapt": "lr",
        "unit:qlcn/Đã xử lý#bangnv": RIGHTS["full"],  # the old head, to be revoked
    }
    assert shared == {"Đã xử lý"}


def test_shared_dict_owners_and_quota_get() -> None:
    """The ACL shared dict names the owners that share something; quota get -A gives limits in bytes."""
    from mailstate.providers.doveadm.parse import parse_quota_get, parse_shared_owners

    dict_iter = (
        "key\tvalue\nshared/shared-boxes/user/bangnv/qlcn\t1\nshared/shared-boxes/user/tuan/qlcn\t1\n"
        "shared/shared-boxes/anyone/hoapt\t1\nshared/other/x\t1\n"
    )
    assert parse_shared_owners(dict_iter) == {"qlcn", "hoapt"}
    quota = (
        "Username\tQuota name\tType\tValue\tLimit\t%\n"
        "bangnv\tUser quota\tSTORAGE\t0\t2097152\t0\nbangnv\tUser quota\tMESSAGE\t0\t-\t0\n"
        "thuytt\tUser quota\tSTORAGE\t0\t-\t0\n"
    )
    assert parse_quota_get(quota) == {"bangnv": 2 * 1024**3, "thuytt": None}


def test_archive_names_never_reuse_an_archive() -> None:
    """A second archive on the same day gets a new name, and the newest (date, sequence) manifest wins."""
    from mailstate.providers.doveadm.parse import latest_manifest_name, next_archive_name

    day = date(2026, 11, 23)
    assert next_archive_name([], "bangnv", day) == "bangnv-2026-11-23"
    names = ["bangnv-2026-11-23", "bangnv-2026-11-23.manifest.json"]
    assert next_archive_name(names, "bangnv", day) == "bangnv-2026-11-23.2"
    names += ["bangnv-2026-11-23.2", "bangnv-2026-11-23.2.manifest.json", "bangnv-2026-01-01.manifest.json"]
    assert next_archive_name(names, "bangnv", day) == "bangnv-2026-11-23.3"
    assert latest_manifest_name(names, "bangnv") == "bangnv-2026-11-23.2.manifest.json"


def test_each_reason_names_its_own_source_line() -> None:
    """A right with two sources cites each one's file:line, not the first one's for both."""
    from mailstate.model.settings import Source

    st = _state()
    st.units["qlcn"].located(Source("units/qlcn.toml", 3))
    st.shared_folders[0].located(Source("units/qlcn.toml", 50))
    d = project_imap(st, date(2026, 11, 23))
    reasons = d.reasons[("acl", "unit:qlcn/Văn bản đến/2026#bangnv")]
    assert (reasons[0].where, reasons[0].rule) == ("units/qlcn.toml:3", "handover.head")
    assert (reasons[1].where, reasons[1].rule) == ("units/qlcn.toml:50", "shared_folder.reader")


def test_provider_repr_has_no_password() -> None:
    """The provider's repr (as logs and tracebacks would show it) never contains the master password."""
    from mailstate.model.settings import ImapSettings
    from mailstate.providers.imap.provider import ImapProvider

    p = ImapProvider(ImapSettings(url="imaps://127.0.0.1:1"), "s3cret-Master-pw")
    assert "s3cret" not in repr(p) and "s3cret" not in str(vars(p).get("settings"))


def _en(reasons):  # type: ignore[no-untyped-def]
    """The reasons' texts in English."""
    from mailstate.model.i18n import use

    with use("en"):
        return [r.text() for r in reasons]
