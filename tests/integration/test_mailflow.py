"""Mail flow through the lab's Postfix (docs/mailflow.md), by sending real mail with smtplib and counting
what arrives over IMAP: a person, every kept old address, a unit mailbox, a group nested two deep that
reaches a unit mailbox (each member exactly once), an unknown address (refused at RCPT), a suspended
person (still receives), a leaver before and after the lock date (then refused with the reason), a
transfer under Vĩnh Long's naming scheme (old and new address both deliver until the old one expires),
a removed person (unknown, the archive holds the mail), and mail sent during an apply (none lost)."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from email.message import EmailMessage
from pathlib import Path

import ldap3
import pytest

from mailstate.cli import LANG_ENV
from mailstate.lab import Lab
from mailstate.lab.testing import imap_master_login

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab runs Postfix only as root (its master needs root)"),
]

DOMAIN = "sgd.vinhlong.gov.vn"
AGENCY = Path(__file__).parent / "data" / "mailflow_sgd"
MAILSTATE = Path(sys.executable).with_name("mailstate")
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


class Mail:
    """One agency applied to a lab, with helpers to send mail and count what arrived."""

    def __init__(self, lab: Lab, state: Path, env: dict[str, str]) -> None:
        self.lab, self.state, self.env = lab, state, env
        host, _, port = env["MAILSTATE_LAB_SMTP"].partition(":")
        self.host, self.port = host, int(port)

    def ms(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(MAILSTATE), *args, "--state", str(self.state)], env=self.env,
                              capture_output=True, text=True, timeout=300)

    def apply(self, *args: str) -> None:
        res = self.ms("apply", "--yes", "--allow-destructive", *args)
        assert res.returncode == 0, res.stdout + res.stderr

    def expire_alias(self, address: str, day: date) -> None:
        """Seven months pass for a kept old address: its end date, as the directory holds it, moves back."""
        conn = self.lab.ldap(as_="service")
        try:
            assert conn.search(self.lab.base_dn, f"(&(mailstateExpires=*)(|(cn={address})(mail={address})"
                               f"(mailLocalAddress={address})))", attributes=["mailstateExpires"]), address
            for entry in conn.entries:
                conn.modify(entry.entry_dn, {"mailstateExpires": [(ldap3.MODIFY_REPLACE,
                                                                   [day.strftime("%Y%m%d000000Z")])]})
                assert conn.result["result"] == 0, conn.result
        finally:
            conn.unbind()

    def edit(self, unit: str, old: str, new: str) -> None:
        path = self.state / "units" / f"{unit}.toml"
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new, 1), encoding="utf-8")

    def address(self, uid: str, container: str = "people") -> str:
        conn = self.lab.ldap(as_="service")
        try:
            conn.search(f"ou={container},{self.lab.base_dn}", f"(uid={uid})", attributes=["mail"])
            return str(conn.entries[0].mail.value)
        finally:
            conn.unbind()

    def send(self, to: str) -> str:
        """Send one message to `to`; return its token (in the subject). A refusal raises."""
        token = uuid.uuid4().hex
        msg = EmailMessage()
        msg["From"] = "sender@example.org"
        msg["To"] = to
        msg["Subject"] = f"test {token}"
        msg.set_content(f"noi dung {token}\n")
        with smtplib.SMTP(self.host, self.port, local_hostname="localhost", timeout=10) as smtp:
            smtp.send_message(msg)
        return token

    def refused(self, to: str) -> tuple[int, str]:
        """The RCPT reply for `to` (code, text); the message is never accepted."""
        with smtplib.SMTP(self.host, self.port, local_hostname="localhost", timeout=10) as smtp:
            smtp.ehlo()
            smtp.mail("sender@example.org")
            code, text = smtp.rcpt(to)
            smtp.rset()
        return code, text.decode(errors="replace")

    def settle(self) -> None:
        """Wait until Postfix's queue is empty: every accepted message is delivered (or would be stuck)."""
        queue = Path(self.lab.info["paths"]["postfix_conf"]).parent / "queue"
        deadline = time.monotonic() + 30
        while any(any(True for _ in (queue / q).rglob("*") if _.is_file()) for q in QUEUES):
            assert time.monotonic() < deadline, "Postfix did not deliver its queue: " + _log_tail(self.lab)
            time.sleep(0.05)
        deferred = list((queue / "deferred").rglob("*"))
        assert not [f for f in deferred if f.is_file()], _log_tail(self.lab)

    def inbox(self, user: str) -> Counter[str]:
        """The tokens of the messages in `user`'s INBOX (person id or unit id), each with its count."""
        c = imap_master_login(self.lab, user)
        try:
            c.select_folder("INBOX", readonly=True)
            found = c.fetch(c.search(), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        finally:
            c.logout()
        return Counter(v[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split()[-1] for v in found.values())

    def count(self, user: str, token: str) -> int:
        """How many messages with this token are in `user`'s INBOX."""
        return self.inbox(user)[token]


def _log_tail(lab: Lab) -> str:
    return "\n".join(Path(lab.info["paths"]["postfix_log"]).read_text().splitlines()[-15:])


@pytest.fixture
def mail(lab_for: Callable[..., Lab], tmp_path: Path) -> Mail:
    lab = lab_for(DOMAIN, "Sở Giáo dục và Đào tạo (thử nghiệm thư)")
    lab.reset()
    assert lab.info["delivery"] == "available", lab.info["delivery"]
    state = tmp_path / "state"
    shutil.copytree(AGENCY, state)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSTATE_") or k == LANG_ENV}
    env.update(lab.env())
    env["MAILSTATE_HOME"] = str(tmp_path / "home")
    return Mail(lab, state, env)


def test_delivery_rules_through_every_lifecycle_step(mail: Mail) -> None:
    today = date.today()
    left_on = today - timedelta(days=10)
    mail.edit("ktt", 'name = "Phạm Văn Dũng"', f'name = "Phạm Văn Dũng"\nleft_on = {left_on}')
    mail.apply()
    an, binh, hoa = mail.address("nvan.vp"), mail.address("ttbinh.vp"), mail.address("hthoa.vp")
    dung, unit_vp = mail.address("pvdung.ktt"), mail.address("vp", "mailboxes")
    assert binh == f"ttbinh.vp@{DOMAIN}"

    # a person, a unit mailbox, a suspended person, a leaver before the lock date
    tokens = {u: mail.send(a) for u, a in (("nvan.vp", an), ("vp", unit_vp), ("hthoa.vp", hoa),
                                           ("pvdung.ktt", dung))}
    # a group nested two deep (toanbo → lanhdao → vanthu → unit ktt), nvan.vp named three times
    group = mail.send(f"toanbo@{DOMAIN}")
    # an unknown address: refused at RCPT, never accepted
    code, text = mail.refused(f"khongco@{DOMAIN}")
    assert code == 550 and "unknown" in text.lower(), text
    mail.settle()
    for user, token in tokens.items():
        assert mail.count(user, token) == 1, user
    members = {"nvan.vp": 1, "ttbinh.vp": 1, "vp": 1, "ktt": 1, "lvcuong.ktt": 1, "pvdung.ktt": 1,
               "hthoa.vp": 0}
    assert {u: mail.count(u, group) for u in members} == members

    # a transfer (Vĩnh Long: the address follows the unit); mail sent during the apply is not lost
    mail.edit("vp", 'unit = "vp"', 'unit = "ktt"')
    proc = subprocess.Popen([str(MAILSTATE), "apply", "--yes", "--state", str(mail.state)], env=mail.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    during: list[str] = []
    while proc.poll() is None or not during:
        during.append(mail.send(an))
    assert proc.wait(timeout=300) == 0, proc.stdout.read() if proc.stdout else ""
    new_binh = mail.address("ttbinh.vp")
    assert new_binh == f"ttbinh.ktt@{DOMAIN}"
    old_token, new_token = mail.send(binh), mail.send(new_binh)
    mail.settle()
    got = mail.inbox("nvan.vp")
    assert [got[t] for t in during] == [1] * len(during)
    assert (mail.count("ttbinh.vp", old_token), mail.count("ttbinh.vp", new_token)) == (1, 1)

    # the leaver after the lock date: refused at RCPT with the reason; left out of their groups
    # time passes the way apply sees it (an apply never runs a future date): the leaving day moves back
    mail.edit("ktt", f"left_on = {left_on}", f"left_on = {today - timedelta(days=35)}")
    mail.apply()
    code, text = mail.refused(dung)
    assert code == 550 and "left the agency" in text, text
    cuong_group, old_again = mail.send(f"ketoan@{DOMAIN}"), mail.send(binh)
    mail.settle()
    assert (mail.count("lvcuong.ktt", cuong_group), mail.count("pvdung.ktt", cuong_group)) == (1, 0)
    assert mail.count("ttbinh.vp", old_again) == 1  # the old address still delivers (not yet expired)
    # a suspended person still receives
    suspended = mail.send(hoa)
    mail.settle()
    assert mail.count("hthoa.vp", suspended) == 1

    # seven months on: the old address expired (unknown), the leaver removed (unknown; archive verified)
    mail.edit("ktt", f"left_on = {today - timedelta(days=35)}", f"left_on = {today - timedelta(days=200)}")
    mail.expire_alias(binh, today - timedelta(days=1))
    mail.apply()
    for gone in (binh, dung):
        code, text = mail.refused(gone)
        assert code == 550 and "unknown" in text.lower(), (gone, text)
    assert mail.count("ttbinh.vp", mail.send(new_binh)) in (0, 1)
    mail.settle()
    archive = Path(mail.lab.info["paths"]["archive"])
    assert any(p.name.startswith("pvdung.ktt") for p in archive.iterdir()), list(archive.iterdir())
