"""The mail host's bulk reads on the real lab (Dovecot, sshd): how many doveadm processes a read starts does
not grow with the number of mailboxes (a userdb lookup and a process start per mailbox made a province's
plan take minutes), and what they find is what the one-mailbox-at-a-time reads found."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mailstate.desired_state.loader import load_state
from mailstate.errors import ProviderError
from mailstate.lab import Lab
from mailstate.lab.testing import doveadm, imap_master_login, views_in_round
from mailstate.providers.doveadm.parse import parse_shared_grantees, parse_shared_users
from mailstate.providers.doveadm.provider import FOLDER_STATUS, SETTINGS_AT_ONCE, SshProvider
from mailstate.providers.imap.provider import ImapProvider
from mailstate.providers.registry import close_providers, open_providers
from mailstate.reconciler.pipeline import make_plan, read_all

pytestmark = pytest.mark.integration

MAILSTATE = Path(sys.executable).with_name("mailstate")
DOMAIN = "lab.example.gov.vn"
MSG = b"From: a@example.com\r\nTo: x@" + DOMAIN.encode() + b"\r\nSubject: x\r\n\r\nbody\r\n"


def write_state(root: Path, units: int, per_unit: int) -> Path:
    (root / "units").mkdir(parents=True, exist_ok=True)
    (root / "mailstate.toml").write_text(
        f'[organization]\nname = "Lab"\ndomain = "{DOMAIN}"\n\n[providers.ldap]\nurl = "ldaps://ldap.invalid"\n'
        'password_env = "MAILSTATE_LDAP_PASSWORD"\n',
        encoding="utf-8",
    )
    for u in range(units):
        people = [f"b{u}x{i}" for i in range(per_unit)]
        rows = [f'[unit]\nid = "bu{u}"\nname = "Phòng {u}"\nhead = "{people[0]}"\n'
                f'delegates = ["{people[1]}", "{people[2]}"]\n']
        rows += [f'[[person]]\nid = "{p}"\nname = "Trần Văn Người {u} {i}"\n' for i, p in enumerate(people)]
        readers = ", ".join(f'"{p}"' for p in people[1:])
        rows.append(f'[[shared_folder]]\nmailbox = "unit:bu{u}"\npath = "Đến"\npurpose = "Văn bản"\n'
                    f"read = [{readers}]\n")
        (root / "units" / f"bu{u}.toml").write_text("\n".join(rows), encoding="utf-8")
    return root


VIEWS_ASKS = (" acl get ", " mailbox path ", " metadata get ", "grep -aHZs ", " user -f home ")
"""What the views of a round ask of the mail host for the folders (beside the count)."""


class Counting:
    """The commands an SshProvider ran on the host (its own ``run``, wrapped: the server is real)."""

    def __init__(self, prov: SshProvider) -> None:
        self.commands: list[str] = []
        inner = prov.run

        def run(command: str, check: bool = True) -> tuple[int, str, str]:
            self.commands.append(command)
            return inner(command, check)

        prov.run = run  # type: ignore[method-assign]

    def doveadm(self, words: str) -> int:
        """How many doveadm processes of ``words`` (e.g. "mailbox status") the commands started."""
        return sum(c.count(f" {words} ") for c in self.commands)


def run_apply(state: Path) -> None:
    """``mailstate apply --yes`` of ``state``, which must succeed."""
    r = subprocess.run([str(MAILSTATE), "apply", "--yes", "--state", str(state)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def set_acl(lab: Lab, login: str, folder: str, who: str, rights: str) -> None:
    """One right set by hand over IMAP, as ``login`` (a master-user login)."""
    c = imap_master_login(lab, login)
    try:
        c.setacl(folder, who, rights)
    finally:
        c.logout()


@pytest.fixture
def applied(
    lab_env: dict[str, str], clean_lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    state = write_state(tmp_path / "state", units=4, per_unit=3)
    run_apply(state)
    return state


def test_unit_mailbox_use_read_by_two_doveadm_processes(applied: Path, clean_lab: Lab) -> None:
    """Four unit mailboxes with two delegates each: whether each was worked in takes two ``mailbox status``
    processes (its own counters, then the delegates' views) and one ``fetch`` of flags, not one per mailbox
    and one per delegate; a read
    under the mailbox's own login and one by a delegate under theirs (a private \\Seen) both count, mail only
    delivered does not."""
    own = imap_master_login(clean_lab, "bu0")
    try:
        own.append("INBOX", MSG, flags=[b"\\Seen"])
    finally:
        own.logout()
    for unit in ("bu1", "bu2"):
        c = imap_master_login(clean_lab, unit)
        try:
            c.append("INBOX", MSG)  # delivered, unread
        finally:
            c.logout()
    delegate = imap_master_login(clean_lab, "b1x2")  # reads bu1's mail under her own login
    try:
        delegate.select_folder("shared/bu1/INBOX")
        delegate.fetch(delegate.search(), ["BODY[]"])
    finally:
        delegate.logout()
    provs = open_providers(load_state(applied), ["ssh"])
    try:
        prov = provs["ssh"]
        assert isinstance(prov, SshProvider)
        seen = Counting(prov)
        used = prov.units_used(["bu0", "bu1", "bu2", "bu3"])
        assert used == {"bu0": "INBOX: 1 read", "bu1": "b1x2: shared/bu1/INBOX: 1 read"}
        assert seen.doveadm("mailbox status") == 2, seen.commands
        assert seen.doveadm("fetch") == 1, seen.commands  # the flags of those still without a sign
        seen.commands.clear()  # a unit mailbox that never held a message: its delegates are not asked
        assert prov.units_used(["bu3"]) == {}
        assert seen.doveadm("mailbox status") == 1 and seen.doveadm("fetch") == 0, seen.commands
        with pytest.raises(ProviderError, match="nobodyhere's folders failed"):  # unknown to the userdb
            prov.units_used(["bu0", "nobodyhere"])
        assert prov.units_used(["b0x0"]) == {}  # known, but no mail folder made yet: not used, no error
        # one user a line on doveadm's input: a name with a line break would be read as two users
        with pytest.raises(ProviderError, match=r"'bu1.+nbu0' is not a user name"):
            prov.units_used(["bu2", "bu1\nbu0"])
    finally:
        close_providers(provs)


def test_acl_files_found_through_a_few_processes_for_every_user(applied: Path, clean_lab: Lab) -> None:
    """The owners with rights for others in their ACL files: a negative right set by hand on a person's
    mailbox (Dovecot's shared dict does not record it) is found, and the mail roots of every user come from
    at most four ``mailbox path`` processes (the users on their input), as ``mailbox path -A`` gave them."""
    set_acl(clean_lab, "b3x1", "INBOX", "-b3x2", "r")
    provs = open_providers(load_state(applied), ["ssh"])
    try:
        prov = provs["ssh"]
        assert isinstance(prov, SshProvider)
        seen = Counting(prov)
        owners = prov.acl_owners()
        assert "b3x1" in owners and {"bu0", "bu1", "bu2", "bu3"} <= owners
        assert 1 <= seen.doveadm("mailbox path") <= 4, seen.commands
        assert not any(" -A" in c for c in seen.commands), seen.commands
        everyone = set(prov.userdb_users())
        assert {"b0x0", "b3x2", "bu3"} <= everyone
    finally:
        close_providers(provs)


def _records(read: Any) -> tuple[list[tuple[str, str, Any]], list[tuple[str, str, Any]], list[str]]:
    """An owner read as comparable data: its records, its unlisted records, its folders."""
    def rows(recs: Any) -> list[tuple[str, str, Any]]:
        return sorted((r.kind, r.key, sorted(r.attrs.items())) for r in recs)
    return rows(read.records), rows(read.unlisted), sorted(read.folders)


def test_mailboxes_read_through_doveadm_as_imap_reads_them(applied: Path, clean_lab: Lab) -> None:
    """What a plan learns of a mailbox through doveadm (no IMAP login: a province's 300 unit mailboxes cost
    300 master-user logins) is exactly what LIST, GETACL and GETMETADATA give on its own connection — for
    rights set by hand in every form Dovecot keeps: a group, a negative right, rights without lookup, an
    explicit owner entry, a folder made only as the parent of another, a folder named in NFD, a purpose with
    a tab and a line break in it, a folder shared only to someone the INBOX is not."""
    c = imap_master_login(clean_lab, "bu0")
    try:
        c.setacl("INBOX", "$ke-toan", "lr")
        c.setacl("INBOX", "-b0x2", "w")
        c.setacl("INBOX", "b3x1", "rs")  # no lookup: Dovecot's shared dict does not record it
        c.setacl("INBOX", "owner", "lrwstipekxa")
        c.create_folder("Cha/Con")  # "Cha" exists only as Con's parent
        nfd = unicodedata.normalize("NFD", "Lưu trữ")
        c.create_folder(nfd)
        c.setacl(nfd, "b1x1", "lr")  # a folder shared to someone who has nothing on INBOX
    finally:
        c.logout()
    state = load_state(applied)
    provs = open_providers(state, ["ssh", "imap"])
    try:
        ssh = provs["ssh"]
        assert isinstance(ssh, SshProvider)  # a purpose set by hand, control characters and all
        ssh.doveadm("mailbox", "metadata", "set", "-u", "bu0", "Cha/Con", "/shared/comment", "a\tb\nc")
        imap = provs["imap"]
        assert isinstance(imap, ImapProvider) and imap.bulk is not None
        imap.set_live_mailboxes(set(imap.mailboxes))
        infos = [imap.mailboxes[u] for u in ("bu0", "bu1", "b0x0", "b3x1")]
        through, rest = imap._read_through_bulk(infos, imap.bulk)
        assert rest == [] and sorted(through) == ["b0x0", "b3x1", "bu0", "bu1"]
        assert imap.pool.opened == 0  # not one IMAP login
        for info in infos:
            over_imap = imap.read_owner(info, quota=False)
            assert _records(through[info.login][1]) == _records(over_imap), info.login
        records, unlisted, folders = _records(through["bu0"][1])
        assert {"Cha/Con", nfd, "Đến", "INBOX"} <= set(folders) and "Cha" not in folders
        keys = {key for _kind, key, _attrs in records}
        assert {"unit:bu0/INBOX#$ke-toan", "unit:bu0/INBOX#-b0x2", "unit:bu0/INBOX#b3x1"} <= keys
        assert any(key.endswith("#b1x1") and "Lưu" in unicodedata.normalize("NFC", key) for key in keys)
        assert ("shared_folder", "unit:bu0/Cha/Con", [("purpose", "a\tb\nc")]) in unlisted
    finally:
        close_providers(provs)


def test_a_plan_reads_the_mailboxes_without_imap_logins(applied: Path, clean_lab: Lab) -> None:
    """The plan's IMAP read goes through doveadm and logs in once (a wrong master password still fails the
    plan); a mailbox doveadm cannot answer for is read over IMAP all the same; the plan is empty."""
    state = load_state(applied)
    provs = open_providers(state, ["ldap", "ssh", "imap"], for_plan=True)
    try:
        imap = provs["imap"]
        assert isinstance(imap, ImapProvider)
        plan = make_plan(applied, state=state, providers=provs)
        assert plan.changes == []
        assert imap.timings["mailboxes_bulk"] == imap.timings["mailboxes_read"] >= 4
        assert imap.pool.opened == 1  # the one login that checks the master password
    finally:
        close_providers(provs)
    provs = open_providers(state, ["ldap", "ssh", "imap"], for_plan=True)
    try:
        ssh = provs["ssh"]
        assert isinstance(ssh, SshProvider)
        inner = ssh.mailbox_views

        def without_bu2(users: Any, entry: Any = None, expected: Any = None) -> Any:
            views, failed = inner(users, entry, expected)
            return views, failed | ({"bu2"} & set(users))

        ssh.mailbox_views = without_bu2  # type: ignore[method-assign]
        plan = make_plan(applied, state=state, providers=provs)
        assert plan.changes == []
        imap = provs["imap"]
        assert isinstance(imap, ImapProvider)
        assert imap.timings["mailboxes_read"] == imap.timings["mailboxes_bulk"] + 1
    finally:
        close_providers(provs)
    # a unit the TOML adds is asked of the mail host before the directory answers (to overlap the reads):
    # the userdb does not know it yet, which is no error — it is simply new
    (applied / "units" / "bu9.toml").write_text(
        '[unit]\nid = "bu9"\nname = "Phòng mới"\nhead = "b9x0"\n\n[[person]]\nid = "b9x0"\n'
        'name = "Lê Văn Mới"\n', encoding="utf-8")
    state = load_state(applied)
    provs = open_providers(state, ["ldap", "ssh", "imap"], for_plan=True)
    try:
        plan = make_plan(applied, state=state, providers=provs)
        assert {(c.kind, c.key) for c in plan.changes} >= {("unit_mailbox", "bu9"), ("person", "b9x0")}
    finally:
        close_providers(provs)


def test_a_plan_counts_each_mailbox_once_and_asks_the_listed_folders_at_once(
    applied: Path, clean_lab: Lab
) -> None:
    """One plan's reads count a mailbox's folders once for the ssh provider (was the unit mailbox used?) and
    the imap provider (which folders exist) together; the folder the TOML lists is asked (where its ACL
    file lies; its rights and purpose then read from the files) in the same wave as that count, and only a
    folder made by hand is asked after it — read all the same. Nothing is kept from one round of reads to
    the next: mail read in between shows in the next read."""
    with (applied / "units" / "bu0.toml").open("a", encoding="utf-8") as fh:  # a person's shared folder too
        fh.write('\n[[shared_folder]]\nmailbox = "b0x0"\npath = "Hồ sơ"\npurpose = "Hồ sơ"\n'
                 'read = ["b0x1"]\n')
    run_apply(applied)
    own = imap_master_login(clean_lab, "bu0")
    try:
        own.create_folder("Tay")  # made by hand: not in the TOML
        own.setacl("Tay", "b0x1", "lr")
    finally:
        own.logout()
    state = load_state(applied)
    provs = open_providers(state, ["ldap", "ssh", "imap"], for_plan=True)
    try:
        ssh = provs["ssh"]
        assert isinstance(ssh, SshProvider)
        seen = Counting(ssh)
        counted, asking = threading.Event(), threading.Event()
        inner = ssh.run

        units_first = threading.Event()
        count = ssh.folder_status

        def folder_status(users: Any) -> Any:
            # the unit mailboxes' count is asked first (the ssh provider's read): the IMAP provider's
            # mailboxes must be in it, not in a second count
            if threading.current_thread().name.startswith("doveadm-views"):
                units_first.wait(10)
            else:
                units_first.set()
            return count(users)

        ssh.folder_status = folder_status  # type: ignore[method-assign]

        def run(command: str, check: bool = True) -> tuple[int, str, str]:
            # the count waits until a folder is asked: only asking them at once lets it go on
            if f"'{FOLDER_STATUS}'" in command and not counted.is_set():
                assert asking.wait(20), "the listed folders were not asked beside the count"
                try:
                    return inner(command, check)
                finally:
                    counted.set()
            if any(w in command for w in VIEWS_ASKS) and not counted.is_set():
                asking.set()
            return inner(command, check)

        ssh.run = run  # type: ignore[method-assign]
        snapshots = read_all(provs, None)
        counts = [c for c in seen.commands if f" mailbox status -F - '{FOLDER_STATUS}' '*'" in c]
        asked = [u for c in counts for u in c.split(" | ")[0].split()[2:]]
        assert sorted(asked) == sorted(set(asked)) and {"bu0", "bu1", "bu2", "bu3"} <= set(asked), counts
        assert len(counts) == 1 and "b0x0" in asked, counts  # the person's mailbox in the units' count
        assert snapshots["ssh"].facts["used"] == {}
        # the listed folder: with the count, not after it — where its ACL file lies, asked once (the rights
        # read from the files the owners' walk read)
        listed = [c for c in seen.commands if " -t control -- 'Đến'" in unicodedata.normalize("NFC", c)]
        assert len(listed) == 1, seen.commands
        by_hand = [c for c in seen.commands if " -t control -- Tay" in c]
        assert len(by_hand) == 1 and " -u bu0 " in by_hand[0], seen.commands
        # the hand-made folder was read: b0x1's right on the whole mailbox is what it holds on every folder
        # the TOML does not list, Tay's "lr" included (the plan gives the rest back)
        rights = {r.key: r.attrs["rights"] for r in snapshots["imap"].records.values() if r.kind == "acl"}
        assert rights["unit:bu0/INBOX#b0x1"] == "lr" and rights["unit:bu0/INBOX#b0x2"] != "lr", rights
        c = imap_master_login(clean_lab, "bu3")
        try:
            c.append("INBOX", MSG, flags=[b"\\Seen"])  # read: the unit mailbox is now used
        finally:
            c.logout()
        assert read_all(provs, None)["ssh"].facts["used"] == {"bu3": "INBOX: 1 read"}
    finally:
        close_providers(provs)


def test_acl_files_found_from_the_pattern_of_the_mail_roots(applied: Path, clean_lab: Lab) -> None:
    """When a sample of the listed users' mail roots follow one pattern (the shared dict's users left out:
    ``shared_sample`` 0), the others' are taken from it (no userdb lookup per user) and one ``find`` walks
    the tree that holds them: the owners found are the ones every user's lookup finds. An ACL file in that
    tree under no root the pattern gives sends every user to the userdb again, so no file is ever left
    without its owner."""
    # only in the file: the dict does not record a negative right
    set_acl(clean_lab, "b2x2", "INBOX", "-b2x1", "r")
    provs = open_providers(load_state(applied), ["ssh"])
    try:
        prov = provs["ssh"]
        assert isinstance(prov, SshProvider)
        prov.shared_sample = 0
        prov.root_sample = 4
        shared = prov._shared_dict()
        seen = Counting(prov)
        owners = prov.acl_owners(shared)
        assert prov.acl_roots == "pattern" and "b2x2" in owners
        lookups = seen.commands[:]
        assert sum(c.count("\n") for c in lookups if " mailbox path " in c) == 0
        assert sum(len(c.split("printf '%s\\n' ", 1)[1].split(" | ")[0].split())
                   for c in lookups if " mailbox path " in c) == 4  # the sample's four users only
        prov.root_sample = 1000
        assert prov.acl_owners() == owners and prov.acl_roots == "userdb"
        root = next(iter(prov._roots_of(["b0x0"])))
        stray = Path(root).parent / "not-a-user" / "mdbox" / "mailboxes" / "INBOX" / "dbox-Mails"
        stray.mkdir(parents=True)
        (stray / "dovecot-acl").write_text("user=b0x0 lr\n", encoding="utf-8")
        prov.root_sample = 4
        assert prov.acl_owners() == owners and prov.acl_roots == "userdb"
    finally:
        close_providers(provs)


def _looked_up(commands: list[str]) -> list[list[str]]:
    """The users each ``mailbox path`` command of ``commands`` asked the userdb for (on its input, or the
    one user of ``-u``)."""
    paths = [c for c in commands if " mailbox path " in c]
    return [c.split("printf '%s\\n' ", 1)[1].split(" | ")[0].split() if c.startswith("printf ")
            else shlex.split(c.split(" -u ", 1)[1])[:1] for c in paths]


def _by_every_lookup(prov: SshProvider) -> set[str]:
    """``acl_owners`` through every user's userdb lookup (the full path), the provider's samples restored."""
    samples = prov.shared_sample, prov.root_sample
    prov.shared_sample, prov.root_sample = 0, 100_000
    try:
        owners = prov.acl_owners()
        assert prov.acl_roots == "userdb"
        return owners
    finally:
        prov.shared_sample, prov.root_sample = samples


def test_acl_files_found_from_the_shared_dicts_users(applied: Path, clean_lab: Lab) -> None:
    """The mail roots' pattern is learned from a sample of the users the shared dict names, without listing
    the userdb's users (``doveadm user '*'`` iterates all of them): an owner whose only entry for someone else
    is a negative right (not in the dict) is found from its file's path, and its root is looked up once to
    be sure it is where the pattern puts it; the owners are the ones every user's lookup finds."""
    unit = applied / "units" / "bu3.toml"  # a person no folder is shared with, nor by
    unit.write_text(unit.read_text(encoding="utf-8") + '\n[[person]]\nid = "b3x9"\nname = "Lê Thị Chín"\n',
                    encoding="utf-8")
    run_apply(applied)
    # only in the file: the dict does not record a negative right
    set_acl(clean_lab, "b3x9", "INBOX", "-b2x1", "r")
    provs = open_providers(load_state(applied), ["ssh"])
    try:
        prov = provs["ssh"]
        assert isinstance(prov, SshProvider)
        shared = prov._shared_dict()
        dict_users = parse_shared_users(shared)
        assert "b3x9" not in dict_users and len(dict_users) >= 8, dict_users
        seen = Counting(prov)
        owners = prov.acl_owners(shared)
        assert prov.acl_roots == "dict" and "b3x9" in owners and {"bu0", "bu1", "bu2", "bu3"} <= owners
        assert not any(" user " in c for c in seen.commands), seen.commands  # no list of every user
        sample, *verified = _looked_up(seen.commands)
        assert set(sample) <= dict_users and verified == [["b3x9"]], seen.commands
        assert _by_every_lookup(prov) == owners
        seen.commands.clear()
        assert prov._shared_owners() == owners and prov.acl_roots == "dict"  # the dict read once, first
        assert sum(" dict iter " in c for c in seen.commands) == 1, seen.commands
    finally:
        close_providers(provs)


