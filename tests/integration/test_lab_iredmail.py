"""The lab's iRedMail layout (`lab up --layout iredmail`, docs/iredmail.md) behaves as an iRedMail server:
entries written as iRedMail's admin panel writes them (a mail user, a disabled one, a mailing list with
its members' memberOfGroup, an alias) log in, are refused, receive mail and show their quota through
iRedMail's own LDAP filters in Dovecot and Postfix."""

from __future__ import annotations

import os
import smtplib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from imapclient.exceptions import LoginError

from mailstate.lab import Lab
from mailstate.lab.iredmail import testing as irm_t
from mailstate.lab.testing import doveadm, imap_login, imap_master_login
from mailstate.serverconfig import iredmail as irm

pytestmark = pytest.mark.integration

DOMAIN = "irm.example.gov.vn"
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
PW = {"an": "mat-khau-An-1", "binh": "mat-khau-Binh-2", "cuong": "mat-khau-Cuong-3"}
QUOTA = 209715200  # 200 MiB, in bytes as iRedMail stores it
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the lab runs Postfix only as root")


@pytest.fixture(scope="module")
def irm_lab(lab_for: Callable[..., Lab]) -> Lab:
    """An iRedMail-layout lab with: an (active, 200 MiB), binh (active, a shadow address), cuong (disabled),
    the list phong-hc (an, binh, cuong by memberOfGroup), the alias van-thu → binh."""
    lab = lab_for(DOMAIN, "Sở thử nghiệm iRedMail", layout="iredmail")
    lab.reset()
    lst = irm_t.address(lab, "phong-hc")
    irm_t.add_list(lab, "phong-hc", cn="Phòng Hành chính")
    irm_t.add_user(lab, "an", PW["an"], cn="Nguyễn Văn An", quota=QUOTA, member_of=[lst])
    irm_t.add_user(lab, "binh", PW["binh"], cn="Trần Thị Bình", member_of=[lst],
                   shadow=[irm_t.address(lab, "binh.tran")])
    irm_t.add_user(lab, "cuong", PW["cuong"], cn="Lê Cường", status="disabled", member_of=[lst])
    irm_t.add_alias(lab, "van-thu", [irm_t.address(lab, "binh")])
    return lab


def test_layout_recorded_and_tree(irm_lab: Lab) -> None:
    """lab.json and `lab env` name the layout; the tree is iRedMail's, with mailstate's ou=mailstate."""
    assert irm_lab.layout == "iredmail"
    assert irm_lab.env()["MAILSTATE_LAB_LAYOUT"] == "iredmail"
    assert irm_lab.env()["MAILSTATE_LDAP_BIND_DN"] == irm.service_dn(irm_lab.base_dn)
    conn = irm_lab.ldap("dovecot")  # the read-only account Dovecot and Postfix bind as
    try:
        conn.search(irm.domain_dn(irm_lab.base_dn, DOMAIN), "(objectClass=organizationalUnit)",
                    attributes=["ou"])
        assert {str(e.ou) for e in conn.entries} >= {"Users", "Groups", "Aliases", "Externals", "mailstate"}
        conn.search(irm.domains_dn(irm_lab.base_dn), "(mail=*)", attributes=["userPassword"])
        assert conn.entries and not any(e.userPassword.values for e in conn.entries)  # never readable
    finally:
        conn.unbind()


def test_login_active_and_disabled(irm_lab: Lab) -> None:
    """An active user logs in with the full address; a disabled one and a wrong password are refused."""
    c = imap_login(irm_lab, irm_t.address(irm_lab, "an"), PW["an"])
    c.logout()
    with pytest.raises(LoginError):
        imap_login(irm_lab, irm_t.address(irm_lab, "cuong"), PW["cuong"])
    with pytest.raises(LoginError):
        imap_login(irm_lab, irm_t.address(irm_lab, "an"), PW["binh"])


