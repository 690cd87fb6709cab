"""The SSH provider: doveadm on the mail host over paramiko — last-login facts, verified archives, removal.

- ``read()`` returns facts only (it owns no diffed kind): ``last_login`` = {user: ISO datetime (UTC)} from
  the Dovecot ``last_login`` plugin's dict (``doveadm dict iter``), for the inactivity rules (MOST art.13.3).
- ``apply(change)`` carries out two actions on a ``person`` / ``unit_mailbox`` (the key is the Dovecot user):
  ``archive``: ``doveadm backup -u USER mdbox:<archive_dir>/<user>-<date>``, then VERIFY by reading every
  archived message back in full (``doveadm -f pager fetch … text``, streamed and hashed while read) and
  comparing it — mailbox GUID, message GUID, size, SHA-256 of the full text — with the live original; only
  then write ``<user>-<date>.manifest.json`` listing each message so verified. The index never counts as
  the mail: a message whose storage is gone or cut fails the read, an altered text fails the comparison.
  ``delete``: REFUSED (ProviderError, nothing touched) unless the newest archive set still reads back
  exactly as its manifests recorded; then, in bounded rounds, expunge by UID only the live messages that
  set holds (same content), archive whatever arrived meanwhile as an increment (verified the same way),
  and delete the emptied folders. Mail is never destroyed without a verified copy (VL art.9, MIC art.3.5).

The host key is checked against known_hosts (``load_known_hosts``: hashed names, ``@revoked`` honoured,
``@cert-authority`` skipped) with a RejectPolicy: an unknown, changed or revoked key is refused, never
accepted. Every command is built with shlex.quote; no password is ever sent or printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, TypeVar

import paramiko

from mailstate.desired_state.model import SshSettings
from mailstate.errors import ProviderError
from mailstate.providers.imap import parse_doveadm_tab
from mailstate.reconciler.change import Action, Change
from mailstate.text import CONTROL_RE, visible

if TYPE_CHECKING:
    from mailstate.desired_state.model import State
    from mailstate.providers.base import Snapshot

MAILBOX_KINDS = frozenset({"person", "unit_mailbox"})
MANIFEST_SUFFIX = ".manifest.json"
SHARED_BOXES = "shared/shared-boxes/"
T = TypeVar("T")

# --------------------------------------------------------------------------------------------------
# Pure parts


def settings_from_env(settings: SshSettings | None) -> SshSettings:
    """[providers.ssh] overridden by MAILSTATE_SSH_HOST/PORT/USER/KEY_FILE/KNOWN_HOSTS/DOVEADM/ARCHIVE_DIR."""
    base = settings.model_copy() if settings is not None else SshSettings()
    updates: dict[str, Any] = {}
    for env, name in (
        ("MAILSTATE_SSH_HOST", "host"),
        ("MAILSTATE_SSH_PORT", "port"),
        ("MAILSTATE_SSH_USER", "user"),
        ("MAILSTATE_SSH_KEY_FILE", "key_file"),
        ("MAILSTATE_SSH_KNOWN_HOSTS", "known_hosts"),
        ("MAILSTATE_SSH_DOVEADM", "doveadm"),
        ("MAILSTATE_SSH_ARCHIVE_DIR", "archive_dir"),
    ):
        value = os.environ.get(env)
        if value:
            updates[name] = value
    from mailstate.redact import refuse_userinfo

    refuse_userinfo("MAILSTATE_SSH_HOST" if "host" in updates else "providers.ssh.host",
                    updates.get("host", base.host), host=True)
    if "port" in updates:
        try:
            updates["port"] = int(updates["port"])
        except ValueError:
            raise ProviderError(f"ssh: MAILSTATE_SSH_PORT={updates['port']!r} is not a port number") from None
    return SshSettings.model_validate({**base.model_dump(), **updates})


def doveadm_command(doveadm: str, *args: str) -> str:
    """One shell command line: the configured doveadm (may carry options, e.g. ``doveadm -c CONF``) + args,
    every word quoted with shlex.quote."""
    return " ".join(shlex.quote(w) for w in [*shlex.split(doveadm), *args])


def parse_last_login(text: str, prefix: str) -> dict[str, str]:
    """``doveadm -f tab dict iter DICT PREFIX`` → {user: ISO datetime UTC}; values are Unix times."""
    out: dict[str, str] = {}
    for row in parse_doveadm_tab(text):
        key, value = row.get("key", ""), row.get("value", "").strip()
        if not key.startswith(prefix) or not value:
            continue
        try:
            when = datetime.fromtimestamp(int(value), tz=UTC)
        except (ValueError, OverflowError, OSError):
            continue
        out[key[len(prefix) :]] = when.isoformat(timespec="seconds")
    return out


def last_login_prefix(key_template: str) -> str:
    """The dict key prefix of the last_login key template (``last-login/%u`` → ``shared/last-login/``);
    the plugin stores its keys in the shared namespace of the dict."""
    template = key_template.strip() or "last-login/%u"
    static = template.split("%", 1)[0]
    return static if static.startswith(("shared/", "priv/")) else f"shared/{static}"


def parse_shared_owners(text: str) -> set[str]:
    """Owners named by the ACL shared dict (``doveadm -f tab dict iter -R DICT shared/shared-boxes/``): keys
    ``shared/shared-boxes/user/<grantee>/<owner>``, ``…/anyone/<owner>``, ``…/group/<g>/<owner>``."""
    out: set[str] = set()
    for row in parse_doveadm_tab(text):
        key = row.get("key", "")
        if key.startswith(SHARED_BOXES) and "/" in key[len(SHARED_BOXES) :]:
            out.add(key.rsplit("/", 1)[1])
    return out


ACL_FILE = "dovecot-acl"
FIND_ARGS_MAX = 64 * 1024
"""Bytes of mail roots per ``find`` command (a command line stays far below the kernel's argument limit)."""


def mail_roots(path_tab: str) -> dict[str, str]:
    """{mail root: user} from ``doveadm -f tab mailbox path -A -t control INBOX``: the directory above
    ``mailboxes/`` (dbox) or the INBOX control directory itself (Maildir, where folders sit under it)."""
    out: dict[str, str] = {}
    for row in parse_doveadm_tab(path_tab):
        user, path = row.get("username", ""), row.get("path", "").rstrip("/")
        if user and path.startswith("/"):
            out[path.split("/mailboxes/", 1)[0] if "/mailboxes/" in path else path] = user
    return out


def parse_acl_files(grep_out: bytes, roots: Mapping[str, str]) -> set[str]:
    """Owners with an ACL entry for anyone but themselves in their ACL files (``grep -HZ '' FILE…`` output:
    ``path NUL line``): any entry, negative (``-user=x``) or without the lookup right included — the ACL
    shared dict records only entries that grant lookup, so it misses those."""
    out: set[str] = set()
    by_length = sorted(roots, key=len, reverse=True)
    for raw in grep_out.split(b"\n"):
        path_b, sep, line_b = raw.partition(b"\0")
        line = line_b.decode("utf-8", "replace").strip()
        if not sep or not line or line.startswith("#"):
            continue
        path = path_b.decode("utf-8", "surrogateescape")
        owner = next((roots[r] for r in by_length if path.startswith(r + "/")), None)
        ident = line.split()[0]
        if owner is not None and ident not in ("owner", f"user={owner}"):
            out.add(owner)
    return out


def parse_quota_get(text: str) -> dict[str, int | None]:
    """``doveadm -f tab quota get -A`` → {user: STORAGE limit in bytes, None when unlimited}."""
    out: dict[str, int | None] = {}
    for row in parse_doveadm_tab(text):
        if row.get("type", "").upper() != "STORAGE" or not row.get("username"):
            continue
        limit = row.get("limit", "").strip()
        out[row["username"]] = int(limit) * 1024 if limit.isdigit() else None
    return out


ENTRY_FIELDS = "mailbox-guid uid guid size.physical text"
"""The ``doveadm fetch`` fields read for verification, in this order; ``text``: the full message as stored."""
DIGEST_ALGORITHM = (
    "per message: mailbox GUID, message GUID, size and SHA-256 of the full text (doveadm fetch text); "
    "digest: SHA-256 over the sorted 'mailbox-guid<TAB>guid<TAB>size<TAB>sha256' lines"
)
MAX_REMOVAL_ROUNDS = 5
"""Rounds of expunge → re-list → increment archive before a removal gives up (mail keeps arriving)."""
EXPUNGE_CHUNK = 2000
"""UIDs per ``doveadm expunge`` command (keeps each command line short)."""


@dataclass(frozen=True)
class Message:
    """One message as read back with ``doveadm fetch``: where it is, what it is, and a digest of its text."""

    mailbox_guid: str
    uid: int
    guid: str
    size: int
    sha256: str

    @property
    def entry(self) -> Entry:
        return (self.mailbox_guid, self.guid, self.size, self.sha256)


Entry = tuple[str, str, int, str]
"""(mailbox GUID, message GUID, size, SHA-256 of the full text): what a manifest records per message."""


class FetchFormatError(ValueError):
    """``doveadm -f pager fetch`` output that is not the exact record layout asked for."""


_HEX = frozenset("0123456789abcdef")


def _field(stream: BinaryIO, name: bytes, first: bytes = b"") -> str:
    line = first + stream.readline(4096)
    prefix = name + b": "
    if not line.startswith(prefix) or not line.endswith(b"\n"):
        raise FetchFormatError(f"expected {name.decode()!r}, got {line[:60]!r}")
    return line[len(prefix) : -1].decode("utf-8", "strict")


def read_fetch_stream(stream: BinaryIO) -> Iterator[Message]:
    """Messages of ``doveadm -f pager fetch … 'mailbox-guid uid guid size.physical text' …``, one at a time.

    Each record is ``name: value`` lines, then ``text:`` and exactly size.physical bytes of the message, then
    ``\\f\\n`` before the next record. The text is hashed while it is read (never held whole), so a mailbox of
    any size is read in constant memory. Anything else — a field missing, a text shorter than its size (a
    storage file gone or cut), trailing bytes — raises FetchFormatError: a message that cannot be read back
    is never counted as archived."""
    first = stream.read(1)
    while first:
        mailbox_guid = _field(stream, b"mailbox-guid", first)
        uid_text = _field(stream, b"uid")
        guid = _field(stream, b"guid")
        size_text = _field(stream, b"size.physical")
        hex_guid = bool(mailbox_guid) and set(mailbox_guid) <= _HEX
        if not (uid_text.isdigit() and size_text.isdigit() and hex_guid):
            raise FetchFormatError(f"bad record header (uid {uid_text!r}, size {size_text!r})")
        if not guid or any(ord(c) < 0x20 for c in guid):
            raise FetchFormatError(f"bad message guid {guid!r}")
        if stream.readline(16) != b"text:\n":
            raise FetchFormatError(f"no text for message {guid} (the message could not be read)")
        size, h, left = int(size_text), hashlib.sha256(), int(size_text)
        while left:
            chunk = stream.read(min(left, 1 << 20))
            if not chunk:
                raise FetchFormatError(f"message {guid}: text ends {left} bytes before its size {size}")
            h.update(chunk)
            left -= len(chunk)
        yield Message(mailbox_guid, int(uid_text), guid, size, h.hexdigest())
        sep = stream.read(2)
        if sep == b"":
            return
        if sep != b"\f\n":
            raise FetchFormatError(f"message {guid}: text longer than its size {size} ({sep!r} follows)")
        first = stream.read(1)
        if not first:
            raise FetchFormatError("output ends after a record separator")


def entries_digest(entries: Iterable[Entry]) -> tuple[int, str]:
    """(count, SHA-256 over the sorted entry lines): order-independent, changes with any message."""
    lines = sorted(f"{m}\t{g}\t{s}\t{d}" for m, g, s, d in entries)
    h = hashlib.sha256()
    for ln in lines:
        h.update(ln.encode("utf-8") + b"\n")
    return len(lines), h.hexdigest()


def covered_by(live: Iterable[Message], archived: Counter[Entry]) -> tuple[list[Message], list[Message]]:
    """Split live messages into (held by the archive, not held): a live message is held when an archived
    message has the same mailbox GUID, GUID, size and text digest; each archived copy covers one live copy."""
    left = Counter(archived)
    held, not_held = [], []
    for m in live:
        if left[m.entry] > 0:
            left[m.entry] -= 1
            held.append(m)
        else:
            not_held.append(m)
    return held, not_held


def archive_mismatches(live: Iterable[Message], archived: Iterable[Message]) -> list[str]:
    """Archived messages whose live original (same mailbox GUID and GUID) has another size or text: the copy
    is not faithful. An archived message no longer live (deleted meanwhile) cannot be compared: it is left
    out of the manifest, not counted as a mismatch."""
    by_key: dict[tuple[str, str], set[tuple[int, str]]] = {}
    for m in live:
        by_key.setdefault((m.mailbox_guid, m.guid), set()).add((m.size, m.sha256))
    out = []
    for a in archived:
        seen = by_key.get((a.mailbox_guid, a.guid))
        if seen is not None and (a.size, a.sha256) not in seen:
            out.append(f"{a.guid} in mailbox {a.mailbox_guid} ({a.size} bytes, not the live text)")
    return out


def uid_set(uids: Iterable[int]) -> str:
    """An IMAP sequence set of UIDs: ``1:3,7,9:10``."""
    parts: list[str] = []
    run: list[int] = []
    for u in sorted(set(uids)):
        if run and u == run[-1] + 1:
            run.append(u)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1]}")
        run = [u]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1]}")
    return ",".join(parts)


