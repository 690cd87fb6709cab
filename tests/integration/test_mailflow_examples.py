"""Every example agency's whole lifecycle with real mail: nothing delivered is ever lost until a verified
archive holds it.

For each example in examples/: apply it to a lab, send a message through the lab's Postfix (smtplib) to every
address the directory holds — person, kept old address, unit mailbox, group — and then step through the
example's lifecycle: the leavers' locks and removals, the dissolved units' locks and removals, the access
grants' ends (the suspended people stay locked and keep receiving). After every step another round of mail
goes to every address, and every message is counted and digested: live over IMAP (master login, every folder
of the private namespace) plus every archive, read back with doveadm on its own and compared with its
manifest. Every message ever delivered must be live or in a verified archive. A leaver after the lock is
refused at RCPT (550, never accepted, so never lost); a removed mailbox's address is unknown (550).

Time passes the way apply sees it (apply refuses a future --as-of): every date of the example's TOML files is
moved by the same number of days, so step k's events are due today and later ones are not yet. Step 0 is
before the first event (dates moved forward), so every leaver and dissolved unit receives mail first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailstate.desired_state.loader import load_state
from mailstate.desired_state.schema import State
from mailstate.lab import Lab
from mailstate.lab.testing import doveadm, imap_master_login

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab runs Postfix only as root (its master needs root)"),
]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "mailstate.toml").is_file())
MAILSTATE = Path(sys.executable).with_name("mailstate")
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
DATE_LINE = re.compile(r"^(\s*[A-Za-z_][A-Za-z0-9_]*\s*=\s*)(\d{4}-\d{2}-\d{2})(\s*(?:#.*)?)$", re.M)
TOKEN = re.compile(rb"^Subject: mailflow ([0-9a-f]{32})\s*$", re.M)

Key = tuple[str, str]
"""(mailbox owner's uid, SHA-256 of the message's full text with LF line ends)."""


# ------------------------------------------------------------------------------------------------------
# time: every date of the state moved by the same number of days


def shift_dates(src: Path, dst: Path, days: int) -> None:
    """Copy the state ``src`` to ``dst`` with every TOML date value moved ``days`` back (forward if < 0)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    for path in dst.rglob("*.toml"):
        text = path.read_text(encoding="utf-8")
        moved = DATE_LINE.sub(
            lambda m: m[1] + (date.fromisoformat(m[2]) - timedelta(days=days)).isoformat() + m[3], text
        )
        path.write_text(moved, encoding="utf-8")


@dataclass(frozen=True)
class Event:
    """One lifecycle event: due on ``due(anchor)`` where anchor is a date of the TOML (left_on …)."""

    kind: str  # lock | remove | dissolve | unit-remove | grant-end
    ref: str  # person id, or unit:<id>
    anchor: date
    due: Callable[[date], date]

    def is_due(self, shift: int, today: date) -> bool:
        return self.due(self.anchor - timedelta(days=shift)) <= today

    def shift_needed(self, today: date) -> int:
        """The fewest days the dates must move back for this event to be due today."""
        d = (self.due(self.anchor) - today).days
        while not self.is_due(d, today):
            d += 1
        while self.is_due(d - 1, today):
            d -= 1
        return d


def events_of(state: State) -> list[Event]:
    lc, out = state.lifecycle, []
    for p in state.people.values():
        if p.left_on is not None and not p.keep_after_leaving:
            out.append(Event("lock", p.id, p.left_on, lc.lock_after_leaving.due))
            out.append(Event("remove", p.id, p.left_on, lc.remove_after_leaving.due))
    for u in state.units.values():
        if u.dissolved_on is not None:
            out.append(Event("dissolve", f"unit:{u.id}", u.dissolved_on, lambda d: d))
            out.append(Event("unit-remove", f"unit:{u.id}", u.dissolved_on, lc.remove_after_leaving.due))
    for g in state.access_grants:
        out.append(Event("grant-end", f"{g.mailbox}>{g.to}", g.until, lambda d: d + timedelta(days=1)))
    return out


def timeline(events: list[Event], today: date) -> list[int]:
    """The shifts (days the dates move back) of the steps: before every event; every lock due and no
    removal; everything due (the grants end on the way). When a removal comes before another mailbox's
    lock, one step per distinct event date instead."""
    need = {e: e.shift_needed(today) for e in events}
    locks = [s for e, s in need.items() if e.kind in ("lock", "dissolve")]
    removals = [s for e, s in need.items() if e.kind in ("remove", "unit-remove")]
    first, last = min(need.values()) - 1, max(need.values())
    if max(locks) < min(removals):
        return [first, max(locks), last]
    return [first, *sorted({s for e, s in need.items() if e.kind != "grant-end"} | {last})]