@contextmanager
def _home_of(lab: Lab, user: str, home: str) -> Iterator[None]:
    """``user``'s home set apart from the template every other user's follows (the userdb's LDAP
    ``user_attrs``), as an administrator may set one by hand; the template restored after."""
    conf = Path(lab.info["paths"]["dovecot_conf"]).with_name("dovecot-ldap.conf.ext")
    original = conf.read_text(encoding="utf-8")
    template = next(w for w in original.split() if w.startswith("=home="))[len("=home="):].rstrip(",")
    assert template.endswith("/%{ldap:uid}"), template
    moved = f"{template[: -len('%{ldap:uid}')]}{home}"
    apart = f"=home=%{{if;%{{ldap:uid}};eq;{user};{moved};{template}}}"
    conf.write_text(original.replace(f"=home={template}", apart), encoding="utf-8")
    doveadm(lab, "reload")
    try:
        yield
    finally:
        conf.write_text(original, encoding="utf-8")
        doveadm(lab, "reload")


@pytest.mark.parametrize("home", ["moved/b1x0", "b1x0-moved"])
def test_a_home_set_apart_inside_the_tree_is_found(applied: Path, clean_lab: Lab, home: str) -> None:
    """A user whose home lies in the tree but not where the template puts it — one level down (the file fits
    no root of the pattern) or beside the others under another name (the name read from the path is no user
    the userdb knows): every user is asked of the userdb, and that user's file is found."""
    with _home_of(clean_lab, "b1x0", home):
        set_acl(clean_lab, "b1x0", "INBOX", "-b1x2", "r")
        provs = open_providers(load_state(applied), ["ssh"])
        try:
            prov = provs["ssh"]
            assert isinstance(prov, SshProvider)
            assert next(iter(prov._roots_of(["b1x0"]))).endswith(f"/{home}/mdbox")
            prov.shared_sample = 4  # b1x0 (the head of bu1: a user of the dict) is not in the sample
            seen = Counting(prov)
            owners = prov.acl_owners()
            sample = _looked_up(seen.commands)[0]
            assert len(sample) == 4 and "b1x0" not in sample, seen.commands
            assert prov.acl_roots == "userdb" and "b1x0" in owners
            assert _by_every_lookup(prov) == owners
        finally:
            close_providers(provs)


