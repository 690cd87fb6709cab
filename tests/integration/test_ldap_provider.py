"""The LDAP provider against the real lab: slapd over TLS (lab CA), Dovecot authenticating with auth binds."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ldap3
import pytest
from imapclient.exceptions import LoginError

from mailstate.desired_state.schema import Organization, State
from mailstate.errors import ProviderError
from mailstate.lab import Lab
from mailstate.lab.testing import change_own_password, imap_login, make_person
from mailstate.model.change import Action, Change
from mailstate.model.settings import LdapSettings, PasswordPolicy
from mailstate.providers.ldap.provider import LdapProvider
from mailstate.providers.registry import make_provider

pytestmark = pytest.mark.integration

NAME = "Nguyễn Văn Bằng"
ODD_NAME = ' Lê "Tí", Jr + (Hậu) \\ #1'


def _state(lab: Lab, tmp: Path, **ldap: Any) -> State:
    state = State(root=tmp, organization=Organization(name="Lab", domain=lab.info["domain"]))
    state.providers.ldap = LdapSettings(**ldap)
    return state


def _provider(lab: Lab, tmp: Path, env: Mapping[str, str] | None = None, **kw: Any) -> LdapProvider:
    passwords_out = kw.pop("passwords_out", tmp / "initial-passwords.tsv")
    size_limit = kw.pop("size_limit", 0)
    p = LdapProvider.from_state(
        _state(lab, tmp, **kw), passwords_out=passwords_out, env=lab.env() if env is None else env
    )
    p.size_limit = size_limit
    return p


@pytest.fixture
def ldap(clean_lab: Lab, tmp_path: Path) -> Iterator[LdapProvider]:
    p = _provider(clean_lab, tmp_path)
    try:
        yield p
    finally:
        p.close()


def _ch(
    action: Action,
    kind: str,
    key: str,
    after: Mapping[str, Any] | None,
    before: Any = None,
    reasons: tuple[str, ...] = (),
) -> Change:
    return Change(f"{action.label}-{kind}-{key}", action, kind, key, "ldap", before, after, reasons)


def _addr(lab: Lab, local: str) -> str:
    return f"{local}@{lab.info['domain']}"


def _person(lab: Lab, name: str = NAME, **over: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "name": unicodedata.normalize("NFC", name),
        "given": unicodedata.normalize("NFC", name.split()[-1]),
        "family": unicodedata.normalize("NFC", name.split()[0]),
        "unit": "qlcn",
        "title": "Trưởng phòng",
        "phone": "0256 3822 123",
        "mobile": None,
        "backup_email": "bang.nv@example.com",
        "address": _addr(lab, "bangnv"),
        "aliases": (_addr(lab, "nvbang"),),
        "quota": 2 * 1024**3,
        "locked": False,
        "lock_reason": None,
        "refuse_mail": None,
    }
    attrs.update(over)
    return attrs


def _live(p: LdapProvider, kind: str, key: str) -> dict[str, Any]:
    record = p.read().records[(kind, key)]
    return {k: v for k, v in record.attrs.items() if not k.startswith("_")}


# ------------------------------------------------------------------------------------------------ TLS


def test_tls_verified_with_the_lab_ca(lab_env: dict[str, str], tmp_path: Path) -> None:
    """Settings come from the MAILSTATE_LDAP_* environment; LDAPS verified against the lab CA reads fine."""
    base = lab_env["MAILSTATE_LDAP_BIND_DN"].split(",ou=system,", 1)[1]
    st = State(root=tmp_path, organization=Organization(name="Lab", domain="lab.example.gov.vn"))
    assert st.base_dn == base
    p = make_provider("ldap", st)
    try:
        assert isinstance(p, LdapProvider) and p.url.startswith("ldaps://")
        snap = p.read()
        assert snap.records == {} and snap.unmanaged == []
    finally:
        p.close()


def test_tls_refused_without_the_lab_ca(clean_lab: Lab, tmp_path: Path) -> None:
    """Without the lab CA (system store only) the certificate is refused: ProviderError, no password."""
    env = {k: v for k, v in clean_lab.env().items() if k != "MAILSTATE_LDAP_CA_FILE"}
    p = _provider(clean_lab, tmp_path, env=env)
    with pytest.raises(ProviderError) as err:
        p.read()
    assert "cannot connect" in str(err.value)
    assert clean_lab.secret("ldap_service") not in str(err.value)


def test_plain_url_refused_unless_allowed(clean_lab: Lab, tmp_path: Path) -> None:
    """ldap:// without StartTLS is refused up front; StartTLS on it works; allow_plain lets it through."""
    plain = dict(clean_lab.env(), MAILSTATE_LDAP_URL=f"ldap://127.0.0.1:{clean_lab.info['ports']['ldap']}")
    with pytest.raises(ProviderError, match="allow_plain"):
        _provider(clean_lab, tmp_path, env=plain)
    tls = _provider(clean_lab, tmp_path, env=plain, start_tls=True)
    assert tls.read().records == {}
    tls.close()
    allowed = _provider(clean_lab, tmp_path, env=plain, allow_plain=True)
    try:
        allowed.read()  # the lab may refuse a plain bind; the provider does not refuse it up front
    except ProviderError as exc:
        assert "allow_plain" not in str(exc)
    allowed.close()


