"""Acceptance of the plan's read through doveadm (docs/imap.md §7) on the real lab: what doveadm gives for a
mailbox is exactly what LIST, GETACL and GETMETADATA give over IMAP, for hostile folder names, every ACL form
Dovecot keeps and purposes set by hand; a no-op plan stays empty; a drift made by hand is planned and
repaired. Tests marked xfail demonstrate the defects found (their reason names each)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import unicodedata
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailstate.desired_state.loader import load_state
from mailstate.errors import ProviderError
from mailstate.lab import Lab
from mailstate.lab.testing import doveadm, imap_master_login
from mailstate.model.mailbox_users import users_of
from mailstate.providers.doveadm.provider import SshProvider
from mailstate.providers.imap.provider import ImapProvider
from mailstate.providers.registry import close_providers, configured_providers, open_providers
from mailstate.reconciler.pipeline import make_plan

pytestmark = pytest.mark.integration

MAILSTATE = Path(sys.executable).with_name("mailstate")
OWNER_BUT_ADMIN = ["lookup", "read", "write", "write-seen", "insert", "post", "expunge", "create", "delete",
                   "write-deleted"]
"""Every right of an owner but admin, as doveadm acl names them."""
DOMAIN = "lab.example.gov.vn"
MSG = b"From: a@example.com\r\nTo: x@" + DOMAIN.encode() + b"\r\nSubject: x\r\n\r\nbody\r\n"


def write_state(root: Path, units: int = 2, per_unit: int = 3, domain: str = DOMAIN) -> Path:
    (root / "units").mkdir(parents=True, exist_ok=True)
    (root / "mailstate.toml").write_text(
        f'[organization]\nname = "Lab"\ndomain = "{domain}"\n\n[providers.ldap]\nurl = "ldaps://ldap.invalid"\n'
        'password_env = "MAILSTATE_LDAP_PASSWORD"\n',
        encoding="utf-8",
    )
    for u in range(units):
        people = [f"a{u}x{i}" for i in range(per_unit)]
        rows = [
            f'[unit]\nid = "au{u}"\nname = "Phòng {u}"\nhead = "{people[0]}"\ndelegates = ["{people[1]}"]\n'
        ]
        rows += [f'[[person]]\nid = "{p}"\nname = "Người {u} {i}"\n' for i, p in enumerate(people)]
        rows.append(
            f'[[shared_folder]]\nmailbox = "unit:au{u}"\npath = "Đến"\npurpose = "Văn bản"\n'
            f'read = ["{people[2]}"]\n'
        )
        (root / "units" / f"au{u}.toml").write_text("\n".join(rows), encoding="utf-8")
    return root


@pytest.fixture
def applied(lab_env: dict[str, str], clean_lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    state = write_state(tmp_path / "state")
    r = subprocess.run(
        [str(MAILSTATE), "apply", "--yes", "--state", str(state)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return state


def _records(read: Any) -> tuple[list[tuple[str, str, Any]], list[tuple[str, str, Any]], list[str]]:
    def rows(recs: Any) -> list[tuple[str, str, Any]]:
        return sorted((r.kind, r.key, sorted(r.attrs.items())) for r in recs)

    return rows(read.records), rows(read.unlisted), sorted(read.folders)


def both_reads(state_dir: Path, logins: list[str]) -> dict[str, tuple[Any, Any]]:
    """{login: (through doveadm, over IMAP)} as comparable data; a mailbox doveadm left to IMAP: (None, …)."""
    state = load_state(state_dir)
    directory = "iredmail" if "iredmail" in configured_providers(state) else "ldap"
    provs = open_providers(state, [directory, "ssh", "imap"])
    try:
        imap = provs["imap"]
        assert isinstance(imap, ImapProvider) and imap.bulk is not None
        users = users_of(provs[directory].read().records.values())
        imap.take_mailbox_users(lambda: users)
        imap.set_live_mailboxes(set(imap.mailboxes))
        infos = [imap.mailboxes[u] for u in logins]
        through, _rest = imap._read_through_bulk(infos, imap.bulk)
        out = {}
        for info in infos:
            bulk = _records(through[info.login][1]) if info.login in through else None
            out[info.login] = (bulk, _records(imap.read_owner(info, quota=False)))
        return out
    finally:
        close_providers(provs)


def ssh_of(state_dir: Path) -> tuple[dict[str, Any], SshProvider]:
    provs = open_providers(load_state(state_dir), ["ssh"])
    ssh = provs["ssh"]
    assert isinstance(ssh, SshProvider)
    return provs, ssh


NAMES = [
    "a b",
    "it's",
    'say "hi"',
    "-dash",
    "--",
    "-u",
    "A&B",
    "&",
    "☺ emoji 📬",
    unicodedata.normalize("NFD", "Lưu trữ"),
    unicodedata.normalize("NFC", "Lưu trữ"),
    "L" * 200,
    "Abc",
    "ABC",
    "INBOX/child",
    "a/b/c/d",
    "star*",
    "pct%",
    "back\\slash",
    ".dot",
    "sp ",
    " lead",
    "sharedx/y",
    "$(id)",
    "`id`",
    ";x",
    "x|y",
]


def test_hostile_folder_names_read_alike(applied: Path, clean_lab: Lab) -> None:
    """Every folder name Dovecot accepts over IMAP, each shared to a person: the two reads are equal and
    doveadm answered for the mailbox (not left to IMAP)."""
    c = imap_master_login(clean_lab, "au0")
    try:
        for name in NAMES:
            c.create_folder(name)
            c.setacl(name, "a0x2", "lr")
        c.create_folder("P/Q")  # "P" only the parent
    finally:
        c.logout()
    reads = both_reads(applied, ["au0", "au1"])
    for login, (bulk, over_imap) in reads.items():
        assert bulk is not None, login
        assert bulk == over_imap, login
    assert len(reads["au0"][1][2]) >= len(NAMES)
    assert plan_changes(applied)[0] == plan_changes(applied, bulk=False)[0]


def _diff(bulk: Any, over_imap: Any) -> str:
    parts = []
    for i, what in enumerate(("records", "unlisted", "folders")):
        a, b = set(map(repr, bulk[i])), set(map(repr, over_imap[i]))
        if a != b:
            parts.append(f"{what}: doveadm only {sorted(a - b)}; IMAP only {sorted(b - a)}")
    return "\n".join(parts)


ACL_FORMS: list[tuple[str, list[str]]] = [
    ("INBOX", ["anyone", "lookup", "read"]),
    ("INBOX", ["authenticated", "lookup"]),
    ("INBOX", ["group=ke-toan", "lookup", "read"]),
    ("INBOX", ["group-override=ke-toan", "lookup", "read", "write"]),
    ("INBOX", ["user=a0x2", "-write"]),
    ("INBOX", ["user=a1x1", "read", "write-seen"]),  # no lookup
    (
        "INBOX",
        [
            "owner",
            "lookup",
            "read",
            "write",
            "write-seen",
            "write-deleted",
            "insert",
            "post",
            "expunge",
            "create",
            "delete",
            "admin",
        ],
    ),
    ("F1", ["user=au0", "lookup", "read", "write", "write-seen", "admin"]),  # the owner's own entry
    ("F1", ["owner", "lookup", "read"]),  # and an owner entry beside it
    ("F1", ["user=a0x1", "lookup", "read"]),
    ("F2", ["owner", "-post"]),  # a negative owner entry
    ("F2", ["user=a0x1", "lookup", "read", "post"]),
    ("F3", ["user=a1x2", "lookup", "create", "delete", "write-deleted", "expunge"]),  # c and d
    ("F4", ["anyone", "-read"]),
    ("F4", ["group=ke-toan", "-lookup"]),
    ("F5", ["user=a0x1", "lookup", "read", "-write", "-admin"]),  # positive and negative at once
    ("F5", ["user=a1x0", "insert"]),  # a single right, no lookup
]


def test_acl_forms_set_through_doveadm_read_alike(applied: Path, clean_lab: Lab) -> None:
    """Rights set by hand with ``doveadm acl set`` in every form Dovecot keeps: the reads are equal."""
    c = imap_master_login(clean_lab, "au0")
    try:
        for f in ("F1", "F2", "F3", "F4", "F5"):
            c.create_folder(f)
    finally:
        c.logout()
    provs, ssh = ssh_of(applied)
    try:
        for folder, words in ACL_FORMS:
            ssh.doveadm("acl", "set", "-u", "au0", "--", folder, *words)
    finally:
        close_providers(provs)
    reads = both_reads(applied, ["au0"])
    bulk, over_imap = reads["au0"]
    assert bulk is not None
    assert bulk == over_imap, _diff(bulk, over_imap)
    assert plan_changes(applied)[0] == plan_changes(applied, bulk=False)[0]


def _setmetadata_raw(client: Any, folder: str, value: bytes) -> None:
    imap = client._imap
    tag = imap._new_tag()
    arg = client._normalise_folder(folder)
    arg = arg if isinstance(arg, bytes) else str(arg).encode("ascii")
    imap.send(
        tag
        + b" SETMETADATA "
        + arg
        + b" (/shared/comment {"
        + str(len(value)).encode()
        + b"+}\r\n"
        + value
        + b")\r\n"
    )
    typ, data = imap._command_complete("SETMETADATA", tag)
    assert typ == "OK", data


PURPOSES: dict[str, bytes] = {
    "P1": "a\tb\nc\rd\x1b[31m\x7f\u200b\u202e".encode(),  # control and format characters
    "P2": ("Văn bản đến " * 1500).encode(),  # ~18 kB
    "P3": b"",  # empty
    "P4": b"\xff\xfe not UTF-8 \xc3",  # raw bytes
    "P5": unicodedata.normalize("NFD", "Lưu trữ").encode(),
    "P6": b"  ",  # blanks only
    "P7": b'"quoted" \\ back',
    "INBOX": b"inbox purpose",
}


def test_purposes_set_by_hand_read_alike(applied: Path, clean_lab: Lab) -> None:
    """Purposes set by hand through SETMETADATA (control characters, very long, empty, not UTF-8, on INBOX)
    on folders with and without rights: the reads are equal."""
    c = imap_master_login(clean_lab, "au1")
    try:
        for i, (name, value) in enumerate(PURPOSES.items()):
            if name != "INBOX":
                c.create_folder(name)
                if i % 2:
                    c.setacl(name, "a1x2", "lr")
            _setmetadata_raw(c, name, value)
    finally:
        c.logout()
    reads = both_reads(applied, ["au1"])
    bulk, over_imap = reads["au1"]
    assert bulk is not None
    assert bulk == over_imap, _diff(bulk, over_imap)
    purposes = {key: dict(attrs)["purpose"] for _kind, key, attrs in bulk[1]}
    assert purposes["unit:au1/P1"] == "a\tb\nc\rd\x1b[31m\x7f\u200b\u202e", purposes
    assert len(purposes["unit:au1/P2"]) > 15000 and "unit:au1/P3" not in purposes


def plan_changes(
    state_dir: Path, bulk: bool = True, root_sample: int | None = None, scope: list[str] | None = None
) -> tuple[set[tuple[Any, ...]], dict[str, float]]:
    """The plan's changes as comparable data, read through doveadm (``bulk``) or over IMAP alone
    (``root_sample``: the ssh provider's sample of the listed users' mail roots, the shared dict's users left
    out; small, the pattern path runs on a small lab; large, every user is looked up).
    """
    state = load_state(state_dir)
    kwargs: dict[str, Any] = {} if bulk else {"imap": {"bulk": False}}
    directory = "iredmail" if "iredmail" in configured_providers(state) else "ldap"
    provs = open_providers(state, [directory, "ssh", "imap"], for_plan=True, **kwargs)
    try:
        if root_sample is not None:
            ssh = provs["ssh"]
            assert isinstance(ssh, SshProvider)
            ssh.shared_sample, ssh.root_sample = 0, root_sample
        plan = make_plan(state_dir, state=state, providers=provs, scope=scope)
        imap = provs["imap"]
        assert isinstance(imap, ImapProvider)
        changes = {
            (
                str(c.action),
                c.kind,
                c.key,
                repr(sorted((c.before or {}).items())),
                repr(sorted((c.after or {}).items())),
            )
            for c in plan.changes
        }
        return changes, dict(imap.timings)
    finally:
        close_providers(provs)


def both_outcomes(state_dir: Path, stamped: bool = False) -> dict[bool, Any]:
    """{bulk: the plan's changes} read through doveadm (True) and over IMAP alone (False); a read that fails
    gives its error's text instead (``stamped``: the server's time stamp in it left out)."""
    outcome: dict[bool, Any] = {}
    for bulk in (True, False):
        try:
            outcome[bulk] = plan_changes(state_dir, bulk=bulk)[0]
        except ProviderError as exc:
            outcome[bulk] = re.sub(r"\s*\[20\d\d-.*", "", str(exc)) if stamped else str(exc)
    return outcome


def cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MAILSTATE), *args, "--state", str(state_dir)], capture_output=True, text=True, timeout=300
    )


def test_drift_by_hand_is_planned_alike_and_repaired(applied: Path, clean_lab: Lab) -> None:
    """Rights and a purpose changed by hand on the unit mailboxes' folders (through doveadm and IMAP): the
    plan read through doveadm is the plan read over IMAP, it names every drift, apply repairs it, and the
    next plan is empty both ways."""
    before, timings = plan_changes(applied)
    assert before == set() and timings["mailboxes_bulk"] == timings["mailboxes_read"] >= 2
    provs, ssh = ssh_of(applied)
    try:
        ssh.doveadm("acl", "delete", "-u", "au0", "--", "Đến", "user=a0x2")  # a grant taken away
        ssh.doveadm("acl", "set", "-u", "au1", "--", "INBOX", "user=a0x0", "lookup", "read")  # one given
        ssh.doveadm("acl", "set", "-u", "au1", "--", "Đến", "user=a1x2", "lookup", "read", "-write")
        ssh.doveadm("mailbox", "metadata", "set", "-u", "au0", "--", "Đến", "/shared/comment", "sửa\ttay")
    finally:
        close_providers(provs)
    c = imap_master_login(clean_lab, "au0")
    try:  # a delegate's rights narrowed on INBOX only, a new folder shared to an outsider
        c.setacl("INBOX", "a0x1", "lr")
        c.create_folder("Riêng")
        c.setacl("Riêng", "a1x0", "lr")
    finally:
        c.logout()
    through, _ = plan_changes(applied)
    over_imap, _ = plan_changes(applied, bulk=False)
    assert through == over_imap
    keys = {key for _a, _kind, key, _b, _c in through}
    assert {
        "unit:au0/Đến#a0x2",
        "unit:au1/INBOX#a0x0",
        "unit:au1/Đến#-a1x2",
        "unit:au0/Đến",
        "unit:au0/INBOX#a0x1",
        "unit:au0/Riêng#a1x0",
    } <= keys, keys
    r = cli(applied, "apply", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert plan_changes(applied)[0] == set() and plan_changes(applied, bulk=False)[0] == set()


GLOBAL_DOMAIN = "acc15g.example.gov.vn"


@pytest.fixture
def global_acls(lab_for: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A lab of its own whose Dovecot also reads a global ACL file (``acl = vfile:FILE``), state applied."""
    yield from _edited_lab(
        lab_for,
        tmp_path,
        monkeypatch,
        lambda conf, acl_file: conf.replace("  acl = vfile\n", f"  acl = vfile:{acl_file}\n"),
    )