def test_a_directory_left_by_a_user_the_userdb_no_longer_knows(applied: Path, clean_lab: Lab) -> None:
    """A mail root left in the tree by a user the userdb no longer knows, its ACL file sharing a folder — or
    one whose name is not even UTF-8: no error, and the owners are the ones every user's lookup finds (the
    directory is nobody's)."""
    provs = open_providers(load_state(applied), ["ssh"])
    try:
        prov = provs["ssh"]
        assert isinstance(prov, SshProvider)
        owners = prov.acl_owners()
        assert prov.acl_roots == "dict"
        root = Path(next(iter(prov._roots_of(["b0x0"]))))
        left = root.parent.parent / "da-nghi" / root.name / "mailboxes" / "INBOX" / "dbox-Mails"
        left.mkdir(parents=True)
        (left / "dovecot-acl").write_text("user=b0x1 lr\n", encoding="utf-8")
        assert prov._roots_of(["da-nghi"]) == {}
        assert prov.acl_owners() == owners == _by_every_lookup(prov) and "da-nghi" not in owners
        assert prov.acl_roots == "userdb"
        shutil.rmtree(root.parent.parent / "da-nghi")
        odd = os.fsencode(root.parent.parent) + b"/v\xffp/" + os.fsencode(root.name) + b"/mailboxes/INBOX"
        os.makedirs(odd)
        with open(odd + b"/dovecot-acl", "wb") as f:
            f.write(b"user=b0x1 lr\n")
        assert prov.acl_owners() == owners == _by_every_lookup(prov) and prov.acl_roots == "userdb"
    finally:
        close_providers(provs)


