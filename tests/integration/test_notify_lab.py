"""The owner of a temporarily locked mailbox is told at their backup mailbox (MOST art.18.4;
docs/regulation.md), through a real Postfix: the agency's lab applies the lock, the notice goes through
the SMTP relay to a mailbox of another lab (the backup mailbox is outside the agency), and is read back over
IMAP. A relay that refuses never fails or undoes the lock: warned, journaled, retried by the next apply,
and once sent never sent again."""

from __future__ import annotations

import email
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailstate.cli import LANG_ENV
from mailstate.lab import Lab
from mailstate.lab.testing import LOCKED, imap_master_login, make_person

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab runs Postfix only as root (its master needs root)"),
]

MAILSTATE = Path(sys.executable).with_name("mailstate")
BACKUP_DOMAIN = "sgd.vinhlong.gov.vn"  # the lab of test_mailflow.py: shared in a full run
REASON = "Tạm khóa theo Quyết định 12/QĐ-VP để kiểm tra an toàn thông tin"
CONTACT = "Phòng Công nghệ thông tin, điện thoại 0256 3822 123"
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


def _state(root: Path, domain: str, backup: str) -> None:
    root.mkdir(exist_ok=True)
    (root / "mailstate.toml").write_text(
        f'[organization]\nname = "Sở Khoa học và Công nghệ (thử nghiệm)"\ndomain = "{domain}"\n'
        'language = "vi"\nregulation = "most-4105"\n\n'
        '[providers.ldap]\nurl = "ldaps://ldap.invalid"\npassword_env = "MAILSTATE_LDAP_PASSWORD"\n\n'
        f'[notify]\nurl = "smtp://relay.invalid"\nallow_plain = true\nfrom_address = "cntt@{domain}"\n'
        f'contact = "{CONTACT}"\n', encoding="utf-8")
    (root / "units").mkdir(exist_ok=True)
    (root / "units" / "vp.toml").write_text(
        '[unit]\nid = "vp"\nname = "Văn phòng"\nhead = "hung.nv"\n\n'
        '[[person]]\nid = "hung.nv"\nname = "Nguyễn Văn Hùng"\n\n'
        f'[[person]]\nid = "quan.vd"\nname = "Vũ Đình Quân"\nbackup_email = "{backup}"\n'
        f'suspended = "{REASON}"\n', encoding="utf-8")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settle(lab: Lab) -> None:
    """Postfix's queue is empty: every accepted message is delivered."""
    queue = Path(lab.info["paths"]["postfix_conf"]).parent / "queue"
    deadline = time.monotonic() + 30
    while any(any(f.is_file() for f in (queue / q).rglob("*")) for q in QUEUES):
        assert time.monotonic() < deadline, "Postfix did not deliver its queue"
        time.sleep(0.05)


def _inbox(lab: Lab, user: str) -> list[EmailMessage]:
    c = imap_master_login(lab, user)
    try:
        c.select_folder("INBOX", readonly=True)
        found = c.fetch(c.search(), ["RFC822"])
    finally:
        c.logout()
    return [email.message_from_bytes(v[b"RFC822"], policy=policy.default)  # type: ignore[misc]
            for _k, v in sorted(found.items())]


