"""The default layout's behaviour, on an adopted iRedMail server (docs/iredmail.md): one iRedMail lab, one
story, told in order by the tests of this module (each step needs the one before it).

A directory made by hand the way iRedMail makes it (people, an account disabled in iRedAdmin, a mailing
list, an alias), mail in the mailboxes, a folder shared by its owner over IMAP (rights and purpose set by
hand) → ``mailstate import --layout iredmail`` → the plan is empty, rights included (Dovecot names
everyone by address here; mailstate reads them back as logins) → a transfer, a leaver (archived, the
archive read back and compared by content, the mail removed) and a new hire, and a unit mailbox with its
head and delegate, applied through the ``iredmail``, ``imap`` and ``ssh`` providers → the plan is empty
again → a hand change in the directory and in an ACL is found and repaired → the delegate reads the unit
mailbox with their own login → iRedMail's own Postfix maps deliver to a person, the list and the alias,
and refuse the disabled account, which cannot log in either.
"""

from __future__ import annotations

import hashlib
import json
import os
import smtplib
import time
import tomllib
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from click.testing import CliRunner
from imapclient.exceptions import LoginError

from mailstate.cli import LANG_ENV, cli
from mailstate.desired_state.loader import load_state
from mailstate.lab import Lab
from mailstate.lab.iredmail import testing as irm_t
from mailstate.lab.testing import doveadm, imap_login, imap_master_login, own_mail
from mailstate.model.records import acl_key
from mailstate.model.rights import normalise_rights
from mailstate.providers.registry import close_providers, open_providers
from mailstate.reconciler.pipeline import apply_plan, make_plan, read_all
from mailstate.serverconfig import iredmail as irm

pytestmark = pytest.mark.integration

DOMAIN = "adopt.example.gov.vn"  # the lab of test_iredmail_provider.py: one iRedMail lab for both
PW = {p: f"mat-khau-{p}-{n}7" for n, p in enumerate(["an", "binh", "cuong", "dung", "giang"])}
FOLDER = "Hồ sơ dự án"
PURPOSE = "Hồ sơ dự án của phòng, chia sẻ cho người kế nhiệm"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the lab runs Postfix only as root")


@dataclass
class Story:
    lab: Lab
    state: Path
    home: Path
    started: float = field(default_factory=time.monotonic)
    facts: dict[str, Any] = field(default_factory=dict)

    def addr(self, local: str) -> str:
        return irm_t.address(self.lab, local)


