"""Apply safety on the real lab: a stop signal mid-apply, a future --as-of, a change the server refuses."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import ldap3
import pytest

from mailstate.lab import Lab
from mailstate.lab.testing import imap_master_login
from mailstate.reconciler.apply.journal import read_lines

pytestmark = pytest.mark.integration

MAILSTATE = Path(sys.executable).with_name("mailstate")
DOMAIN = "lab.example.gov.vn"

TOP = f"""
[organization]
name = "Lab"
domain = "{DOMAIN}"
language = "en"

[providers.ldap]
url = "ldaps://ldap.invalid"
password_env = "MAILSTATE_LDAP_PASSWORD"
"""


def write_state(root: Path, people: int, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mailstate.toml").write_text(TOP, encoding="utf-8")
    rows = ['[unit]\nid = "qlcn"\nname = "Phòng Quản lý Công nghiệp"\nhead = "p000"\n']
    for i in range(people):
        rows.append(f'[[person]]\nid = "p{i:03d}"\nname = "Nguyễn Văn Người {i:03d}"\n')
    (root / "units").mkdir(exist_ok=True)
    (root / "units" / "qlcn.toml").write_text("\n".join(rows) + extra, encoding="utf-8")
    return root


def ms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MAILSTATE), *args], capture_output=True, text=True, timeout=180)


def ldap_entries(lab: Lab, container: str) -> dict[str, dict[str, list[str]]]:
    conn = lab.ldap(as_="root")
    try:
        conn.search(f"ou={container},{lab.base_dn}", "(objectClass=*)", ldap3.LEVEL, attributes=["*"])
        return {e.entry_dn: e.entry_attributes_as_dict for e in conn.entries}
    finally:
        conn.unbind()


@pytest.fixture
def home(lab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The clean default lab with every MAILSTATE_* variable; journal and audit log under tmp_path."""
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / DOMAIN


CHILD = """
import os, signal, sys
from mailstate.cli import cli
from mailstate.reconciler.apply import journal

done, sig = 0, getattr(signal, sys.argv[2])
original = journal.Journal.done

def done_then_signal(self, change):
    global done
    original(self, change)
    done += 1
    if done == 3:  # a real signal to this very process, as `timeout` or systemd sends it
        os.kill(os.getpid(), sig)

journal.Journal.done = done_then_signal
cli.main(["apply", "--yes", "--provider", "ldap", "--state", sys.argv[1]], prog_name="mailstate")
"""


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_stop_signal_mid_apply_journals_the_end_and_releases_the_lock(
    home: Path, clean_lab: Lab, tmp_path: Path, signame: str
) -> None:
    """A signal after 3 changes: the changes in progress finish, the journal ends with apply-finished
    (interrupted, the signal named), the directory's apply lock is gone, the exit code is 128 + signal;
    the next apply goes on at once (no 6-hour wait) and converges."""
    state = write_state(tmp_path / "state", people=8)
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    r = subprocess.run([sys.executable, str(script), str(state), signame], capture_output=True, text=True,
                       timeout=180)
    signum = getattr(signal, signame)
    assert r.returncode == 128 + signum, r.stdout + r.stderr
    assert f"apply stopped by {signame} after the change in progress" in r.stderr
    lines = read_lines(home / "journal.jsonl")
    events = [x["event"] for x in lines]
    # the changes in progress when the signal came (up to --parallelism of them) are finished and journaled
    assert events.count("done") == events.count("started") >= 3 and "failed" not in events
    assert lines[-1]["event"] == "apply-finished" and lines[-1]["outcome"] == "interrupted"
    assert lines[-1]["signal"] == signame and lines[-1]["not_tried"] > 0
    assert f"cn=apply-lock,ou=system,{clean_lab.base_dn}".lower() not in {
        dn.lower() for dn in ldap_entries(clean_lab, "system")
    }
    again = ms("apply", "--yes", "--provider", "ldap", "--state", str(state))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "stale apply lock" not in again.stdout
    assert len(ldap_entries(clean_lab, "people")) == 8