def other_namespace_prefixes(config_text: str) -> list[str]:
    """Static prefixes of the non-private namespaces in ``doveadm config -h namespace`` output (``shared/``
    for ``shared/%%n/``), so that removing a user's mail never touches what others share with them."""
    out: list[str] = []
    block: dict[str, str] = {}
    for raw in config_text.splitlines():
        line = raw.strip()
        if line.startswith("namespace ") and line.endswith("{"):
            block = {}
        elif line == "}":
            if block.get("type", "private") != "private" and block.get("prefix"):
                out.append(block["prefix"].split("%", 1)[0])
            block = {}
        elif "=" in line:
            k, _, v = line.partition("=")
            block[k.strip()] = v.strip()
    return out


def _in_other_namespace(name: str, prefixes: Iterable[str]) -> bool:
    """A folder of a non-private namespace, its root included (``shared`` for the prefix ``shared/``)."""
    return any(name.startswith(p) or (p and name == p[:-1]) for p in prefixes)


def archive_name(user: str, day: date) -> str:
    return f"{user}-{day.isoformat()}"


class _RevokedHostKey(paramiko.SSHException):
    """The server presented a host key that known_hosts marks ``@revoked``."""


def _key_id(key: paramiko.PKey) -> tuple[str, bytes]:
    return key.get_name(), key.asbytes()