def _journal(home: Path, domain: str) -> list[dict[str, object]]:
    path = home / domain / "journal.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_owner_is_told_once_and_a_refusing_relay_never_undoes_the_lock(
    lab_env: dict[str, str], lab_for: Callable[..., Lab], tmp_path: Path
) -> None:
    agency: Lab = lab_for()
    domain = agency.info["domain"]
    backup_lab = lab_for(BACKUP_DOMAIN, "Sở Giáo dục và Đào tạo (thử nghiệm thư)")
    backup_lab.reset()
    assert backup_lab.info["delivery"] == "available", backup_lab.info["delivery"]
    make_person(backup_lab, "quan.backup", "Mk-duphong-2026", cn="Vũ Đình Quân",
                mail=f"quan.backup@{BACKUP_DOMAIN}")
    state, home = tmp_path / "state", tmp_path / "home"
    _state(state, domain, f"khongco@{BACKUP_DOMAIN}")  # unknown there: the relay refuses it
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSTATE_") or k == LANG_ENV}
    env.update(lab_env)
    env.update({"MAILSTATE_HOME": str(home), LANG_ENV: "vi"})

    def apply(smtp_url: str) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([str(MAILSTATE), "apply", "--yes", "--state", str(state)],
                             env={**env, "MAILSTATE_SMTP_URL": smtp_url}, capture_output=True, text=True,
                             timeout=300, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stdout + res.stderr
        assert agency.secret("ldap_service") not in res.stdout + res.stderr
        return res

    def locked() -> bool:
        conn = agency.ldap(as_="service")
        try:
            return bool(conn.search(f"ou=people,{agency.base_dn}",
                                    f"(&(uid=quan.vd)(pwdAccountLockedTime={LOCKED}))", attributes=["uid"]))
        finally:
            conn.unbind()

    relay = f"smtp://{backup_lab.env()['MAILSTATE_LAB_SMTP']}"
    # 1. the relay cannot be reached: the lock is made, the notice is not, and the run succeeds
    res = apply(f"smtp://127.0.0.1:{_closed_port()}")
    assert locked()
    assert "chưa gửi được thông báo tạm khóa hộp thư quan.vd" in res.stderr
    assert "lần apply sau sẽ gửi lại" in res.stderr
    # 2. nothing left to change; the relay answers but refuses the address: warned again, still locked
    res = apply(relay)
    assert "quan.vd" in res.stderr and "550" in res.stderr, res.stderr
    assert locked()
    events = [e for e in _journal(home, domain) if e["event"] in ("notified", "notify-failed")]
    assert [e["event"] for e in events] == ["notify-failed", "notify-failed"]
    assert all(agency.secret("ldap_service") not in json.dumps(e) for e in events)
    # 3. the backup address is corrected: the pending notice goes out through the real Postfix
    text = (state / "units" / "vp.toml").read_text(encoding="utf-8")
    (state / "units" / "vp.toml").write_text(
        text.replace(f"khongco@{BACKUP_DOMAIN}", f"quan.backup@{BACKUP_DOMAIN}"), encoding="utf-8")
    res = apply(relay)
    assert "thông báo tạm khóa" not in res.stderr, res.stderr
    _settle(backup_lab)
    [msg] = _inbox(backup_lab, "quan.backup")
    address = f"quanvd@{domain}"  # {given}{initials}: the live address
    assert msg["Subject"] == f"Hộp thư {address} của Ông/Bà đã bị tạm khóa"
    assert "=?utf-8?" in msg.as_string().split("\n\n", 1)[0].lower()  # encoded on the wire, decoded here
    assert msg["From"].addresses[0].display_name == "Sở Khoa học và Công nghệ (thử nghiệm)"
    assert msg["From"].addresses[0].addr_spec == f"cntt@{domain}"
    assert msg["To"].addresses[0].display_name == "Vũ Đình Quân"
    assert msg["Auto-Submitted"] == "auto-generated"
    body = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Kính gửi Vũ Đình Quân," in body
    assert f"Lý do: {REASON}" in body
    assert f"Mọi thắc mắc xin liên hệ: {CONTACT}" in body
    assert "Quyết định 4105/QĐ-BKHCN" in body
    [sent] = [e for e in _journal(home, domain) if e["event"] == "notified"]
    day = sent["notify"]["locked_on"]  # type: ignore[index]
    assert f"đã bị tạm khóa từ ngày {day[8:10]}/{day[5:7]}/{day[0:4]}" in body  # type: ignore[index]
    # 4. once sent, never again: the next apply (nothing to change) sends nothing
    apply(relay)
    _settle(backup_lab)
    assert len(_inbox(backup_lab, "quan.backup")) == 1
    assert [e["event"] for e in _journal(home, domain) if e["event"] == "notified"] == ["notified"]