def test_a_shared_dict_of_fewer_than_two_users_lists_every_user(applied: Path, clean_lab: Lab) -> None:
    """Nobody shares yet (the dict names no one) or one owner shares with anyone (it names one user): no
    pattern can be learned from it, so the users are listed and sampled as before — and found."""
    set_acl(clean_lab, "b2x2", "INBOX", "-b2x1", "r")
    provs = open_providers(load_state(applied), ["ssh"])
    try:
        prov = provs["ssh"]
        assert isinstance(prov, SshProvider)
        for owner, grantees in parse_shared_grantees(prov._shared_dict()).items():
            for grantee, folder in ((g, f) for g in grantees for f in ("INBOX", "Đến")):
                prov.doveadm("acl", "delete", "-u", owner, "--", folder, f"user={grantee}")
        prov.root_sample = 4
        for sharing in ([], ["anyone", "lookup"]):
            if sharing:
                prov.doveadm("acl", "set", "-u", "bu0", "--", "Đến", *sharing)
            shared = prov._shared_dict()
            assert len(parse_shared_users(shared)) == len(sharing) // 2, shared
            seen = Counting(prov)
            owners = prov.acl_owners(shared)
            assert prov.acl_roots == "pattern" and "b2x2" in owners
            assert sum(" user " in c for c in seen.commands) == 1, seen.commands  # the list of every user
            assert _by_every_lookup(prov) == owners
    finally:
        close_providers(provs)