@pytest.fixture(scope="module")
def story(lab_for: Callable[..., Lab], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    lab = lab_for(DOMAIN, "Sở thử nghiệm tiếp nhận", layout="iredmail")
    lab.reset()
    tmp = tmp_path_factory.mktemp("iredmail-story")
    s = Story(lab, tmp / "state", tmp / "home")
    lst = s.addr("phong-hc")
    irm_t.add_list(lab, "phong-hc", cn="Phòng Hành chính")
    for local, unit, title in (("an", "hc", "Trưởng phòng"), ("binh", "hc", None), ("cuong", "hc", None),
                               ("dung", "hc", "Văn thư"), ("giang", "hc", None)):
        given = local.capitalize()
        extra = {"departmentNumber": unit, "sn": "Nguyễn", "givenName": given,
                 **({"title": title} if title else {})}
        irm_t.add_user(lab, local, PW[local], cn=f"Nguyễn {given}", member_of=[lst], extra=extra,
                       status="disabled" if local == "cuong" else "active")
    irm_t.add_alias(lab, "lanh-dao", [s.addr("an")])
    for local in ("an", "binh"):  # mail in the mailboxes, a folder of its own
        c = imap_login(lab, s.addr(local), PW[local])
        try:
            c.create_folder(FOLDER)
            for i in range(3):
                c.append("INBOX", f"Subject: {local} {i}\r\n\r\nthư {i} của {local}\r\n".encode())
                c.append(FOLDER, f"Subject: hồ sơ {i}\r\n\r\nhồ sơ {i} của {local}\r\n".encode())
            if local == "an":  # shared by its owner, by hand: giang may read it
                c.setacl(FOLDER, s.addr("giang"), "lr")
        finally:
            c.logout()
    doveadm(lab, "mailbox", "metadata", "set", "-u", s.addr("an"), FOLDER, "/shared/comment", PURPOSE)
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("MAILSTATE_") and key != LANG_ENV:
                mp.delenv(key)
        for key, value in lab.env().items():  # the directory, IMAP (master user) and doveadm over ssh
            mp.setenv(key, value)
        mp.setenv("MAILSTATE_HOME", str(s.home))
        yield s
    print(f"\niRedMail behaviour story: {time.monotonic() - s.started:.1f} s")


def _changes(state: Path) -> list[str]:
    return sorted(f"{c.action.label} {c.kind} {c.key}" for c in make_plan(state).changes)


def _apply(s: Story) -> None:
    apply_plan(make_plan(s.state), s.state, journal_dir=s.home, audit_log=s.home / "audit.jsonl",
               passwords_out=s.home / "pw.tsv", allow_destructive=True)


def _edit(path: Path, change: Callable[[Any], None]) -> None:
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")


def _people(doc: Any) -> dict[str, Any]:
    return {p["id"]: p for p in doc.get("person", [])}


def _acl(s: Story, owner: str, folder: str) -> dict[str, str]:
    """The folder's ACL as the server holds it (GETACL as the owner, through the master user)."""
    c = imap_master_login(s.lab, s.addr(owner))
    try:
        return {(w.decode() if isinstance(w, bytes) else w):
                normalise_rights(r.decode() if isinstance(r, bytes) else r) for w, r in c.getacl(folder)}
    finally:
        c.logout()


def _live_mail(s: Story, local: str) -> Counter[tuple[str, str]]:
    """(folder, SHA-256 of the full text) of every message of a mailbox's own folders, read over IMAP."""
    return own_mail(imap_master_login(s.lab, s.addr(local)))


def _archived_mail(s: Story, user: str) -> Counter[tuple[str, str]]:
    """The same, of every archive directory of ``user``, read with doveadm's JSON output (never with the
    provider's own reader)."""
    out: Counter[tuple[str, str]] = Counter()
    for d in sorted(Path(s.lab.info["paths"]["archive"]).iterdir()):
        if d.is_symlink() or not d.is_dir() or not d.name.startswith(f"{user}-"):
            continue
        res = doveadm(s.lab, "-o", f"mail_location=mdbox:{d}", "-f", "json", "fetch", "-u", s.addr("an"),
                      "mailbox text", "all")
        for row in json.loads(res.stdout or "[]"):
            if not row["mailbox"].startswith("shared/"):
                digest = hashlib.sha256(row["text"].encode("utf-8")).hexdigest()
                out[(unicodedata.normalize("NFC", row["mailbox"]), digest)] += 1
    return out


def _files_in(maildir: Path) -> int:
    return sum(1 for p in maildir.rglob("*") if p.is_file() and p.parent.name in ("cur", "new"))


# ------------------------------------------------------------------------------------------------------


def test_import_plans_to_nothing_rights_included(story: Story) -> None:
    s = story
    r = CliRunner().invoke(cli, ["import", "--out", str(s.state), "--domain", DOMAIN, "--layout", "iredmail"])
    assert r.exit_code == 0, r.output
    # the folder shared by hand over IMAP (Dovecot names giang by address) is imported as the state's own
    shared = tomllib.loads((s.state / "shared_folders.toml").read_text(encoding="utf-8"))["shared_folder"]
    assert [(f["mailbox"], f["path"], f.get("read"), f.get("purpose")) for f in shared] == [
        ("an", FOLDER, ["giang"], PURPOSE)], shared
    assert _changes(s.state) == []
    # not empty by accident: the rights were read, keyed by login (Dovecot names giang by address here)
    state = load_state(s.state)
    provs = open_providers(state, None, for_plan=True)
    try:
        snaps = read_all(provs, None)
    finally:
        close_providers(provs)
    acl = snaps["imap"].records[("acl", acl_key("an", FOLDER, "giang"))]
    assert acl.attrs["rights"] == "lr"
    assert ("shared_folder", f"an/{FOLDER}") in snaps["imap"].records
    assert _acl(s, "an", FOLDER).get(s.addr("giang")) == "lr"


def test_transfer_leaver_new_hire_and_a_unit_mailbox_apply(story: Story) -> None:
    s = story
    hc, kt = s.state / "units" / "hc.toml", s.state / "units" / "kt.toml"

    def hc_changes(doc: Any) -> None:
        doc["unit"].update({"name": "Phòng Hành chính", "head": "an", "delegates": ["dung"],
                            "address": s.addr("hc")})
        doc["unit"].pop("mailbox", None)  # give it its unit mailbox
        people = _people(doc)
        people["giang"].update({"unit": "kt", "title": "Kế toán viên"})  # a transfer
        people["binh"]["left_on"] = date.today() - timedelta(days=400)  # left over a year ago: removed
        hoa = tomlkit.table()
        hoa.update({"id": "hoa", "name": "Phạm Thị Hoa", "unit": "kt", "address": s.addr("hoa")})
        doc["person"].append(hoa)  # a new hire

    _edit(hc, hc_changes)
    kt.write_text('[unit]\nid = "kt"\nname = "Phòng Kế toán"\nmailbox = false\n', encoding="utf-8")
    groups = s.state / "groups.toml"
    text = groups.read_text(encoding="utf-8")
    groups.write_text(text.replace('"giang"', '"giang", "hoa"'), encoding="utf-8")

    before = _live_mail(s, "binh")
    assert sum(before.values()) == 6
    conn = s.lab.ldap("root")
    try:
        users = irm.container_dn(s.lab.base_dn, DOMAIN, "Users")
        conn.search(users, f"(mail={s.addr('binh')})", attributes=["homeDirectory"])
        maildir = Path(str(conn.entries[0].homeDirectory)) / "Maildir"
    finally:
        conn.unbind()
    assert _files_in(maildir) == 6

    planned = _changes(s.state)
    for want in ("archive person binh", "delete person binh", "create person hoa", "create unit_mailbox hc",
                 "acl unit:hc/INBOX#dung", "acl unit:hc/INBOX#an"):
        assert any(want in c for c in planned), (want, planned)
    t0 = time.monotonic()
    _apply(s)
    s.facts["apply_seconds"] = time.monotonic() - t0
    assert _changes(s.state) == []

    # the leaver: every message is in the archive, read back by content; none is left live
    assert _archived_mail(s, s.addr("binh")) == before
    assert _files_in(maildir) == 0
    manifest = next(Path(s.lab.info["paths"]["archive"]).glob(f"{s.addr('binh')}-*.manifest.json"))
    assert json.loads(manifest.read_text())["count"] == 6
    conn = s.lab.ldap("root")
    try:
        conn.search(users, "(objectClass=mailUser)", attributes=["uid", "departmentNumber", "title"])
        got = {str(e.uid): e for e in conn.entries}
    finally:
        conn.unbind()
    assert "binh" not in got
    assert str(got["giang"].departmentNumber) == "kt" and str(got["giang"].title) == "Kế toán viên"
    assert "hoa" in got and "hc" in got
    # the unit mailbox's rights, as Dovecot holds them: by address
    inbox = _acl(s, "hc", "INBOX")
    assert inbox.get(s.addr("an")) == "aeiklprstwx" and inbox.get(s.addr("dung")) == "eiklprstw"
    assert _acl(s, "an", FOLDER).get(s.addr("giang")) == "lr"


def test_hand_changes_in_the_directory_and_an_acl_are_repaired(story: Story) -> None:
    s = story
    conn = s.lab.ldap("service")
    try:
        dn = irm_t.entry_dn(s.lab, "giang", "Users")
        assert conn.modify(dn, {"title": [("MODIFY_REPLACE", ["Giám đốc"])]}), conn.result
    finally:
        conn.unbind()
    c = imap_login(s.lab, s.addr("an"), PW["an"])
    try:
        c.setacl(FOLDER, s.addr("giang"), "lrswite")  # the owner gives more than the TOML says
    finally:
        c.logout()
    assert _changes(s.state) == [f"grant acl an/{FOLDER}#giang", "update person giang"]
    _apply(s)
    assert _changes(s.state) == []
    assert _acl(s, "an", FOLDER).get(s.addr("giang")) == "lr"


def test_the_delegate_reads_the_unit_mailbox_with_their_own_login(story: Story) -> None:
    s = story
    c = imap_master_login(s.lab, s.addr("hc"))
    try:
        c.append("INBOX", "Subject: công văn đến\r\n\r\nnội dung công văn\r\n".encode())
    finally:
        c.logout()
    c = imap_login(s.lab, s.addr("dung"), PW["dung"])
    try:
        shared = f"shared/{s.addr('hc')}/INBOX"
        c.select_folder(shared)
        bodies = [d[b"BODY[]"] for d in c.fetch(c.search(), ["BODY[]"]).values()]  # read: \Seen, their own
        assert any("nội dung công văn".encode() in b for b in bodies)
    finally:
        c.logout()
    # what doveadm reads back is keyed by login: the delegate's last login, the unit mailbox's use
    provs = open_providers(load_state(s.state), None, for_plan=True)
    try:
        facts = read_all(provs, None)["ssh"].facts
    finally:
        close_providers(provs)
    assert {"an", "dung"} <= set(facts["last_login"])
    assert not {s.addr("an"), s.addr("dung")} & set(facts["last_login"])
    assert "dung" in facts["used"]["hc"]
    with pytest.raises(LoginError):  # the account disabled by hand stays disabled
        imap_login(s.lab, s.addr("cuong"), PW["cuong"])


def _send(s: Story, to: str) -> str:
    token = uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "sender@example.org", to, f"test {token}"
    msg.set_content(f"noi dung {token}\n")
    host, _, port = s.lab.env()["MAILSTATE_LAB_SMTP"].partition(":")
    with smtplib.SMTP(host, int(port), local_hostname="localhost", timeout=10) as smtp:
        smtp.send_message(msg)
    return token


def _subjects(s: Story, local: str) -> str:
    res = doveadm(s.lab, "fetch", "-u", s.addr(local), "hdr.subject", "mailbox", "INBOX", "ALL", check=False)
    return res.stdout


@root_only
def test_mail_flows_through_iredmails_own_maps(story: Story) -> None:
    s = story
    to_person, to_list, to_alias = _send(s, s.addr("giang")), _send(s, s.addr("phong-hc")), _send(
        s, s.addr("lanh-dao"))
    want = {"giang": [to_person, to_list], "hoa": [to_list], "an": [to_list, to_alias], "dung": [to_list]}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(t in _subjects(s, who) for who, tokens in want.items() for t in tokens):
            break
        time.sleep(0.1)
    for who, tokens in want.items():
        got = _subjects(s, who)
        assert all(t in got for t in tokens), (who, got)
    host, _, port = s.lab.env()["MAILSTATE_LAB_SMTP"].partition(":")
    with smtplib.SMTP(host, int(port), local_hostname="localhost", timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("sender@example.org")
        assert smtp.rcpt(s.addr("cuong"))[0] == 550  # disabled by hand
        assert smtp.rcpt(s.addr("binh"))[0] == 550  # removed
    listed = tomllib.loads((s.state / "groups.toml").read_text(encoding="utf-8"))["group"][0]["members"]
    assert "binh" in listed  # still listed in the TOML: kept on the list entry, no mail to it