class _Refuse(paramiko.MissingHostKeyPolicy):
    """paramiko's RejectPolicy, saying so when the unknown key is one known_hosts marks ``@revoked``."""

    def __init__(self, revoked: set[tuple[str, bytes]]) -> None:
        self.revoked = revoked

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if _key_id(key) in self.revoked:
            raise _RevokedHostKey(
                f"the host key of {hostname} ({key.get_name()}) is marked @revoked in known_hosts"
            )
        raise paramiko.SSHException(f"Server {hostname!r} not found in known_hosts")


def load_known_hosts(path: str, into: paramiko.HostKeys) -> set[tuple[str, bytes]]:
    """Read an OpenSSH known_hosts file: plain and hashed host lines go ``into`` the client's host keys; the
    keys of ``@revoked`` lines are returned (never trusted, for any host, even if also listed as known);
    ``@cert-authority`` lines are skipped (host certificates are not used: such a line trusts nothing).
    A line that cannot be read is skipped, as OpenSSH does — it only trusts less — except a ``@revoked``
    line: ignoring that would trust a key the operator revoked, so it stops the connection (ProviderError)."""
    revoked: set[tuple[str, bytes]] = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = list(enumerate(f, 1))
    for lineno, raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = ""
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            line = line.strip()
            if marker != "@revoked":
                continue
        error: Exception | None = None
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
        except Exception as exc:  # paramiko raises SSHException, InvalidHostKey or binascii errors
            entry, error = None, exc
        if entry is None or entry.key is None:
            if marker:
                raise ProviderError(
                    f"ssh: known_hosts {path}:{lineno}: unreadable @revoked line ({type(error).__name__}): "
                    "fix or remove it"
                )
            continue
        if marker:
            revoked.add(_key_id(entry.key))
            continue
        for host in entry.hostnames:
            into.add(host, entry.key.get_name(), entry.key)
    return revoked


@dataclass(frozen=True)
class Manifest:
    """What a verified archive holds, message by message: written only after every archived message was read
    back and compared (size and SHA-256 of its full text) with the live original. ``extends`` names the
    earlier archives of the same set: an increment made during removal for mail that arrived meanwhile."""

    user: str
    archive: str
    location: str
    date: str
    count: int
    digest: str
    verified_at: str
    algorithm: str = DIGEST_ALGORITHM
    messages: tuple[Entry, ...] = ()
    mailboxes: dict[str, str] = field(default_factory=dict)
    extends: tuple[str, ...] = ()

    def to_json(self) -> str:
        data = {**self.__dict__, "messages": [list(e) for e in self.messages], "extends": list(self.extends)}
        return json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """A manifest; ValueError when it is of the older format (no per-message digests) or its messages do
        not add up to its count and digest (edited by hand)."""
        data = json.loads(text)
        if data.get("algorithm") != DIGEST_ALGORITHM or "messages" not in data:
            raise ValueError("manifest of an older format (no per-message content digests)")
        messages = tuple((str(m), str(g), int(n), str(d)) for m, g, n, d in data["messages"])
        out = cls(
            **{k: data[k] for k in cls.__dataclass_fields__ if k not in ("messages", "extends", "mailboxes")},
            messages=messages,
            mailboxes={str(k): str(v) for k, v in data.get("mailboxes", {}).items()},
            extends=tuple(str(x) for x in data.get("extends", ())),
        )
        if entries_digest(messages) != (out.count, out.digest):
            raise ValueError("its messages do not match its count and digest")
        return out


