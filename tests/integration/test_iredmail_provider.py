"""Adopting an iRedMail server (docs/adopting.md) on the lab's iRedMail layout: a directory written by hand
the way iRedMail's admin panel writes it is imported, the imported state plans to nothing, then a
transfer, a leaver and a new hire are applied through the ``iredmail`` provider; iRedMail's own Postfix
and Dovecot lookups still deliver, and refuse the leaver."""

from __future__ import annotations

import os
import smtplib
import tomllib
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from email.message import EmailMessage
from pathlib import Path

import ldap3
import pytest
import tomlkit
from imapclient.exceptions import LoginError

from mailstate.adopt.importer import REPORT, import_state
from mailstate.desired_state.loader import load_state
from mailstate.errors import ProviderError
from mailstate.lab import Lab
from mailstate.lab.iredmail import testing as irm_t
from mailstate.lab.testing import doveadm, imap_login
from mailstate.providers.iredmail.provider import IredmailProvider
from mailstate.reconciler.pipeline import apply_plan, make_plan
from mailstate.serverconfig import iredmail as irm

pytestmark = pytest.mark.integration

DOMAIN = "adopt.example.gov.vn"
PW = {"an": "mat-khau-An-1", "binh": "mat-khau-Binh-2", "cuong": "mat-khau-Cuong-3"}
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the lab runs Postfix only as root")


@pytest.fixture
def adopted(lab_for: Callable[..., Lab], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Lab, Path]:
    """An iRedMail lab filled by hand (an, binh with a shadow address, cuong disabled, the list phong-hc,
    the alias van-thu → binh, a mailAlias with two targets), with only the directory's and ssh's variables
    set (import reads the directory only; apply reaches doveadm over ssh for a leaver's mailbox)."""
    lab = lab_for(DOMAIN, "Sở thử nghiệm tiếp nhận", layout="iredmail")
    lab.reset()
    lst = irm_t.address(lab, "phong-hc")
    irm_t.add_list(lab, "phong-hc", cn="Phòng Hành chính")
    irm_t.add_user(
        lab,
        "an",
        PW["an"],
        cn="Nguyễn Văn An",
        member_of=[lst],
        extra={"sn": "Nguyễn", "givenName": "An", "title": "Trưởng phòng", "departmentNumber": "hc"},
    )
    irm_t.add_user(
        lab,
        "binh",
        PW["binh"],
        cn="Trần Thị Bình",
        member_of=[lst],
        shadow=[irm_t.address(lab, "binh.tran")],
        extra={"sn": "Trần", "givenName": "Bình", "departmentNumber": "hc"},
    )
    irm_t.add_user(
        lab,
        "cuong",
        PW["cuong"],
        cn="Lê Cường",
        status="disabled",
        member_of=[lst],
        extra={"sn": "Lê", "givenName": "Cường", "departmentNumber": "hc"},
    )
    irm_t.add_alias(lab, "van-thu", [irm_t.address(lab, "binh")])
    irm_t.add_alias(lab, "ca-hai", [irm_t.address(lab, "an"), irm_t.address(lab, "binh")])
    for key in list(os.environ):
        if key.startswith("MAILSTATE_"):
            monkeypatch.delenv(key)
    for key, value in lab.env().items():
        if key.startswith(("MAILSTATE_LDAP_", "MAILSTATE_SSH_")):  # the directory, and doveadm over ssh
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    return lab, tmp_path


def _people(state: Path) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for f in (state / "units").glob("*.toml"):
        for p in tomllib.loads(f.read_text(encoding="utf-8")).get("person", []):
            out[p["id"]] = {**p, "_file": f.name}
    return out


def _apply(state: Path, home: Path) -> None:
    plan = make_plan(state)
    apply_plan(
        plan,
        state,
        journal_dir=home,
        audit_log=home / "audit.jsonl",
        passwords_out=home / "pw.tsv",
        allow_destructive=True,
    )


