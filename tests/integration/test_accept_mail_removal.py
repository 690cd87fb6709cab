"""Acceptance: trying to lose mail at removal through the archive directory — a manifest naming another
directory, an archive linked to the live mail, two archives racing for one name. Each message is counted and
digested over IMAP (live) and with doveadm's JSON output (archives), never with the provider's own reader."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import unicodedata
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from mailstate.desired_state.schema import Organization, State
from mailstate.errors import ProviderError
from mailstate.lab import Lab
from mailstate.lab.testing import doveadm, imap_login, make_person, own_mail
from mailstate.providers.doveadm.parse import MANIFEST_SUFFIX, Manifest
from mailstate.providers.doveadm.provider import SshProvider

FOLDER = "Lưu trữ/2025"


@pytest.fixture
def leaver(lab_env: dict[str, str], clean_lab: Lab) -> tuple[Lab, str, str]:
    """bangnv with 6 messages in INBOX and a Vietnamese folder; returns (lab, user, password)."""
    pw = "Pw-" + secrets.token_urlsafe(12)
    make_person(clean_lab, "bangnv", pw, cn="Nguyễn Văn Bằng")
    c = imap_login(clean_lab, "bangnv", pw)
    try:
        c.create_folder(FOLDER)
        for i in range(3):
            c.append("INBOX", b"Subject: %d\r\n\r\nthu %d\r\n" % (i, i))
            c.append(FOLDER, b"Subject: L%d\r\n\r\nluu %d\r\n" % (i, i))
    finally:
        c.logout()
    return clean_lab, "bangnv", pw


@pytest.fixture
def provider(leaver: tuple[Lab, str, str]) -> Iterator[SshProvider]:
    lab = leaver[0]
    org = Organization(name="L", domain=lab.info["domain"])
    p = SshProvider.from_state(State(root=Path("."), organization=org))
    try:
        yield p
    finally:
        p.close()


def _live(lab: Lab, user: str, pw: str) -> Counter[tuple[str, str]]:
    return own_mail(imap_login(lab, user, pw))


def _archived(lab: Lab, user: str) -> Counter[tuple[str, str]]:
    """Every message of every real archive directory of ``user`` (a linked one, or one that does not read,
    counts as holding nothing)."""
    out: Counter[tuple[str, str]] = Counter()
    for d in sorted(Path(lab.info["paths"]["archive"]).iterdir()):
        if d.is_symlink() or not d.is_dir() or not d.name.startswith(f"{user}-"):
            continue
        res = doveadm(
            lab, "-o", f"mail_location=mdbox:{d}", "-f", "json", "fetch", "-u", user, "mailbox text", "all",
            check=False,
        )
        for row in json.loads(res.stdout or "[]") if res.returncode == 0 else []:  # unreadable: holds nothing
            if not row["mailbox"].startswith("shared/"):
                digest = hashlib.sha256(row["text"].encode("utf-8")).hexdigest()
                out[(unicodedata.normalize("NFC", row["mailbox"]), digest)] += 1
    return out


def _lost(lab: Lab, user: str, pw: str, before: Counter[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """Messages of ``before`` neither live nor in an archive."""
    return before - _live(lab, user, pw) - _archived(lab, user)


@pytest.mark.parametrize("target", ["the live mailbox", "another directory"])
def test_manifest_naming_another_directory_is_not_trusted(
    leaver: tuple[Lab, str, str], provider: SshProvider, target: str
) -> None:
    """A manifest edited to describe another directory (with its messages, count and digest consistent) — the
    live mail itself, or ``../`` anything — while the real archive is gone: the removal is refused, every
    message stays, and the next archive is a fresh, real one."""
    lab, user, pw = leaver
    before = _live(lab, user, pw)
    mf = provider.archive(user)
    root = Path(provider.settings.archive_dir)
    live_rel = os.path.relpath(Path(lab.info["paths"]["mail"]) / user / "mdbox", root)
    other = live_rel if target == "the live mailbox" else f"{mf.archive}.2/../{live_rel}"
    shutil.rmtree(root / mf.archive)
    forged = Manifest(**{**mf.__dict__, "archive": other, "location": f"mdbox:{root}/{other}"})
    (root / (mf.archive + MANIFEST_SUFFIX)).write_text(forged.to_json())
    with pytest.raises(ProviderError, match="refused, every message kept"):
        provider.remove_mail(user)
    assert _live(lab, user, pw) == before
    fresh = provider.archive(user)
    assert fresh.archive != mf.archive and fresh.count == 6
    provider.remove_mail(user)
    assert not _lost(lab, user, pw, before) and not _live(lab, user, pw)


@pytest.mark.parametrize("link", ["archive", "storage"])
def test_archive_linked_to_the_live_mail_is_not_trusted(
    leaver: tuple[Lab, str, str], provider: SshProvider, link: str
) -> None:
    """An archive directory (or its storage) replaced by a symbolic link to the live mailbox reads back
    exactly like the live mail: trusted, removing the live mail would remove the only copy. Refused."""
    lab, user, pw = leaver
    before = _live(lab, user, pw)
    mf = provider.archive(user)
    root = Path(provider.settings.archive_dir)
    live = Path(lab.info["paths"]["mail"]) / user / "mdbox"
    target = root / mf.archive if link == "archive" else root / mf.archive / "storage"
    shutil.rmtree(target)
    target.symlink_to(live if link == "archive" else live / "storage")
    with pytest.raises(ProviderError, match="refused, every message kept"):
        provider.remove_mail(user)
    assert _live(lab, user, pw) == before
    provider.archive(user)
    provider.remove_mail(user)
    assert not _lost(lab, user, pw, before) and not _live(lab, user, pw)


class _StaleListing(SshProvider):
    """Another apply, started at the same time: it listed the archive directory before the first archive."""

    def _archive_entries(self) -> list[str]:
        return []


def test_two_archives_racing_for_one_name_never_share_a_directory(
    leaver: tuple[Lab, str, str], provider: SshProvider
) -> None:
    """Two applies archive the same leaver the same day, the second from a listing made before the first
    archive existed, after a message was deleted: the second must not back up into the first archive
    (``doveadm backup`` mirrors, so the first would silently lose the deleted message it verified)."""
    lab, user, pw = leaver
    before = _live(lab, user, pw)
    first = provider.archive(user)
    c = imap_login(lab, user, pw)
    try:
        c.select_folder("INBOX")
        c.delete_messages(c.search()[:1])
        c.expunge()
    finally:
        c.logout()
    racing = _StaleListing(provider.settings, today=date.fromisoformat(first.date))
    try:
        second = racing.archive(user)
    finally:
        racing.close()
    assert second.archive != first.archive and second.count == 5
    assert provider.verified_manifest(user) == second
    assert provider.digest(user, first.location) == (first.count, first.digest)
    provider.remove_mail(user)
    assert not _lost(lab, user, pw, before) and not _live(lab, user, pw)
