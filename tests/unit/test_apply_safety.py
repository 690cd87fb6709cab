"""Apply safety, the pure parts: URL credentials refused and stripped, private file and directory modes, the
refused-change bookkeeping, and the future-date rule."""

from __future__ import annotations

import os
import stat
from datetime import date, timedelta
from pathlib import Path

import pytest

from mailstate.cli.common import errors_to_exit
from mailstate.errors import MailstateError, ProviderError
from mailstate.model.change import Action, Change
from mailstate.model.settings import LdapSettings
from mailstate.private_files import private_dir
from mailstate.providers.doveadm import provider as ssh
from mailstate.providers.imap import provider as imap
from mailstate.providers.ldap.provider import resolve_settings
from mailstate.reconciler.apply.journal import Journal, read_lines
from mailstate.reconciler.apply.lock import apply_lock
from mailstate.reconciler.apply.run import Blocked, redact, refuse_future
from mailstate.redact import strip_userinfo, url_userinfo_problem

SECRET = "s3cr3t-Pw"

STRIP_CASES = [
    ("LDAP ldaps://adm:s3cr3t-Pw@ldap.x.vn:636: cannot", "LDAP ldaps://ldap.x.vn:636: cannot"),
    ("cannot log in to imaps://u:s3cr3t-Pw@mail.x.vn as a", "cannot log in to imaps://mail.x.vn as a"),
    ("a password with '/' and '@': ldaps://a:s3/cr@3t-Pw@h x", "a password with '/' and '@': ldaps://h x"),
    ("user only: ldap://admin@h, then imaps://b:s3cr3t-Pw@m", "user only: ldap://h, then imaps://m"),
    ('"url": "ldaps://a:s3cr3t-Pw@h"', '"url": "ldaps://h"'),
    ("no URL: bangnv@sct.binhdinh.gov.vn stays", "no URL: bangnv@sct.binhdinh.gov.vn stays"),
    ("ldaps://ldap.x.vn:636 has no userinfo", "ldaps://ldap.x.vn:636 has no userinfo"),
]


@pytest.mark.parametrize(("text", "expected"), STRIP_CASES)
def test_strip_userinfo_removes_user_and_password_of_every_url(text: str, expected: str) -> None:
    """The user and password of every URL in a text are removed; other '@' (addresses) are left."""
    assert strip_userinfo(text) == expected


def test_redact_and_journal_strip_url_credentials(tmp_path: Path) -> None:
    """An error text going to the terminal (redact) or to the journal never carries a URL's password."""
    assert SECRET not in redact(f"LDAP ldaps://cn=x:{SECRET}@h: failed", [])
    ch = Change("c1", Action.CREATE, "person", "a", "ldap", None, {"name": "A"})
    j = Journal(tmp_path / "j.jsonl", tmp_path / "a.jsonl", who="t", commit=None)
    j.failed(ch, f"imap: cannot log in to imaps://m:{SECRET}@h")
    j.close()
    assert SECRET not in (tmp_path / "j.jsonl").read_text()
    assert read_lines(tmp_path / "j.jsonl")[0]["error"] == "imap: cannot log in to imaps://h"


@pytest.mark.parametrize(
    ("url", "bad"),
    [("ldaps://opsroot:pw@h", True), ("ldaps://opsroot@h", True), ("imaps://opsroot:p/w@h:993", True),
     ("ldaps://h:636", False), ("imap://h", False)],
)
def test_url_userinfo_problem(url: str, bad: bool) -> None:
    """A connection URL holding a user or password is a problem, whose text never repeats the URL."""
    problem = url_userinfo_problem(url)
    assert (problem is not None) is bad
    assert problem is None or "opsroot" not in problem and "p/w" not in problem


def test_ldap_url_with_credentials_in_the_environment_is_refused() -> None:
    """MAILSTATE_LDAP_URL=ldaps://admin:secret@host is refused, naming the variable, not the secret."""
    env = {"MAILSTATE_LDAP_URL": f"ldaps://opsroot:{SECRET}@ldap.x.vn", "MAILSTATE_LDAP_PASSWORD": "x"}
    with pytest.raises(ProviderError, match="MAILSTATE_LDAP_URL") as info:
        resolve_settings(LdapSettings(), env)
    assert SECRET not in str(info.value) and "opsroot" not in str(info.value)
    settings, _ = resolve_settings(LdapSettings(), {"MAILSTATE_LDAP_URL": "ldaps://ldap.x.vn"})
    assert settings.url == "ldaps://ldap.x.vn"