# ------------------------------------------------------------------------------------------------------
# the lab: directory, SMTP, IMAP, archives


@dataclass
class Directory:
    """What the directory holds now: uid per address, the members of each group, who is refused."""

    owner: dict[str, str]  # address -> uid (people and unit mailboxes)
    groups: dict[str, list[str]]  # group address -> member addresses (rfc822MailMember)
    refused: set[str]  # uids with mailstateRefuseMail
    locked: set[str]


def read_directory(lab: Lab) -> Directory:
    conn = lab.ldap(as_="service")
    d = Directory({}, {}, set(), set())
    try:
        for ou in ("people", "mailboxes"):
            conn.search(f"ou={ou},{lab.base_dn}", "(objectClass=mailstateAccount)",
                        attributes=["uid", "mailLocalAddress", "mailstateRefuseMail", "pwdAccountLockedTime"])
            for e in conn.entries:
                uid = str(e.uid.value)
                for a in e.mailLocalAddress.values:
                    d.owner[str(a).lower()] = uid
                if e.mailstateRefuseMail.values:
                    d.refused.add(uid)
                if e.pwdAccountLockedTime.values:
                    d.locked.add(uid)
        conn.search(f"ou=groups,{lab.base_dn}", "(objectClass=mailstateGroup)",
                    attributes=["mailLocalAddress", "rfc822MailMember"])
        for e in conn.entries:
            for a in e.mailLocalAddress.values:
                d.groups[str(a).lower()] = [str(m).lower() for m in e.rfc822MailMember.values]
    finally:
        conn.unbind()
    return d


def send_round(lab: Lab, addresses: list[str]) -> tuple[dict[str, str], dict[str, tuple[int, str]]]:
    """One message to each address over one SMTP session: (token per accepted address, the refusals)."""
    host, _, port = lab.env()["MAILSTATE_LAB_SMTP"].partition(":")
    sent: dict[str, str] = {}
    refused: dict[str, tuple[int, str]] = {}
    with smtplib.SMTP(host, int(port), local_hostname="localhost", timeout=10) as smtp:
        for to in addresses:
            token = uuid.uuid4().hex
            msg = EmailMessage()
            msg["From"] = "sender@example.org"
            msg["To"] = to
            msg["Subject"] = f"mailflow {token}"
            msg.set_content(f"noi dung {token} gui {to}\n")
            try:
                smtp.send_message(msg)
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = exc.recipients[to]
                refused[to] = (code, text.decode(errors="replace"))
                smtp.rset()
            else:
                sent[to] = token
    return sent, refused


class Sender(threading.Thread):
    """Mail sent while an apply runs: OTHERS messages round-robin to every address, and to each mailbox the
    step removes AFTER_ARCHIVE messages once its archive directory exists — mail that arrives between the
    archive and the removal, which the removal must archive as an increment (mail that never stops arriving
    stops a removal after a few rounds, by design). Runs until stopped; records what was accepted (address,
    token) and what was refused at RCPT."""

    OTHERS = 100
    AFTER_ARCHIVE = 2

    def __init__(self, lab: Lab, owner: dict[str, str], removed: set[str]) -> None:
        super().__init__(daemon=True)
        self.lab, self.owner = lab, owner
        self.targets = {a: uid for a, uid in owner.items() if uid in removed}
        self.stop = threading.Event()
        self.accepted: list[tuple[str, str]] = []
        self.refused: list[tuple[str, int, str]] = []

    def archived(self, uid: str) -> bool:
        root = Path(self.lab.info["paths"]["archive"])
        return any(p.name.startswith(f"{uid}-") and p.name[len(uid) + 1 :][:1].isdigit()
                   for p in root.iterdir())

    def send(self, to: str) -> None:
        sent, refused = send_round(self.lab, [to])
        self.accepted += list(sent.items())
        self.refused += [(a, c, t) for a, (c, t) in refused.items()]

    def run(self) -> None:
        after: Counter[str] = Counter()
        cycle = sorted(self.owner)
        others = 0
        while not self.stop.is_set():
            for to, uid in self.targets.items():
                if after[to] < self.AFTER_ARCHIVE and self.archived(uid):
                    after[to] += 1
                    self.send(to)
            if others < self.OTHERS:
                self.send(cycle[others % len(cycle)])
                others += 1
            else:
                self.stop.wait(0.02)  # only polls the archive directory; nothing is asserted on time


