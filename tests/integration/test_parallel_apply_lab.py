"""Parallel apply and overlapped reads on the real lab (slapd, Dovecot, sshd): a plan of many independent
changes applied with --parallelism 4 converges with an exact journal; the providers read at once give the
snapshot they give one after another."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailstate.desired_state.loader import load_state
from mailstate.lab import Lab
from mailstate.lab.testing import imap_master_login
from mailstate.model.provider import TakesLiveMailboxes, TakesUnitMailboxes
from mailstate.providers.registry import close_providers, open_providers
from mailstate.reconciler.apply.journal import read_lines
from mailstate.reconciler.pipeline import live_logins, read_all

pytestmark = pytest.mark.integration

MAILSTATE = Path(sys.executable).with_name("mailstate")
DOMAIN = "lab.example.gov.vn"

TOP = f"""
[organization]
name = "Lab"
domain = "{DOMAIN}"

[providers.ldap]
url = "ldaps://ldap.invalid"
password_env = "MAILSTATE_LDAP_PASSWORD"
"""


def write_state(root: Path, units: int = 3, per_unit: int = 8) -> Path:
    """``units`` units of ``per_unit`` people, each unit mailbox with a shared folder its people may read."""
    (root / "units").mkdir(parents=True, exist_ok=True)
    (root / "mailstate.toml").write_text(TOP, encoding="utf-8")
    for u in range(units):
        uid = f"dv{u}"
        people = [f"n{u}x{i:02d}" for i in range(per_unit)]
        rows = [f'[unit]\nid = "{uid}"\nname = "Phòng số {u}"\nhead = "{people[0]}"\n']
        rows += [
            f'[[person]]\nid = "{p}"\nname = "Nguyễn Văn Người {u} {i:02d}"\n' for i, p in enumerate(people)
        ]
        rows.append(
            f'[[shared_folder]]\nmailbox = "unit:{uid}"\npath = "Văn bản đến/2026"\npurpose = "Văn bản"\n'
            f"read = [{', '.join(repr(p).replace(chr(39), chr(34)) for p in people[1:])}]\n"
        )
        (root / "units" / f"{uid}.toml").write_text("\n".join(rows), encoding="utf-8")
    return root


def ms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MAILSTATE), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def home(lab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / DOMAIN


def test_parallel_apply_converges_with_an_exact_journal(home: Path, clean_lab: Lab, tmp_path: Path) -> None:
    """Every provider, --parallelism 4, from an empty lab: the next plan is empty; the journal holds every
    change of the plan exactly once, its started line before its done line and nothing else for it; a change
    starts only after every change it depends on is done; and changes did overlap (several started before
    the first was done)."""
    state = write_state(tmp_path / "state")
    plan_file = tmp_path / "plan.json"
    made = ms("plan", "--state", str(state), "--out", str(plan_file))
    assert made.returncode == 0, made.stdout + made.stderr
    planned = json.loads(plan_file.read_text(encoding="utf-8"))["changes"]
    assert {c["provider"] for c in planned} == {"ldap", "imap"} and len(planned) > 40
    r = ms("apply", str(plan_file), "--state", str(state), "--parallelism", "4")
    assert r.returncode == 0, r.stdout + r.stderr

    again = ms("plan", "--state", str(state), "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr  # converged in one run

    lines = read_lines(home / "journal.jsonl")
    assert lines[0]["event"] == "apply-started" and lines[-1]["event"] == "apply-finished"
    assert lines[-1]["outcome"] == "ok" and lines[-1]["done"] == len(planned)
    events: dict[str, list[tuple[int, str]]] = {}
    for n, line in enumerate(lines[1:-1], start=1):
        events.setdefault(line["change"], []).append((n, line["event"]))
    assert sorted(events) == sorted(c["id"] for c in planned)
    assert all([e for _, e in ev] == ["started", "done"] for ev in events.values())
    started = {cid: ev[0][0] for cid, ev in events.items()}
    finished = {cid: ev[1][0] for cid, ev in events.items()}
    with_deps = [c for c in planned if c["depends_on"]]
    assert with_deps
    for c in with_deps:
        for dep in c["depends_on"]:
            assert finished[dep] < started[c["id"]], (c["id"], dep)
    first_done = min(finished.values())
    assert sum(1 for n in started.values() if n < first_done) > 1  # it did run changes at once


def test_overlapped_reads_give_the_sequential_snapshot(home: Path, clean_lab: Lab, tmp_path: Path) -> None:
    """After an apply, reading every provider at once (read_all) gives the same records, unlisted objects and
    facts as reading them one after another, the directory first (its logins handed to the mail side)."""
    state_dir = write_state(tmp_path / "state", units=2, per_unit=4)
    r = ms("apply", "--yes", "--state", str(state_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    client = imap_master_login(clean_lab, "dv0")
    try:  # a unit mailbox someone worked in: the ssh provider's facts need the directory's unit mailboxes
        client.append("INBOX", b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n", flags=[b"\\Seen"])
    finally:
        client.logout()
    state = load_state(state_dir)
    provs = open_providers(state, for_plan=True)
    try:
        assert set(provs) == {"ldap", "imap", "ssh"}
        one_by_one = {"ldap": provs["ldap"].read(None)}
        for name in ("imap", "ssh"):
            prov = provs[name]
            if isinstance(prov, TakesLiveMailboxes):
                prov.set_live_mailboxes(live_logins(one_by_one["ldap"]))
            if isinstance(prov, TakesUnitMailboxes):
                units = one_by_one["ldap"].records.values()
                prov.set_unit_mailboxes({r.key for r in units if r.kind == "unit_mailbox"})
            one_by_one[name] = prov.read(None)
        at_once = read_all(provs, None)
    finally:
        close_providers(provs)
    assert set(at_once) == set(one_by_one)
    for name, snap in one_by_one.items():
        assert at_once[name].records == snap.records, name
        assert sorted(map(repr, at_once[name].unmanaged)) == sorted(map(repr, snap.unmanaged)), name
        assert at_once[name].facts == snap.facts, name
    assert any(k[0] == "acl" for k in at_once["imap"].records)  # the mail side did read something
    assert at_once["ssh"].facts["used"] == {"dv0": "INBOX: 1 read"}


def test_unit_mailboxes_used_read_in_one_batch(home: Path, clean_lab: Lab, tmp_path: Path) -> None:
    """Whether each unit mailbox was worked in comes from one `doveadm mailbox status -F` for all of them: a
    read message in one says so under its own login, an untouched one and one with only new mail do not."""
    state_dir = write_state(tmp_path / "state", units=3, per_unit=2)
    r = ms("apply", "--yes", "--state", str(state_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    msg = b"From: a@example.com\r\nTo: dv0@" + DOMAIN.encode() + b"\r\nSubject: x\r\n\r\nbody\r\n"
    client = imap_master_login(clean_lab, "dv0")
    try:
        client.append("INBOX", msg, flags=[b"\\Seen"])  # a delegate read it
    finally:
        client.logout()
    client = imap_master_login(clean_lab, "dv2")
    try:
        client.append("INBOX", msg)  # delivered, never read
    finally:
        client.logout()
    provs = open_providers(load_state(state_dir), ["ssh"])
    try:
        used = provs["ssh"].units_used(["dv0", "dv1", "dv2"])  # type: ignore[attr-defined]
    finally:
        close_providers(provs)
    assert used == {"dv0": "INBOX: 1 read"}
