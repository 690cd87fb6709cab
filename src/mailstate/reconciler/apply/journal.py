"""The apply journal and the audit log (docs/operations.md): append-only JSON-lines files, never a secret.

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

import contextlib
import getpass
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailstate.desired_state.lifecycle import notice_of
from mailstate.model.change import Change
from mailstate.private_files import open_private, private_dir
from mailstate.redact import hide_known, known_secrets, secrets_key

SECRET_FIELDS = frozenset({"password", "userPassword", "initial_password", "secret"})
"""Attribute names whose values are never written, only their presence."""


_SECOND: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """The time now (UTC, to the second) as the journal writes it; made once per second."""
    global _SECOND
    now = int(time.time())
    second, text = _SECOND
    if now != second:
        text = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        _SECOND = (now, text)
    return text


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


def scrub(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of ``value`` with the values of secret-named attributes replaced by "<redacted>", every secret
    value (``redact.known_secrets``, looked up once per call) and the user and password of any URL in a text
    removed."""
    if secrets is None:
        secrets = known_secrets()
    if isinstance(value, Mapping):
        return {
            k: ("<redacted>" if k in SECRET_FIELDS and v is not None else scrub(v, secrets))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str):
        return hide_known(value, secrets)
    return value


_SECRET_KEYS = tuple(json.dumps(k) + ":" for k in sorted(SECRET_FIELDS))


def json_line(record: Mapping[str, Any], secrets: list[str]) -> str:
    """``record`` as one JSON line, scrubbed (``scrub``). The walk through every value is only made when the
    line as serialized could hold something to hide — a secret-named key, a secret value (as written or as
    JSON escapes it) or a URL —, else the line is already what ``scrub`` would give."""
    line = json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)
    if "://" in line or any(k in line for k in _SECRET_KEYS) or any(
        s in line or json.dumps(s, ensure_ascii=False)[1:-1] in line for s in secrets
    ):
        line = json.dumps(scrub(record, secrets), ensure_ascii=False, sort_keys=True, default=str)
    return line + "\n"


class JsonLines:
    """An append-only JSON-lines file. Every line is handed to the OS as it is written (it survives the
    process being killed) — or, while ``held`` (a parallel apply), at the next ``flush``, which the apply
    calls before any change it journaled as started begins and before it waits for changes in progress.
    ``sync()`` forces it to disk (done at the start and end of a run and on a failure: one fsync per line
    would cost more than the change itself on a real disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        private_dir(path.parent)
        fd = open_private(path, os.O_WRONLY | os.O_APPEND)
        self._fh = os.fdopen(fd, "a", encoding="utf-8")
        self._pending: list[Mapping[str, Any]] = []
        self.held = False
        self._known: tuple[tuple[object, ...], list[str]] = ((), [])

    def _secrets(self) -> list[str]:
        """``known_secrets()``, looked up again only when what it is made of changed (a secret remembered, a
        secret variable set)."""
        key = secrets_key()
        if key != self._known[0]:
            self._known = (key, known_secrets())
        return self._known[1]

    def write(self, record: Mapping[str, Any], *, sync: bool = False) -> None:
        self._pending.append(record)
        if sync or not self.held:
            self.flush(sync=sync)

    def flush(self, *, sync: bool = False) -> None:
        """Hand the lines written so far to the OS (one write for them all), scrubbed with the secrets known
        now; with ``sync``, to the disk."""
        if self._pending:
            pending, self._pending = self._pending, []
            secrets = self._secrets()
            self._fh.write("".join(json_line(r, secrets) for r in pending))
            self._fh.flush()
        if sync:
            os.fsync(self._fh.fileno())

    def sync(self) -> None:
        if not self._fh.closed:
            self.flush(sync=True)

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

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """While inside, lines are kept until ``flush`` (or a line that is synced: a failure, the run's end),
        and handed to the OS then, in order, one write per file; on leaving, whatever is left is."""
        self._journal.held = self._audit.held = True
        try:
            yield
        finally:
            self._journal.held = self._audit.held = False
            self.flush()

    def flush(self) -> None:
        """The journal's lines kept so far, then the audit log's, to the OS."""
        self._journal.flush()
        self._audit.flush()

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

    def notice(self, event: str, notice: Mapping[str, Any], **extra: Any) -> None:
        """A notice to the owner of a temporary lock (reconciler.apply.notify): ``notified`` (sent; also
        written to the audit log) or ``notify-failed`` (with ``error``). Synced to disk: a notice sent is
        never sent again, so its line must survive a crash."""
        entry = {**self._base(event), "notify": dict(notice), **extra}
        self._journal.write(entry, sync=True)
        if event == "notified":
            self._audit.write(entry, sync=True)

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