def settle(lab: Lab) -> None:
    """Wait until Postfix's queue is empty and nothing is deferred."""
    queue = Path(lab.info["paths"]["postfix_conf"]).parent / "queue"
    deadline = time.monotonic() + 60
    while any(f.is_file() for q in QUEUES for f in (queue / q).rglob("*")):
        deferred = [f for f in (queue / "deferred").rglob("*") if f.is_file()]
        assert not deferred and time.monotonic() < deadline, _log_tail(lab)
        time.sleep(0.05)


def _log_tail(lab: Lab) -> str:
    return "\n".join(Path(lab.info["paths"]["postfix_log"]).read_text().splitlines()[-15:])


def _digest(text: bytes) -> str:
    return hashlib.sha256(text.replace(b"\r\n", b"\n")).hexdigest()


def read_live(lab: Lab, uids: set[str]) -> tuple[Counter[Key], dict[str, Counter[str]]]:
    """Every message of every folder of each mailbox's private namespace (master login): the (uid, digest)
    counts, and per token the uids holding it. Four mailboxes at a time."""
    out: Counter[Key] = Counter()
    where: dict[str, Counter[str]] = {}
    with ThreadPoolExecutor(4) as pool:
        for one, one_where in pool.map(lambda uid: _read_mailbox(lab, uid), sorted(uids)):
            out += one
            for token, holders in one_where.items():
                where.setdefault(token, Counter()).update(holders)
    return out, where


def _read_mailbox(lab: Lab, uid: str) -> tuple[Counter[Key], dict[str, Counter[str]]]:
    out: Counter[Key] = Counter()
    where: dict[str, Counter[str]] = {}
    c = imap_master_login(lab, uid)
    try:
        ns = c.namespace()
        others = [p for group in (ns.other, ns.shared) for p, _ in (group or ())]
        for flags, _, name in c.list_folders():
            if b"\\Noselect" in flags or any(name.startswith(p) or name == p.rstrip("/") for p in others):
                continue
            c.select_folder(name, readonly=True)
            ids = c.search()
            for data in c.fetch(ids, ["BODY.PEEK[]"]).values() if ids else []:
                text = data[b"BODY[]"]
                out[(uid, _digest(text))] += 1
                m = TOKEN.search(text.replace(b"\r\n", b"\n"))
                if m:
                    where.setdefault(m[1].decode(), Counter())[uid] += 1
    finally:
        c.logout()
    return out, where


def read_archives(lab: Lab, someone: str) -> tuple[Counter[Key], dict[str, Counter[str]]]:
    """Every archived message, read back with doveadm (as ``someone``, any existing account, with the
    archive's own mail_location) and compared with its manifest: a directory that does not match its
    manifest message by message (GUID, size, SHA-256 of the text) is not a verified archive and fails."""
    root = Path(lab.info["paths"]["archive"])
    out: Counter[Key] = Counter()
    where: dict[str, Counter[str]] = {}
    for mf_path in sorted(root.glob("*.manifest.json")):
        mf = json.loads(mf_path.read_text(encoding="utf-8"))
        directory = root / mf["archive"]
        assert directory.is_dir() and not directory.is_symlink(), mf_path
        assert directory.resolve().parent == root.resolve() and mf["archive"].startswith(f"{mf['user']}-")
        res = doveadm(lab, "-o", f"mail_location=mdbox:{directory}", "-f", "json", "fetch", "-u", someone,
                      "guid size.physical text", "all", check=False)
        assert res.returncode == 0, res.stderr
        read: Counter[tuple[str, int, str]] = Counter()
        for row in json.loads(res.stdout or "[]"):
            raw = row["text"].encode("utf-8")
            assert len(raw) == int(row["size.physical"]), row["guid"]
            read[(row["guid"], len(raw), hashlib.sha256(raw).hexdigest())] += 1
            out[(mf["user"], _digest(raw))] += 1
            m = TOKEN.search(raw.replace(b"\r\n", b"\n"))
            if m:
                where.setdefault(m[1].decode(), Counter())[mf["user"]] += 1
        expected = Counter((g, int(n), d) for _mb, g, n, d in mf["messages"])
        assert read == expected, f"{mf_path.name}: the archive read back is not what its manifest says"
    return out, where


# ------------------------------------------------------------------------------------------------------