def test_import_plans_to_nothing_then_changes_apply(adopted: tuple[Lab, Path]) -> None:
    lab, tmp = adopted
    state, home = tmp / "state", tmp / "home"
    result = import_state(state, domain=DOMAIN, layout="iredmail")
    top = tomllib.loads((state / "mailstate.toml").read_text(encoding="utf-8"))
    assert "iredmail" in top["providers"] and "ldap" not in top["providers"]
    people = _people(state)
    assert set(people) == {"an", "binh", "cuong"}
    assert people["an"]["unit"] == "hc" and people["an"]["title"] == "Trưởng phòng"
    assert sorted(people["binh"]["old_addresses"]) == [
        irm_t.address(lab, "binh.tran"),  # type: ignore[arg-type]
        irm_t.address(lab, "van-thu"),
    ]
    # disabled by hand: kept as found (no login, mail refused, no lock reason written), and reported
    assert people["cuong"]["suspended"] == {"reason": "disabled in the directory before mailstate",
                                            "disabled": True}
    groups = tomllib.loads((state / "groups.toml").read_text(encoding="utf-8"))["group"]
    assert [(g["id"], sorted(g["members"])) for g in groups] == [("phong-hc", ["an", "binh", "cuong"])]
    report = (state / REPORT).read_text(encoding="utf-8")
    assert "ca-hai" in report and "2 addresses" in report  # the two-target alias: listed, with why
    assert "cuong" in report  # the disabled account's explanation is to be reviewed
    assert any(str(f).endswith(REPORT) for f in result.files)

    # iRedMail has no unit tree: the units made from departmentNumber come without a unit mailbox
    # (mailbox = false, reported): nothing is invented, the imported state plans to nothing
    assert "mailbox = false" in (state / "units" / "hc.toml").read_text(encoding="utf-8")
    assert "departmentNumber" in report
    plan = make_plan(state)
    assert sorted(f"{c.action.label} {c.kind} {c.key}" for c in plan.changes) == []
    _apply(state, home)
    assert [f"{c.action.label} {c.kind} {c.key}" for c in make_plan(state).changes] == []
    # (a unit without a unit mailbox, as iRedMail's units are: doveadm on this layout logs in by address,
    # which the unit-mailbox checks do not do yet — docs/iredmail.md)
    (state / "units" / "kt.toml").write_text('[unit]\nid = "kt"\nname = "Phòng Kế toán"\nmailbox = false\n',
                                             encoding="utf-8")

    # a transfer (an to unit kt, new title), a leaver (binh left 4 months ago: locked, mail refused; removal
    # is months away), a new hire (dung, in unit hc, added to the list)
    hc = state / "units" / "hc.toml"
    doc = tomlkit.parse(hc.read_text(encoding="utf-8"))
    for person in doc["person"]:
        if person["id"] == "an":
            person["unit"], person["title"] = "kt", "Phó phòng"
        if person["id"] == "binh":
            person["left_on"] = date.today() - timedelta(days=120)
    dung = tomlkit.table()
    dung.update({"id": "dung", "name": "Phạm Thị Dung", "unit": "hc", "address": irm_t.address(lab, "dung")})
    doc["person"].append(dung)
    hc.write_text(tomlkit.dumps(doc), encoding="utf-8")
    groups_text = (state / "groups.toml").read_text(encoding="utf-8").replace('"cuong"', '"cuong", "dung"')
    (state / "groups.toml").write_text(groups_text, encoding="utf-8")
    changes = sorted(f"{c.action.label} {c.kind} {c.key}" for c in make_plan(state).changes)
    assert not [c for c in changes if "cuong" in c]  # the account disabled by hand stays as found
    _apply(state, home)
    assert [f"{c.action.label} {c.kind} {c.key}" for c in make_plan(state).changes] == []

    conn = lab.ldap("dovecot")
    try:
        users = irm.container_dn(lab.base_dn, DOMAIN, "Users")
        conn.search(
            users,
            "(objectClass=mailUser)",
            attributes=["uid", "departmentNumber", "title", "accountStatus", "memberOfGroup"],
        )
        got = {str(e.uid): e for e in conn.entries}
    finally:
        conn.unbind()
    assert str(got["an"].departmentNumber) == "kt" and str(got["an"].title) == "Phó phòng"
    assert str(got["binh"].accountStatus) == "disabled"
    assert str(got["dung"].accountStatus) == "active"
    assert irm_t.address(lab, "phong-hc") in [str(v) for v in got["dung"].memberOfGroup.values]
    with pytest.raises(LoginError):  # the leaver, and the account disabled by hand, cannot log in
        imap_login(lab, irm_t.address(lab, "binh"), PW["binh"])
    with pytest.raises(LoginError):
        imap_login(lab, irm_t.address(lab, "cuong"), PW["cuong"])
    pw = dict(
        line.split("\t")[0:1] + line.split("\t")[-1:]
        for line in (home / "pw.tsv").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert "dung" in pw
    imap_login(lab, irm_t.address(lab, "dung"), pw["dung"].strip()).logout()


def _people_in(f: Path) -> set[str]:
    return {p["id"] for p in tomllib.loads(f.read_text(encoding="utf-8")).get("person", [])}


def _send(lab: Lab, *to: str) -> str:
    token = uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "sender@example.org", ", ".join(to), f"test {token}"
    msg.set_content(f"noi dung {token}\n")
    host, _, port = lab.env()["MAILSTATE_LAB_SMTP"].partition(":")
    with smtplib.SMTP(host, int(port), local_hostname="localhost", timeout=10) as smtp:
        smtp.send_message(msg)
    return token


@root_only
def test_mail_flows_after_apply(adopted: tuple[Lab, Path]) -> None:
    """After the import and a new hire applied, iRedMail's own Postfix maps deliver to the new hire and
    to the list (with the new member), and refuse the disabled account at RCPT."""
    lab, tmp = adopted
    state, home = tmp / "state", tmp / "home"
    import_state(state, domain=DOMAIN, layout="iredmail")
    f = next((state / "units").glob("*.toml"))
    f.write_text(
        f.read_text(encoding="utf-8") + f'\n[[person]]\nid = "dung"\nname = "Phạm Thị Dung"\n'
        f'address = "{irm_t.address(lab, "dung")}"\n',
        encoding="utf-8",
    )
    groups_text = (state / "groups.toml").read_text(encoding="utf-8").replace('"cuong"', '"cuong", "dung"')
    (state / "groups.toml").write_text(groups_text, encoding="utf-8")
    _apply(state, home)
    token = _send(lab, irm_t.address(lab, "phong-hc"))
    direct = _send(lab, irm_t.address(lab, "dung"))
    import time

    deadline = time.monotonic() + 30
    while True:
        res = doveadm(lab, "search", "-u", irm_t.address(lab, "dung"), "mailbox", "INBOX", "ALL", check=False)
        if len(res.stdout.split()) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    found = doveadm(lab, "fetch", "-u", irm_t.address(lab, "dung"), "hdr.subject", "mailbox", "INBOX", "ALL")
    assert token in found.stdout and direct in found.stdout
    host, _, port = lab.env()["MAILSTATE_LAB_SMTP"].partition(":")
    with smtplib.SMTP(host, int(port), local_hostname="localhost", timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("sender@example.org")
        code, _ = smtp.rcpt(irm_t.address(lab, "cuong"))
    assert code == 550


def test_apply_lock_is_held_in_mailstates_subtree(adopted: tuple[Lab, Path]) -> None:
    """The apply lock on this layout is an entry under the domain's ou=mailstate (made when missing,
    invisible to iRedMail): a second holder is refused with the first one's name, and the entry is gone
    once released — iRedMail's own containers are never touched."""
    lab, tmp = adopted
    state = tmp / "state"
    import_state(state, domain=DOMAIN, layout="iredmail")
    first = IredmailProvider.from_state(load_state(state))
    second = IredmailProvider.from_state(load_state(state))
    own = f"ou=mailstate,{irm.domain_dn(lab.base_dn, DOMAIN)}"
    conn = lab.ldap("root")

    def locks() -> list[str]:
        conn.search(own, "(cn=apply-lock)", ldap3.LEVEL, attributes=["description"])
        return [str(e.description) for e in conn.entries]

    try:
        with first.apply_lock("alice@host-a"):
            assert [d.split(" since ")[0] for d in locks()] == ["alice@host-a"]
            with pytest.raises(ProviderError, match="another apply is running: alice@host-a since"):
                with second.apply_lock("bob@host-b"):
                    pass  # pragma: no cover
        assert locks() == []
        with second.apply_lock("bob@host-b"):
            pass
        for ou in ("Users", "Groups", "Aliases"):
            conn.search(irm.container_dn(lab.base_dn, DOMAIN, ou), "(cn=apply-lock)", attributes=["1.1"])
            assert conn.entries == []
    finally:
        conn.unbind()
        first.close()
        second.close()