def test_wrong_password_is_a_clear_error_without_the_password(clean_lab: Lab, tmp_path: Path) -> None:
    """A wrong bind password gives ProviderError naming the bind DN and never the password."""
    env = dict(clean_lab.env(), MAILSTATE_LDAP_PASSWORD="Wr0ng-S3cret-value")
    with pytest.raises(ProviderError) as err:
        _provider(clean_lab, tmp_path, env=env).read()
    assert "cannot bind" in str(err.value) and "Wr0ng-S3cret-value" not in str(err.value)


# ------------------------------------------------------------------------------------------- round trip


def test_round_trip_of_every_kind(ldap: LdapProvider, clean_lab: Lab) -> None:
    """Each kind created reads back equal to what was written (Vietnamese NFC, LDAP-special characters)."""
    lab = clean_lab
    written: dict[tuple[str, str], dict[str, Any]] = {
        ("unit", "qlcn"): {
            "name": "Phòng Quản lý Công nghiệp",
            "parent": "sct",
            "head": "bangnv",
            "delegates": ("anhnt", "thuytt"),
            "address": _addr(lab, "qlcn"),
        },
        ("unit_mailbox", "qlcn"): {
            "name": "Phòng Quản lý Công nghiệp",
            "address": _addr(lab, "qlcn"),
            "aliases": (),
            "quota": 10 * 1024**3,
            "locked": False,
            "lock_reason": None,
            "refuse_mail": "this unit was dissolved on 2026-03-01; mail to this address is not delivered",
        },
        ("person", "bangnv"): _person(lab),
        ("person", "tilv"): _person(
            lab,
            ODD_NAME.strip(),
            address=_addr(lab, "tilv"),
            aliases=(),
            given="#1",
            family="Lê",
            title='Phó "trưởng", phòng + (tạm)',
        ),
        ("group", "lanhdao"): {
            "name": "Lãnh đạo Sở",
            "address": _addr(lab, "lanhdao"),
            "members": ("bangnv", "unit:qlcn"),
            "delivers_to": (_addr(lab, "bangnv"), _addr(lab, "qlcn")),
        },
        ("alias", _addr(lab, "nvbang")): {"target": _addr(lab, "bangnv"), "expires": "2027-04-01"},
    }
    for (kind, key), attrs in written.items():
        ldap.apply(_ch(Action.CREATE, kind, key, attrs))
    snap = ldap.read()
    assert set(snap.records) == set(written)
    for ref, attrs in written.items():
        live = {k: v for k, v in snap.records[ref].attrs.items() if not k.startswith("_")}
        assert live == attrs, ref
    assert snap.records[("person", "bangnv")].unit == "qlcn"
    assert unicodedata.is_normalized("NFC", snap.records[("person", "bangnv")].attrs["name"])
    assert snap.facts["addresses"][_addr(lab, "bangnv")] == "bangnv"
    assert snap.facts["addresses"][_addr(lab, "nvbang")] == "bangnv"
    assert snap.facts["addresses"][_addr(lab, "qlcn")] == "unit:qlcn"
    assert snap.facts["addresses"][_addr(lab, "lanhdao")] == "group:lanhdao"
    assert len(snap.facts["digests"]) == len(written)


def test_group_with_special_characters_in_its_id_round_trips(ldap: LdapProvider, clean_lab: Lab) -> None:
    """A key with , + \" \\ ( # and a leading space makes a valid DN that reads back as the same key."""
    key = ' a,b+c"d\\e(f#'
    ldap.apply(
        _ch(
            Action.CREATE,
            "group",
            key,
            {"name": "Nhóm đặc biệt", "address": None, "members": (), "delivers_to": ()},
        )
    )
    snap = ldap.read()
    assert ("group", key) in snap.records
    ldap.apply(_ch(Action.DELETE, "group", key, None))
    assert ("group", key) not in ldap.read().records