@dataclass
class Agency:
    lab: Lab
    src: Path
    state: Path
    env: dict[str, str]

    def apply(self) -> None:
        res = subprocess.run([str(MAILSTATE), "apply", "--yes", "--allow-destructive", "--state",
                              str(self.state)], env=self.env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.fixture(params=NAMES)
def agency(request: pytest.FixtureRequest, lab_for: Callable[..., Lab], tmp_path: Path) -> Agency:
    src = EXAMPLES / request.param
    org = tomllib.loads((src / "mailstate.toml").read_text(encoding="utf-8"))["organization"]
    lab = lab_for(org["domain"], org["name"])
    lab.reset()
    assert lab.info["delivery"] == "available", lab.info["delivery"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSTATE_")}
    env.update(lab.env())
    env["MAILSTATE_HOME"] = str(tmp_path / "home")
    return Agency(lab, src, tmp_path / "state", env)


def test_every_delivered_message_is_live_or_archived_through_the_lifecycle(agency: Agency) -> None:
    lab, today = agency.lab, date.today()
    original = load_state(agency.src)
    events = events_of(original)
    assert any(e.kind == "remove" for e in events), "every example has a leaver who is removed"
    steps = timeline(events, today)

    delivered: Counter[Key] = Counter()  # every message ever seen live, per mailbox owner
    known: dict[str, str] = {}  # every address ever in the directory -> its uid
    all_uids = set(original.people) | set(original.units)
    before: Directory | None = None
    for n, shift in enumerate(steps):
        shift_dates(agency.src, agency.state, shift)
        due = [e for e in events if e.is_due(shift, today)]
        removed = {e.ref.removeprefix("unit:") for e in due if e.kind in ("remove", "unit-remove")}
        sender = None
        if before is not None:  # mail keeps coming while the apply locks, archives and removes
            owner = {a: uid for a, uid in before.owner.items() if uid not in before.refused}
            sender = Sender(lab, owner, removed)
            sender.start()
        try:
            agency.apply()
        finally:
            if sender is not None:
                sender.stop.set()
                sender.join(timeout=60)
        d = read_directory(lab)
        known.update(d.owner)

        # the lifecycle as the example's dates say: removed, refused (leavers locked), everyone else present
        left = {e.ref for e in due if e.kind == "lock"} - removed
        present = set(d.owner.values())
        assert present == all_uids - removed, (n, shift)
        assert d.refused == left, (n, shift)
        assert d.locked >= left | {e.ref.removeprefix("unit:") for e in due if e.kind == "dissolve"} - removed

        # a round of mail to every address ever known (gone ones must be unknown, leavers refused)
        addresses = sorted(set(known) | set(d.groups))
        sent, refusals = send_round(lab, addresses)
        settle(lab)
        for a, (code, text) in refusals.items():
            if a in d.owner:
                assert d.owner[a] in d.refused, (n, a, code, text)
                assert code == 550 and "left the agency" in text, (a, code, text)
            else:
                assert a in known, (n, a, code, text)  # a group, a present address, is never refused
                assert code == 550 and "unknown" in text.lower(), (a, code, text)
        assert set(refusals) == {a for a in known if a not in d.owner or d.owner[a] in d.refused}, n

        # nothing delivered before is lost: live, or in a verified archive; this round arrived once each
        live, where = read_live(lab, present)
        archived, in_archive = read_archives(lab, sorted(present)[0])
        lost = delivered - live - archived
        assert not lost, f"step {n} (dates moved {shift} days): {len(lost)} messages lost: {sorted(lost)[:5]}"
        for uid in removed:
            assert not any(k[0] == uid for k in live), uid
        for a, token in sent.items():
            members = [a] if a in d.owner else d.groups[a]  # a group: each member once
            assert where.get(token, Counter()) == Counter({d.owner[m]: 1 for m in members}), (n, a)
        if sender is not None and before is not None:
            assert sender.accepted, "no mail was accepted while the apply ran"
            for a, code, text in sender.refused:  # refused at RCPT (never accepted): only once gone or left
                assert code == 550 and before.owner[a] in removed | d.refused, (n, a, code, text)
            for a, token in sender.accepted:  # accepted while the apply ran: live, or in its archive
                found = where.get(token, Counter()) + in_archive.get(token, Counter())
                assert found == Counter({before.owner[a]: 1}), (n, a, token, found)
        delivered |= live
        before = d

    # the end: every leaver and dissolved unit is removed, with every message it ever received archived
    final = {e.ref.removeprefix("unit:") for e in events if e.kind in ("remove", "unit-remove")}
    assert final and not final & set(read_directory(lab).owner.values())
    gone = Counter({k: v for k, v in delivered.items() if k[0] in final})
    assert gone, "the removed mailboxes received mail before their lock"
    archived, _ = read_archives(lab, sorted(set(read_directory(lab).owner.values()))[0])
    assert not gone - archived
