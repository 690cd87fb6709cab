"""The SSH provider against the lab's sshd + Dovecot: last-login facts, verified archives, guarded removal."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailstate.desired_state.model import Organization, State
from mailstate.errors import ProviderError
from mailstate.lab import Lab
from mailstate.lab.testing import imap_login, imap_master_login, make_person
from mailstate.providers.ssh import MANIFEST_SUFFIX, Manifest, SshProvider
from mailstate.reconciler.change import Action, Change

MESSAGE = b"From: a@lab.example.gov.vn\r\nSubject: %d\r\n\r\nbody %d\r\n"
FOLDER = "Lưu trữ/2025"


def _state(lab: Lab) -> State:
    return State(root=Path("."), organization=Organization(name="Lab", domain=lab.info["domain"]))


def _change(action: Action, user: str) -> Change:
    return Change(f"{action.label}:person:{user}", action, "person", user, "ssh", None, None)


@pytest.fixture
def mailbox(lab_env: dict[str, str], clean_lab: Lab) -> tuple[Lab, str, str]:
    """Person bangnv with 3 messages in INBOX and 2 in a Vietnamese folder; returns (lab, user, password)."""
    password = "Pw-" + secrets.token_urlsafe(12)
    make_person(clean_lab, "bangnv", password, cn="Nguyễn Văn Bằng", quota=2 * 1024**3)
    c = imap_login(clean_lab, "bangnv", password)
    try:
        c.create_folder(FOLDER)
        for i in range(3):
            c.append("INBOX", MESSAGE % (i, i))
        for i in range(2):
            c.append(FOLDER, MESSAGE % (10 + i, i))
    finally:
        c.logout()
    return clean_lab, "bangnv", password


@pytest.fixture
def provider(mailbox: tuple[Lab, str, str]) -> Iterator[SshProvider]:
    p = SshProvider.from_state(_state(mailbox[0]))
    try:
        yield p
    finally:
        p.close()


def _count(lab: Lab, user: str, password: str) -> int:
    c = imap_login(lab, user, password)
    try:
        total = 0
        for flags, _d, name in c.list_folders():
            if b"\\Noselect" in flags or name.startswith("shared/"):
                continue
            total += c.folder_status(name, ["MESSAGES"])[b"MESSAGES"]
        return total
    finally:
        c.logout()


def test_last_login_fact_counts_own_logins_only(mailbox: tuple[Lab, str, str], provider: SshProvider) -> None:
    """A login with one's own password shows in facts["last_login"]; a master-user login does not."""
    lab, _user, _pw = mailbox
    make_person(lab, "thuytt", "Pw-" + secrets.token_urlsafe(12), cn="Trần Thị Thủy")
    imap_master_login(lab, "thuytt").logout()
    facts = provider.read().facts["last_login"]
    assert "bangnv" in facts and facts["bangnv"].startswith("20")
    assert "thuytt" not in facts


def test_archive_verifies_and_writes_manifest(mailbox: tuple[Lab, str, str], provider: SshProvider) -> None:
    """The archive holds the same count and GUID digest as the live mailbox, and its manifest says so."""
    lab, user, _pw = mailbox
    provider.apply(_change(Action.ARCHIVE, user))
    names = provider.sftp().listdir(provider.settings.archive_dir)
    manifest_name = next(n for n in names if n.endswith(MANIFEST_SUFFIX))
    with provider.sftp().open(f"{provider.settings.archive_dir}/{manifest_name}") as fh:
        manifest = Manifest.from_json(fh.read().decode())
    assert manifest.count == 5
    assert (manifest.count, manifest.digest) == provider.digest(user)
    assert provider.digest(user, manifest.location) == provider.digest(user)
    provider.apply(_change(Action.ARCHIVE, user))  # again: idempotent, still verifies


def test_removal_refused_without_archive(mailbox: tuple[Lab, str, str], provider: SshProvider) -> None:
    """Removing mail with no verified archive is refused and every message stays."""
    lab, user, pw = mailbox
    with pytest.raises(ProviderError, match="no verified archive"):
        provider.apply(_change(Action.DELETE, user))
    assert _count(lab, user, pw) == 5


