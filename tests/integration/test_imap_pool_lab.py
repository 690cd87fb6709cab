"""An agency with more unit mailboxes than a default Dovecot accepts connections (imap-login
process_limit 100, the lab's limits are Dovecot 2.3's defaults): the first apply of every unit mailbox
with its shared folder, and a head swap across all of them, each finish in one run of ``mailstate apply``
and converge; the old heads keep no right anywhere (the ACLs are read back over IMAP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailstate.cli import LANG_ENV
from mailstate.errors import ProviderError
from mailstate.lab import Lab
from mailstate.lab.testing import doveadm, imap_master_login, make_person
from mailstate.model.change import Action, Change
from mailstate.model.settings import ImapSettings
from mailstate.providers.imap.provider import ImapProvider, MailboxInfo

pytestmark = pytest.mark.integration

DOMAIN = "pool.example.gov.vn"
MAILSTATE = Path(sys.executable).with_name("mailstate")
UNITS = 132
FOLDER = "Văn bản đến/2026"


def write_agency(root: Path, units: int, head: str) -> None:
    """An agency of ``units`` units, each with two people (``tp…`` and ``cv…``), ``head`` of them heading
    it, and a shared folder in the unit mailbox that ``cv…`` writes in."""
    (root / "units").mkdir(parents=True, exist_ok=True)
    (root / "mailstate.toml").write_text(
        "[organization]\n"
        'name   = "Sở Thử nghiệm kết nối"\n'
        f'domain = "{DOMAIN}"\n\n'
        "[naming]\n"
        'person    = "{given}{initials}"\n'
        'unit      = "{unit}"\n'
        'collision = "number"\n',
        encoding="utf-8",
    )
    for n in range(1, units + 1):
        u, tp, cv = f"dv{n:03d}", f"tp{n:03d}", f"cv{n:03d}"
        head_id = tp if head == "tp" else cv
        (root / "units" / f"{u}.toml").write_text(
            f'[unit]\nid = "{u}"\nname = "Phòng số {n}"\nhead = "{head_id}"\n\n'
            f'[[person]]\nid = "{tp}"\nname = "Trần Phúc {n}"\n'
            f'[[person]]\nid = "{cv}"\nname = "Cao Văn {n}"\n\n'
            f'[[shared_folder]]\nmailbox = "unit:{u}"\npath = "{FOLDER}"\n'
            f'purpose = "Văn bản đến của phòng số {n}"\nwrite = ["{cv}"]\n',
            encoding="utf-8",
        )


class Run:
    def __init__(self, lab: Lab, state: Path, env: dict[str, str]) -> None:
        self.lab, self.state, self.env = lab, state, env

    def ms(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MAILSTATE), *args, "--state", str(self.state)],
            env=self.env, capture_output=True, text=True, timeout=300,
        )

    def plan(self) -> list[dict]:
        out = self.ms("plan", "--format", "json")
        assert out.returncode == 0, out.stdout + out.stderr
        return list(json.loads(out.stdout)["changes"])

    def apply(self) -> None:
        out = self.ms("apply", "--yes")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.fixture
def run(lab_for: Callable[..., Lab], tmp_path: Path) -> Run:
    lab = lab_for(DOMAIN)
    lab.reset()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSTATE_") or k == LANG_ENV}
    env.update(lab.env())
    env["MAILSTATE_HOME"] = str(tmp_path / "home")
    return Run(lab, tmp_path / "state", env)


def acls(lab: Lab, unit: str) -> dict[str, dict[str, str]]:
    """{folder: {identifier: rights}} of INBOX and the shared folder, read as the owner over IMAP."""
    c = imap_master_login(lab, unit)
    own = (unit.encode(), b"owner")
    try:
        return {
            f: {i.decode(): "".join(sorted(r.decode())) for i, r in c.getacl(f) if i not in own}
            for f in ("INBOX", FOLDER)
        }
    finally:
        c.logout()


def test_many_unit_mailboxes_apply_and_swap_heads_in_one_run(run: Run) -> None:
    write_agency(run.state, UNITS, head="tp")
    first = run.plan()
    imap = [c for c in first if c["provider"] == "imap"]
    assert len({c["key"].split("/")[0] for c in imap}) == UNITS
    run.apply()
    assert run.plan() == []

    write_agency(run.state, UNITS, head="cv")  # every unit gets a new head: its writer
    run.apply()
    assert run.plan() == []

    # the old heads keep nothing, the new ones have every right (Dovecot adds the obsolete c and d)
    full = "acdeiklprstwx"
    numbers = range(1, UNITS + 1)
    with ThreadPoolExecutor(max_workers=4) as threads:
        live = dict(zip(numbers, threads.map(lambda n: acls(run.lab, f"dv{n:03d}"), numbers), strict=True))
    want = {n: {"INBOX": {f"cv{n:03d}": full}, FOLDER: {f"cv{n:03d}": full}} for n in numbers}
    assert {n: got for n, got in live.items() if got != want[n]} == {}


# --------------------------------------------------------------------------------------------------
# The pool on Dovecot: bound, reuse, a connection the server drops


def provider_for(lab: Lab, mailboxes: int, max_connections: int) -> ImapProvider:
    """``mailboxes`` unit mailboxes mb01… in the lab, and a provider with room for ``max_connections``."""
    env = lab.env()
    infos = {}
    for n in range(1, mailboxes + 1):
        login = f"mb{n:02d}"
        make_person(lab, login, container="mailboxes", quota=1024**3)
        infos[login] = MailboxInfo(f"unit:{login}", login, login)
    settings = ImapSettings(
        url=env["MAILSTATE_IMAP_URL"], ca_file=env["MAILSTATE_IMAP_CA_FILE"], max_connections=max_connections
    )
    return ImapProvider(settings, env["MAILSTATE_IMAP_PASSWORD"], infos, workers=8)


def grant(owner: str, who: str, rights: str = "lr") -> Change:
    return Change(f"c-{owner}-{who}", Action.GRANT, "acl", f"unit:{owner}/INBOX#{who}", "imap", None,
                  {"rights": rights})


def inbox_acl(lab: Lab, owner: str) -> dict[str, str]:
    c = imap_master_login(lab, owner)
    try:
        return {i.decode(): r.decode() for i, r in c.getacl("INBOX") if i != owner.encode()}
    finally:
        c.logout()


def test_provider_stays_within_its_connections_and_logs_in_once_per_owner(clean_lab: Lab) -> None:
    p = provider_for(clean_lab, 12, max_connections=3)
    try:
        snap = p.read()  # 8 worker threads asked for, 3 connections allowed
        assert p.timings["mailboxes_read"] == 12 and snap.records == {}
        assert p.pool.peak <= 3 and p.pool.opened == 12
        for n in range(1, 13):  # two changes per owner, one after the other: one login each
            p.apply(grant(f"mb{n:02d}", "tuanlm"))
            p.apply(grant(f"mb{n:02d}", "hoapt", "lrs"))
        assert p.pool.peak <= 3 and p.pool.open == 3
        assert p.pool.opened == 12 + 12  # the read's connections were evicted in turn
    finally:
        p.close()
    assert p.pool.open == 0
    assert all(inbox_acl(clean_lab, f"mb{n:02d}") == {"tuanlm": "lr", "hoapt": "lrs"} for n in (1, 7, 12))


def kick(lab: Lab, user: str) -> None:
    """`doveadm kick` the user's sessions and wait until Dovecot no longer counts any (`doveadm who`): the
    kick only signals the imap process, which may still answer one more command before it ends."""
    assert user in doveadm(lab, "who", user).stdout.split()  # the pooled connection is there to kick
    doveadm(lab, "kick", user)
    deadline = time.monotonic() + 30
    while user in doveadm(lab, "who", user, check=False).stdout.split():
        assert time.monotonic() < deadline, f"{user}'s session outlived doveadm kick"
        time.sleep(0.02)


def test_a_connection_the_server_dropped_is_replaced(clean_lab: Lab) -> None:
    """`doveadm kick` closes the pooled connection on the server side: the next change of that owner
    finds it dropped, logs in again and is carried out; so is the next read."""
    p = provider_for(clean_lab, 1, max_connections=2)
    try:
        p.apply(grant("mb01", "tuanlm"))
        kick(clean_lab, "mb01")
        p.apply(grant("mb01", "hoapt"))
        assert p.pool.opened == 2
        kick(clean_lab, "mb01")
        keys = {key for _kind, key in p.read().records}
        assert keys == {"unit:mb01/INBOX#tuanlm", "unit:mb01/INBOX#hoapt"}
        assert p.pool.opened == 3
    finally:
        p.close()
    assert inbox_acl(clean_lab, "mb01") == {"tuanlm": "lr", "hoapt": "lr"}


def test_a_server_that_stays_away_is_a_clear_error(lab_for: Callable[..., Lab]) -> None:
    """Dovecot stopped: the pooled connection is dropped, the new login tried twice, then the change
    fails naming the server and the login (never the password)."""
    lab = lab_for("pool-down.example.gov.vn")
    lab.reset()
    p = provider_for(lab, 1, max_connections=2)
    password = lab.env()["MAILSTATE_IMAP_PASSWORD"]
    try:
        p.apply(grant("mb01", "tuanlm"))
        lab.stop_service("dovecot")
        try:
            with pytest.raises(ProviderError) as err:
                p.apply(grant("mb01", "hoapt"))
        finally:
            lab.start_service("dovecot")
        msg = str(err.value)
        assert "cannot log in to imaps://127.0.0.1:" in msg and "as mb01*mailstate" in msg
        assert "refused" in msg.lower() and password not in msg
        assert p.pool.open == 0
        p.apply(grant("mb01", "hoapt"))  # the server is back: the provider carries on
    finally:
        p.close()
    assert inbox_acl(lab, "mb01") == {"tuanlm": "lr", "hoapt": "lr"}