def _full_plan(root: Path, ahead: bool) -> tuple[int, dict[str, Any], str]:
    """``mailstate plan`` with every provider, a process of its own, with or without the read-ahead (the
    directory read in a child, the mail host's pass started while the TOML loads): exit code, JSON plan
    (its times left out), the phases it timed."""
    env = {**os.environ, "MAILSTATE_READ_AHEAD": "1" if ahead else "0", "MAILSTATE_TIMINGS": "1"}
    run = subprocess.run([str(MAILSTATE), "plan", "--state", str(root), "--format", "json",
                          "--detailed-exitcode"], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode in (0, 2), run.stderr
    data = json.loads(run.stdout)
    data.pop("created_at")
    data["engine"].pop("created_at")
    phases = next(line for line in run.stderr.splitlines() if "read:imap" in line)
    return run.returncode, data, phases


def test_a_full_plan_read_ahead_is_the_plan_read_in_one_process(applied: Path, clean_lab: Lab) -> None:
    """With the mail providers too, the child reads the directory alone and the mail host's pass starts
    while the TOML loads; the plan is the one a single process makes — empty after the apply, and the
    same changes after rights changed by hand."""
    code, with_child, phases = _full_plan(applied, ahead=True)
    assert code == 0 and " fork " in phases
    assert _full_plan(applied, ahead=False)[:2] == (code, with_child)
    c = imap_master_login(clean_lab, "bu1")
    try:
        c.setacl("INBOX", "b3x1", "lrs")  # a right given by hand
        c.setacl("INBOX", "b1x1", "l")  # a delegate's rights cut down by hand
    finally:
        c.logout()
    code, with_child, _ = _full_plan(applied, ahead=True)
    assert code == 2
    assert {(c["action"], c["key"]) for c in with_child["changes"]} >= {
        ("revoke", "unit:bu1/INBOX#b3x1"), ("grant", "unit:bu1/INBOX#b1x1")}
    assert _full_plan(applied, ahead=False)[:2] == (code, with_child)


def test_an_invalid_toml_stops_a_full_plan_read_ahead(applied: Path) -> None:
    """The mail host's pass started early is closed when the TOML turns out invalid: the error is
    reported, the process ends."""
    (applied / "units" / "bad.toml").write_text('[[person]]\nid = "x"\nname = "X Y"\nunit = "nowhere"\n',
                                                encoding="utf-8")
    run = subprocess.run([str(MAILSTATE), "plan", "--state", str(applied)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "MAILSTATE_READ_AHEAD": "1"})
    assert run.returncode != 0 and "nowhere" in run.stderr and "Traceback" not in run.stderr


def _write_acl_file(lab: Lab, user: str, text: str) -> None:
    """``user``'s INBOX ACL file written by hand (as an administrator may), as the lab user."""
    path = Path(lab.info["paths"]["mail"]) / user / "mdbox/mailboxes/INBOX/dbox-Mails/dovecot-acl"
    res = lab.run_as_lab_user(["sh", "-c", 'printf "%s" "$1" > "$2"', "sh", text, str(path)])
    assert res.returncode == 0, res.stderr


def test_folders_rights_and_purposes_read_from_their_files_as_doveadm_reads_them(
    applied: Path, clean_lab: Lab
) -> None:
    """The views of a round read each folder's rights from its own ACL file and each purpose from its
    owner's attribute file — the files the owners' walk already read, no ``acl get`` nor ``mailbox metadata
    get`` (a userdb lookup per mailbox each) — and they are what doveadm shows: rights Dovecot wrote, a file
    written by hand with negative rights, groups and comments, a purpose with a tab and a line break in it.
    What Dovecot reads its own way is asked of doveadm: an identifier given twice with one sign, a folder
    without a file of its own (it shows INBOX's rights), a user without an attribute file."""
    lab = clean_lab
    _write_acl_file(lab, "bu1", "user=b1x1 lr\n-user=b1x2 w\n# by hand\n\ngroup=ke-toan r\nanyone l\n")
    _write_acl_file(lab, "bu2", "user=b2x1 lr\nuser=b2x1 i\n")  # Dovecot: "insert lookup read -"
    doveadm(lab, "mailbox", "create", "-u", "bu3", "Mới")
    fresh = Path(lab.info["paths"]["mail"]) / "bu3" / "mdbox" / "mailboxes"
    lab.run_as_lab_user(["sh", "-c", 'rm -f "$1"/M*/dbox-Mails/dovecot-acl', "sh", str(fresh)])
    doveadm(lab, "mailbox", "metadata", "set", "-u", "bu0", "-s", "Đến", "/shared/comment", "Văn\tbản\nđến")
    users = ["b0x0", "bu0", "bu1", "bu2", "bu3"]
    expected = {u: ["Đến"] for u in users if u.startswith("bu")} | {"bu3": ["Đến", "Mới"]}
    provs = open_providers(load_state(applied), ["ssh"])
    try:
        prov = provs["ssh"]
        assert isinstance(prov, SshProvider)
        seen = Counting(prov)
        fast = views_in_round(prov, users, expected)
        asked = seen.commands[:]
        prov._acl_from_files = lambda: False  # type: ignore[method-assign]
        prov._attribute_file = lambda: None  # type: ignore[method-assign]
        slow = views_in_round(prov, users, expected)
    finally:
        close_providers(provs)
    assert fast == slow
    views, failed = fast
    assert views["bu0"].purposes["Đến"] == "Văn\tbản\nđến" and not failed
    assert ("-b1x2", "w") in views["bu1"].acls["INBOX"] and ("$ke-toan", "r") in views["bu1"].acls["INBOX"]
    acl_asked = [c.split(" | ")[0] if " | " in c else c for c in asked if " acl get " in c]
    by_doveadm = " ".join(acl_asked)
    assert "bu2" in by_doveadm and "bu3" in by_doveadm, asked  # read their own way: doveadm asked
    assert not any(u in by_doveadm.split() for u in ("bu0", "bu1")), asked  # from their files
    assert not any(" metadata get " in c for c in asked), asked  # every purpose from the files


def test_each_round_reads_the_files_afresh(applied: Path, clean_lab: Lab) -> None:
    """The files a round's walk read serve that round only: a right changed between two rounds shows in the
    second; a walk made outside a round (``shared_owners`` called alone) serves no round after it."""
    users, expected = ["bu0"], {"bu0": ["Đến"]}
    provs = open_providers(load_state(applied), ["ssh"])
    try:
        prov = provs["ssh"]
        assert isinstance(prov, SshProvider)
        before = views_in_round(prov, users, expected)[0]["bu0"].acls["Đến"]
        set_acl(clean_lab, "bu0", "Đến", "b0x1", "lrwi")
        after = views_in_round(prov, users, expected)[0]["bu0"].acls["Đến"]
        assert ("b0x1", "ilrw") in after and ("b0x1", "ilrw") not in before, (before, after)
        prov.shared_owners()  # outside a round
        set_acl(clean_lab, "bu0", "Đến", "b0x1", "lr")
        prov.begin_round()
        try:
            seen = Counting(prov)
            views, _failed = prov.mailbox_views(users, "/shared/comment", expected)
        finally:
            prov.end_round()
        assert ("b0x1", "lr") in views["bu0"].acls["Đến"], views["bu0"].acls
        assert any(" acl get " in c for c in seen.commands), seen.commands  # no walk of this round: asked
    finally:
        close_providers(provs)


def test_one_user_is_asked_with_u_and_reported_as_with_f(applied: Path) -> None:
    """A command for one user runs ``doveadm -u USER`` (``-F`` starts an iteration of every user of the
    userdb on the mail host, whatever the file holds), and reads as the ``-F`` form did: a ``username`` in
    each row, a user the userdb does not know skipped (``gone``), not an error."""
    provs = open_providers(load_state(applied), ["ssh"])
    try:
        prov = provs["ssh"]
        assert isinstance(prov, SshProvider)
        seen = Counting(prov)
        one = prov._json_for_users(["bu0"], ["acl", "get", "--", "Đến"], 2)
        many = prov._json_for_users(["bu0", "bu1"], ["acl", "get", "--", "Đến"], 2)
        assert one[0] == [r for r in many[0] if r["username"] == "bu0"] and one[0] and not one[1]
        assert " acl get -u bu0 " in seen.commands[0] and " -F " not in seen.commands[0], seen.commands
        gone_one: set[str] = set()
        gone_many: set[str] = set()
        alone = prov.for_users(["nobody9"], ["mailbox", "path", "-t", "control", "INBOX"], gone_one)
        prov.for_users(["nobody9", "bu0"], ["mailbox", "path", "-t", "control", "INBOX"], gone_many)
        assert gone_one == gone_many == {"nobody9"} and "nobody9" not in alone[0]
        rows, errors = prov._json_for_users(["nobody9"], ["acl", "get", "--", "INBOX"], 2)
        both = prov._json_for_users(["nobody9", "bu0"], ["acl", "get", "--", "INBOX"], 2)[1]
        assert rows == [] and errors == both and "nobody9" in errors, (errors, both)
        roots = prov._roots_of(["bu0"])  # a tab output: the username column added
        assert list(roots.values()) == ["bu0"] and next(iter(roots)).endswith("/bu0/mdbox"), roots
    finally:
        close_providers(provs)


def test_the_settings_a_read_asks_come_in_one_command(applied: Path) -> None:
    """``prefetch`` asks the one-line settings of a plan's read in one ``doveadm config`` (a process each
    before), and each is what ``doveadm config -h`` says of it alone — an unset one empty."""
    provs = open_providers(load_state(applied), ["ssh"])
    try:
        prov = provs["ssh"]
        assert isinstance(prov, SshProvider)
        seen = Counting(prov)
        prov.prefetch()
        prov.shared_owners()
        prov.last_logins()
        together = {name: prov.config(name) for name in SETTINGS_AT_ONCE}
        configs = [c for c in seen.commands if " config " in c]
        assert len([c for c in configs if " -h " not in c]) == 1, configs
        assert not any(n in c for c in configs if " -h " in c for n in SETTINGS_AT_ONCE), configs
        alone = {name: prov.doveadm("config", "-h", name).strip() for name in SETTINGS_AT_ONCE}
        assert together == alone and together["plugin/acl_globals_only"] == "", together
    finally:
        close_providers(provs)