def test_update_replaces_single_and_sets_multi_valued_exactly(ldap: LdapProvider, clean_lab: Lab) -> None:
    """An update replaces single-valued attributes, sets multi-valued ones exactly, removes None."""
    lab = clean_lab
    ldap.apply(_ch(Action.CREATE, "person", "bangnv", _person(lab)))
    after = {
        "title": None,
        "unit": "tchc",
        "aliases": (_addr(lab, "a"), _addr(lab, "b")),
        "name": "Nguyễn Văn Bằng Hai",
    }
    ldap.apply(_ch(Action.UPDATE, "person", "bangnv", after, before={"title": "Trưởng phòng"}))
    live = _live(ldap, "person", "bangnv")
    assert live["title"] is None and live["unit"] == "tchc"
    assert live["aliases"] == (_addr(lab, "a"), _addr(lab, "b"))
    assert live["name"] == "Nguyễn Văn Bằng Hai" and live["given"] == "Hai" and live["family"] == "Nguyễn"
    conn = lab.ldap("root")
    conn.search(
        f"uid=bangnv,ou=people,{lab.base_dn}",
        "(objectClass=*)",
        ldap3.BASE,
        attributes=["mailLocalAddress", "title", "departmentNumber", "cn"],
    )
    entry = conn.response[0]["attributes"]
    conn.unbind()
    assert sorted(entry["mailLocalAddress"]) == [_addr(lab, "a"), _addr(lab, "b"), _addr(lab, "bangnv")]
    assert "title" not in entry or entry["title"] == []
    assert entry["departmentNumber"] == ["tchc"] and entry["cn"] == ["Nguyễn Văn Bằng Hai"]
    # a transfer is an attribute change: the DN did not move
    assert ldap.read().facts["dns"]["person/bangnv"] == f"uid=bangnv,ou=people,{lab.base_dn}"


def test_updates_without_a_read_and_of_a_missing_entry(ldap: LdapProvider, clean_lab: Lab) -> None:
    """Field-by-field updates (no read) set exactly; updating an entry that vanished says to plan again."""
    lab = clean_lab
    group = {
        "name": "Nhóm",
        "address": _addr(lab, "g"),
        "members": ("a", "b"),
        "delivers_to": (_addr(lab, "a"),),
    }
    ldap.apply(_ch(Action.CREATE, "group", "g", group))
    ldap.apply(_ch(Action.UPDATE, "group", "g", {"members": ("c",), "delivers_to": (_addr(lab, "C"),)}))
    live = _live(ldap, "group", "g")
    assert live["members"] == ("c",) and live["delivers_to"] == (_addr(lab, "c"),)
    for after in ({"members": ()}, {"address": None}):
        with pytest.raises(ProviderError, match="plan again"):
            ldap.apply(_ch(Action.UPDATE, "group", "gone", after))


def test_reapplying_is_a_no_op(ldap: LdapProvider, clean_lab: Lab) -> None:
    """Create, update and delete applied twice leave the same entry (same digest) and raise nothing."""
    lab = clean_lab
    create = _ch(Action.CREATE, "person", "bangnv", _person(lab))
    ldap.apply(create)
    d1 = ldap.read().facts["digests"]["person/bangnv"]
    ldap.apply(create)
    assert ldap.read().facts["digests"]["person/bangnv"] == d1
    assert len((ldap.passwords_out or Path("/")).read_text().splitlines()) == 1  # no second password
    update = _ch(Action.UPDATE, "person", "bangnv", {"mobile": "0905 123 456"})
    ldap.apply(update)
    d2 = ldap.read().facts["digests"]["person/bangnv"]
    ldap.apply(update)
    assert ldap.read().facts["digests"]["person/bangnv"] == d2 != d1
    delete = _ch(Action.DELETE, "person", "bangnv", None)
    ldap.apply(delete)
    ldap.apply(delete)
    assert ("person", "bangnv") not in ldap.read().records


def test_rename_moves_the_entry_once(ldap: LdapProvider, clean_lab: Lab) -> None:
    """A rename moves an alias to its new key and sets its attributes; applied again it is a no-op."""
    old, new = _addr(clean_lab, "old"), _addr(clean_lab, "new")
    ldap.apply(
        _ch(Action.CREATE, "alias", old, {"target": _addr(clean_lab, "bangnv"), "expires": "2027-01-01"})
    )
    rename = _ch(Action.RENAME, "alias", new, {"key": new, "expires": "2027-06-30"}, before={"key": old})
    ldap.apply(rename)
    ldap.apply(rename)
    records = ldap.read().records
    assert ("alias", old) not in records
    assert records[("alias", new)].attrs["expires"] == "2027-06-30"


def test_create_over_an_existing_entry_compares_and_modifies(ldap: LdapProvider, clean_lab: Lab) -> None:
    """A create that finds the entry (e.g. made by hand) sets it exactly and adds mailstate's classes."""
    lab = clean_lab
    make_person(lab, "bangnv", "S0me-Pass-word", cn="Sai Tên", unit="old")
    ldap.apply(_ch(Action.CREATE, "person", "bangnv", _person(lab)))
    assert _live(ldap, "person", "bangnv") == _person(lab)