def test_future_as_of_is_never_applied(home: Path, clean_lab: Lab, tmp_path: Path) -> None:
    """A leaver whose removal is due next year: `apply --as-of <then> --yes` and a saved plan made for that
    day (with or without --as-of) are refused; nothing in the directory changes; `plan --as-of` previews."""
    state = write_state(tmp_path / "state", people=3)
    assert ms("apply", "--yes", "--provider", "ldap", "--state", str(state)).returncode == 0
    unit_file = state / "units" / "qlcn.toml"
    left = date.today() - timedelta(days=120)
    text = unit_file.read_text(encoding="utf-8").replace(
        'id = "p002"\n', f'id = "p002"\nleft_on = {left.isoformat()}\n'
    )
    unit_file.write_text(text, encoding="utf-8")
    before = ldap_entries(clean_lab, "people")
    journal_before = (home / "journal.jsonl").read_text()
    later = (date.today() + timedelta(days=300)).isoformat()
    preview = ms("plan", "--provider", "ldap", "--state", str(state), "--as-of", later, "--format", "json")
    assert preview.returncode == 0, preview.stderr
    # ldap only: no archive, so no delete — the removal chain stops at the lock
    assert {c["action"] for c in json.loads(preview.stdout)["changes"]} >= {"lock"}
    plan_file = tmp_path / "future.json"
    assert ms("plan", "--provider", "ldap", "--state", str(state), "--as-of", later,
              "--out", str(plan_file)).returncode == 0
    for argv in (
        ["apply", "--yes", "--provider", "ldap", "--state", str(state), "--as-of", later],
        ["apply", str(plan_file), "--state", str(state)],
        ["apply", str(plan_file), "--state", str(state), "--as-of", later],
    ):
        r = ms(*argv)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"{later} is after today" in r.stderr and f"plan --as-of {later}" in r.stderr, r.stderr
    assert ldap_entries(clean_lab, "people") == before  # not locked, not removed
    assert (home / "journal.jsonl").read_text() == journal_before


def test_saved_plan_and_files_are_private(home: Path, clean_lab: Lab, tmp_path: Path) -> None:
    """After an apply through the CLI: the home directory 0700, journal, audit log, initial passwords and a
    saved plan 0600 — a journal left 0644 and a home left 0755 by an older version are tightened."""
    state = write_state(tmp_path / "state", people=2)
    home.mkdir(parents=True)
    home.chmod(0o755)
    (home / "journal.jsonl").write_text("")
    (home / "journal.jsonl").chmod(0o644)
    plan_file = tmp_path / "plan.json"
    assert ms("plan", "--provider", "ldap", "--state", str(state), "--out", str(plan_file)).returncode == 0
    r = ms("apply", str(plan_file), "--state", str(state))
    assert r.returncode == 0, r.stderr
    assert oct(home.stat().st_mode & 0o777) == "0o700"
    files = [plan_file, home / "journal.jsonl", home / "audit.jsonl", *home.glob("initial-passwords-*.tsv")]
    assert len(files) == 4
    for f in files:
        assert oct(f.stat().st_mode & 0o777) == "0o600", f


IMAP_TOP = TOP + """
[providers.imap]
url = "imaps://mail.invalid"
admin_user = "mailstate"
password_env = "MAILSTATE_IMAP_PASSWORD"
"""

FOLDERS = """
[[shared_folder]]
mailbox = "unit:qlcn"
path = "Blocked/2026"
purpose = "Lưu trữ"
read = ["p001"]

[[shared_folder]]
mailbox = "unit:qlcn"
path = "Văn bản đến/2026"
purpose = "Văn bản đến của phòng"
write = ["p001"]
"""


def test_change_refused_by_dovecot_skips_only_its_dependents(
    home: Path, clean_lab: Lab, tmp_path: Path
) -> None:
    """Dovecot refuses to create one shared folder (its place in the mail store is taken): apply goes on,
    creates the other folder and its rights and the new person, skips the refused folder's rights, says
    which in its summary and exits 1; the journal has the refusal, the skips and 'incomplete'."""
    state = write_state(tmp_path / "state", people=2)
    (state / "mailstate.toml").write_text(IMAP_TOP, encoding="utf-8")
    first = ms("apply", "--yes", "--state", str(state))
    assert first.returncode == 0, first.stdout + first.stderr
    imap_master_login(clean_lab, "qlcn").logout()  # the unit mailbox's store exists from here on
    mailboxes = Path(clean_lab.info["paths"]["mail"]) / "qlcn" / "mdbox" / "mailboxes"
    obstacle = mailboxes / "Blocked"
    mailboxes.mkdir(parents=True, exist_ok=True)
    obstacle.write_text("not a folder\n")
    if os.geteuid() == 0:
        user = pwd.getpwnam(clean_lab.info["user"])
        os.chown(obstacle, user.pw_uid, user.pw_gid)
    write_state(state, people=3, extra=FOLDERS)  # one new person, two shared folders with rights

    r = ms("apply", "--yes", "--state", str(state))
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr
    assert "apply incomplete: 1 change refused by the server" in err, err
    assert "refused: " in err and "(create shared folder unit:qlcn/Blocked/2026)" in err
    assert "skipped, depend on it (2): " in err and "grant rights unit:qlcn/Blocked/2026#p001" in err, err
    lines = read_lines(home / "journal.jsonl")
    run = lines[max(i for i, x in enumerate(lines) if x["event"] == "apply-started"):]
    refused = [x for x in run if x["event"] == "failed"]
    assert [(x["key"], x.get("refused")) for x in refused] == [("unit:qlcn/Blocked/2026", True)]
    assert [x["key"] for x in run if x["event"] == "skipped"] == [
        "unit:qlcn/Blocked/2026#p000", "unit:qlcn/Blocked/2026#p001"  # the head's rights and p001's
    ]
    done = {(x["kind"], x["key"]) for x in run if x["event"] == "done"}
    assert {("person", "p002"), ("shared_folder", "unit:qlcn/Văn bản đến/2026"),
            ("acl", "unit:qlcn/Văn bản đến/2026#p001")} <= done
    assert run[-1]["outcome"] == "incomplete" and run[-1]["skipped"] == 2 and run[-1]["failed"] == 1
    client = imap_master_login(clean_lab, "qlcn")
    try:
        assert client.folder_exists("Văn bản đến/2026") and not client.folder_exists("Blocked/2026")
        assert b"p001" in {ident for ident, _rights in client.getacl("Văn bản đến/2026")}
    finally:
        client.logout()
    # once the cause is gone the next apply makes what was refused and skipped
    obstacle.unlink()
    again = ms("apply", "--yes", "--state", str(state))
    assert again.returncode == 0, again.stdout + again.stderr