@pytest.mark.parametrize(
    ("var", "value", "read"),
    [
        ("MAILSTATE_IMAP_URL", f"imaps://mailstate:{SECRET}@mail.x.vn", lambda: imap.settings_from_env(None)),
        ("MAILSTATE_SSH_HOST", "mailstate@mail.x.vn", lambda: ssh.settings_from_env(None)),
        ("MAILSTATE_SSH_HOST", f"ssh://mailstate:{SECRET}@mail.x.vn", lambda: ssh.settings_from_env(None)),
    ],
)
def test_imap_and_ssh_hosts_with_credentials_in_the_environment_are_refused(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, read: object
) -> None:
    """Every environment variable naming a server refuses a user or password in it, without showing it."""
    monkeypatch.setenv(var, value)
    with pytest.raises(ProviderError, match=var) as info:
        read()  # type: ignore[operator]
    assert SECRET not in str(info.value) and "mailstate@" not in str(info.value)


def test_cli_error_boundary_strips_url_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    """Any error message the CLI prints has the userinfo of its URLs removed, whoever built the message."""

    @errors_to_exit
    def command() -> None:
        raise ProviderError(f"LDAP ldaps://opsroot:{SECRET}@ldap.x.vn: cannot connect")

    with pytest.raises(SystemExit) as info:
        command()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "ldaps://ldap.x.vn: cannot connect" in err and SECRET not in err


# --------------------------------------------------------------------------------------------------
# File and directory modes


def test_journal_and_audit_log_are_tightened_on_every_open(tmp_path: Path) -> None:
    """A journal or audit log left at 0644 (an older version, a copy) is 0600 after the next open."""
    for name in ("journal.jsonl", "audit.jsonl"):
        (tmp_path / name).write_text("")
        (tmp_path / name).chmod(0o644)
    Journal(tmp_path / "journal.jsonl", tmp_path / "audit.jsonl", who="t", commit=None).close()
    for name in ("journal.jsonl", "audit.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_private_dir_creates_missing_parents_0700_and_tightens_its_own(tmp_path: Path) -> None:
    """Missing directories are made 0700 whatever the umask; an existing one only when asked (its own)."""
    old = os.umask(0o022)
    try:
        target = private_dir(tmp_path / "home" / "mailstate" / "x.gov.vn")
    finally:
        os.umask(old)
    for p in (target, target.parent, target.parent.parent):
        assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
    target.chmod(0o755)
    private_dir(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755  # named explicitly: left as it is
    private_dir(target, tighten=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_apply_lock_file_is_private(tmp_path: Path) -> None:
    """The local lock file (it names who applies, from which host) is 0600 even if it was wider."""
    (tmp_path / "apply.lock").write_text("")
    (tmp_path / "apply.lock").chmod(0o644)
    with apply_lock({}, "op@host pid 1", tmp_path):
        pass
    assert stat.S_IMODE((tmp_path / "apply.lock").stat().st_mode) == 0o600


# --------------------------------------------------------------------------------------------------
# Refused changes and their dependents


def _c(cid: str, *deps: str) -> Change:
    return Change(cid, Action.CREATE, "acl", cid, "imap", None, {}, depends_on=deps)


BLOCKED_CASES = [
    # (changes in plan order, refused ids, expected {skipped id: refused roots})
    ([_c("f1"), _c("a1", "f1"), _c("f2"), _c("a2", "f2")], {"f1"}, {"a1": ["f1"]}),
    ([_c("p"), _c("g", "p"), _c("al", "g")], {"p"}, {"g": ["p"], "al": ["p"]}),  # transitively
    ([_c("x"), _c("y"), _c("z", "x", "y")], {"x", "y"}, {"z": ["x", "y"]}),
    ([_c("x"), _c("y", "x")], set(), {}),
]


@pytest.mark.parametrize(("changes", "refused", "expected"), BLOCKED_CASES)
def test_blocked_skips_exactly_the_dependents_of_refused_changes(
    changes: list[Change], refused: set[str], expected: dict[str, list[str]]
) -> None:
    """A change is skipped when one it depends on (directly or through others) was refused; others go on."""
    blocked = Blocked()
    skipped: dict[str, list[str]] = {}
    for change in changes:
        roots = blocked.roots(change)
        if roots:
            skipped[change.id] = roots
        elif change.id in refused:
            blocked.refuse(change)
    assert skipped == expected


# --------------------------------------------------------------------------------------------------
# Dates


def test_refuse_future_refuses_only_days_after_today() -> None:
    """Today and past days pass; tomorrow is refused with the way to preview it."""
    today = date.today()
    refuse_future(None, "--as-of")
    refuse_future(today, "--as-of")
    refuse_future((today - timedelta(days=30)).isoformat(), "--as-of")
    later = (today + timedelta(days=1)).isoformat()
    with pytest.raises(MailstateError, match=f"mailstate plan --as-of {later}"):
        refuse_future(later, "--as-of")