def test_entries_without_mailstate_classes_are_unmanaged(ldap: LdapProvider, clean_lab: Lab) -> None:
    """An entry in ou=people that is not mailstate's is reported in unmanaged, not as a person."""
    conn = clean_lab.ldap("root")
    conn.add(f"uid=legacy,ou=people,{clean_lab.base_dn}", ["inetOrgPerson"], {"cn": "Legacy", "sn": "L"})
    conn.unbind()
    snap = ldap.read()
    assert ("person", "legacy") not in snap.records
    assert [r.key for r in snap.unmanaged] == ["legacy"]


# ---------------------------------------------------------------------------------- locks and passwords


def _password_of(path: Path, uid: str) -> str:
    lines = [line.split("\t") for line in path.read_text().splitlines()]
    return [pw for who, _, pw in lines if who == uid][-1]


def _first_login(lab: Lab, uid: str, initial: str) -> str:
    """The person changes the initial password, as at their first login; returns the new one."""
    new = "Doi-" + initial
    result = change_own_password(lab, uid, initial, new)
    assert result.get("result") == 0, result
    return new


def test_new_person_password_logs_in_and_is_only_in_the_0600_file(
    ldap: LdapProvider, clean_lab: Lab, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The initial password is only in the 0600 file, hashed in LDAP, meets the policy; IMAP refuses it until
    the person changes it (MOST art.15.2), then the new one logs in."""
    lab = clean_lab
    change = _ch(Action.CREATE, "person", "bangnv", _person(lab))
    ldap.apply(change)
    path = ldap.passwords_out
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    password = _password_of(path, "bangnv")
    assert len(password) >= 16
    with pytest.raises(LoginError, match="doi mat khau"):
        imap_login(lab, "bangnv", password)
    out = capsys.readouterr()
    snap = ldap.read()
    for text in (out.out, out.err, caplog.text, repr(snap), repr(change.to_json()), repr(ldap.notices)):
        assert password not in text
    conn = lab.ldap("root")
    conn.search(
        f"uid=bangnv,ou=people,{lab.base_dn}",
        "(objectClass=*)",
        ldap3.BASE,
        attributes=["userPassword", "pwdReset"],
    )
    stored = conn.response[0]["attributes"]
    conn.unbind()
    hashed = stored["userPassword"][0]
    hashed = hashed.decode() if isinstance(hashed, bytes) else hashed
    assert hashed.startswith("{") and password not in hashed
    assert [str(v).upper() for v in stored.get("pwdReset", [])] == ["TRUE"]
    changed = _first_login(lab, "bangnv", password)
    imap_login(lab, "bangnv", changed).logout()


_OPERATIONS = {0x60: "bind", 0x63: "search", 0x66: "modify", 0x68: "add", 0x4A: "delete", 0x6C: "modify_dn",
               0x6E: "compare", 0x77: "extended"}
"""The protocolOp tag of an LDAPMessage (RFC 4511) → the operation."""


def _count_operations(conn: ldap3.Connection) -> list[str]:
    """Watch what the connection sends slapd (the bytes go out unchanged) and list each operation — however
    the request was encoded (ldap3, or providers.ldap.ber)."""
    sent: list[str] = []
    sock = conn.socket
    real = sock.sendall

    def counted(data: bytes, *args: Any) -> Any:
        at = 2 if data[1] < 0x80 else 2 + (data[1] & 0x7F)  # past the message's tag and length
        at += 2 + data[at + 1]  # past the message id
        sent.append(_OPERATIONS.get(data[at], hex(data[at])))
        return real(data, *args)

    sock.sendall = counted
    return sent


def test_a_new_person_is_one_add_with_the_password_and_pwdreset(ldap: LdapProvider, clean_lab: Lab) -> None:
    """Each new person costs slapd one add (password hashed by ppolicy, pwdReset, lock in it), and their
    initial password serves only to change it."""
    lab = clean_lab
    sent = _count_operations(ldap.conn)
    ldap.apply(_ch(Action.CREATE, "person", "bangnv", _person(lab)))
    locked = _person(lab, "Trần Thị Lan", address=_addr(lab, "lantt"), aliases=(), locked=True,
                     lock_reason="MOST art.18.4: suspended")
    ldap.apply(_ch(Action.CREATE, "person", "lantt", locked))
    assert sent == ["add", "search", "add"]  # the first add's password read back once: stored hashed
    assert ldap.passwords_out is not None
    initial = _password_of(ldap.passwords_out, "bangnv")
    conn = lab.ldap("root")
    conn.search(f"uid=bangnv,ou=people,{lab.base_dn}", "(objectClass=*)", ldap3.BASE,
                attributes=["userPassword", "pwdReset"])
    stored = conn.response[0]["attributes"]
    conn.unbind()
    hashed = stored["userPassword"][0]
    hashed = hashed.decode() if isinstance(hashed, bytes) else hashed
    assert hashed.startswith("{SSHA}") and initial not in hashed
    assert [str(v).upper() for v in stored["pwdReset"]] == ["TRUE"]
    with pytest.raises(LoginError, match="doi mat khau"):
        imap_login(lab, "bangnv", initial)
    imap_login(lab, "bangnv", _first_login(lab, "bangnv", initial)).logout()
    with pytest.raises(LoginError):
        imap_login(lab, "bangnv", initial)
    assert _live(ldap, "person", "lantt")["locked"] is True
    with pytest.raises(LoginError):
        imap_login(lab, "lantt", _password_of(ldap.passwords_out, "lantt"))


def test_a_directory_that_keeps_a_password_as_sent_never_holds_it_in_clear(
    lab_for: Callable[..., Lab], tmp_path: Path
) -> None:
    """A directory whose ppolicy does not hash a password given in an add (olcPPolicyHashCleartext off,
    as on a server not set up by server-config): the first person's password is set again through
    Password Modify (hashed), every later one through it, and the operator is told."""
    from mailstate.lab import _proc

    lab = lab_for("nohash.example.gov.vn")
    slapd_dir = lab.dir / "slapd"
    ldif = slapd_dir / "no-hash-cleartext.ldif"
    ldif.write_text("dn: olcOverlay={0}ppolicy,olcDatabase={1}mdb,cn=config\nchangetype: modify\n"
                    "replace: olcPPolicyHashCleartext\nolcPPolicyHashCleartext: FALSE\n", encoding="utf-8")
    os.chmod(ldif, 0o644)
    lab.stop_service("slapd")
    try:
        res = _proc.run_as(["slapmodify", "-q", "-n0", "-F", "slapd.d", "-l", str(ldif)], _proc.lab_user(),
                           slapd_dir)
        assert res.returncode == 0, res.stderr
    finally:
        lab.start_service("slapd")
    lab.reset()
    p = _provider(lab, tmp_path)
    try:
        p.apply(_ch(Action.CREATE, "person", "bangnv", _person(lab)))
        lan = _person(lab, "Trần Thị Lan", address=_addr(lab, "lantt"), aliases=())
        p.apply(_ch(Action.CREATE, "person", "lantt", lan))
        assert p.password_in_add is False
        assert any("olcPPolicyHashCleartext" in n for n in p.notices), p.notices
        assert p.passwords_out is not None
        conn = lab.ldap("root")
        for uid in ("bangnv", "lantt"):
            conn.search(f"uid={uid},ou=people,{lab.base_dn}", "(objectClass=*)", ldap3.BASE,
                        attributes=["userPassword", "pwdReset"])
            stored = conn.response[0]["attributes"]
            values = [v.decode() if isinstance(v, bytes) else v for v in stored["userPassword"]]
            initial = _password_of(p.passwords_out, uid)
            assert len(values) == 1 and values[0].startswith("{") and initial not in values[0], uid
            assert [str(v).upper() for v in stored["pwdReset"]] == ["TRUE"]
        conn.unbind()
        with pytest.raises(LoginError, match="doi mat khau"):
            imap_login(lab, "bangnv", _password_of(p.passwords_out, "bangnv"))
    finally:
        p.close()


def test_a_password_the_file_cannot_take_is_taken_away_again(clean_lab: Lab, tmp_path: Path) -> None:
    """When the initial-password file cannot be written after the add, the person is left without a
    password (none that nobody knows), reported as such, and the next apply gives them one."""
    broken = _provider(clean_lab, tmp_path, passwords_out=tmp_path / "missing-dir" / "pw.tsv")
    create = _ch(Action.CREATE, "person", "bangnv", _person(clean_lab))
    with pytest.raises(ProviderError, match="initial-password file"):
        broken.apply(create)
    assert broken.read().facts["no_password"] == ["bangnv"]
    broken.close()
    good = _provider(clean_lab, tmp_path)
    good.apply(create)
    assert good.read().facts["no_password"] == []
    assert good.passwords_out is not None
    with pytest.raises(LoginError, match="doi mat khau"):
        imap_login(clean_lab, "bangnv", _password_of(good.passwords_out, "bangnv"))
    good.close()


def test_paged_reads_decode_entries_as_ldap3_formats_them(ldap: LdapProvider, clean_lab: Lab) -> None:
    """The reads decode entries in one lean pass: the same attributes and values as ldap3's own decoding, on
    Vietnamese text, values that are not UTF-8, multi-valued and operational ones."""
    lab = clean_lab
    ldap.apply(_ch(Action.CREATE, "person", "bangnv", _person(lab)))
    ldap.apply(_ch(Action.CREATE, "person", "odd", _person(lab, ODD_NAME, address=_addr(lab, "odd"),
                                                           aliases=(_addr(lab, "o1"), _addr(lab, "o2")))))
    conn = lab.ldap("root")
    assert conn.modify(f"uid=odd,ou=people,{lab.base_dn}", {
        "description": [(ldap3.MODIFY_REPLACE, ["Phòng Quản lý công nghệ", "Nguyễn\tVăn =cmd|' /C'!A0"])],
        "jpegPhoto": [(ldap3.MODIFY_REPLACE, [bytes(range(256)), "Ảnh".encode(), b"\xc3("])],
    }), conn.result
    conn.unbind()
    attributes = ["*", "+", "jpegPhoto"]
    mine = ldap.search_all(lab.base_dn, "(objectClass=*)", attributes, scope=ldap3.SUBTREE)
    odd = {k.lower(): v for dn, a in mine if dn.startswith("uid=odd,") for k, v in a.items()}
    assert sorted(odd["jpegphoto"], key=repr) == sorted([bytes(range(256)), "Ảnh", b"\xc3("], key=repr)
    assert "Phòng Quản lý công nghệ" in odd["description"] and len(odd["objectclass"]) >= 3
    conn = lab.ldap("service")  # ldap3's own decoding of every entry, as the reads took it before
    conn.search(lab.base_dn, "(objectClass=*)", ldap3.SUBTREE, attributes=attributes)
    before = [  # without the empty lists ldap3 fills in for attributes asked for by name and absent
        (r["dn"], {k: v for k, v in r["attributes"].items() if v != []})
        for r in conn.response
        if r["type"] == "searchResEntry"
    ]
    conn.unbind()
    assert len(before) > 8 and len(mine) == len(before) and dict(mine) == dict(before)
    assert ldap.read_entry(f"uid=odd,ou=people,{lab.base_dn}", attributes)[1] == next(
        e for e in mine if e[0].startswith("uid=odd,"))


def test_no_forced_change_when_the_policy_says_so(clean_lab: Lab, tmp_path: Path) -> None:
    """With change_at_first_login = false, the new person has no pwdReset."""
    state = _state(clean_lab, tmp_path)
    state.password = PasswordPolicy(change_at_first_login=False)
    p = LdapProvider.from_state(state, passwords_out=tmp_path / "pw.tsv", env=clean_lab.env())
    p.apply(_ch(Action.CREATE, "person", "bangnv", _person(clean_lab)))
    conn = clean_lab.ldap("root")
    conn.search(
        f"uid=bangnv,ou=people,{clean_lab.base_dn}", "(objectClass=*)", ldap3.BASE, attributes=["pwdReset"]
    )
    assert not conn.response[0]["attributes"].get("pwdReset")
    conn.unbind()
    p.close()


def test_lock_refuses_imap_login_and_unlock_restores_it(ldap: LdapProvider, clean_lab: Lab) -> None:
    """A locked person cannot log in to IMAP (slapd refuses the auth bind); unlocked, they can again."""
    lab = clean_lab
    ldap.apply(_ch(Action.CREATE, "person", "bangnv", _person(lab)))
    assert ldap.passwords_out is not None
    password = _first_login(lab, "bangnv", _password_of(ldap.passwords_out, "bangnv"))
    imap_login(lab, "bangnv", password).logout()
    reason = "MOST art.18.4: tạm khóa vì sự cố an toàn thông tin"
    ldap.apply(_ch(Action.LOCK, "person", "bangnv", {"locked": True}, reasons=(reason,)))
    live = _live(ldap, "person", "bangnv")
    assert live["locked"] is True and live["lock_reason"] == reason
    with pytest.raises(LoginError):
        imap_login(lab, "bangnv", password)
    ldap.apply(_ch(Action.LOCK, "person", "bangnv", {"locked": True}, reasons=(reason,)))  # idempotent
    ldap.apply(_ch(Action.UNLOCK, "person", "bangnv", {"locked": False}))
    live = _live(ldap, "person", "bangnv")
    assert live["locked"] is False and live["lock_reason"] is None
    imap_login(lab, "bangnv", password).logout()


def test_a_person_created_locked_cannot_log_in(ldap: LdapProvider, clean_lab: Lab) -> None:
    """A person whose record is created locked (e.g. suspended) is locked at once, with the reason."""
    reason = "MOST art.18.4: suspended"
    ldap.apply(_ch(Action.CREATE, "person", "bangnv", _person(clean_lab, locked=True, lock_reason=reason)))
    live = _live(ldap, "person", "bangnv")
    assert live["locked"] is True and live["lock_reason"] == reason
    assert ldap.passwords_out is not None
    with pytest.raises(LoginError):
        imap_login(clean_lab, "bangnv", _password_of(ldap.passwords_out, "bangnv"))
    with pytest.raises(ProviderError, match="no such entry"):
        ldap.apply(_ch(Action.UNLOCK, "person", "nobody", {"locked": False}))


def test_unit_mailbox_password_is_unusable(ldap: LdapProvider, clean_lab: Lab) -> None:
    """A unit mailbox gets a random hashed userPassword nobody knows: it is never in the passwords file."""
    ldap.apply(
        _ch(
            Action.CREATE,
            "unit_mailbox",
            "qlcn",
            {
                "name": "Phòng QLCN",
                "address": _addr(clean_lab, "qlcn"),
                "aliases": (),
                "quota": None,
                "locked": False,
                "lock_reason": None,
            },
        )
    )
    assert ldap.passwords_out is None or not ldap.passwords_out.exists()
    conn = clean_lab.ldap("root")
    conn.search(
        f"uid=qlcn,ou=mailboxes,{clean_lab.base_dn}",
        "(objectClass=*)",
        ldap3.BASE,
        attributes=["userPassword"],
    )
    value = conn.response[0]["attributes"]["userPassword"][0]
    conn.unbind()
    assert (value.decode() if isinstance(value, bytes) else value).lower().startswith("{ssha}")


# --------------------------------------------------------------------------------------- bulk and limits


def _bulk_people(lab: Lab, n: int, unit: str = "bulk") -> None:
    conn = lab.ldap("root")
    try:
        for i in range(n):
            uid = f"p{i:05d}"
            conn.add(
                f"uid={uid},ou=people,{lab.base_dn}",
                ["inetOrgPerson", "inetLocalMailRecipient", "mailstateAccount"],
                {
                    "uid": uid,
                    "cn": f"Người {i}",
                    "sn": "Người",
                    "departmentNumber": unit,
                    "mail": f"{uid}@{lab.info['domain']}",
                },
            )
            assert conn.result["result"] == 0, conn.result
    finally:
        conn.unbind()


def test_paged_read_returns_every_entry_beyond_the_size_limit(clean_lab: Lab, tmp_path: Path) -> None:
    """1,200 people are all read page by page, as the service account and as an account under slapd's
    default limits (size 500, size.pr 1,000); a page above size.pr is refused by slapd and raises."""
    _bulk_people(clean_lab, 1200)
    p = _provider(clean_lab, tmp_path, page_size=250)
    started = time.perf_counter()
    snap = p.read()
    elapsed = time.perf_counter() - started
    p.close()
    assert len([k for k in snap.records if k[0] == "person"]) == 1200
    print(f"paged read of 1,200 people: {elapsed:.2f} s")
    # an ordinary account: slapd's global limits apply to it
    reader = make_person(clean_lab, "reader", "Reader-Pass-2026", cn="Người Đọc")  # without pwdReset
    env = dict(clean_lab.env(), MAILSTATE_LDAP_BIND_DN=reader, MAILSTATE_LDAP_PASSWORD="Reader-Pass-2026")
    limited = _provider(clean_lab, tmp_path, env=env, page_size=500)
    assert len([k for k in limited.read().records if k[0] == "person"]) == 1201
    limited.close()
    too_big = _provider(clean_lab, tmp_path, env=env, page_size=1001)
    with pytest.raises(ProviderError, match="adminLimitExceeded"):
        too_big.read()
    too_big.close()


def test_a_truncated_read_raises_instead_of_returning_a_short_list(clean_lab: Lab, tmp_path: Path) -> None:
    """A search cut short by a size limit raises ProviderError; it never returns the entries it got."""
    _bulk_people(clean_lab, 30)
    p = _provider(clean_lab, tmp_path, page_size=10, size_limit=25)
    with pytest.raises(ProviderError, match="truncated"):
        p.read()
    p.close()


def test_read_with_slapd_hung_or_stopped_raises(tmp_path: Path) -> None:
    """A hung slapd (SIGSTOP) times out, a stopped one refuses: both raise ProviderError, never "absent"."""
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="mailstate-ldap-down-", dir=shm if os.access(shm, os.W_OK) else None))
    root.chmod(0o711)  # the lab user must traverse it
    lab = Lab(root / "lab")
    try:
        lab.up(domain="down.example.gov.vn", services=("slapd",))
        p = _provider(lab, tmp_path, timeout=2)
        assert p.read().records == {}
        pid = int(lab.info["pids"]["slapd"]["pid"])
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.perf_counter()
            with pytest.raises(ProviderError, match="timed out"):
                p.read()
            assert time.perf_counter() - started < 10
        finally:
            os.kill(pid, signal.SIGCONT)
        p.close()
    finally:
        lab.down()
    try:
        p2 = _provider(lab, tmp_path, timeout=3)
        with pytest.raises(ProviderError, match="cannot connect"):
            p2.read()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_scope_limits_the_read(ldap: LdapProvider, clean_lab: Lab) -> None:
    """A scope of unit ids reads those units' people, unit and mailbox, plus all groups and aliases."""
    lab = clean_lab
    for unit in ("qlcn", "tchc"):
        ldap.apply(
            _ch(
                Action.CREATE,
                "unit",
                unit,
                {"name": unit, "parent": None, "head": None, "delegates": (), "address": _addr(lab, unit)},
            )
        )
        ldap.apply(
            _ch(
                Action.CREATE,
                "unit_mailbox",
                unit,
                {"name": unit, "address": _addr(lab, unit), "aliases": (), "quota": None},
            )
        )
    ldap.passwords_out = None  # people made here need no password
    ldap.apply(_ch(Action.CREATE, "person", "bangnv", _person(lab, unit="qlcn")))
    ldap.apply(
        _ch(
            Action.CREATE,
            "person",
            "thuytt",
            _person(lab, "Trần Thị Thủy", unit="tchc", address=_addr(lab, "thuytt"), aliases=()),
        )
    )
    ldap.apply(_ch(Action.CREATE, "group", "all", {"name": "Toàn Sở", "members": ("bangnv", "thuytt")}))
    scoped = set(ldap.read(["unit:qlcn"]).records)
    assert scoped == {("unit", "qlcn"), ("unit_mailbox", "qlcn"), ("person", "bangnv"), ("group", "all")}
    assert len(ldap.read().records) == 7
    assert set(ldap.read([]).records) == {("group", "all")}


# ------------------------------------------------------------------------------------------ apply lock


def test_apply_lock_refuses_a_second_holder(ldap: LdapProvider, clean_lab: Lab, tmp_path: Path) -> None:
    """While one apply holds the lock another is refused with the holder's name; after release it is free."""
    other = _provider(clean_lab, tmp_path)
    with ldap.apply_lock("alice@host-a"):
        with pytest.raises(ProviderError, match="another apply is running: alice@host-a since"):
            with other.apply_lock("bob@host-b"):
                pass  # pragma: no cover
        with pytest.raises(ProviderError, match="break-lock"):
            with other.apply_lock("bob@host-b", break_stale=True):  # a fresh lock is never broken
                pass  # pragma: no cover
    with other.apply_lock("bob@host-b"):
        pass
    conn = clean_lab.ldap("root")
    conn.search(f"ou=system,{clean_lab.base_dn}", "(cn=apply-lock)", ldap3.LEVEL, attributes=["1.1"])
    assert conn.response == [] or all(r.get("type") != "searchResEntry" for r in conn.response)
    conn.unbind()
    other.close()


def test_a_stale_apply_lock_is_broken_only_with_the_flag(
    ldap: LdapProvider, clean_lab: Lab, tmp_path: Path
) -> None:
    """A lock older than the limit is refused without break_stale and broken with it (a notice says so)."""
    other = _provider(clean_lab, tmp_path)
    with ldap.apply_lock("alice@host-a pid 1"):
        with pytest.raises(ProviderError, match="older than 0 hours"):
            with other.apply_lock("bob", stale_after_hours=0):
                pass  # pragma: no cover
        with other.apply_lock("bob", break_stale=True, stale_after_hours=0):
            assert any("alice@host-a pid 1" in n for n in other.notices)
    other.close()


def test_apply_lock_is_released_when_the_apply_fails(ldap: LdapProvider, clean_lab: Lab) -> None:
    """An exception inside the locked block still releases the lock."""
    with pytest.raises(RuntimeError):
        with ldap.apply_lock("alice"):
            raise RuntimeError("boom")
    with ldap.apply_lock("bob"):
        pass


def test_password_file_is_created_0600_even_with_a_loose_umask(ldap: LdapProvider, clean_lab: Lab) -> None:
    """The passwords file is 0600 whatever the umask."""
    old = os.umask(0)
    try:
        ldap.apply(_ch(Action.CREATE, "person", "bangnv", _person(clean_lab)))
    finally:
        os.umask(old)
    assert ldap.passwords_out is not None and stat.S_IMODE(ldap.passwords_out.stat().st_mode) == 0o600
