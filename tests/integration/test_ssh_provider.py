"""The SSH provider against the lab's sshd + Dovecot: last-login facts, verified archives, guarded removal."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mailstate.desired_state.schema import Organization, State
from mailstate.errors import ProviderError
from mailstate.lab import Lab
from mailstate.lab.testing import doveadm, imap_login, imap_master_login, make_person, own_mail
from mailstate.model.change import Action, Change
from mailstate.providers.doveadm.parse import MANIFEST_SUFFIX, Manifest, Message
from mailstate.providers.doveadm.provider import SshProvider

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


def test_mail_arrived_after_archive_is_archived_as_increment_then_removed(
    mailbox: tuple[Lab, str, str], provider: SshProvider
) -> None:
    """Mail that arrived after the archive is not deleted unarchived: removal archives it as an increment
    (extending the first archive), then removes it; together the archives hold every message."""
    lab, user, pw = mailbox
    first = provider.archive(user)
    _append(lab, user, pw, [("INBOX", MESSAGE % (99, 99))])
    before = _imap_mail(lab, user, pw)
    last = provider.remove_mail(user)
    assert _count(lab, user, pw) == 0
    assert last.archive != first.archive and last.extends == (first.archive,) and last.count == 1
    assert _archived_mail(lab, user, [first, last]) == before


def _append(lab: Lab, user: str, pw: str, messages: list[tuple[str, bytes]]) -> None:
    c = imap_login(lab, user, pw)
    try:
        for folder, body in messages:
            c.append(folder, body)
    finally:
        c.logout()


def _imap_mail(lab: Lab, user: str, pw: str) -> Counter[tuple[str, str]]:
    """(folder, SHA-256 of the full text, LF line ends) of every own message, read over IMAP — not with the
    code under test."""
    return own_mail(imap_login(lab, user, pw))


def _archived_mail(lab: Lab, user: str, manifests: list[Manifest]) -> Counter[tuple[str, str]]:
    """The same for archives, read with doveadm's JSON output (not the provider's reader)."""
    out: Counter[tuple[str, str]] = Counter()
    for mf in manifests:
        res = doveadm(lab, "-o", f"mail_location={mf.location}", "-f", "json", "fetch", "-u", user,
                      "mailbox text", "all")
        for row in json.loads(res.stdout or "[]"):
            text = row["text"].encode("utf-8")
            out[(unicodedata.normalize("NFC", row["mailbox"]), hashlib.sha256(text).hexdigest())] += 1
    return out


def _archive_storage(provider: SshProvider, manifest: Manifest) -> Path:
    return Path(provider.settings.archive_dir) / manifest.archive / "storage"


@pytest.fixture
def fifty(mailbox: tuple[Lab, str, str]) -> tuple[Lab, str, str]:
    """bangnv with 50 messages (45 more than ``mailbox``)."""
    lab, user, pw = mailbox
    _append(lab, user, pw, [("INBOX" if i % 3 else FOLDER, MESSAGE % (100 + i, i)) for i in range(45)])
    return mailbox


@pytest.mark.parametrize("damage", ["storage deleted", "bodies altered"])
def test_damaged_archive_refuses_removal_and_is_replaced(
    fifty: tuple[Lab, str, str], provider: SshProvider, damage: str
) -> None:
    """An archive whose storage files are gone (its index still lists every message) or whose message
    bodies were altered refuses the removal: every message stays. The next archive does not reuse it: a
    fresh one is made, and the removal then succeeds with everything in it."""
    lab, user, pw = fifty
    before = _imap_mail(lab, user, pw)
    assert sum(before.values()) == 50
    first = provider.archive(user)
    assert first.count == 50
    files = sorted(_archive_storage(provider, first).glob("m.*"))
    assert files
    for f in files:
        if damage == "storage deleted":
            f.unlink()
        else:
            f.write_bytes(f.read_bytes().replace(b"body ", b"BODY "))  # same size, other text
    with pytest.raises(ProviderError, match="refused, every message kept"):
        provider.remove_mail(user)
    assert _imap_mail(lab, user, pw) == before
    fresh = provider.archive(user)
    assert fresh.archive != first.archive and fresh.count == 50 and not fresh.extends
    assert provider.remove_mail(user) == fresh
    assert _count(lab, user, pw) == 0
    assert _archived_mail(lab, user, [fresh]) == before


class _Arriving(SshProvider):
    """Delivers mail into the mailbox right before each expunge: after the archive was verified and the live
    mail read, before anything is deleted — the window the removal must survive."""

    def __init__(self, *args: Any, deliver: Callable[[int], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliver, self.calls = deliver, 0

    def expunge_archived(self, user: str, messages: Sequence[Message]) -> None:
        self.calls += 1
        self.deliver(self.calls)
        super().expunge_archived(user, messages)


def test_mail_delivered_during_removal_is_archived_not_lost(fifty: tuple[Lab, str, str]) -> None:
    """Messages APPENDed between the verification and the expunge are not deleted: the removal expunges only
    what the archive holds, archives the rest as an increment, removes it, and the archives together hold
    all 52 messages (count and digest of each, read independently)."""
    lab, user, pw = fifty
    arrived = [("INBOX", MESSAGE % (900, 900)), (FOLDER, MESSAGE % (901, 901))]

    def deliver(call: int) -> None:
        if call == 1:
            _append(lab, user, pw, arrived)

    p = _Arriving(SshProvider.from_state(_state(lab)).settings, deliver=deliver)
    try:
        first = p.archive(user)
        assert first.count == 50
        expected = _imap_mail(lab, user, pw)
        for folder, body in arrived:
            expected[(folder, hashlib.sha256(body.replace(b"\r\n", b"\n")).hexdigest())] += 1
        last = p.remove_mail(user)
        assert p.calls == 2
        assert last.extends == (first.archive,) and last.count == 2
        assert _count(lab, user, pw) == 0
        assert _archived_mail(lab, user, [first, last]) == expected
    finally:
        p.close()


def test_removal_stops_when_mail_keeps_arriving(mailbox: tuple[Lab, str, str]) -> None:
    """Mail arriving before every expunge: the removal stops after its rounds, and every message is either
    still live or in an archive (none lost)."""
    lab, user, pw = mailbox
    sent: list[bytes] = []

    def deliver(call: int) -> None:
        sent.append(MESSAGE % (700 + call, call))
        _append(lab, user, pw, [("INBOX", sent[-1])])

    p = _Arriving(SshProvider.from_state(_state(lab)).settings, deliver=deliver)
    try:
        first = p.archive(user)
        expected = _imap_mail(lab, user, pw)
        with pytest.raises(ProviderError, match="mail keeps arriving"):
            p.remove_mail(user)
        for body in sent:
            expected[("INBOX", hashlib.sha256(body.replace(b"\r\n", b"\n")).hexdigest())] += 1
        names = [n for n in p.sftp().listdir(p.settings.archive_dir) if n.endswith(MANIFEST_SUFFIX)]
        manifests = [Manifest.from_json(Path(p.settings.archive_dir, n).read_text()) for n in names]
        assert first in manifests and len(manifests) > 1  # increments were made, none was enough
        assert _archived_mail(lab, user, manifests) + _imap_mail(lab, user, pw) == expected
    finally:
        p.close()


def test_removal_never_touches_mail_shared_with_the_leaver(
    mailbox: tuple[Lab, str, str], provider: SshProvider
) -> None:
    """The leaver's view of another mailbox (shared namespace, with the expunge right) is neither archived
    nor removed: doveadm finds a folder by GUID in every namespace, so only own folders are acted on."""
    lab, user, pw = mailbox
    other_pw = "Pw-" + secrets.token_urlsafe(12)
    make_person(lab, "thuytt", other_pw, cn="Trần Thị Thủy")
    _append(lab, "thuytt", other_pw, [("INBOX", MESSAGE % (500, 500))])
    c = imap_login(lab, "thuytt", other_pw)
    try:
        c.setacl("INBOX", user, "lrwstipekxa")
    finally:
        c.logout()
    theirs = _imap_mail(lab, "thuytt", other_pw)
    manifest = provider.archive(user)
    assert manifest.count == 5
    provider.remove_mail(user)
    assert _count(lab, user, pw) == 0
    assert _imap_mail(lab, "thuytt", other_pw) == theirs


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
    """An archive still holding every live message is reused (even after a deletion); mail that is not in it
    makes a new archive, and the first still holds every message it verified."""
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
    assert provider.archive(user) == first  # it holds the 4 left (and the deleted one)
    _append(lab, user, pw, [("INBOX", MESSAGE % (77, 77))])
    second = provider.archive(user)
    assert second.archive != first.archive and second.count == 5 and not second.extends
    assert provider.digest(user, first.location) == (5, first.digest)