def _archive_order(name: str, user: str) -> tuple[date, int] | None:
    """(date, sequence) of an archive name ``<user>-<YYYY-MM-DD>`` or ``<user>-<YYYY-MM-DD>.<n>``."""
    if not name.startswith(f"{user}-"):
        return None
    m = _ARCHIVE_SUFFIX.fullmatch(name[len(user) + 1 :])
    try:
        return (date.fromisoformat(m[1]), int(m[2] or 1)) if m else None
    except ValueError:
        return None


_ARCHIVE_SUFFIX = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})(?:\.([0-9]{1,9}))?", re.ASCII)


def latest_manifest_name(names: Iterable[str], user: str) -> str | None:
    """The newest ``<user>-<YYYY-MM-DD>[.<n>].manifest.json`` among directory entries (exact user match)."""
    found = []
    for name in names:
        if name.endswith(MANIFEST_SUFFIX) and (order := _archive_order(name[: -len(MANIFEST_SUFFIX)], user)):
            found.append((order, name))
    return max(found)[1] if found else None


def next_archive_name(names: Iterable[str], user: str, day: date) -> str:
    """A fresh archive name for ``day``: ``<user>-<day>``, else ``<user>-<day>.2``, ``.3`` … — an existing
    archive is never synced into again (``doveadm backup`` mirrors, so it would drop mail deleted since)."""
    taken = {n.removesuffix(MANIFEST_SUFFIX) for n in names}
    base = archive_name(user, day)
    if base not in taken:
        return base
    n = 2
    while f"{base}.{n}" in taken:
        n += 1
    return f"{base}.{n}"


# --------------------------------------------------------------------------------------------------
# The provider


