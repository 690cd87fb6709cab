"""Acceptance (accept16): a round's views read through the files (folders' ACL files, owners' attribute files)
equal the views read through doveadm alone, on the real lab — hand-edited files in forms Dovecot reads its
own way included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mailstate.desired_state.loader import load_state
from mailstate.lab import Lab
from mailstate.lab.iredmail import testing as irm_t
from mailstate.lab.testing import doveadm, views_in_round
from mailstate.providers.doveadm.parse import settings_from_env
from mailstate.providers.doveadm.provider import SshProvider
from mailstate.providers.registry import close_providers, open_providers

pytestmark = pytest.mark.integration

MAILSTATE = Path(sys.executable).with_name("mailstate")
DOMAIN = "lab.example.gov.vn"


def write_state(root: Path) -> Path:
    (root / "units").mkdir(parents=True, exist_ok=True)
    (root / "mailstate.toml").write_text(
        f'[organization]\nname = "Lab"\ndomain = "{DOMAIN}"\n\n[providers.ldap]\nurl = "ldaps://ldap.invalid"\n'
        'password_env = "MAILSTATE_LDAP_PASSWORD"\n',
        encoding="utf-8",
    )
    for u in range(3):
        people = [f"b{u}x{i}" for i in range(3)]
        rows = [f'[unit]\nid = "bu{u}"\nname = "Phòng {u}"\nhead = "{people[0]}"\n'
                f'delegates = ["{people[1]}", "{people[2]}"]\n']
        rows += [f'[[person]]\nid = "{p}"\nname = "Người {u} {i}"\n' for i, p in enumerate(people)]
        rows.append(f'[[shared_folder]]\nmailbox = "unit:bu{u}"\npath = "Đến"\npurpose = "Văn bản"\n'
                    f'read = ["{people[1]}"]\n')
        (root / "units" / f"bu{u}.toml").write_text("\n".join(rows), encoding="utf-8")
    return root


@pytest.fixture
def applied(
    lab_env: dict[str, str], clean_lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    state = write_state(tmp_path / "state")
    r = subprocess.run([str(MAILSTATE), "apply", "--yes", "--state", str(state)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return state


def both_ways(state: Path, users: list[str], expected: dict[str, list[str]]) -> tuple[Any, Any, list[str]]:
    """(views through the files, views through doveadm alone, the commands of the first)."""
    provs = open_providers(load_state(state), ["ssh"])
    try:
        prov = provs["ssh"]
        assert isinstance(prov, SshProvider)
        return provider_both_ways(prov, users, expected)
    finally:
        close_providers(provs)


def provider_both_ways(
    prov: SshProvider, users: list[str], expected: dict[str, list[str]]
) -> tuple[Any, Any, list[str]]:
    """``both_ways`` with a provider opened already."""
    asked: list[str] = []
    inner = prov.run

    def run(command: str, check: bool = True) -> tuple[int, str, str]:
        asked.append(command)
        return inner(command, check)

    prov.run = run  # type: ignore[method-assign]
    fast = views_in_round(prov, users, expected)
    prov._acl_from_files = lambda: False  # type: ignore[method-assign]
    prov._attribute_file = lambda: None  # type: ignore[method-assign]
    slow = views_in_round(prov, users, expected)
    return fast, slow, asked


def folder_dir(lab: Lab, user: str, folder: str) -> Path:
    out = doveadm(lab, "-f", "tab", "mailbox", "path", "-u", user, "-t", "control", "--", folder)
    return Path(out.stdout.strip().splitlines()[-1])


def write_file(lab: Lab, path: Path, data: bytes) -> None:
    """``data`` written to ``path`` as the lab user (through a file of this test's own it can read)."""
    fd, name = tempfile.mkstemp(prefix="accept16-")
    try:
        os.write(fd, data)
        os.close(fd)
        os.chmod(name, 0o644)
        res = lab.run_as_lab_user(["sh", "-c", 'cat "$1" > "$2"', "sh", name, str(path)])
        assert res.returncode == 0, res.stderr
    finally:
        os.unlink(name)


def acl_path(lab: Lab, user: str, folder: str = "INBOX") -> Path:
    return folder_dir(lab, user, folder) / "dovecot-acl"


USERS = ["bu0", "bu1", "bu2"]
EXPECTED = {u: ["Đến"] for u in USERS}

ACL_FILES = {
    "no-final-newline": b"user=b1x1 lr",
    "only-comments": b"# nothing\n",
    "owner-and-anyone": b"owner lra\nanyone l\n",
    "owner-less-than-anyone": b"anyone lr\nowner la\n",
    "user-owner-entry": b"user=bu1 la\nanyone lr\n",
    "nul-after-buffer": b"# pad\n" * 40000 + b"#\0x\nuser=b1x2 lrwi\n",
    "latin1-name": b"user=b1x1 lr\nuser=b\xe9 lr\n",
    "authenticated-only": b"authenticated lr\n",
    "group-override": b"group-override=ke-toan lr\ngroup=ke-toan w\n",
    "long-id": b"user=" + b"a" * 300 + b" lr\n",
    "upper-letters": b"user=b1x1 LR\n",
    "old-letters": b"user=b1x1 lrc\n",
    "anonymous": b"anonymous lr\n",
    "neg-only-owner": b"-owner r\n",
    "tab-sep": b"user=b1x1\tlr\n",
    "double-space": b"user=b1x1  lr\n",
    "named-right": b"user=b1x1 lr:foo\n",
    "empty-rights": b"user=b1x1 \n",
}


@pytest.mark.parametrize("name", sorted(ACL_FILES))
def test_hand_written_inbox_acl_file(applied: Path, clean_lab: Lab, name: str) -> None:
    write_file(clean_lab, acl_path(clean_lab, "bu1"), ACL_FILES[name])
    write_file(clean_lab, acl_path(clean_lab, "bu1", "Đến"), ACL_FILES[name])
    fast, slow, asked = both_ways(applied, USERS, EXPECTED)
    assert fast == slow, asked


def home(lab: Lab, user: str) -> Path:
    return Path(doveadm(lab, "user", "-f", "home", "--", user).stdout.strip())


def guid(lab: Lab, user: str, folder: str) -> str:
    out = doveadm(lab, "-f", "tab", "mailbox", "status", "-u", user, "guid", "--", folder).stdout
    return out.strip().splitlines()[-1].split("\t")[-1]


# an owner's attribute file written by hand; {guid}: the folder's GUID
ATTRIBUTE_FILES: dict[str, Any] = {
    "escaped-tab": "shared/{guid}/comment\nA\x01tB\x011C\n",
    "unknown-escape": "shared/{guid}/comment\nA\x01xB\n",
    "trailing-escape": "shared/{guid}/comment\nAB\x01\n",
    "key-twice": "shared/{guid}/comment\nfirst\nshared/{guid}/comment\nlast\n",
    "odd-lines": "shared/{guid}/comment\nA\nshared/x\n",
    "crlf": "shared/{guid}/comment\r\nA\r\n",
    "empty-value": "shared/{guid}/comment\n\n",
    # Dovecot's file dict reads no last line without its line break (the key is dropped); grep prints it
    # with one: the files' reading shows "A" where doveadm shows no purpose
    "no-final-newline": "shared/{guid}/comment\nA",
    "nul-after-buffer": "x\ny\n" * 40000 + "#\0\nz\nshared/{guid}/comment\nlate\n",
    "priv-only": "priv/{guid}/comment\nA\n",
    "upper-guid": "shared/{GUID}/comment\nA\n",
}


@pytest.mark.parametrize("text", list(ATTRIBUTE_FILES.values()), ids=list(ATTRIBUTE_FILES))
def test_hand_written_attribute_file(applied: Path, clean_lab: Lab, text: str) -> None:
    g = guid(clean_lab, "bu1", "Đến")
    text = text.replace("{guid}", g).replace("{GUID}", g.upper())
    write_file(clean_lab, home(clean_lab, "bu1") / "dovecot-attributes", text.encode())
    fast, slow, asked = both_ways(applied, USERS, EXPECTED)
    assert fast == slow, asked


def test_iredmail_layout_read_both_ways(lab_for: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The iRedMail layout (maildir, homes with a date in them, ``acl_defaults_from_inbox``, users keyed by
    address): hand-written rights and a purpose read through the files equal doveadm's."""
    lab = lab_for("acc16.example.gov.vn", layout="iredmail")
    lab.reset()
    users = []
    for local in ("an", "binh", "cuong"):
        irm_t.add_user(lab, local, "mat-khau-Dai-16")
        users.append(irm_t.address(lab, local))
    for key, value in lab.env().items():
        monkeypatch.setenv(key, value)
    an, binh, cuong = users
    for user in users:
        doveadm(lab, "mailbox", "create", "-u", user, "Đến")
        purpose = f"Văn\tbản {user}"
        doveadm(lab, "mailbox", "metadata", "set", "-u", user, "-s", "Đến", "/shared/comment", purpose)
    doveadm(lab, "acl", "set", "-u", an, "Đến", f"user={binh}", "lookup", "read")
    doveadm(lab, "acl", "set", "-u", binh, "Đến", f"user={an}", "lookup", "read", "insert")
    doveadm(lab, "acl", "set", "-u", binh, "INBOX", f"user={cuong}", "lookup")
    write_file(lab, acl_path(lab, cuong, "Đến"), f"anyone lr\nowner la\nuser={an} lr\n".encode())
    prov = SshProvider(settings_from_env(None).model_copy(update={"user_key": "address"}))
    try:
        fast, slow, asked = provider_both_ways(prov, users, {u: ["Đến"] for u in users})
    finally:
        prov.close()
    assert fast == slow, asked
    assert fast[0][an].purposes["Đến"] == f"Văn\tbản {an}", fast


@contextmanager
def _home_moved(lab: Lab, user: str, moved: str) -> Iterator[None]:
    """``user``'s home copied to ``moved`` (outside the tree of every other home) and the userdb pointed
    there, the old directory left in place (an administrator moving a home to another disk keeps the old
    copy a while); the template restored after."""
    conf = Path(lab.info["paths"]["dovecot_conf"]).with_name("dovecot-ldap.conf.ext")
    original = conf.read_text(encoding="utf-8")
    template = next(w for w in original.split() if w.startswith("=home="))[len("=home="):].rstrip(",")
    old = home(lab, user)
    disk = Path(moved).parent
    disk.mkdir(exist_ok=True)
    shutil.chown(disk, lab.info["user"], lab.info["user"])
    res = lab.run_as_lab_user(["cp", "-a", str(old), moved])
    assert res.returncode == 0, res.stderr
    apart = f"=home=%{{if;%{{ldap:uid}};eq;{user};{moved};{template}}}"
    conf.write_text(original.replace(f"=home={template}", apart), encoding="utf-8")
    doveadm(lab, "reload")
    try:
        assert home(lab, user) == Path(moved)
        yield
    finally:
        conf.write_text(original, encoding="utf-8")
        doveadm(lab, "reload")
        shutil.rmtree(disk)


def test_a_home_moved_out_of_the_tree_with_its_old_copy_left(applied: Path, clean_lab: Lab) -> None:
    """A unit mailbox's home moved to another disk, the old copy left where the template puts it: the
    rights and purpose read through the files are the moved home's, as doveadm reads them — not the old
    copy's."""
    lab = clean_lab
    moved = Path(lab.info["paths"]["mail"]).parent / "disk2" / "bu1"
    with _home_moved(lab, "bu1", str(moved)):
        doveadm(lab, "acl", "set", "-u", "bu1", "Đến", "user=b1x2", "lookup", "read", "insert")
        doveadm(lab, "mailbox", "metadata", "set", "-u", "bu1", "-s", "Đến", "/shared/comment", "Đã chuyển")
        provs = open_providers(load_state(applied), ["ssh"])
        try:
            prov = provs["ssh"]
            assert isinstance(prov, SshProvider)
            prov.shared_sample = 2
            fast, slow, asked = provider_both_ways(prov, USERS, EXPECTED)
        finally:
            close_providers(provs)
    assert ("b1x2", "ilr") in slow[0]["bu1"].acls["Đến"], slow
    assert fast == slow, asked


NAMES = ["A&B", "Tài liệu/2026", unicodedata.normalize("NFD", "Văn bản"), "&AOE-", "x y ", "Ghi chú.cũ"]


def test_folder_names_dovecot_encodes_read_both_ways(applied: Path, clean_lab: Lab) -> None:
    """Folders whose names Dovecot encodes on disk ('&', mUTF-7-looking text, NFD, a hierarchy, a trailing
    space, a dot), with rights and purposes, in two mailboxes (the path is learned from one user):
    the same both ways."""
    lab = clean_lab
    for user in ("bu1", "bu2"):
        for name in NAMES:
            doveadm(lab, "mailbox", "create", "-u", user, "--", name)
            doveadm(lab, "acl", "set", "-u", user, "--", name, "user=b1x2", "lookup", "read")
            doveadm(lab, "mailbox", "metadata", "set", "-u", user, "-s", "--", name, "/shared/comment", "M")
    write_file(lab, acl_path(lab, "bu2", "A&B"), b"user=b2x1 lrw\n")
    expected = {u: ["Đến", *NAMES] for u in ("bu1", "bu2")} | {"bu0": ["Đến"]}
    fast, slow, asked = both_ways(applied, USERS, expected)
    assert fast == slow, asked
    assert ("b2x1", "lrw") in fast[0]["bu2"].acls["A&B"], fast[0]["bu2"].acls
