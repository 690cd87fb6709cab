"""The SSH provider: doveadm on the mail host over paramiko — last-login facts, verified archives, removal.

- ``read()`` returns facts only (it owns no diffed kind): ``last_login`` = {user: ISO datetime (UTC)} from
  the Dovecot ``last_login`` plugin's dict (``doveadm dict iter``), for the inactivity rules (MOST art.13.3).
- ``apply(change)`` carries out two actions on a ``person`` / ``unit_mailbox`` (the key is the Dovecot user):
  ``archive``: ``doveadm backup -u USER mdbox:<archive_dir>/<user>-<date>``, then VERIFY that the archive
  holds exactly the live mail — same message count and the same SHA-256 over the sorted ``mailbox\\tguid``
  lines of ``doveadm fetch`` on both sides — and only then write ``<user>-<date>.manifest.json`` beside it;
  ``delete``: remove the mailbox's mail with doveadm (expunge INBOX, ``mailbox delete -r`` the rest), REFUSED
  (ProviderError) unless a verified manifest exists and the live mail still has that manifest's digest.
  Mail is never destroyed without a verified copy (DESIGN §6.1; VL art.9, MIC art.3.5).

The host key is checked against known_hosts (``load_known_hosts``: hashed names, ``@revoked`` honoured,
``@cert-authority`` skipped) with a RejectPolicy: an unknown, changed or revoked key is refused, never
accepted. Every command is built with shlex.quote; no password is ever sent or printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import threading
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import paramiko

from mailstate.desired_state.model import SshSettings
from mailstate.errors import ProviderError
from mailstate.providers.imap import parse_doveadm_tab
from mailstate.reconciler.change import Action, Change

if TYPE_CHECKING:
    from mailstate.desired_state.model import State
    from mailstate.providers.base import Snapshot

MAILBOX_KINDS = frozenset({"person", "unit_mailbox"})
MANIFEST_SUFFIX = ".manifest.json"
SHARED_BOXES = "shared/shared-boxes/"
DIGEST_ALGORITHM = "sha256 over sorted 'mailbox<TAB>guid' lines of doveadm fetch"

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


def parse_quota_get(text: str) -> dict[str, int | None]:
    """``doveadm -f tab quota get -A`` → {user: STORAGE limit in bytes, None when unlimited}."""
    out: dict[str, int | None] = {}
    for row in parse_doveadm_tab(text):
        if row.get("type", "").upper() != "STORAGE" or not row.get("username"):
            continue
        limit = row.get("limit", "").strip()
        out[row["username"]] = int(limit) * 1024 if limit.isdigit() else None
    return out


def mail_digest(fetch_tab: str) -> tuple[int, str]:
    """(message count, digest) of ``doveadm -f tab fetch -u USER 'mailbox guid' all`` output."""
    lines = sorted(
        f"{unicodedata.normalize('NFC', row.get('mailbox', ''))}\t{row.get('guid', '')}"
        for row in parse_doveadm_tab(fetch_tab)
    )
    h = hashlib.sha256()
    for ln in lines:
        h.update(ln.encode("utf-8") + b"\n")
    return len(lines), h.hexdigest()


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
    """What a verified archive holds: written only after verification succeeded."""

    user: str
    archive: str
    location: str
    date: str
    count: int
    digest: str
    verified_at: str
    algorithm: str = DIGEST_ALGORITHM

    def to_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def _archive_order(name: str, user: str) -> tuple[date, int] | None:
    """(date, sequence) of an archive name ``<user>-<YYYY-MM-DD>`` or ``<user>-<YYYY-MM-DD>.<n>``."""
    if not name.startswith(f"{user}-"):
        return None
    day, _, seq = name[len(user) + 1 :].partition(".")
    try:
        return date.fromisoformat(day), int(seq) if seq else 1
    except ValueError:
        return None


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
        """Every user with an ACL entry for someone else on a folder (Dovecot's acl_shared_dict), one pass."""
        uri = self.config("plugin/acl_shared_dict")
        if not uri:
            raise ProviderError(f"ssh: Dovecot on {self.settings.host} has no plugin/acl_shared_dict")
        return parse_shared_owners(self.doveadm("-f", "tab", "dict", "iter", "-R", uri, SHARED_BOXES))

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
        return f"{self.archive_root}/{name}"

    def digest(self, user: str, location: str | None = None) -> tuple[int, str]:
        """(count, digest) of a user's live mail, or of an archive at ``location`` (e.g. ``mdbox:/path``)."""
        opts = ["-o", f"mail_location={location}"] if location else []
        return mail_digest(self.doveadm(*opts, "-f", "tab", "fetch", "-u", user, "mailbox guid", "all"))

    def archive(self, user: str, day: date | None = None) -> Manifest:
        """Back the user's mail up into a fresh directory of archive_dir, verify it against the live mail,
        write the manifest. Idempotent: if the newest verified archive still matches the live mail, it is
        returned and nothing is copied."""
        day = day or self.today or date.today()
        t0 = time.perf_counter()
        names = self._archive_entries()
        latest = latest_manifest_name(names, user)
        if latest is not None:
            try:
                with self.sftp().open(self._path(latest)) as fh:
                    done = Manifest.from_json(fh.read().decode("utf-8"))
                if self.digest(user) == (done.count, done.digest) == self.digest(user, done.location):
                    return done
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable: make a new archive
        name = next_archive_name(names, user, day)
        location = f"mdbox:{self._path(name)}"
        self.doveadm("backup", "-u", user, location)
        live = self.digest(user)
        archived = self.digest(user, location)
        if live != archived:
            raise ProviderError(
                f"ssh: the archive of {user} at {location} does not verify: live mailbox {live[0]} messages "
                f"(digest {live[1][:12]}…), archive {archived[0]} messages (digest {archived[1][:12]}…); "
                "no manifest written, the mailbox will not be removed"
            )
        manifest = Manifest(
            user=user,
            archive=name,
            location=location,
            date=day.isoformat(),
            count=live[0],
            digest=live[1],
            verified_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self._write(self._path(name + MANIFEST_SUFFIX), manifest.to_json())
        self.timings[f"archive:{user}"] = time.perf_counter() - t0
        return manifest

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

    def verified_manifest(self, user: str) -> Manifest:
        """The newest manifest of ``user`` whose archive still verifies and whose digest the live mail still
        has; ProviderError (saying why) otherwise."""
        try:
            names = self.sftp().listdir(self.archive_root)
        except OSError as exc:
            raise ProviderError(
                f"ssh: removal of {user}'s mail refused: cannot list the archive dir "
                f"{self.settings.archive_dir} "
                f"({exc}), so no verified archive can be found (DESIGN §6.1)"
            ) from None
        name = latest_manifest_name(names, user)
        if name is None:
            raise ProviderError(
                f"ssh: removal of {user}'s mail refused: no verified archive manifest in "
                f"{self.settings.archive_dir} (archive it first; DESIGN §6.1, mail is never destroyed)"
            )
        try:
            with self.sftp().open(self._path(name)) as fh:
                manifest = Manifest.from_json(fh.read().decode("utf-8"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ProviderError(
                f"ssh: removal of {user}'s mail refused: manifest {name} unreadable: {exc}"
            ) from None
        archived = self.digest(user, manifest.location)
        if archived != (manifest.count, manifest.digest):
            raise ProviderError(
                f"ssh: removal of {user}'s mail refused: the archive {manifest.archive} no longer matches "
                f"its "
                f"manifest ({archived[0]} messages now, {manifest.count} recorded)"
            )
        live = self.digest(user)
        if live != (manifest.count, manifest.digest):
            raise ProviderError(
                f"ssh: removal of {user}'s mail refused: the mailbox changed since the archive of "
                f"{manifest.date} "
                f"({manifest.count} messages then, {live[0]} now); archive it again first"
            )
        return manifest

    def remove_mail(self, user: str) -> Manifest:
        """Remove every message and folder of ``user`` with doveadm, only after ``verified_manifest``."""
        manifest = self.verified_manifest(user)
        others = other_namespace_prefixes(self.doveadm("config", "-h", "namespace"))  # multi-line: not cached
        folders = [
            unicodedata.normalize("NFC", row.get("mailbox", ""))
            for row in parse_doveadm_tab(self.doveadm("-f", "tab", "mailbox", "list", "-u", user))
        ]
        own = [f for f in folders if f and not any(f.startswith(p) for p in others)]
        tops = sorted({f.split("/", 1)[0] for f in own if f.upper() != "INBOX"})
        self.doveadm("expunge", "-u", user, "mailbox", "INBOX", "all")
        if tops:
            self.doveadm("mailbox", "delete", "-u", user, "-r", "-s", *tops)
        self.doveadm("purge", "-u", user, check=False)
        return manifest

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
