"""The apply journal and the audit log (DESIGN §5, §6.5): append-only JSON-lines files, never a secret.

- The **journal** records every change of one apply before and after it is carried out:
  ``started`` → ``done`` | ``failed`` (with the error text), plus one ``apply`` line at the start and
  the end of the run. It is what an operator reads after a failed apply to see what was done.
- The **audit log** keeps one line per *applied* change: who, when, which commit of the state
  repository, what (action, kind, key, the attributes that changed — names only for secrets).

Neither lives in the state repository (a git work tree): both default to
``$MAILSTATE_HOME/<domain>/`` or, without that variable, ``$XDG_STATE_HOME/mailstate/<domain>/``
(``~/.local/state/mailstate/<domain>/``). Both paths can be given explicitly.
"""

from __future__ import annotations

import errno
import getpass
import json
import os
import stat
import subprocess
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailstate.errors import MailstateError
from mailstate.reconciler.change import Change
from mailstate.redact import hide_secrets

SECRET_FIELDS = frozenset({"password", "userPassword", "initial_password", "secret"})
"""Attribute names whose values are never written, only their presence."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def actor() -> str:
    """Who applies: $MAILSTATE_ACTOR, else $GITHUB_ACTOR (CI), else the login name."""
    for var in ("MAILSTATE_ACTOR", "GITHUB_ACTOR"):
        value = os.environ.get(var)
        if value:
            return value
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without /etc/passwd entry)
        return f"uid:{os.getuid()}"


def git_commit(state_dir: Path) -> str | None:
    """The commit checked out in the state directory (``git rev-parse HEAD``), with ``+dirty`` when the
    state files differ from it (uncommitted edits were applied), or None outside a git repository."""
    try:
        out = subprocess.run(
            ["git", "-C", str(state_dir), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        sha = out.stdout.strip()
        if out.returncode != 0 or not sha:
            return None
        status = subprocess.run(
            ["git", "-C", str(state_dir), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + "+dirty" if status.returncode == 0 and status.stdout.strip() else sha


def home_dir(domain: str) -> Path:
    """Where journal and audit log live by default for this organisation (never inside the state repo)."""
    base = os.environ.get("MAILSTATE_HOME")
    if base:
        return Path(base).expanduser() / domain
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg).expanduser() / "mailstate" / domain


PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Make ``path`` and any missing parent with mode 0700 (``Path.mkdir(parents=True)`` gives the parents
    the umask's 0755). With ``tighten``, an existing ``path`` (a directory of mailstate's own, e.g. the
    default home) that others may read is set to 0700 too; a directory someone named explicitly is left as
    it is (the files in it are 0600 either way)."""
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for part in reversed(missing):
        try:
            part.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue
        part.chmod(PRIVATE_DIR)  # mkdir's mode is masked by the umask; 0700 is never widened by it
    if tighten and not missing:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077 and info.st_uid == os.geteuid():
            path.chmod(PRIVATE_DIR)
    return path


class UnsafeFile(MailstateError, PermissionError):
    """A private file's name is a link or another user's file (an ``OSError`` too, for callers that catch
    those)."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}: refused (name a file of your own, not a link; nothing was written)")
        self.strerror = str(self)


def open_private(path: Path, flags: int) -> int:
    """``os.open`` of a file that may hold personal data: created 0600, and an existing file that others may
    read or write (an older version, a copy, a umask of 022) tightened to 0600 on every open.

    The name must be the file itself: a symbolic link, a file of another user or one with a second hard
    link is refused (``PermissionError``) — someone who can write the directory (a shared --journal-dir or
    --passwords-out place) would otherwise receive the journal or the initial passwords in a file they
    read, or have mailstate append to (and chmod) a file it should never touch."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(path, "is a symbolic link") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(path, "is not a regular file")
        if info.st_uid != os.geteuid():
            raise UnsafeFile(path, "belongs to another user")
        if info.st_nlink > 1:
            raise UnsafeFile(path, "has another name (a hard link)")
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, PRIVATE_FILE)
    except OSError:
        os.close(fd)
        raise
    return fd