READS = """
import json, sys
from mailstate.cli import cli
from mailstate.reconciler import pipeline

seen = []
original = pipeline.read_all

def read_all(providers, *args, **kwargs):
    ldap = providers["ldap"]
    seen.append(ldap.read_entry(ldap.lock_dn, ["description"])[1] is not None)
    return original(providers, *args, **kwargs)

pipeline.read_all = read_all
try:
    cli.main(["apply", *sys.argv[2:], "--provider", "ldap", "--state", sys.argv[1]], prog_name="mailstate")
finally:
    print("READS " + json.dumps(seen))
"""


def _apply_watching_reads(tmp_path: Path, state: Path, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                                            list[bool]]:
    """Run `mailstate apply ARGS` in a child whose every read of the live state notes whether the directory's
    apply lock was held at that moment."""
    script = tmp_path / "reads.py"
    script.write_text(READS, encoding="utf-8")
    r = subprocess.run([sys.executable, str(script), str(state), *args], capture_output=True, text=True,
                       timeout=180)
    said = [line for line in r.stdout.splitlines() if line.startswith("READS ")]
    return r, json.loads(said[-1][6:])


def test_apply_yes_reads_the_live_state_once_under_the_lock(
    home: Path, clean_lab: Lab, tmp_path: Path
) -> None:
    """`apply --yes` without a saved plan reads the live state once — under the apply lock, so no other
    apply can change it before these changes are made — instead of a plan, then a stale check's second read;
    it converges, its plan printed before the changes. A saved plan is still checked against a second read
    (what was reviewed may be hours old)."""
    state = write_state(tmp_path / "state", people=5)
    r, reads = _apply_watching_reads(tmp_path, state, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert reads == [True]
    assert r.stdout.index("create person p000") < r.stdout.index("applied 7 changes")
    assert len(ldap_entries(clean_lab, "people")) == 5
    r, reads = _apply_watching_reads(tmp_path, state, "--yes")  # nothing left: the lock is given back
    assert r.returncode == 0 and "nothing to apply" in r.stdout and reads == [True]
    assert f"cn=apply-lock,ou=system,{clean_lab.base_dn}".lower() not in {
        dn.lower() for dn in ldap_entries(clean_lab, "system")
    }
    write_state(tmp_path / "state", people=6)
    plan_file = tmp_path / "plan.json"
    assert ms("plan", "--state", str(state), "--provider", "ldap", "--out", str(plan_file)).returncode == 0
    r, reads = _apply_watching_reads(tmp_path, state, str(plan_file))
    assert r.returncode == 0, r.stdout + r.stderr
    assert reads == [True]  # the saved plan's stale check, under the lock (its own plan read another time)
    assert len(ldap_entries(clean_lab, "people")) == 6


def test_apply_yes_held_off_by_another_apply_reads_nothing(
    home: Path, clean_lab: Lab, tmp_path: Path
) -> None:
    """While another apply holds the lock, `apply --yes` stops before reading or changing anything."""
    state = write_state(tmp_path / "state", people=3)
    conn = clean_lab.ldap(as_="root")
    try:
        with contextlib.suppress(ldap3.core.exceptions.LDAPEntryAlreadyExistsResult):
            conn.add(f"ou=system,{clean_lab.base_dn}", ["organizationalUnit"], {"ou": "system"})
        lock = f"cn=apply-lock,ou=system,{clean_lab.base_dn}"
        since = datetime.now(UTC).replace(microsecond=0).isoformat()
        assert conn.add(lock, ["applicationProcess"], {"cn": "apply-lock",
                                                       "description": f"ops@elsewhere pid 1 since {since}"})
        r, reads = _apply_watching_reads(tmp_path, state, "--yes")
        assert r.returncode == 1 and "another apply is running" in r.stderr, r.stdout + r.stderr
        assert reads == [] and ldap_entries(clean_lab, "people") == {}
    finally:
        conn.delete(f"cn=apply-lock,ou=system,{clean_lab.base_dn}")
        conn.unbind()