def test_quota_from_mailquota(irm_lab: Lab) -> None:
    """mailQuota (bytes) is the user's storage limit, as IMAP GETQUOTAROOT reports it (KiB)."""
    c = imap_login(irm_lab, irm_t.address(irm_lab, "an"), PW["an"])
    try:
        _roots, quotas = c.get_quota_root("INBOX")
    finally:
        c.logout()
    assert [(q.resource, q.limit) for q in quotas] == [("STORAGE", QUOTA // 1024)]


def test_master_user_and_doveadm_reach_mailboxes(irm_lab: Lab) -> None:
    """What the imap and doveadm providers need: the master user opens an active mailbox, doveadm finds an
    active and a disabled account (a leaver's mailbox can be archived)."""
    c = imap_master_login(irm_lab, irm_t.address(irm_lab, "an"))
    c.logout()
    for local in ("an", "cuong"):
        res = doveadm(irm_lab, "user", "-f", "home", irm_t.address(irm_lab, local))
        assert f"/{DOMAIN}/{local[0]}/" in res.stdout, res.stdout
    assert doveadm(irm_lab, "user", irm_t.address(irm_lab, "nobody"), check=False).returncode != 0


# ---------------------------------------------------------------------------------------- mail flow


def _send(lab: Lab, *to: str) -> str:
    token = uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"] = "sender@example.org"
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"test {token}"
    msg.set_content(f"noi dung {token}\n")
    host, _, port = lab.env()["MAILSTATE_LAB_SMTP"].partition(":")
    with smtplib.SMTP(host, int(port), local_hostname="localhost", timeout=10) as smtp:
        smtp.send_message(msg)
    return token


def _settle(lab: Lab) -> None:
    queue = Path(lab.info["paths"]["postfix_conf"]).parent / "queue"
    deadline = time.monotonic() + 30
    while any(f.is_file() for q in QUEUES for f in (queue / q).rglob("*")):
        log = Path(lab.info["paths"]["postfix_log"]).read_text()[-2000:]
        assert time.monotonic() < deadline, f"Postfix did not deliver its queue:\n{log}"
        time.sleep(0.05)


def _inbox(lab: Lab, local: str) -> Counter[str]:
    c = imap_login(lab, irm_t.address(lab, local), PW[local])
    try:
        c.select_folder("INBOX", readonly=True)
        found = c.fetch(c.search(), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    finally:
        c.logout()
    return Counter(v[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split()[-1] for v in found.values())


@root_only
def test_delivery_user_shadow_list_alias(irm_lab: Lab) -> None:
    """Through Postfix's iRedMail lookups and LMTP: to a user, to a shadow address, to the list (each
    active member once, the disabled member left out, even when also addressed directly), to the alias."""
    addr = lambda local: irm_t.address(irm_lab, local)  # noqa: E731
    to_an = _send(irm_lab, addr("an"))
    to_shadow = _send(irm_lab, addr("binh.tran"))
    to_list = _send(irm_lab, addr("phong-hc"), addr("an"))
    to_alias = _send(irm_lab, addr("van-thu"))
    _settle(irm_lab)
    an, binh = _inbox(irm_lab, "an"), _inbox(irm_lab, "binh")
    assert (an[to_an], binh[to_an]) == (1, 0)
    assert (an[to_shadow], binh[to_shadow]) == (0, 1)
    assert (an[to_list], binh[to_list]) == (1, 1)
    assert (an[to_alias], binh[to_alias]) == (0, 1)
    cuong = doveadm(irm_lab, "search", "-u", addr("cuong"), "mailbox", "INBOX", "ALL", check=False)
    assert cuong.returncode == 0 and not cuong.stdout.strip(), cuong  # nothing reached the disabled member


@root_only
@pytest.mark.parametrize("local", ["nobody", "cuong"])
def test_unknown_and_disabled_refused_at_rcpt(irm_lab: Lab, local: str) -> None:
    """An unknown address, and a disabled user's (iRedMail: accountStatus disabled = no mail), get 550."""
    host, _, port = irm_lab.env()["MAILSTATE_LAB_SMTP"].partition(":")
    with smtplib.SMTP(host, int(port), local_hostname="localhost", timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("sender@example.org")
        code, _text = smtp.rcpt(irm_t.address(irm_lab, local))
        smtp.rset()
    assert code == 550
