"""The lab itself: real slapd (+ Dovecot, sshd) on loopback, TLS verified against the lab CA."""

from __future__ import annotations

import ssl

import ldap3
import pytest
from ldap3.core.exceptions import LDAPException

from mailstate.lab import Lab
from mailstate.lab.testing import LOCKED, make_person


def _bind(lab: Lab, dn: str, password: str, ca: bool = True) -> bool:
    tls = lab.ldap_tls() if ca else ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT)
    server = ldap3.Server("127.0.0.1", port=lab.info["ports"]["ldaps"], use_ssl=True, tls=tls,
                          connect_timeout=3)
    conn = ldap3.Connection(server, user=dn, password=password)
    try:
        return bool(conn.bind())
    finally:
        conn.unbind()


def test_ldaps_bind_verifies_against_the_lab_ca(lab: Lab) -> None:
    """The service account binds over LDAPS when the lab CA is trusted, and the handshake fails without it."""
    dn, pw = lab.info["dns"]["service"], lab.secret("ldap_service")
    assert _bind(lab, dn, pw)
    with pytest.raises(LDAPException):
        _bind(lab, dn, pw, ca=False)


def test_starttls_on_the_plain_port(lab: Lab) -> None:
    """StartTLS on the ldap:// port verifies against the lab CA and then the service account binds."""
    server = ldap3.Server("127.0.0.1", port=lab.info["ports"]["ldap"], tls=lab.ldap_tls(), connect_timeout=3)
    conn = ldap3.Connection(server, user=lab.info["dns"]["service"], password=lab.secret("ldap_service"))
    conn.open()
    assert conn.start_tls()
    assert conn.bind()
    conn.unbind()


def test_bootstrap_entries_present(clean_lab: Lab) -> None:
    """A clean lab holds exactly the bootstrap entries of docs/ldap.md."""
    conn = clean_lab.ldap("service")
    conn.search(clean_lab.base_dn, "(objectClass=*)", attributes=["1.1"])
    dns = {e.entry_dn for e in conn.entries}
    conn.unbind()
    base = clean_lab.base_dn
    assert f"ou=people,{base}" in dns and f"cn=default,ou=policies,{base}" in dns
    assert len(dns) == 11


def test_password_modify_hashes_and_sets_pwd_reset(clean_lab: Lab) -> None:
    """A password set by the service account is stored hashed, binds, and carries pwdReset (must change)."""
    dn = make_person(clean_lab, "hoanv", "Mật-khẩu-dài-1", cn="Nguyễn Văn Hòa")
    assert _bind(clean_lab, dn, "Mật-khẩu-dài-1")
    assert not _bind(clean_lab, dn, "wrong-password")
    conn = clean_lab.ldap("root")
    conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["userPassword", "pwdReset"])
    entry = conn.entries[0]
    conn.unbind()
    value = entry.userPassword.value
    assert (value.decode() if isinstance(value, bytes) else value).startswith("{SSHA}")
    assert str(entry.pwdReset.value).upper() == "TRUE"


def test_ppolicy_lock_refuses_bind(clean_lab: Lab) -> None:
    """pwdAccountLockedTime=000001010000Z set by the service account refuses binds; removing it restores."""
    dn = make_person(clean_lab, "khoatd", "Khoa-password-1")
    assert _bind(clean_lab, dn, "Khoa-password-1")
    conn = clean_lab.ldap("service")
    assert conn.modify(dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, [LOCKED])]})
    assert not _bind(clean_lab, dn, "Khoa-password-1")
    assert conn.modify(dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_DELETE, [])]})
    conn.unbind()
    assert _bind(clean_lab, dn, "Khoa-password-1")


def test_short_password_refused_by_policy(clean_lab: Lab) -> None:
    """A person changing their own password to 5 characters is refused (pwdMinLength 8); 12 are accepted."""
    dn = make_person(clean_lab, "ngantt", "Ngan-password-1")
    conn = clean_lab.ldap(dn=dn, password="Ngan-password-1")
    with pytest.raises(LDAPException):
        conn.extend.standard.modify_password(dn, old_password="Ngan-password-1", new_password="short")
    assert conn.extend.standard.modify_password(dn, old_password="Ngan-password-1",
                                                new_password="Ngan-better-22")
    conn.unbind()
    assert _bind(clean_lab, dn, "Ngan-better-22")


def test_reset_removes_everything_but_bootstrap(lab: Lab) -> None:
    """reset() deletes added entries (even nested ones) and keeps the bootstrap ones."""
    make_person(lab, "tmpuser", "Tmp-password-1")
    conn = lab.ldap("service")
    assert conn.add(f"ou=qlcn,ou=units,{lab.base_dn}", ["organizationalUnit", "mailstateUnit"],
                    {"description": "Phòng Quản lý công nghiệp"})
    conn.unbind()
    lab.reset()
    conn = lab.ldap("service")
    conn.search(lab.base_dn, "(objectClass=*)", attributes=["1.1"])
    assert len(conn.entries) == 11
    conn.unbind()


def test_service_account_sees_more_than_500(clean_lab: Lab) -> None:
    """The service account's paged search returns all 600 entries (no silent truncation at 500)."""
    conn = clean_lab.ldap("root")
    for i in range(600):
        conn.add(f"cn=g{i},ou=groups,{clean_lab.base_dn}", ["nisMailAlias", "mailstateGroup"],
                 {"rfc822MailMember": f"x{i}@example.org"})
    conn.unbind()
    conn = clean_lab.ldap("service")
    got = list(conn.extend.standard.paged_search(f"ou=groups,{clean_lab.base_dn}",
                                                 "(objectClass=nisMailAlias)", attributes=["cn"],
                                                 paged_size=200, generator=True))
    conn.unbind()
    assert len([e for e in got if e["type"] == "searchResEntry"]) == 600
