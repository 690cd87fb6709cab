"""`[password]` enforced by the servers themselves (docs/ldap.md "Password policy"): slapd's ppolicy default
policy is generated from it by `mailstate server-config`, and the lab is built from that output. A person
changing their own password is refused by slapd when it breaks the rules; a person whose initial password
must still be changed is refused by Dovecot (MOST art.15.2, BĐ art.12.1) while mail to them is delivered."""

from __future__ import annotations

import smtplib
import tomllib
from collections.abc import Callable
from pathlib import Path

import ldap3
import pytest
from imapclient.exceptions import LoginError

from mailstate.lab import Lab
from mailstate.lab.testing import (
    LOCKED,
    change_own_password,
    imap_login,
    imap_master_login,
    make_person,
    person_dn,
)
from mailstate.model.settings import PasswordPolicy
from mailstate.serverconfig.site import password_rules

pytestmark = pytest.mark.integration

DOMAIN = "matkhau.example.gov.vn"
EXAMPLE = Path(__file__).parents[2] / "examples" / "binhdinh-sct" / "mailstate.toml"
CHANGE_URL = "https://mail.matkhau.example.gov.vn/doi-mat-khau"
EXTRA = {"history": 3, "max_age": "90 days", "max_failures": 3, "lockout_minutes": 10,
         "change_url": CHANGE_URL}
"""The Bình Định example's [password] (8 characters, 4 classes, change at first login) plus a history, a
periodic change, a lockout after failed logins and where people change their password."""


@pytest.fixture(scope="module")
def pwlab(lab_for: Callable[..., Lab]) -> Lab:
    table = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))["password"]
    policy = PasswordPolicy.model_validate({**table, **EXTRA})
    return lab_for(DOMAIN, "Sở thử mật khẩu", password=password_rules(policy))


@pytest.fixture
def lab(pwlab: Lab) -> Lab:
    pwlab.reset()
    return pwlab


def _policy(lab: Lab) -> dict[str, str]:
    conn = lab.ldap("root")
    try:
        conn.search(lab.info["dns"]["policy"], "(objectClass=*)", ldap3.BASE, attributes=["*"])
        raw = conn.response[0]["raw_attributes"]
        return {k: v[0].decode() for k, v in raw.items() if k.startswith("pwd") and v}
    finally:
        conn.unbind()


def _bind(lab: Lab, uid: str, password: str) -> bool:
    server = ldap3.Server("127.0.0.1", port=lab.info["ports"]["ldaps"], use_ssl=True, tls=lab.ldap_tls())
    conn = ldap3.Connection(server, person_dn(lab, uid), password)
    try:
        return bool(conn.bind())
    finally:
        conn.unbind()


def test_the_directory_runs_the_policy_generated_from_password(lab: Lab) -> None:
    pol = _policy(lab)
    assert pol["pwdMinLength"] == "8" and pol["pwdInHistory"] == "3"
    assert pol["pwdMaxAge"] == str(90 * 86400)
    assert (pol["pwdLockout"], pol["pwdMaxFailure"], pol["pwdLockoutDuration"]) == ("TRUE", "3", "600")
    assert (pol["pwdMustChange"], pol["pwdSafeModify"], pol["pwdCheckQuality"]) == ("TRUE", "TRUE", "2")


def test_own_password_breaking_password_is_refused_by_slapd(lab: Lab) -> None:
    make_person(lab, "bangnv", "Bang-initial-1")
    for short in ("Ab1!", "Xy7#abc"):  # shorter than min_length = 8
        res = change_own_password(lab, "bangnv", "Bang-initial-1", short)
        assert res["result"] == 19 and "quality" in res["message"], res  # constraintViolation
    assert _bind(lab, "bangnv", "Bang-initial-1") and not _bind(lab, "bangnv", "Ab1!")
    assert change_own_password(lab, "bangnv", "Bang-initial-1", "Bang-second-2")["result"] == 0
    res = change_own_password(lab, "bangnv", "Bang-second-2", "Bang-initial-1")  # history = 3
    assert res["result"] == 19 and "history" in res["message"], res
    res = change_own_password(lab, "bangnv", "Bang-second-2", "Bang-second-2")  # the current one too
    assert res["result"] == 19, res
    assert _bind(lab, "bangnv", "Bang-second-2")


def test_a_password_sent_already_hashed_is_refused(lab: Lab) -> None:
    """pwdCheckQuality 2: slapd cannot check a hash, so it refuses it rather than let `abc` through."""
    make_person(lab, "hoatt", "Hoa-initial-1")
    server = ldap3.Server("127.0.0.1", port=lab.info["ports"]["ldaps"], use_ssl=True, tls=lab.ldap_tls())
    conn = ldap3.Connection(server, person_dn(lab, "hoatt"), "Hoa-initial-1", auto_bind=True)
    try:
        from mailstate.lab.slapd import ssha
        conn.modify(person_dn(lab, "hoatt"), {"userPassword": [
            (ldap3.MODIFY_DELETE, ["Hoa-initial-1"]), (ldap3.MODIFY_ADD, [ssha("abc")])]})
        assert conn.result["result"] == 19, conn.result
    finally:
        conn.unbind()
    assert _bind(lab, "hoatt", "Hoa-initial-1") and not _bind(lab, "hoatt", "abc")


def test_failed_logins_lock_the_account(lab: Lab) -> None:
    make_person(lab, "namlv", "Nam-initial-1")
    for _ in range(3):
        with pytest.raises(LoginError):
            imap_login(lab, "namlv", "Nam-wrong-1")
    assert not _bind(lab, "namlv", "Nam-initial-1")  # the right password no longer opens it
    with pytest.raises(LoginError):
        imap_login(lab, "namlv", "Nam-initial-1")
    conn = lab.ldap("root")
    conn.search(person_dn(lab, "namlv"), "(objectClass=*)", ldap3.BASE, attributes=["pwdAccountLockedTime"])
    locked = str(conn.response[0]["attributes"]["pwdAccountLockedTime"])
    conn.unbind()
    assert locked and locked != LOCKED  # ppolicy's lockout (10 min), not mailstate's administrative lock


def test_initial_password_refused_at_imap_until_changed_mail_delivered_meanwhile(lab: Lab) -> None:
    make_person(lab, "thuytt", "Thuy-initial-1", must_change=True)
    with pytest.raises(LoginError, match="doi mat khau ban dau.*" + CHANGE_URL):
        imap_login(lab, "thuytt", "Thuy-initial-1")
    with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):  # no hint without the right password
        imap_login(lab, "thuytt", "Thuy-wrong-1")
    with smtplib.LMTP("127.0.0.1", lab.info["ports"]["lmtp"]) as lmtp:  # what Postfix hands mail to
        lmtp.sendmail(f"vanthu@{DOMAIN}", [f"thuytt@{DOMAIN}"],
                      b"From: vanthu@x\r\nSubject: cong van\r\n\r\nnoi dung\r\n")
    master = imap_master_login(lab, "thuytt")  # mailstate's own login still works
    try:
        assert master.select_folder("INBOX", readonly=True)[b"EXISTS"] == 1
    finally:
        master.logout()
    assert change_own_password(lab, "thuytt", "Thuy-initial-1", "Thuy-doi-2")["result"] == 0
    client = imap_login(lab, "thuytt", "Thuy-doi-2")
    try:
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 1
    finally:
        client.logout()
    with pytest.raises(LoginError):
        imap_login(lab, "thuytt", "Thuy-initial-1")