class SshProvider:
    """doveadm over SSH (paramiko): last-login facts, verified archives, removal of archived mail."""

    name: ClassVar[str] = "ssh"
    kinds: ClassVar[frozenset[str]] = frozenset()
    """It owns no diffed kind: it reads facts and carries out ``archive`` / ``delete`` of person and
    unit_mailbox changes routed to it (change.provider == "ssh")."""
    settings_model: ClassVar[type[SshSettings]] = SshSettings

    def __init__(self, settings: SshSettings, today: date | None = None) -> None:
        self.settings = settings
        self.today = today
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._config: dict[str, str] = {}
        self.timings: dict[str, float] = {}

    def __repr__(self) -> str:
        s = self.settings
        return f"SshProvider({s.user}@{s.host}:{s.port})"

    @classmethod
    def from_state(cls, state: State, **kwargs: Any) -> SshProvider:
        return cls(settings_from_env(state.providers.ssh), **kwargs)

    # -- connection ----------------------------------------------------------------------------

    @property
    def where(self) -> str:
        s = self.settings
        return f"{s.user}@{s.host}:{s.port}"

    def connect(self) -> paramiko.SSHClient:
        if self._client is not None:
            return self._client
        s = self.settings
        client = paramiko.SSHClient()
        path = os.path.expanduser(s.known_hosts or "~/.ssh/known_hosts")
        try:
            revoked = load_known_hosts(path, client.get_host_keys())
        except OSError as exc:
            raise ProviderError(f"ssh: cannot read known_hosts {path}: {exc.strerror or exc}") from None
        client.set_missing_host_key_policy(_Refuse(revoked))
        try:
            client.connect(
                s.host,
                port=s.port,
                username=s.user,
                key_filename=os.path.expanduser(s.key_file),
                allow_agent=False,
                look_for_keys=False,
                timeout=s.timeout,
                banner_timeout=s.timeout,
                auth_timeout=s.timeout,
            )
        except _RevokedHostKey as exc:
            client.close()
            raise ProviderError(
                f"ssh: {exc}: refused (check the key and update known_hosts by hand)"
            ) from None
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise ProviderError(
                f"ssh: the host key of {s.host}:{s.port} ({exc.key.get_name()}) does not match known_hosts: "
                "refused (possible man-in-the-middle; check the key and update known_hosts by hand)"
            ) from None
        except paramiko.SSHException as exc:
            client.close()
            raise ProviderError(f"ssh: {self.where}: {exc} (unknown host keys are refused)") from None
        except OSError as exc:
            client.close()
            raise ProviderError(f"ssh: cannot connect to {self.where}: {exc.strerror or exc}") from None
        transport = client.get_transport()
        server_key = transport.get_remote_server_key() if transport else None
        if server_key is None or _key_id(server_key) in revoked:
            client.close()
            raise ProviderError(
                f"ssh: the host key of {s.host}:{s.port} is marked @revoked in {path}: refused "
                "(check the key and update known_hosts by hand)"
            )
        self._client = client
        return client

    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.connect().open_sftp()
        return self._sftp

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def run(self, command: str, check: bool = True) -> tuple[int, str, str]:
        """Run one command line on the host; with ``check`` a non-zero exit raises ProviderError."""
        client = self.connect()
        try:
            # A bare channel rather than exec_command(): the stdin file that exec_command() makes closes the
            # channel's write side in its __del__, and if the garbage collector frees it in paramiko's
            # transport thread while that thread holds the channel lock, everything deadlocks.
            transport = client.get_transport()
            if transport is None:
                raise paramiko.SSHException("the SSH connection is gone")
            chan = transport.open_session(timeout=self.settings.timeout)
            chan.settimeout(max(self.settings.timeout, 600))
            chan.exec_command(command)
            stdout, stderr = chan.makefile("rb"), chan.makefile_stderr("rb")
            # stderr is drained while stdout is read: both share the channel's window, so a command that
            # writes more than the window (2 MiB) to stderr before it ends its stdout would otherwise stall
            # both sides until the timeout (e.g. a warning per user from `doveadm quota get -A`)
            err_parts: list[bytes] = []
            drain = threading.Thread(target=lambda: err_parts.append(stderr.read()), daemon=True)
            drain.start()
            out = stdout.read().decode("utf-8", "replace")
            drain.join()
            err = b"".join(err_parts).decode("utf-8", "replace")
            rc = chan.recv_exit_status()
            chan.close()
        except (paramiko.SSHException, OSError) as exc:
            raise ProviderError(f"ssh: {self.where}: running {command!r} failed: {exc}") from None
        if check and rc != 0:
            detail = " ".join(err.strip().splitlines()[-3:]) or f"exit status {rc}"
            raise ProviderError(f"ssh: {command} failed on {self.settings.host}: {detail}")
        return rc, out, err

    def stream(self, command: str, consume: Callable[[BinaryIO], T]) -> T:
        """Run one command line and hand its stdout, as a stream, to ``consume`` (so a mailbox of any size is
        read in constant memory); a non-zero exit, or an error raised by ``consume`` (it stops reading),
        raises ProviderError naming the command's last error lines."""
        client = self.connect()
        try:
            transport = client.get_transport()
            if transport is None:
                raise paramiko.SSHException("the SSH connection is gone")
            chan = transport.open_session(timeout=self.settings.timeout)
            chan.settimeout(max(self.settings.timeout, 600))
            chan.exec_command(command)
            stdout, stderr = chan.makefile("rb"), chan.makefile_stderr("rb")
            err_parts: list[bytes] = []
            drain = threading.Thread(target=lambda: err_parts.append(stderr.read()), daemon=True)
            drain.start()
            try:
                result = consume(stdout)
                failure: Exception | None = None
            except (ValueError, UnicodeDecodeError) as exc:
                result, failure = None, exc
                chan.close()  # stop the command: the rest of its output is of no use
            drain.join(self.settings.timeout if failure else None)
            err = b"".join(err_parts).decode("utf-8", "replace")
            rc = chan.recv_exit_status() if failure is None else -1
            chan.close()
        except (paramiko.SSHException, OSError) as exc:
            raise ProviderError(f"ssh: {self.where}: running {command!r} failed: {exc}") from None
        if failure is not None or rc != 0:
            detail = " ".join(err.strip().splitlines()[-3:])
            why = f"{failure}; " if failure is not None else ""
            raise ProviderError(
                f"ssh: {command} failed on {self.settings.host}: {why}{detail or f'exit status {rc}'}"
            )
        return result  # type: ignore[return-value]

    def doveadm(self, *args: str, check: bool = True) -> str:
        return self.run(doveadm_command(self.settings.doveadm, *args), check=check)[1]

    # -- read ----------------------------------------------------------------------------------

    def read(self, scope: Iterable[str] | None = None) -> Snapshot:
        """Facts: ``last_login`` {user: ISO datetime} for every user with a recorded login."""
        from mailstate.providers.base import Snapshot

        t0 = time.perf_counter()
        snap = Snapshot(self.name)
        snap.facts["last_login"] = self.last_logins()
        self.timings["read"] = time.perf_counter() - t0
        return snap

    def config(self, name: str) -> str:
        """One setting of the mail host's Dovecot (``doveadm config -h NAME``), asked once per provider."""
        if name not in self._config:
            self._config[name] = self.doveadm("config", "-h", name).strip()
        return self._config[name]

    def last_logins(self) -> dict[str, str]:
        uri = self.config("plugin/last_login_dict")
        if not uri:
            raise ProviderError(
                f"ssh: Dovecot on {self.settings.host} has no plugin/last_login_dict: the inactivity rules "
                "(MOST art.13.3) need the last_login plugin"
            )
        prefix = last_login_prefix(self.config("plugin/last_login_key"))
        return parse_last_login(self.doveadm("-f", "tab", "dict", "iter", uri, prefix), prefix)

    def shared_owners(self) -> set[str]:
        """Every user with an ACL entry for someone else on a folder: the owners Dovecot's acl_shared_dict
        names (one pass), and those whose ACL files hold an entry the dict does not record (a negative right
        ``-user``, rights without lookup: ``acl_owners``)."""
        uri = self.config("plugin/acl_shared_dict")
        if not uri:
            raise ProviderError(f"ssh: Dovecot on {self.settings.host} has no plugin/acl_shared_dict")
        owners = parse_shared_owners(self.doveadm("-f", "tab", "dict", "iter", "-R", uri, SHARED_BOXES))
        return owners | self.acl_owners()

    def acl_owners(self) -> set[str]:
        """Owners with any entry for someone else in their per-folder ACL files (``acl = vfile``): every
        user's mail root from one ``doveadm mailbox path -A``, then ``find … -name dovecot-acl`` over the
        roots (a few commands for any number of users) and their lines read with grep."""
        roots = mail_roots(self.doveadm("-f", "tab", "mailbox", "path", "-A", "-t", "control", "INBOX"))
        out: set[str] = set()
        batch: list[str] = []
        size = 0
        for root in sorted(roots):
            batch.append(root)
            size += len(root) + 3
            if size >= FIND_ARGS_MAX or root == max(roots):
                words = ["find", *batch, "-name", ACL_FILE, "-type", "f", "-size", "+0"]
                command = " ".join(shlex.quote(w) for w in words) + " -exec grep -HZ '' {} +"
                rc, text, err = self.run(command, check=False)
                missing = {f"find: {shlex.quote(r)}: No such file or directory" for r in batch}
                missing |= {f"find: '{r}': No such file or directory" for r in batch}
                lines = [ln.strip() for ln in err.splitlines()]
                tools = ("find:", "grep:", "sh:")
                errors = [ln for ln in lines if ln.startswith(tools) and ln not in missing]
                # a root not made yet (no mail so far) is fine; anything else is not
                if rc != 0 and (errors or not missing & set(lines)):
                    raise ProviderError(
                        f"ssh: reading the ACL files on {self.settings.host} failed: {' '.join(errors[-3:])}"
                    )
                out |= parse_acl_files(text.encode("utf-8", "surrogateescape"), roots)
                batch, size = [], 0
        return out

    def quotas(self) -> dict[str, int | None]:
        """Every user's STORAGE limit (bytes), one ``doveadm quota get -A``."""
        return parse_quota_get(self.doveadm("-f", "tab", "quota", "get", "-A"))

    # -- archive and removal -------------------------------------------------------------------

    @property
    def archive_root(self) -> str:
        """archive_dir, which must be an absolute path on the mail host: doveadm and SFTP would resolve a
        relative or empty one against different directories (an archive where the check never looks)."""
        root = self.settings.archive_dir
        if not root.startswith("/") or root.rstrip("/") == "":
            raise ProviderError(
                f"ssh: archive_dir {self.settings.archive_dir!r} is not an absolute directory on the mail "
                "host (set [providers.ssh].archive_dir or MAILSTATE_SSH_ARCHIVE_DIR, e.g. /srv/mail-archive)"
            )
        return root.rstrip("/")

    def _path(self, name: str) -> str:
        """``archive_dir/name`` for an entry name built from a login read from the live side: one plain name
        (no "/", no leading ".", no control character): an archive is never written outside archive_dir."""
        if not name or "/" in name or name in (".", "..") or name.startswith(".") or CONTROL_RE.search(name):
            raise ProviderError(
                f"ssh: {visible(name)!r} is not a plain file name inside archive_dir: nothing is archived "
                "or removed for it"
            )
        return f"{self.archive_root}/{name}"

    def other_prefixes(self) -> list[str]:
        """Prefixes of the non-private namespaces (``shared/``): never part of a user's own mail."""
        if "namespace" not in self._config:
            self._config["namespace"] = self.doveadm("config", "-h", "namespace")  # multi-line
        return other_namespace_prefixes(self._config["namespace"])

    def own_mailboxes(self, user: str, location: str | None = None) -> dict[str, str]:
        """{mailbox GUID: name} of the user's own folders (live, or of the archive at ``location``); folders
        of the shared namespace (others' mail the user may see) are never included."""
        opts = ["-o", f"mail_location={location}"] if location else []
        text = self.doveadm(*opts, "-f", "tab", "mailbox", "status", "-u", user, "guid", "*")
        others = self.other_prefixes()
        out: dict[str, str] = {}
        for row in parse_doveadm_tab(text):
            name = unicodedata.normalize("NFC", row.get("mailbox", ""))
            guid = row.get("guid", "")
            if name and guid and not _in_other_namespace(name, others):
                out[guid] = name
        return out

    def messages(self, user: str, location: str | None = None) -> tuple[dict[str, str], list[Message]]:
        """Read every message of the user's own folders back in full — live, or from the archive at
        ``location`` — and digest it while reading (``doveadm -f pager fetch … text all``, streamed).
        Returns ({mailbox GUID: name}, messages). A message that cannot be read (its storage file gone, its
        text cut short) raises ProviderError: the index alone never counts as the mail."""
        boxes = self.own_mailboxes(user, location)
        opts = ["-o", f"mail_location={location}"] if location else []
        command = doveadm_command(
            self.settings.doveadm, *opts, "-f", "pager", "fetch", "-u", user, ENTRY_FIELDS, "all"
        )
        t0 = time.perf_counter()
        got = self.stream(command, lambda out: list(read_fetch_stream(out)))
        key = f"read:{'archive' if location else 'live'}"
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0
        return boxes, [m for m in got if m.mailbox_guid in boxes]

    def digest(self, user: str, location: str | None = None) -> tuple[int, str]:
        """(count, digest) of a user's live mail, or of an archive at ``location`` (e.g. ``mdbox:/path``),
        every message read in full."""
        return entries_digest(m.entry for m in self.messages(user, location)[1])

    def archive(self, user: str, day: date | None = None) -> Manifest:
        """Back the user's mail up into a fresh directory of archive_dir, read every archived message back
        and compare it with the live one, write the manifest. Idempotent: if the newest archive set still
        holds, read back, every message it recorded and every live message is among them, its newest
        manifest is returned and nothing is copied; a set that no longer reads back is never reused."""
        day = day or self.today or date.today()
        t0 = time.perf_counter()
        names = self._archive_entries()
        try:
            current = self._load_set(user, names)
            if current:
                held = self._check_set(user, current)
                _boxes, live = self.messages(user)
                if not covered_by(live, held)[1]:
                    return current[0]
        except ProviderError:
            pass  # unreadable, altered or incomplete: make a fresh archive
        manifest = self._new_archive(user, day, names)
        self.timings[f"archive:{user}"] = time.perf_counter() - t0
        return manifest

    def _new_archive(
        self, user: str, day: date, names: Iterable[str], extends: Sequence[str] = ()
    ) -> Manifest:
        """``doveadm backup`` into a fresh directory, then verification: every archived message is read back
        and must equal (size, SHA-256 of the full text) its live original. The manifest lists the messages so
        verified; mail that arrived after the copy is not in it (and stays until an increment holds it)."""
        name = self._claim(user, day, names)
        location = f"mdbox:{self._path(name)}"
        self.doveadm("backup", "-u", user, location)
        self._check_archive_dir(name)
        try:
            boxes, archived = self.messages(user, location)
        except ProviderError as exc:
            raise ProviderError(
                f"ssh: the archive of {user} at {location} cannot be read back ({exc}); no manifest written, "
                "the mailbox will not be removed"
            ) from None
        _live_boxes, live = self.messages(user)
        bad = archive_mismatches(live, archived)
        if bad:
            raise ProviderError(
                f"ssh: the archive of {user} at {location} does not verify: {len(bad)} archived messages "
                f"differ from the live mail (first: {bad[0]}); no manifest written, the mailbox will not be "
                "removed"
            )
        held, _extra = covered_by(archived, Counter(m.entry for m in live))
        entries = tuple(sorted(m.entry for m in held))
        count, digest = entries_digest(entries)
        manifest = Manifest(
            user=user,
            archive=name,
            location=location,
            date=day.isoformat(),
            count=count,
            digest=digest,
            verified_at=datetime.now(UTC).isoformat(timespec="seconds"),
            messages=entries,
            mailboxes={g: boxes[g] for g in sorted({e[0] for e in entries})},
            extends=tuple(extends),
        )
        self._write(self._path(name + MANIFEST_SUFFIX), manifest.to_json())
        return manifest

    def _claim(self, user: str, day: date, names: Iterable[str]) -> str:
        """A fresh archive directory, made (SFTP mkdir, which fails if the name exists) before anything is
        copied into it: another apply running at the same time, or a stale listing, never makes two backups
        share a directory — ``doveadm backup`` into an existing archive would mirror the live mailbox and drop
        from it mail that archive verified."""
        taken = set(names)
        for _ in range(100):
            name = next_archive_name(taken, user, day)
            try:
                self.sftp().mkdir(self._path(name), 0o700)
                return name
            except OSError as exc:
                try:
                    self.sftp().lstat(self._path(name))
                except OSError:
                    raise ProviderError(
                        f"ssh: cannot make the archive directory {self._path(name)} on {self.settings.host}: "
                        f"{exc.strerror or exc}"
                    ) from None
                taken.add(name)  # made meanwhile by someone else: take the next name
        raise ProviderError(
            f"ssh: no free archive name for {user} on {day.isoformat()} in {self.archive_root}"
        )

    def _check_archive_dir(self, name: str) -> None:
        """The archive ``name`` must be a real directory of archive_dir with no symbolic link inside: a link
        (to the live mailbox, or to its storage files) would make the read-back read the live mail and find
        it "archived", and removing the live mail would then remove the only copy."""
        path = self._path(name)
        words = ["realpath", "-e", "--", self.archive_root, path]
        command = " ".join(shlex.quote(w) for w in words)
        command += " && " + " ".join(shlex.quote(w) for w in ["find", path, "-type", "l", "-print", "-quit"])
        rc, out, err = self.run(command, check=False)
        lines = out.splitlines()
        if rc != 0 or len(lines) < 2 or lines[1] != f"{lines[0].rstrip('/')}/{name}" or len(lines) > 2:
            detail = " ".join(err.split()[-12:]) or "a link"
            why = (
                f"a symbolic link ({lines[2]})"
                if len(lines) > 2
                else f"it is not a directory of {self.archive_root} ({detail})"
            )
            raise ProviderError(f"ssh: the archive {name} is not trusted: {why}")

    def _archive_entries(self) -> list[str]:
        try:
            return list(self.sftp().listdir(self.archive_root))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ProviderError(
                f"ssh: cannot list the archive dir {self.settings.archive_dir} on {self.settings.host}: {exc}"
            ) from None

    def _write(self, path: str, text: str) -> None:
        sftp = self.sftp()
        tmp = path + ".tmp"
        try:
            with sftp.open(tmp, "w") as fh:
                fh.write(text.encode("utf-8"))
            sftp.posix_rename(tmp, path)
        except OSError as exc:
            raise ProviderError(f"ssh: cannot write {path} on {self.settings.host}: {exc}") from None

    def _read_manifest(self, name: str) -> Manifest:
        try:
            with self.sftp().open(self._path(name)) as fh:
                mf = Manifest.from_json(fh.read().decode("utf-8"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ProviderError(f"ssh: manifest {name} unreadable: {exc}") from None
        if mf.archive != name.removesuffix(MANIFEST_SUFFIX):
            # a manifest speaks only for the archive beside it: one naming another directory (the live mail,
            # another user's archive, ../…) would have that read back as the archive
            raise ProviderError(f"ssh: manifest {name} describes {mf.archive!r}, not the archive beside it")
        return mf

    def _load_set(self, user: str, names: Iterable[str]) -> list[Manifest]:
        """The newest archive set of ``user``, newest first: the newest manifest and the earlier archives it
        extends (increments made during a removal). [] when the user has no manifest."""
        newest = latest_manifest_name(names, user)
        if newest is None:
            return []
        head = self._read_manifest(newest)
        out = [head]
        for name in head.extends:
            if _archive_order(name, user) is None:
                raise ProviderError(f"ssh: manifest {newest} extends {name!r}, not an archive of {user}")
            out.append(self._read_manifest(name + MANIFEST_SUFFIX))
        return out

    def _check_set(self, user: str, manifests: Sequence[Manifest]) -> Counter[Entry]:
        """Read every archive of the set back in full; each must still hold every message its manifest
        recorded, with the same size and text digest. Returns what they hold; ProviderError otherwise."""
        held: Counter[Entry] = Counter()
        for mf in manifests:
            if (
                mf.user != user
                or _archive_order(mf.archive, user) is None
                or mf.location != f"mdbox:{self._path(mf.archive)}"
            ):
                raise ProviderError(
                    f"ssh: manifest {mf.archive} is not {user}'s archive in {self.archive_root}"
                )
            self._check_archive_dir(mf.archive)
            try:
                _boxes, got = self.messages(user, mf.location)
            except ProviderError as exc:
                raise ProviderError(f"ssh: the archive {mf.archive} cannot be read back: {exc}") from None
            missing = Counter(mf.messages) - Counter(m.entry for m in got)
            if missing:
                raise ProviderError(
                    f"ssh: the archive {mf.archive} no longer holds {sum(missing.values())} of the "
                    f"{mf.count} messages it verified (missing, unreadable or altered)"
                )
            held.update(mf.messages)
        return held

    def _verified_set(self, user: str) -> tuple[list[Manifest], Counter[Entry]]:
        try:
            current = self._load_set(user, self._archive_entries())
            if not current:
                raise ProviderError(
                    f"ssh: no verified archive manifest of {user} in {self.settings.archive_dir} (archive it "
                    "first: mail is never destroyed without a verified copy)"
                )
            held = self._check_set(user, current)
        except ProviderError as exc:
            raise ProviderError(
                f"removal of {user}'s mail refused, every message kept: {exc}. The next apply makes a "
                "fresh archive"
            ) from None
        return current, held

    def verified_manifest(self, user: str) -> Manifest:
        """The newest manifest of ``user`` whose archive set still reads back exactly as verified;
        ProviderError (saying why) otherwise."""
        return self._verified_set(user)[0][0]

    def remove_mail(self, user: str) -> Manifest:
        """Remove the user's mail, only what a verified archive holds.

        The archive set is read back in full first (refused, nothing touched, if any message is missing or
        altered). Then, in rounds: read every live message, expunge by UID only those an archive holds
        (same mailbox, GUID, size and text digest); mail that arrived meanwhile is archived as an increment
        (verified the same way) and removed in the next round; when nothing is left the folders are deleted
        (``-e``: only empty ones) and the mailbox is listed once more. After MAX_REMOVAL_ROUNDS rounds with
        mail still arriving it stops (ProviderError): what is left stays live."""
        day = self.today or date.today()
        current, held = self._verified_set(user)
        t0 = time.perf_counter()
        for _ in range(MAX_REMOVAL_ROUNDS):
            _boxes, live = self.messages(user)
            done, pending = covered_by(live, held)
            if done:
                self.expunge_archived(user, done)
            if pending:
                inc = self._new_archive(user, day, self._archive_entries(), [m.archive for m in current])
                current.insert(0, inc)
                held.update(inc.messages)
                continue
            if done:
                continue  # list again: mail may have arrived while expunging
            if self._delete_folders(user) and not self._listing(user):
                break
        else:
            left = len(self._listing(user))
            raise ProviderError(
                f"ssh: removal of {user}'s mail stopped after {MAX_REMOVAL_ROUNDS} rounds: mail keeps "
                f"arriving ({left} messages left live, every removed one is in the archive "
                f"{current[0].archive}); "
                "refuse delivery to the address first, then apply again"
            )
        self.doveadm("purge", "-u", user, check=False)
        self.timings[f"remove:{user}"] = time.perf_counter() - t0
        return current[0]

    def expunge_archived(self, user: str, messages: Sequence[Message]) -> None:
        """Expunge exactly these messages: per own folder, by UID, after checking that each UID still names
        the message (GUID) that was read and found in the archive."""
        by_box: dict[str, dict[int, str]] = {}
        for m in messages:
            by_box.setdefault(m.mailbox_guid, {})[m.uid] = m.guid
        own = self.own_mailboxes(user)
        for box, uids in sorted(by_box.items()):
            if box not in own:
                continue
            rows = parse_doveadm_tab(
                self.doveadm("-f", "tab", "fetch", "-u", user, "uid guid", "mailbox-guid", box, "all")
            )
            now = {int(r["uid"]): r.get("guid", "") for r in rows if r.get("uid", "").isdigit()}
            same = sorted(u for u, g in uids.items() if now.get(u) == g)
            for i in range(0, len(same), EXPUNGE_CHUNK):
                chunk = uid_set(same[i : i + EXPUNGE_CHUNK])
                self.doveadm("expunge", "-u", user, "mailbox-guid", box, "uid", chunk)

    def _listing(self, user: str) -> list[tuple[str, str]]:
        """(mailbox GUID, UID) of every message in the user's own folders, from the index (cheap)."""
        own = self.own_mailboxes(user)
        rows = parse_doveadm_tab(self.doveadm("-f", "tab", "fetch", "-u", user, "mailbox-guid uid", "all"))
        return [(r["mailbox-guid"], r["uid"]) for r in rows if r.get("mailbox-guid") in own]

    def _delete_folders(self, user: str) -> bool:
        """Delete the user's own folders but INBOX, only if empty (``mailbox delete -e -r``); never folders of
        the shared namespace. False when one was not empty (mail arrived): the caller lists again."""
        others = self.other_prefixes()
        folders = [
            unicodedata.normalize("NFC", row.get("mailbox", ""))
            for row in parse_doveadm_tab(self.doveadm("-f", "tab", "mailbox", "list", "-u", user))
        ]
        own = [f for f in folders if f and not _in_other_namespace(f, others)]
        tops = sorted({f.split("/", 1)[0] for f in own if f.upper() != "INBOX"})
        if not tops:
            return True
        try:
            # "--": a folder the user named "-A" must stay a folder name, not become "every user"
            self.doveadm("mailbox", "delete", "-u", user, "-e", "-r", "-s", "--", *tops)
        except ProviderError:
            if self._listing(user):
                return False
            raise
        return True

    # -- apply ---------------------------------------------------------------------------------

    def apply(self, change: Change) -> None:
        """``archive`` → verified archive + manifest; ``delete`` → removal of the mail, only if archived."""
        if change.kind not in MAILBOX_KINDS:
            raise ProviderError(f"ssh: cannot apply {change.action.label} of a {change.kind}")
        if change.action is Action.ARCHIVE:
            self.archive(change.key)
        elif change.action is Action.DELETE:
            self.remove_mail(change.key)
        else:
            raise ProviderError(
                f"ssh: cannot apply {change.action.label} of a {change.kind} (archive, delete only)"
            )


def mailbox_users(records: Mapping[tuple[str, str], Any] | Sequence[Any]) -> list[str]:
    """Dovecot users of mailbox records (person / unit_mailbox keys are the users)."""
    items = records.values() if isinstance(records, Mapping) else records
    return sorted({r.key for r in items if getattr(r, "kind", None) in MAILBOX_KINDS})