def _edited_lab(lab_for: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Any) -> Any:
    lab = lab_for(GLOBAL_DOMAIN)
    lab.reset()
    for key, value in lab.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    state = write_state(tmp_path / "state", domain=GLOBAL_DOMAIN)
    r = cli(state, "apply", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    conf = Path(lab.info["paths"]["dovecot_conf"])
    original = conf.read_text(encoding="utf-8")
    acl_file = conf.parent / "global-acl"
    acl_file.write_text("", encoding="utf-8")
    shutil.chown(acl_file, conf.stat().st_uid, conf.stat().st_gid)
    conf.write_text(edit(original, acl_file), encoding="utf-8")
    assert conf.read_text(encoding="utf-8") != original
    doveadm(lab, "reload")
    try:
        yield lab, state, acl_file
    finally:
        conf.write_text(original, encoding="utf-8")
        doveadm(lab, "reload")


def test_global_acls_read_alike(global_acls: Any) -> None:
    """Global rights (``#id``, ``-#id``) beside per-folder ones: the reads are equal, the plans too."""
    lab, state, acl_file = global_acls
    acl_file.write_text("INBOX group=ke-toan lr\nINBOX -anyone w\n", encoding="utf-8")
    c = imap_master_login(lab, "au0")
    try:
        c.create_folder("F1")
        c.setacl("F1", "a1x1", "lr")
    finally:
        c.logout()
    reads = both_reads(state, ["au0", "au1"])
    for login, (bulk, over_imap) in reads.items():
        assert bulk is not None, login
        assert bulk == over_imap, _diff(bulk, over_imap)
    keys = {key for _kind, key, _attrs in reads["au0"][0][0]}
    # global entries are the administrator's (no SETACL or DELETEACL of a mailbox changes them): no records
    assert not {k for k in keys if k.endswith(("#$ke-toan", "#anyone"))}, keys
    # the person mailboxes are found only over IMAP (no dict entry, no ACL file): the units' plans agree
    through = {c for c in plan_changes(state)[0] if c[2].startswith("unit:")}
    assert through == {c for c in plan_changes(state, bulk=False)[0] if c[2].startswith("unit:")}
    assert not [c for c in through if c[2].endswith(("#anyone", "#$ke-toan"))], through


def test_global_acls_plan_converges(global_acls: Any) -> None:
    lab, state, acl_file = global_acls
    acl_file.write_text("INBOX group=ke-toan lr\nINBOX -anyone w\n", encoding="utf-8")
    r = cli(state, "apply", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert {c for c in plan_changes(state)[0] if c[2].startswith("unit:")} == set()


@pytest.mark.parametrize(
    "owner_rights",
    [
        OWNER_BUT_ADMIN,  # GETACL over IMAP refused: "[NOPERM] You lack administrator privileges"
        ["read", "write", "admin", "insert"],  # no lookup
        ["lookup", "admin"],  # no read
        ["lookup", "read", "admin"],  # no write: still fine
    ],
)
def test_owner_missing_one_right_reads_alike(applied: Path, clean_lab: Lab, owner_rights: list[str]) -> None:
    """The owner's own rights cut down by hand on a listed folder (an ``owner`` entry without admin, lookup,
    read or write), and a grant removed there: the plan through doveadm must be what the IMAP plan is."""
    provs, ssh = ssh_of(applied)
    try:
        ssh.doveadm("acl", "set", "-u", "au0", "--", "Đến", "owner", *owner_rights)
        ssh.doveadm("acl", "delete", "-u", "au0", "--", "Đến", "user=a0x2")
    finally:
        close_providers(provs)
    outcome = both_outcomes(applied)
    assert outcome[True] == outcome[False]


IRM_DOMAIN = "acc15i.example.gov.vn"


def test_iredmail_layout_reads_alike(lab_for: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """iRedMail's layout (Dovecot users and ACL identifiers are addresses, homes with a date in them): folders
    with hostile names shared by hand over IMAP and through doveadm, purposes set by hand: the two reads are
    equal for every mailbox, and the plan through doveadm is the plan over IMAP."""
    from click.testing import CliRunner

    from mailstate.cli import LANG_ENV
    from mailstate.cli import cli as mailstate_cli
    from mailstate.lab.iredmail import testing as irm_t
    from mailstate.lab.testing import imap_login

    lab = lab_for(IRM_DOMAIN, "Sở iRedMail", layout="iredmail")
    lab.reset()
    pw = {p: f"mat-khau-{p}-9x7" for p in ("an", "binh", "giang")}
    for local in pw:
        irm_t.add_user(lab, local, pw[local], cn=f"Nguyễn {local}", extra={"departmentNumber": "hc"})
    addr = {p: irm_t.address(lab, p) for p in pw}
    c = imap_login(lab, addr["an"], pw["an"])
    try:
        c.append("INBOX", b"Subject: x\r\n\r\nx\r\n")
        for name in ("Hồ sơ", "-dash", 'q"uote', "A&B", "a/b/c/d"):
            c.create_folder(name)
            c.setacl(name, addr["giang"], "lr")
        c.setacl("INBOX", addr["binh"], "lrs")
        c.setacl("INBOX", "-" + addr["giang"], "w")
    finally:
        c.logout()
    for key in list(__import__("os").environ):
        if key.startswith("MAILSTATE_") and key != LANG_ENV:
            monkeypatch.delenv(key)
    for key, value in lab.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    state = tmp_path / "state"
    r = CliRunner().invoke(
        mailstate_cli, ["import", "--out", str(state), "--domain", IRM_DOMAIN, "--layout", "iredmail"]
    )
    assert r.exit_code == 0, r.output
    provs, ssh = ssh_of(state)
    try:
        ssh.doveadm(
            "acl", "set", "-u", addr["an"], "--", "Hồ sơ", f"user={addr['binh']}", "lookup", "read", "-write"
        )
        ssh.doveadm("acl", "set", "-u", addr["an"], "--", "INBOX", "group=ke-toan", "lookup")
        ssh.doveadm("mailbox", "metadata", "set", "-u", addr["an"], "--", "-dash", "/shared/comment", "a\tb")
    finally:
        close_providers(provs)
    reads = both_reads(state, ["an", "binh", "giang"])
    for login, (bulk, over_imap) in reads.items():
        assert bulk is not None, login
        assert bulk == over_imap, f"{login}: {_diff(bulk, over_imap)}"
    keys = {key for _k, key, _a in reads["an"][0][0] + reads["an"][0][1]}
    assert {"an/INBOX#binh", "an/Hồ sơ#giang", "an/INBOX#$ke-toan"} <= keys, keys
    through = plan_changes(state)[0]
    assert through == plan_changes(state, bulk=False)[0]
    assert ("Action.REVOKE", "acl", "an/INBOX#binh") in {c[:3] for c in through}
    done = cli(state, "apply", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert plan_changes(state)[0] == set() == plan_changes(state, bulk=False)[0]


PUBLIC = """
namespace public {
  type = public
  separator = /
  prefix = Public/
  location = mdbox:%s
  subscriptions = no
  list = yes
}
"""


@pytest.fixture
def public_namespace(lab_for: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A public namespace beside the shared one (``Public/``, anyone may create in it)."""
    yield from _edited_lab(
        lab_for, tmp_path, monkeypatch, lambda conf, acl_file: conf + PUBLIC % (acl_file.parent / "public")
    )


@pytest.fixture
def autocreate(lab_for: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Autocreated special folders, as iRedMail's dovecot.conf has them (``auto = subscribe``), or made."""

    def edit(conf: str, _acl_file: Path) -> str:
        conf = conf.replace("    special_use = \\Sent\n", "    special_use = \\Sent\n    auto = subscribe\n")
        return conf.replace("    special_use = \\Trash\n", "    special_use = \\Trash\n    auto = create\n")

    yield from _edited_lab(lab_for, tmp_path, monkeypatch, edit)


def test_a_public_namespace_is_in_neither_read(public_namespace: Any) -> None:
    lab, state, acl_file = public_namespace
    root = acl_file.parent / "public"
    for d in (root, root / "mailboxes"):
        d.mkdir(exist_ok=True)
        (d / "dovecot-acl").write_text("anyone lrwstipekxa\n", encoding="utf-8")
    for p in (root, root / "mailboxes", root / "dovecot-acl", root / "mailboxes" / "dovecot-acl"):
        shutil.chown(p, acl_file.stat().st_uid, acl_file.stat().st_gid)
    provs, ssh = ssh_of(state)
    try:
        assert "Public/" in ssh.other_prefixes(), ssh.other_prefixes()
        ssh.doveadm("mailbox", "create", "-u", "a0x0", "--", "Public/Chung")
        ssh.doveadm("acl", "set", "-u", "a0x0", "--", "Public/Chung", "user=a0x2", "lookup", "read")
    finally:
        close_providers(provs)
    c = imap_master_login(lab, "au0")
    try:
        assert "Public/Chung" in [f[2] for f in c.list_folders()]
    finally:
        c.logout()
    reads = both_reads(state, ["au0", "au1", "a0x2"])
    for login, (bulk, over_imap) in reads.items():
        assert bulk is not None, login
        assert bulk == over_imap, f"{login}: {_diff(bulk, over_imap)}"
    assert plan_changes(state)[0] == plan_changes(state, bulk=False)[0]


def test_autocreated_folders_planned_alike(autocreate: Any) -> None:
    lab, state, _acl_file = autocreate
    through = plan_changes(state)[0]
    over_imap = plan_changes(state, bulk=False)[0]
    assert through == over_imap


def test_acl_files_pattern_after_a_removal(applied: Path, clean_lab: Lab) -> None:
    """A person who shared a folder leaves and their mail is removed (archived first): the owners found from
    the mail roots' pattern — learned from the shared dict's users or from the listed users — are still the
    ones every user's lookup finds — does the pattern still hold?"""
    unit = applied / "units" / "au0.toml"
    text = unit.read_text(encoding="utf-8")
    unit.write_text(
        text.replace(
            '[[person]]\nid = "a0x2"\nname = "Người 0 2"\n',
            '[[person]]\nid = "a0x2"\nname = "Người 0 2"\nleft_on = 2024-01-02\n',
        )
        + '\n[[shared_folder]]\nmailbox = "a0x1"\npath = "Chung"\npurpose = "Chung"\nread = ["a0x0"]\n',
        encoding="utf-8",
    )
    assert "left_on" in unit.read_text(encoding="utf-8")
    c = imap_master_login(clean_lab, "a0x2")
    try:
        c.append("INBOX", MSG)
        c.create_folder("Của tôi")
        c.setacl("Của tôi", "a0x1", "lr")  # shared by hand
        c.setacl("INBOX", "a1x1", "lr")
    finally:
        c.logout()
    r = cli(applied, "apply", "--yes", "--allow-destructive")
    assert r.returncode == 0, r.stdout + r.stderr
    provs, ssh = ssh_of(applied)
    try:
        assert "a0x2" not in ssh.userdb_users()
        owners = ssh.acl_owners()
        assert ssh.acl_roots == "dict" and owners == {"au0", "au1", "a0x1"}
        ssh.shared_sample, ssh.root_sample = 0, 4
        assert ssh.acl_owners() == owners and ssh.acl_roots == "pattern"
        ssh.root_sample = 1000
        assert ssh.acl_owners() == owners and ssh.acl_roots == "userdb"
    finally:
        close_providers(provs)


def test_global_and_local_owner_entries_read_alike(global_acls: Any) -> None:
    """An ``owner`` entry in the global ACL file and one in the folder's own: GETACL cannot name both by the
    owner's user (it writes ``owner`` and ``#owner``) — the doveadm read must write the same."""
    lab, state, acl_file = global_acls
    acl_file.write_text("INBOX owner lrwstipekxa\n", encoding="utf-8")
    provs, ssh = ssh_of(state)
    try:
        ssh.doveadm("acl", "set", "-u", "au0", "--", "INBOX", "owner", *OWNER_BUT_ADMIN, "admin")
    finally:
        close_providers(provs)
    reads = both_reads(state, ["au0", "au1"])
    for login, (bulk, over_imap) in reads.items():
        assert bulk is not None, login
        assert bulk == over_imap, f"{login}: {_diff(bulk, over_imap)}"


def _hand_made_folder(lab: Lab, user: str, dirname: str) -> None:
    """A folder made on disk (mdbox), as a migration script or an administrator might: no ACL file."""
    box = Path(lab.info["paths"]["mail"]) / user / "mdbox" / "mailboxes" / dirname / "dbox-Mails"
    box.mkdir(parents=True)
    owner = (Path(lab.info["paths"]["mail"]) / user).stat()
    for p in (box.parent, box):
        shutil.chown(p, owner.st_uid, owner.st_gid)


def test_folder_made_on_disk_without_an_acl_file_reads_alike(applied: Path, clean_lab: Lab) -> None:
    """A folder without an ACL file of its own (made on disk) follows INBOX's (acl_defaults_from_inbox): the
    reads are equal, so are the plans."""
    _hand_made_folder(clean_lab, "au0", "Tay")
    _hand_made_folder(clean_lab, "au0", "&AOk-t&AOk-")  # mUTF-7 on disk: "été"
    reads = both_reads(applied, ["au0"])
    bulk, over_imap = reads["au0"]
    assert bulk is not None and {"Tay", "été"} <= set(bulk[2])
    assert bulk == over_imap, _diff(bulk, over_imap)
    assert plan_changes(applied)[0] == plan_changes(applied, bulk=False)[0]


def test_folder_on_disk_named_in_invalid_mutf7(applied: Path, clean_lab: Lab) -> None:
    """A folder directory whose name is not valid modified UTF-7 ("bad&name"): doveadm's status fails for the
    mailbox: the plan stops either way, with the same error (the ssh provider's counters, pre-existing)."""
    _hand_made_folder(clean_lab, "au0", "bad&name")
    outcome = both_outcomes(applied)
    assert outcome[True] == outcome[False]
    assert "bad&name" in str(outcome[True])


def test_plan_with_a_locked_mailbox_named_first(applied: Path, clean_lab: Lab) -> None:
    """A person locked after leaving (left_on four months ago) whose folder the TOML still shares, the first
    of the mailboxes the TOML names: the one login that checks the master password must not make the plan
    fail where the IMAP read did not."""
    unit = applied / "units" / "au0.toml"
    text = unit.read_text(encoding="utf-8")
    left = (date.today() - timedelta(days=125)).isoformat()
    unit.write_text(
        text.replace(
            '[[person]]\nid = "a0x1"\nname = "Người 0 1"\n',
            f'[[person]]\nid = "a0x1"\nname = "Người 0 1"\nleft_on = {left}\n',
        ).replace('delegates = ["a0x1"]', "delegates = []")
        + '\n[[shared_folder]]\nmailbox = "a0x1"\npath = "Chung"\npurpose = "Chung"\n'
        'read = ["a0x0"]\n',
        encoding="utf-8",
    )
    r = cli(applied, "apply", "--yes", "--allow-destructive")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lock person a0x1" in r.stdout, r.stdout
    outcome = both_outcomes(applied)
    assert outcome[True] == outcome[False] == set()


def test_a_wrong_master_password_fails_the_plan(
    applied: Path, clean_lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No IMAP login per mailbox any more: a wrong master password still fails ``mailstate plan`` (never an
    empty plan), and the password appears nowhere in what it prints."""
    wrong = "sai-mat-khau-9f3b2c1d"
    monkeypatch.setenv("MAILSTATE_IMAP_PASSWORD", wrong)
    r = cli(applied, "plan", "--detailed-exitcode")
    assert r.returncode not in (0, 2), r.stdout + r.stderr
    assert wrong not in r.stdout + r.stderr
    assert "mailstate" in r.stderr.lower() or "login" in r.stderr.lower(), r.stderr


def test_reads_alike_when_cut_in_batches(
    applied: Path, clean_lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every mailbox at once, the users cut in several batches (as past 8,000 users a command),
    the same folder names in several mailboxes with different rights, one mailbox doveadm cannot read: each
    read is the IMAP read of that mailbox."""
    import mailstate.providers.doveadm.provider as ssh_module

    monkeypatch.setattr(ssh_module, "USERS_BATCH_BYTES", 8)  # two or three users a process
    for n, login in enumerate(["au0", "au1", "a0x0", "a1x2"]):
        c = imap_master_login(clean_lab, login)
        try:
            for name in ("Chung", "-x", "Đến" if login.startswith("a") else "Khác"):
                if name not in [f[2] for f in c.list_folders()]:
                    c.create_folder(name)
                c.setacl(name, ["a0x1", "a1x1", "a0x2", "a1x0"][n], "lr" + "w" * n)
        finally:
            c.logout()
    logins = ["a0x0", "a0x1", "a0x2", "a1x0", "a1x1", "a1x2", "au0", "au1"]
    reads = both_reads(applied, logins)
    for login, (bulk, over_imap) in reads.items():
        assert bulk is not None, login
        assert bulk == over_imap, f"{login}: {_diff(bulk, over_imap)}"
    assert plan_changes(applied)[0] == plan_changes(applied, bulk=False)[0]


TOML_PATHS = [
    "-dash",
    "A&B",
    'q"uote',
    "it's",
    "a/b/c/d",
    unicodedata.normalize("NFD", "Lưu trữ"),
    "INBOX/con",
    "☺ emoji 📬",
    "sp end",
    "L" * 120,
    "x&-y",
]


def test_no_op_plan_with_hostile_folder_paths_in_the_toml(applied: Path, clean_lab: Lab) -> None:
    """Shared folders whose paths the TOML gives in hostile forms (leading "-", "&", quotes, NFD, nested,
    under INBOX, emoji), purposes in NFD with quotes: apply, then ``mailstate plan``
    through doveadm is empty (exit 0) and one IMAP login; the IMAP-only plan is empty too."""
    rows = []
    for i, path in enumerate(TOML_PATHS):
        purpose = unicodedata.normalize("NFD", f'Mục {i} ‘trích’ \\"dẫn\\"') if i % 2 else f"Mục {i}"
        rows.append(
            f'[[shared_folder]]\nmailbox = "unit:au1"\npath = {json.dumps(path, ensure_ascii=False)}\n'
            f'purpose = "{purpose}"\nread = ["a1x{i % 3}"]\n'
        )
    (applied / "units" / "au1.toml").write_text(
        (applied / "units" / "au1.toml").read_text(encoding="utf-8") + "\n" + "\n".join(rows),
        encoding="utf-8",
    )
    r = cli(applied, "apply", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli(applied, "plan", "--detailed-exitcode")
    assert r.returncode == 0, r.stdout + r.stderr
    through, timings = plan_changes(applied)
    assert through == set() == plan_changes(applied, bulk=False)[0]
    assert timings["mailboxes_bulk"] == timings["mailboxes_read"] and timings["folders_read"] >= len(
        TOML_PATHS
    )


def _negative_right_in_the_acl_file_only(lab: Lab) -> None:
    """A negative right set by hand on a1x1's INBOX: only in its ACL file (the shared dict does not record
    a negative right)."""
    c = imap_master_login(lab, "a1x1")
    try:
        c.setacl("INBOX", "-a1x2", "r")
    finally:
        c.logout()


def _every_read_plans_the_revoke(applied: Path) -> None:
    """Over IMAP, through every user's lookup, and through the pattern, of the shared dict's users or of
    the listed users (a link in the tree sends it to every user's lookup): the hand-made negative right is
    planned away."""
    drift = ("Action.REVOKE", "acl", "a1x1/INBOX#-a1x2")
    assert drift in {c[:3] for c in plan_changes(applied, bulk=False)[0]}
    assert drift in {c[:3] for c in plan_changes(applied)[0]}
    assert drift in {c[:3] for c in plan_changes(applied, root_sample=1000)[0]}
    assert drift in {c[:3] for c in plan_changes(applied, root_sample=4)[0]}


def test_acl_files_under_a_symlinked_home(applied: Path, clean_lab: Lab) -> None:
    _negative_right_in_the_acl_file_only(clean_lab)
    mail = Path(clean_lab.info["paths"]["mail"])
    moved = mail.parent / "other-disk"
    moved.mkdir(exist_ok=True)
    shutil.chown(moved, mail.stat().st_uid, mail.stat().st_gid)
    shutil.move(str(mail / "a1x1"), str(moved / "a1x1"))
    (mail / "a1x1").symlink_to(moved / "a1x1")
    try:
        _every_read_plans_the_revoke(applied)
    finally:
        (mail / "a1x1").unlink()
        shutil.move(str(moved / "a1x1"), str(mail / "a1x1"))


def test_acl_files_under_a_symlinked_mail_store(applied: Path, clean_lab: Lab) -> None:
    _negative_right_in_the_acl_file_only(clean_lab)
    mail = Path(clean_lab.info["paths"]["mail"])
    real = mail.parent / "mail-on-data-disk"
    mail.rename(real)
    mail.symlink_to(real)
    try:
        _every_read_plans_the_revoke(applied)
    finally:
        mail.unlink()
        real.rename(mail)


def test_scoped_plan_reads_alike(applied: Path, clean_lab: Lab) -> None:
    """``--scope unit:au1`` with drift in both units and a person of au1 sharing a folder by hand: the scoped
    plan through doveadm is the scoped plan over IMAP, and holds au1's drift only."""
    provs, ssh = ssh_of(applied)
    try:
        ssh.doveadm("acl", "delete", "-u", "au0", "--", "Đến", "user=a0x2")
        ssh.doveadm("acl", "delete", "-u", "au1", "--", "Đến", "user=a1x2")
    finally:
        close_providers(provs)
    c = imap_master_login(clean_lab, "a1x2")
    try:
        c.create_folder("Riêng")
        c.setacl("Riêng", "a0x0", "lr")
    finally:
        c.logout()
    through = plan_changes(applied, scope=["unit:au1"])[0]
    assert through == plan_changes(applied, bulk=False, scope=["unit:au1"])[0]
    keys = {c[2] for c in through}
    assert {"unit:au1/Đến#a1x2", "a1x2/Riêng#a0x0"} <= keys and "unit:au0/Đến#a0x2" not in keys, keys


def test_wildcard_folder_names_made_on_disk_read_alike(applied: Path, clean_lab: Lab) -> None:
    """Folders IMAP CREATE refuses but a disk may hold ("*", "%", "a*", "INBOX*"), each with an ACL file
    that shares it: the reads are equal (or doveadm leaves the mailbox to IMAP), and so are the plans."""
    for name in ("*", "%", "a*", "INBOX*"):
        _hand_made_folder(clean_lab, "au0", name)
        acl = Path(clean_lab.info["paths"]["mail"]) / "au0" / "mdbox" / "mailboxes" / name / "dbox-Mails"
        (acl / "dovecot-acl").write_text("owner lrwstipekxa\\nuser=a0x2 lr\\n", encoding="utf-8")
        shutil.chown(acl / "dovecot-acl", acl.stat().st_uid, acl.stat().st_gid)
    outcome = both_outcomes(applied, stamped=True)  # the server's time stamp left out
    assert outcome[True] == outcome[False]  # on Dovecot 2.3.19 both fail alike: LIST answers SERVERBUG