def test_unwritable_archive_dir_fails_and_removal_not_done(
    mailbox: tuple[Lab, str, str], provider: SshProvider, tmp_path: Path
) -> None:
    """With the archive dir unwritable the archive fails, no manifest exists and the removal is refused."""
    lab, user, pw = mailbox
    locked = lab.dir / "archive-readonly"
    locked.mkdir(mode=0o555, exist_ok=True)
    os.chmod(locked, 0o555)  # owned by root, the lab user cannot write it
    provider.settings = provider.settings.model_copy(update={"archive_dir": str(locked)})
    with pytest.raises(ProviderError):
        provider.apply(_change(Action.ARCHIVE, user))
    with pytest.raises(ProviderError, match="refused"):
        provider.apply(_change(Action.DELETE, user))
    assert _count(lab, user, pw) == 5
    assert not list(locked.iterdir())


def test_removal_after_verified_archive(mailbox: tuple[Lab, str, str], provider: SshProvider) -> None:
    """After a verified archive the mail is removed with doveadm, and the archive still holds all of it."""
    lab, user, pw = mailbox
    manifest = provider.archive(user)
    provider.apply(_change(Action.DELETE, user))
    assert _count(lab, user, pw) == 0
    assert provider.digest(user, manifest.location) == (manifest.count, manifest.digest)


def test_removal_refused_when_mail_arrived_after_archive(
    mailbox: tuple[Lab, str, str], provider: SshProvider
) -> None:
    """Mail that arrived after the archive blocks the removal (it is not in the archive)."""
    lab, user, pw = mailbox
    provider.archive(user)
    c = imap_login(lab, user, pw)
    try:
        c.append("INBOX", MESSAGE % (99, 99))
    finally:
        c.logout()
    with pytest.raises(ProviderError, match="changed since the archive"):
        provider.apply(_change(Action.DELETE, user))
    assert _count(lab, user, pw) == 6


def _other_key(tmp_path: Path) -> str:
    key = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return Path(f"{key}.pub").read_text().split()[1]


def test_host_key_mismatch_refused(
    mailbox: tuple[Lab, str, str], provider: SshProvider, tmp_path: Path
) -> None:
    """A known_hosts entry with another key for the host makes the connection fail: never auto-accepted."""
    s = provider.settings
    bad = tmp_path / "known_hosts"
    line = f"[{s.host}]:{s.port} ssh-ed25519 {_other_key(tmp_path)}\n"
    bad.write_text(line)
    p = SshProvider(s.model_copy(update={"known_hosts": str(bad)}))
    with pytest.raises(ProviderError, match="does not match known_hosts"):
        p.read()
    p.close()
    assert bad.read_text() == line  # the real key was not written over the recorded one


def test_unknown_host_refused(mailbox: tuple[Lab, str, str], provider: SshProvider, tmp_path: Path) -> None:
    """With the host absent from known_hosts the connection is refused and nothing is added to the file."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    p = SshProvider(provider.settings.model_copy(update={"known_hosts": str(empty)}))
    with pytest.raises(ProviderError, match="unknown host keys are refused|not found in known_hosts"):
        p.read()
    p.close()
    assert empty.read_text() == ""


def test_second_archive_after_deletions_keeps_the_first(
    mailbox: tuple[Lab, str, str], provider: SshProvider
) -> None:
    """Archiving again after mail was deleted writes a new archive; the first still holds every message."""
    lab, user, pw = mailbox
    first = provider.archive(user)
    assert provider.archive(user) == first  # nothing changed: the verified archive is reused
    c = imap_login(lab, user, pw)
    try:
        c.select_folder("INBOX")
        c.delete_messages([1])
        c.expunge()
    finally:
        c.logout()
    second = provider.archive(user)
    assert second.archive != first.archive and second.count == 4
    assert provider.digest(user, first.location) == (5, first.digest)