def scrub(value: Any) -> Any:
    """A copy of ``value`` with the values of secret-named attributes replaced by "<redacted>", and the
    user and password of any URL in a text removed."""
    if isinstance(value, Mapping):
        return {
            k: ("<redacted>" if k in SECRET_FIELDS and v is not None else scrub(v)) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return hide_secrets(value)
    return value


class JsonLines:
    """An append-only JSON-lines file. Every line is flushed to the OS as it is written (it survives the
    process being killed); ``sync()`` forces it to disk (done at the start and end of a run and on a
    failure: one fsync per line would cost more than the change itself on a real disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        private_dir(path.parent)
        fd = open_private(path, os.O_WRONLY | os.O_APPEND)
        self._fh = os.fdopen(fd, "a", encoding="utf-8")

    def write(self, record: Mapping[str, Any], *, sync: bool = False) -> None:
        self._fh.write(json.dumps(scrub(record), ensure_ascii=False, sort_keys=True, default=str) + "\n")
        self._fh.flush()
        if sync:
            os.fsync(self._fh.fileno())

    def sync(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self.sync()
            self._fh.close()

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file (an empty list when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Journal:
    """The journal of one apply run plus the audit log; both append-only."""

    def __init__(self, journal_path: Path, audit_path: Path, *, who: str, commit: str | None) -> None:
        self.run_id = uuid.uuid4().hex[:12]
        self.who = who
        self.commit = commit
        self._journal = JsonLines(journal_path)
        self._audit = JsonLines(audit_path)

    def _base(self, event: str) -> dict[str, Any]:
        return {"event": event, "time": now_iso(), "run": self.run_id, "who": self.who, "commit": self.commit}

    def run_started(self, *, plan_fingerprint: str, changes: int) -> None:
        self._journal.write(
            {**self._base("apply-started"), "fingerprint": plan_fingerprint, "changes": changes}
        )

    def run_finished(
        self,
        *,
        outcome: str,
        done: int,
        failed: int,
        not_tried: int,
        skipped: int = 0,
        signal: str | None = None,
    ) -> None:
        """The run's last line; ``outcome``: ok, incomplete (changes refused, their dependents skipped),
        failed, interrupted (``signal`` names what stopped it). Synced to disk."""
        record: dict[str, Any] = {
            **self._base("apply-finished"),
            "outcome": outcome,
            "done": done,
            "failed": failed,
            "not_tried": not_tried,
            "skipped": skipped,
        }
        if signal is not None:
            record["signal"] = signal
        self._journal.write(record, sync=True)

    def started(self, change: Change) -> None:
        self._journal.write({**self._base("started"), **_what(change)})

    def done(self, change: Change) -> None:
        entry = {**self._base("done"), **_what(change)}
        self._journal.write(entry)
        self._audit.write({**entry, "event": "applied", "before": change.before, "after": change.after})

    def failed(self, change: Change, error: str, *, refused: bool = False) -> None:
        """A change that failed; ``refused``: the server refused it and the run went on without it."""
        entry = {**self._base("failed"), **_what(change), "error": error}
        if refused:
            entry["refused"] = True
        self._journal.write(entry, sync=True)
        self._audit.sync()

    def skipped(self, change: Change, because: list[str]) -> None:
        """A change not tried because a change it depends on (ids in ``because``) was refused."""
        self._journal.write({**self._base("skipped"), **_what(change), "because": because})

    def close(self) -> None:
        self._journal.close()
        self._audit.close()


def _what(change: Change) -> dict[str, Any]:
    from mailstate.reconciler.lifecycle import notice_of

    what: dict[str, Any] = {
        "change": change.id,
        "action": change.action.label,
        "kind": change.kind,
        "key": change.key,
        "provider": change.provider,
        "fields": list(change.fields),
    }
    notice = notice_of(change.reasons)
    if notice is not None:  # a temporary lock: who must be told, and how (the backup mailbox, or in person)
        what["notify"] = notice
    return what
