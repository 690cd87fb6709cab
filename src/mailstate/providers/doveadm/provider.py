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

import contextlib
import os
import re
import shlex
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any, BinaryIO, ClassVar

import paramiko

from mailstate.errors import ProviderError
from mailstate.model.change import MAIL_ARCHIVE, MAIL_DELETE, Action, Change
from mailstate.model.mailbox_users import MailboxUsers, layout_user_key
from mailstate.model.provider import DesiredState, MailboxView, Snapshot, desired_owners_of
from mailstate.model.records import INBOX, MAILBOX_KINDS
from mailstate.model.settings import SshSettings
from mailstate.providers.doveadm.parse import (
    ACL_FILE,
    ENTRY_FIELDS,
    EXPUNGE_CHUNK,
    FIND_ARGS_MAX,
    MANIFEST_SUFFIX,
    MAX_REMOVAL_ROUNDS,
    NO_SUCH_FOLDER,
    ROOT_SAMPLE,
    SHARED_BOXES,
    SHARED_SAMPLE,
    UNKNOWN_USER,
    USER_FAILURE,
    AclFiles,
    Entry,
    Manifest,
    Message,
    T,
    _archive_order,
    _in_other_namespace,
    _key_id,
    _Refuse,
    _RevokedHostKey,
    acl_fast_path_config,
    acl_rows_from_file,
    archive_mismatches,
    arg_batches,
    attribute_file_below_home,
    autocreated_folders,
    covered_by,
    delegate_work,
    doveadm_command,
    entries_digest,
    getacl_entries,
    holds_mail,
    last_login_prefix,
    latest_manifest_name,
    load_known_hosts,
    mail_roots,
    marked_work,
    next_archive_name,
    other_namespace_prefixes,
    own_folder_names,
    owner_may_administer,
    owner_surely_reads_attributes,
    parse_acl_files,
    parse_attribute_file,
    parse_config_lines,
    parse_doveadm_json,
    parse_doveadm_tab,
    parse_last_login,
    parse_quota_get,
    parse_shared_grantees,
    parse_shared_owners,
    parse_shared_users,
    parse_user_field,
    pattern_base,
    predictable_user,
    read_fetch_stream,
    root_pattern,
    roots_in_paths,
    rows_by_user,
    settings_from_env,
    spread_sample,
    uid_set,
    unit_work,
    unowned_acl_files,
    user_messages,
    with_line_ends,
)
from mailstate.text import CONTROL_RE, visible

# --------------------------------------------------------------------------------------------------
# The provider


COMMANDS_AT_ONCE = 4
"""doveadm commands a read runs at once over its one SSH session (each a channel): well inside sshd's
MaxSessions (10) and the mail host's cores."""

SETTINGS_AT_ONCE = (
    "plugin/acl_shared_dict", "plugin/last_login_dict", "plugin/last_login_key", "plugin/acl",
    "plugin/acl_globals_only", "mail_attribute_dict",
)
"""The one-line settings a plan's read asks, asked together by ``prefetch`` (namespaces are a section, IMAP's
METADATA a protocol's setting: asked alone)."""
WILDCARD_RE = re.compile(r"[*?]")
"""What makes ``doveadm -u NAME`` take NAME for a mask of users."""
USER_UNKNOWN_TO_U = "User doesn't exist"
"""What ``doveadm -u`` says of a user the userdb does not know (``-F`` says UNKNOWN_USER and skips them)."""
EX_NOUSER = 67
"""doveadm's exit status then (sysexits' EX_NOUSER)."""
SKIPPED_USER = re.compile(rf"^doveadm\((.+?)\): Info: {re.escape(UNKNOWN_USER)}", re.MULTILINE)
"""What doveadm says on standard error of a user given with ``-F`` that the userdb does not know."""
FOLDER_STATUS = "messages unseen uidnext guid"
"""The ``mailbox status`` fields of one pass over a mailbox's folders that serves both the unit mailboxes'
use (``units_used``: the counters) and IMAP's views (``mailbox_views``: which folders exist)."""
USERS_BATCH_BYTES = FIND_ARGS_MAX
"""Bytes of user names per doveadm process of ``for_users`` (≈8,000 users): the users of one command go to
one process, or to several one after another when a command line would grow longer — never shared out over
processes side by side. Every user costs a userdb lookup in the mail host's one auth process, and measured
on the lab at 50,000 people, four processes each given a quarter of 1,301 users cost auth and slapd 2-3
times the CPU of one process given them all (auth 1.7 against 0.6 CPU-s) and took longer (1.8 s against
1.1 s); different commands for the same users side by side (``mailbox_views``) do not pay that."""


class SshProvider:
    """doveadm over SSH (paramiko): last-login facts, verified archives, removal of archived mail."""
    name: ClassVar[str] = "ssh"
    kinds: ClassVar[frozenset[str]] = frozenset({MAIL_ARCHIVE, MAIL_DELETE})
    """It owns no record kind: it reads facts and carries out the archive and the removal of a mailbox's
    mail (the ``archive`` / ``delete`` changes of a person or unit_mailbox whose work is one of these)."""
    settings_model: ClassVar[type[SshSettings]] = SshSettings

    def __init__(self, settings: SshSettings, today: date | None = None) -> None:
        self.settings = settings
        self.today = today
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._config: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.acl_roots = ""
        """How the last ``acl_owners`` found the mail roots: "dict" (a sample of the shared dict's users),
        "pattern" (a sample of every user's list) or "userdb" (every user's lookup)."""
        self.shared_sample = SHARED_SAMPLE
        """Users of the shared dict whose mail roots ``acl_owners`` asks the userdb for first."""
        self.root_sample = ROOT_SAMPLE
        """Users of the userdb's list whose mail roots ``acl_owners`` asks for when the dict's do not do."""
        self._config_batch: Future[None] | None = None
        """``prefetch``'s one command for the settings of SETTINGS_AT_ONCE (``config`` waits for it)."""
        self._prefetched: dict[str, Any] = {}
        """Reads started early by ``prefetch`` ({name: Future}), each taken once."""
        self._connecting = threading.RLock()
        """One SSH session however many threads use it (a plan reads through it from the ssh and imap
        providers at once; apply runs changes on a few threads): each command is a channel of its own."""
        self.unit_mailboxes: set[str] = set()
        self.expected_units: set[str] = set()
        """The unit mailboxes the TOML names (their logins): read before the directory answers."""
        self.expected_owners: set[str] = set()
        """The mailboxes the TOML gives rights on or folders in (their logins): counted with the units."""
        self._unit_source: Callable[[], set[str]] | None = None
        self.users = MailboxUsers(settings.user_key or "login", "ssh")
        """login ↔ Dovecot user (the address on an iRedMail server): commands name the user, facts the
        login (``TakesMailboxUsers``)."""
        self._batches = threading.BoundedSemaphore(COMMANDS_AT_ONCE)
        """``for_users`` batches running at once over the session, whichever provider's thread asks (the ssh
        and imap providers read through one session): channels stay within sshd's MaxSessions."""
        self._rounds = 0
        self._status: dict[str, Future[tuple[dict[str, list[dict[str, str]]], dict[str, list[str]]]]] = {}
        """Within a round of reads (``begin_round``…``end_round``): each user's ``folder_status`` pass, asked
        once whoever asks; outside a round nothing is kept."""
        self._status_lock = threading.Lock()
        self._acl_files: Future[AclFiles | None] | None = None
        """The ACL files the owners' walk of this round of reads read (``_shared_owners``: the prefetch's, or
        one run within the round), which the round's views read folders' ACLs from (``mailbox_views``);
        dropped when the round ends — a later round reads afresh."""
        self._acl_files_ahead = False
        """``_acl_files`` came from a prefetch before any round: the round about to begin takes it."""

    def __repr__(self) -> str:
        s = self.settings
        return f"SshProvider({s.user}@{s.host}:{s.port})"

    @classmethod
    def from_state(cls, state: DesiredState, **kwargs: Any) -> SshProvider:
        prov = cls.from_settings(state, **kwargs)
        prov.take_state(state)
        return prov

    @classmethod
    def from_settings(cls, state: DesiredState, **kwargs: Any) -> SshProvider:
        """Opened with the settings alone (``Prefetches``): [providers], [organization]; no unit read."""
        settings = settings_from_env(state.providers.ssh)
        key = layout_user_key(state, settings.user_key)
        return cls(settings.model_copy(update={"user_key": key}), **kwargs)

    def take_state(self, state: DesiredState) -> None:
        """The whole desired state (``Prefetches``): the unit mailboxes it names, and every mailbox the TOML
        gives rights on or folders in (IMAP reads their folders: ``mailbox_views``)."""
        self.expected_units = set(state.units)
        self.expected_owners = desired_owners_of(state)

    def prefetch(self) -> None:
        """Start what a plan's read needs of the mail host and no TOML for (``Prefetches``): the owners
        with rights for others (the shared dict, the ACL files), the last logins and the settings the reads
        ask first, on threads of their own, while the TOML loads; ``shared_owners`` and ``last_logins``
        then answer from them (once)."""
        with self._connecting:
            if self._prefetched:
                return
            pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="ssh-prefetch")
            self._config_batch = pool.submit(self._settings_at_once)
            self._prefetched = {
                "shared_owners": pool.submit(self._shared_owners, True),
                "last_logins": pool.submit(self._last_logins),
                "settings": pool.submit(self._settings_ahead),
            }
            pool.shutdown(wait=False)

    def _settings_at_once(self) -> None:
        """The settings of SETTINGS_AT_ONCE in one ``doveadm config`` (one process instead of one each), kept
        (``config``); on a failure each is asked alone, where its error is reported in its place."""
        try:
            text = self.doveadm("config", *SETTINGS_AT_ONCE)
        except ProviderError:
            return
        for name, value in parse_config_lines(text, SETTINGS_AT_ONCE).items():
            self._config.setdefault(name, value)

    def _settings_ahead(self) -> None:
        """The settings every plan's read asks first (the namespaces, IMAP's METADATA), asked while the TOML
        loads (kept: ``config``); a failure is left for the read to meet and report."""
        with contextlib.suppress(ProviderError):
            self._namespace_config()
            self.imap_metadata()

    def _ahead(self, name: str) -> Any:
        with self._connecting:
            future = self._prefetched.pop(name, None)
        return future.result() if future is not None else None

    def take_mailbox_users(self, users: Callable[[], Mapping[str, str]]) -> None:
        self.users.take(users)

    def add_mailbox_users(self, users: Mapping[str, str]) -> None:
        self.users.add(users)

    # -- connection ----------------------------------------------------------------------------

    @property
    def where(self) -> str:
        s = self.settings
        return f"{s.user}@{s.host}:{s.port}"

    def connect(self) -> paramiko.SSHClient:
        with self._connecting:
            if self._client is not None:
                return self._client
            return self._connect()

    def _connect(self) -> paramiko.SSHClient:
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
        with self._connecting:
            if self._sftp is None:
                self._sftp = self.connect().open_sftp()
            return self._sftp

    def close(self) -> None:
        with self._connecting:
            waiting, self._prefetched = list(self._prefetched.values()), {}
        for future in waiting:  # a prefetch still running ends (or fails) before the session closes
            with contextlib.suppress(BaseException):
                future.result()
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _exec(
        self, client: paramiko.SSHClient, command: str
    ) -> tuple[paramiko.Channel, BinaryIO, list[bytes], threading.Thread]:
        """Start ``command`` on a channel of its own: the channel, its stdout, and stderr being drained (into
        the list, by the thread) while stdout is read."""
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
        return chan, stdout, err_parts, drain

    def run(self, command: str, check: bool = True) -> tuple[int, str, str]:
        """Run one command line on the host; with ``check`` a non-zero exit raises ProviderError."""
        client = self.connect()
        try:
            chan, stdout, err_parts, drain = self._exec(client, command)
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
            chan, stdout, err_parts, drain = self._exec(client, command)
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
        """Facts: ``last_login`` {login: ISO datetime} for every mailbox with a recorded login."""
        t0 = time.perf_counter()
        snap = Snapshot(self.name)
        logins = self.last_logins()
        if self.users.by_address:
            logins = {self.users.login(user): when for user, when in logins.items()}
        snap.facts["last_login"] = logins
        # the unit mailboxes the TOML names are asked at once, while the directory is still being read (one
        # it does not hold is dropped then: the userdb did not know it either); the rest once it answers.
        # On the address layout a name needs the directory first.
        used: dict[str, str] = {}
        unknown: set[str] = set()
        early: set[str] = set()
        if self._unit_source is not None and not self.users.by_address:
            early = self.expected_units - set(logins)
            if self._rounds:  # one count for the IMAP provider's mailboxes too: one doveadm process, not two
                self.folder_status(sorted(early | self.expected_owners))
            used = self.units_used(sorted(early), unknown)
        if self._unit_source is not None:
            source, self._unit_source = self._unit_source, None
            self.unit_mailboxes = set(source())
        live = self.unit_mailboxes - set(logins)
        self._refuse_unknown(unknown & live)
        used = {unit: sign for unit, sign in used.items() if unit in live}
        used.update(self.units_used(sorted(live - early)))
        snap.facts["used"] = used
        self.timings["read"] = time.perf_counter() - t0
        return snap

    def begin_round(self) -> None:
        """``ReadsInRounds``: the reads of one plan begin (the ssh and imap providers read at once through
        this session): from now until ``end_round`` a user's folders are counted once (``folder_status``)."""
        with self._status_lock:
            if self._rounds == 0:
                self._status = {}
                if not self._acl_files_ahead:
                    self._acl_files = None
                self._acl_files_ahead = False
            self._rounds += 1

    def end_round(self) -> None:
        """``ReadsInRounds``: the round's reads are done; what they kept is dropped (a later read, after an
        apply, counts afresh)."""
        with self._status_lock:
            self._rounds = max(0, self._rounds - 1)
            if self._rounds == 0:
                self._status = {}
                self._acl_files = None
                self._acl_files_ahead = False

    def folder_status(
        self, users: Sequence[str]
    ) -> tuple[dict[str, list[dict[str, str]]], dict[str, list[str]]]:
        """{user: their folders' ``mailbox status FOLDER_STATUS '*'`` rows}, and {user: the errors doveadm
        gave for them} (one the userdb does not know among them), ``-f json``. Within a round of reads each
        user is asked once, whoever asks first (``units_used`` and ``mailbox_views`` both need the pass: one
        userdb lookup and one walk of the folders instead of two); a later caller waits for that pass. A
        failed command raises, for every caller waiting on it."""
        wanted = sorted(set(users))
        if not wanted:
            return {}, {}
        future: Future[tuple[dict[str, list[dict[str, str]]], dict[str, list[str]]]] = Future()
        with self._status_lock:
            in_round = self._rounds > 0
            new = [u for u in wanted if u not in self._status] if in_round else wanted
            if in_round:
                self._status.update(dict.fromkeys(new, future))
            futures = {u: self._status[u] for u in wanted} if in_round else dict.fromkeys(wanted, future)
        if new:
            try:
                rows, errors = self._json_for_users(new, ["mailbox", "status", FOLDER_STATUS, "*"], 2)
            except BaseException as exc:
                future.set_exception(exc)
                raise
            future.set_result((rows_by_user(rows), errors))
        out: dict[str, list[dict[str, str]]] = {}
        errs: dict[str, list[str]] = {}
        for user, fut in futures.items():
            found, errors = fut.result()
            if user in found:
                out[user] = found[user]
            if user in errors:
                errs[user] = errors[user]
        return out, errs

    def set_unit_mailboxes(self, logins: set[str]) -> None:
        """The unit mailboxes: whether each was used is read with the facts."""
        self.unit_mailboxes = set(logins)

    def await_unit_mailboxes(self, logins: Callable[[], set[str]]) -> None:
        """``TakesUnitMailboxes``: the directory's unit mailboxes, asked for during ``read`` (after the ones
        the TOML names, ``expected_units``, were read)."""
        self._unit_source = logins

    def _refuse_unknown(self, units: Iterable[str]) -> None:
        """A unit mailbox the mail host's userdb does not know is never taken as unused: an error."""
        if units:
            raise ProviderError(
                f"ssh: reading the counters of {visible(min(units))}'s folders failed: the mail host's "
                "userdb does not know it"
            )

    def units_used(self, logins: Iterable[str], unknown: set[str] | None = None) -> dict[str, str]:
        """{login: the sign of work} for each unit mailbox someone worked in (BĐ art.5.2's "put into use"):
        its own login is not needed, delegates work in it under theirs. Its own counters show mail read
        by its own login, filed, moved or deleted; a delegate's read (\\Seen, private to them: INDEXPVT)
        shows only in the delegate's view, so each user the ACL shared dict names for it is asked too.
        ``mailbox status`` counters (no message is read) in two passes of one doveadm process each however
        many mailboxes (``-F -``: the users on its standard input, cut in batches that keep each command
        line short): the unit mailboxes' own folders, then the shared namespace as each delegate of a unit
        mailbox not yet seen used sees it. Only unit mailboxes without a login are asked.
        A delegate who only marks mail (\\Flagged, \\Answered, \\Deleted, \\Draft, a keyword) changes
        no counter: those flags are shared, kept in the mailbox's own index, so for the unit mailboxes still
        without a sign a third pass of the same kind fetches their messages' flags (no message is read).
        A unit mailbox the userdb does not know raises, or with ``unknown`` is added to it and left out."""
        units = sorted(set(logins))
        if not units:
            return {}
        prefixes = self.other_prefixes()
        shared = prefixes[0] if prefixes else ""
        user_of = {unit: self.users.user(unit) for unit in units}  # commands: Dovecot's user; facts: logins
        own, errors = self.folder_status(sorted(user_of.values()))
        failed = {u: t for u, t in errors.items() if any(USER_FAILURE.match(line) for line in t)}
        if failed:  # never taken as unused because its folders could not be counted
            user = min(failed)
            raise ProviderError(
                f"ssh: reading the counters of {visible(self.users.login(user))}'s folders failed: "
                f"{visible(' '.join(failed[user][-3:]))}"
            )
        gone = {u for u, t in errors.items() if any(UNKNOWN_USER in line for line in t)}
        if gone:  # a unit mailbox the mail host's userdb does not know: never taken as unused
            if unknown is None:
                self._refuse_unknown({self.users.login(g) for g in gone})
            else:
                unknown.update(self.users.login(g) for g in gone)
                units = [u for u in units if user_of[u] not in gone]
        used: dict[str, str] = {}
        for unit in units:  # no rows: no mail folder made yet (never used)
            sign = unit_work(own.get(user_of[unit], []), prefixes)
            if sign is not None:
                used[unit] = sign
        uri = self.config("plugin/acl_shared_dict")
        # a unit mailbox that never held a message: nothing any delegate could have read or marked
        rest = [u for u in units if u not in used and holds_mail(own.get(user_of[u], []), prefixes)]
        grantees = parse_shared_grantees(
            self.doveadm("-f", "tab", "dict", "iter", "-R", uri, SHARED_BOXES)
        ) if uri and shared and rest else {}
        delegates = sorted({who for unit in rest for who in grantees.get(user_of[unit], ())})
        # a delegate no longer let in (or gone) shows nothing: nothing seen through them; a failed command
        # raises (a unit mailbox is never taken as unused because its delegates could not be read)
        # (``shared/%/*``: every owner's folders in one mask; ``shared/*`` matches nothing there)
        views = self._status_of(delegates, "messages unseen", f"{shared}%/*")
        for unit in rest:
            head = f"{shared}{user_of[unit]}/"
            for who in sorted(grantees.get(user_of[unit], ())):
                rows = [r for r in views.get(who, ()) if r.get("mailbox", "").startswith(head)]
                sign = delegate_work(rows, self.users.login(who))
                if sign is not None:
                    used[unit] = sign
                    break
        rest = [u for u in rest if u not in used]
        marks = self._rows_of([user_of[u] for u in rest], ["fetch", "mailbox flags", "mailbox", "*", "all"],
                              1) if rest else {}
        for unit in rest:
            sign = marked_work(marks.get(user_of[unit], []), prefixes)
            if sign is not None:
                used[unit] = sign
        return used

    def _status_of(
        self, users: Sequence[str], fields: str, mask: str, gone: set[str] | None = None
    ) -> dict[str, list[dict[str, str]]]:
        """{user: their ``doveadm -f tab mailbox status FIELDS MASK`` rows} (``_rows_of``)."""
        return self._rows_of(users, ["mailbox", "status", fields, mask], 2, gone)

    def _rows_of(
        self, users: Sequence[str], args: Sequence[str], words: int, gone: set[str] | None = None
    ) -> dict[str, list[dict[str, str]]]:
        """{user: their ``doveadm -f tab ARGS`` rows} (``for_users``; a user doveadm skips, one the userdb
        does not know, has no rows and goes to ``gone``; a failed command raises)."""
        texts = self.for_users(users, args, gone, words=words)
        return rows_by_user(row for text in texts for row in parse_doveadm_tab(text))

    def for_users(
        self, users: Sequence[str], args: Sequence[str], gone: set[str] | None = None, words: int = 2
    ) -> list[str]:
        """The ``doveadm -f tab ARGS`` output for each of ``users`` (a ``username`` column first), as
        ``-A`` would give for all: the users go on the process's standard input (``-F -``), in batches one
        after another only when a command line would grow too long (``USERS_BATCH_BYTES``). One text per
        batch; a user doveadm
        skips (the userdb no longer knows them) has no rows and is added to ``gone``; a failed command
        raises. ``words``: how many of ARGS name the command (``-F -`` follows them)."""
        def command(who: Sequence[str]) -> Sequence[str]:
            return ["-f", "tab", *args[:words], *who, *args[words:]]

        def one(rc: int, text: str, err: str, single: str | None) -> str:
            if single is not None:  # as -F would give it: a username column first
                text = "".join(
                    f"username\t{line}\n" if n == 0 else f"{single}\t{line}\n"
                    for n, line in enumerate(text.splitlines()) if line
                )
            if rc != 0:
                detail = " ".join(err.strip().splitlines()[-3:]) or f"exit status {rc}"
                what = " ".join(args[:words])
                raise ProviderError(f"ssh: doveadm {what} failed on {self.settings.host}: {detail}")
            if gone is not None:
                gone.update(m.group(1) for m in SKIPPED_USER.finditer(err))
            return text

        return self._over_batches(users, command, one)

    def _over_batches(
        self,
        users: Sequence[str],
        command: Callable[[Sequence[str]], Sequence[str]],
        one: Callable[[int, str, str, str | None], T],
    ) -> list[T]:
        """``one(exit status, output, standard error, the user when only one)`` of the doveadm command
        ``command(["-F", "-"])`` run for each batch of ``users`` (``_user_batches``, on its standard input),
        one batch after another (see USERS_BATCH_BYTES), each a channel of the one session; at most
        COMMANDS_AT_ONCE such commands run at once, whichever thread asks.

        A batch of one user is run with ``-u USER`` instead (``command(["-u", USER])``; a name with a
        wildcard excepted, which ``-u`` would take for a mask): ``-F`` makes doveadm start listing every
        user of the userdb, whatever the file holds — a whole iteration of the directory on the mail host
        (its auth worker and the LDAP server) for each command, as costly as reading the directory at 10,000
        people and more as it grows. What ``-u`` reports differently is given to ``one`` as ``-F`` reports it:
        a user the userdb does not know is skipped (``UNKNOWN_USER``, exit status 0), not an error."""

        def run(batch: list[str]) -> T:
            alone = shlex.split(batch[0])[0] if len(batch) == 1 and not WILDCARD_RE.search(batch[0]) else None
            with self._batches:
                if alone is None:
                    doveadm = doveadm_command(self.settings.doveadm, *command(["-F", "-"]))
                    rc, text, err = self.run(f"printf '%s\\n' {' '.join(batch)} | {doveadm}", check=False)
                else:
                    rc, text, err = self.run(
                        doveadm_command(self.settings.doveadm, *command(["-u", alone])), check=False
                    )
            unknown = f"doveadm({alone}): Error: {USER_UNKNOWN_TO_U}"
            if alone is not None and rc == EX_NOUSER and unknown in err.splitlines():
                err = err.replace(unknown, f"doveadm({alone}): Info: {UNKNOWN_USER}, skipping")
                rc = 0
            return one(rc, text, err, alone)

        return [run(batch) for batch in self._user_batches(users)]

    def _user_batches(self, users: Sequence[str]) -> list[list[str]]:
        """``users`` shell-quoted, cut in batches for ``-F -`` of at most USERS_BATCH_BYTES each (one batch
        for up to about 8,000 users); none for no user. A name doveadm cannot take one a line (empty, a
        control character) raises."""
        odd = next((u for u in users if not u or CONTROL_RE.search(u)), None)
        if odd is not None:  # one user a line: a line break in a name would make it two users
            raise ProviderError(f"ssh: {visible(odd)!r} is not a user name doveadm can be given")
        return arg_batches([shlex.quote(u) for u in users], USERS_BATCH_BYTES, gap=1)

    def _json_for_users(
        self, users: Sequence[str], args: Sequence[str], words: int
    ) -> tuple[list[dict[str, str]], dict[str, list[str]]]:
        """The rows of ``doveadm -f json ARGS`` for each of ``users`` (``-F -`` after the ``words`` that name
        the command; a ``username`` field in each), one process a batch, one after another
        (``_over_batches``), and the errors doveadm wrote about single users ({user: [text, …]}). Anything
        else on standard error with a failed exit status raises."""
        def command(who: Sequence[str]) -> Sequence[str]:
            return ["-f", "json", *args[:words], *who, *args[words:]]

        def one(
            rc: int, text: str, err: str, single: str | None
        ) -> tuple[list[dict[str, str]], dict[str, list[str]]]:
            by_user, other = user_messages(err)
            if rc != 0 and (other or not by_user):
                detail = " ".join((other or err.strip().splitlines())[-3:]) or f"exit status {rc}"
                raise ProviderError(
                    f"ssh: doveadm {' '.join(args[:words])} failed on {self.settings.host}: {visible(detail)}"
                )
            rows = parse_doveadm_json(text)
            if single is not None:  # as -F would give them: a username field in each
                rows = [{"username": single, **row} for row in rows]
            return rows, by_user

        rows: list[dict[str, str]] = []
        errors: dict[str, list[str]] = {}
        for found, by_user in self._over_batches(users, command, one):
            rows.extend(found)
            for user, texts in by_user.items():
                errors.setdefault(user, []).extend(texts)
        return rows, errors

    def imap_metadata(self) -> bool:
        """Whether the mail host's IMAP has METADATA (``imap_metadata`` of the imap protocol)."""
        key = "imap_metadata@imap"
        if key not in self._config:
            self._config[key] = self.doveadm("config", "-f", "protocol=imap", "-h", "imap_metadata").strip()
        return self._config[key] == "yes"

    def mailbox_views(
        self,
        users: Sequence[str],
        entry: str | None = None,
        expected: Mapping[str, Iterable[str]] | None = None,
    ) -> tuple[dict[str, MailboxView], set[str]]:
        """For each of ``users`` (Dovecot users) what LIST, GETACL and GETMETADATA ``entry`` would show on an
        IMAP connection as that user, without one (a master-user login costs the mail host a process or
        two; doveadm reads any number of users in one): ``mailbox status`` (``folder_status``, one pass),
        ``acl get`` and ``mailbox metadata get`` once per distinct folder name for the users that have it,
        COMMANDS_AT_ONCE at a time, all ``-f json`` (a tab or line break in a value stays inside it). A name
        doveadm says is no folder (a parent made only by its children) is left out, as LIST marks it
        \\Noselect. ``expected``: {user: folder names it should have} (the TOML's shared folders): those,
        INBOX and the folders Dovecot makes by itself are asked beside the status pass, not after it, in one
        wave; only a name the status pass finds and nobody expected is asked after it (what was asked of a
        name that is no folder is dropped).
        Returns the views and the users to read another way: any other error doveadm gave for them (one the
        userdb does not know: INBOX's ``acl get`` fails), a folder name with a control character."""
        wanted = sorted(set(users))
        if not wanted:
            return {}, set()
        made_by_dovecot = autocreated_folders(self._namespace_config())
        prefixes = self.other_prefixes()
        # INBOX, which LIST always shows and GETACL answers for even before its first message, a folder
        # Dovecot makes by itself (auto = create/subscribe: in LIST before it exists), the expected ones
        guessed: dict[str, list[str]] = {}
        for user in wanted:
            likely = [INBOX, *made_by_dovecot, *(expected or {}).get(user, ())]
            guessed[user] = [n for n in dict.fromkeys(likely) if not CONTROL_RE.search(n)]

        def tasks_for(names_of: Mapping[str, Iterable[str]]) -> dict[tuple[str, str], list[str]]:
            by_name: dict[str, list[str]] = {}
            for user in sorted(names_of):
                for name in names_of[user]:
                    by_name.setdefault(name, []).append(user)
            tasks = {("acl", name): us for name, us in sorted(by_name.items())}
            if entry:
                tasks.update({("meta", n): us for n, us in sorted(by_name.items()) if n.upper() != INBOX})
            return tasks

        def one(task: tuple[tuple[str, str], list[str]]) -> tuple[list[dict[str, str]], dict[str, list[str]]]:
            (kind, name), who = task
            if kind == "acl":
                files = self._round_acl_files()
                rows, covered = self._acl_rows_from_files(files, name, who, homes) if files else ([], set())
                rest = [u for u in who if u not in covered]
                if not rest:
                    return rows, {}
                found, errs = self._json_for_users(rest, ["acl", "get", "--", name], 2)
                return rows + found, errs
            acl = acl_answers.get((name, tuple(who)))  # asked before this task: done or under way
            rows, covered = self._purposes_from_files(name, who, str(entry), status, homes, acl)
            rest = [u for u in who if u not in covered]
            if not rest:
                return rows, {}
            meta = ["mailbox", "metadata", "get", "--", name, str(entry)]
            found, errs = self._json_for_users(rest, meta, 3)
            return rows + found, errs

        first = tasks_for(guessed)
        acl_answers: dict[tuple[str, tuple[str, ...]], Future[tuple[list[dict[str, str]], Any]]] = {}
        with ThreadPoolExecutor(COMMANDS_AT_ONCE + 1, thread_name_prefix="doveadm-views") as threads:
            status = threads.submit(self.folder_status, wanted)
            # the owners' homes beside the count: both kinds of task read files below them (when they can)
            reads_files = self._acl_from_files() or (entry is not None and self._attribute_file() is not None)
            homes = threads.submit(self._homes_of, wanted).result if reads_files else dict

            def submit(tasks: dict[tuple[str, str], list[str]]) -> list[tuple[Any, list[str], Future[Any]]]:
                # in order: a name's acl task before its meta task, which reads its answer (the owner's
                # rights decide whether Dovecot lets them read the folder's attributes)
                out = []
                for task, who in tasks.items():
                    future = threads.submit(one, (task, who))
                    if task[0] == "acl":
                        acl_answers[(task[1], tuple(who))] = future
                    out.append((task, who, future))
                return out

            answers = submit(first)
            counted, errors = status.result()
            failed = set(errors)
            # the folders that exist (``mailbox status``: a parent made only by its children is not one)
            names = own_folder_names((row for found in counted.values() for row in found), prefixes)
            for user in wanted:
                listed = names.setdefault(user, [])
                if not any(n.upper() == INBOX for n in listed):
                    listed.append(INBOX)
                listed.extend(n for n in made_by_dovecot if n not in listed)
            failed |= {u for u, folders in names.items() if any(CONTROL_RE.search(f) for f in folders)}
            late = {u: [n for n in names[u] if n not in guessed[u]] for u in wanted if u not in failed}
            # (a name may be asked twice: of the users who were expected to have it, then of the others)
            answers += submit(tasks_for(late))
            asked = [(task, who, future.result()) for task, who, future in answers]
        wanted_pairs = {(u, n) for u in wanted if u not in failed for n in names[u]}
        acls: dict[tuple[str, str], list[dict[str, str]]] = {}
        purposes: dict[tuple[str, str], str | None] = {}
        no_folder: set[tuple[str, str]] = set()
        for (kind, name), who, (found, errs) in asked:
            for user, texts in errs.items():
                if (user, name) not in wanted_pairs:
                    continue  # an expected name that is no folder of this user, or a user already failed
                if all(NO_SUCH_FOLDER in t for t in texts):
                    no_folder.add((user, name))
                else:
                    failed.add(user)
            if kind == "acl":
                for user in who:
                    acls[(user, name)] = []
                for row in found:
                    acls.setdefault((row.get("username", ""), name), []).append(row)
            else:
                for row in found:
                    value = unicodedata.normalize("NFC", row.get("value", ""))
                    purposes[(row.get("username", ""), name)] = value or None
        views: dict[str, MailboxView] = {}
        for user in wanted:
            if user in failed:
                continue
            view = MailboxView()
            for name in names[user]:
                if (user, name) in no_folder:
                    continue
                rows = acls.get((user, name), [])
                if not owner_may_administer(rows, user):  # GETACL would be refused: IMAP says so
                    failed.add(user)
                    break
                view.folders.append(name)
                view.acls[name] = getacl_entries(rows, user)
                if entry and name.upper() != INBOX:
                    view.purposes[name] = purposes.get((user, name))
            if user not in failed:
                views[user] = view
        return views, failed

    def _acl_from_files(self) -> bool:
        """Whether a folder's ACL can be read from its own file (``acl_fast_path_config``: per-folder files,
        no global ACL), from the mail host's settings (asked once)."""
        try:
            return acl_fast_path_config(self.config("plugin/acl"), self.config("plugin/acl_globals_only"))
        except ProviderError:
            return False

    def _round_acl_files(self) -> AclFiles | None:
        """The ACL files the owners' walk of this round of reads read (waited for: the round needs that walk
        anyway), when folders' ACLs can be read from them (``_acl_from_files``); None outside a round, when
        no walk belongs to it yet, or when the files say less than Dovecot."""
        with self._status_lock:
            walk = self._acl_files if self._rounds > 0 else None
        if walk is None or not self._acl_from_files():
            return None
        return walk.result()

    def _acl_rows_from_files(
        self, files: AclFiles, name: str, users: Sequence[str], homes: Callable[[], dict[str, str]]
    ) -> tuple[list[dict[str, str]], set[str]]:
        """``acl get`` rows (``username`` added) of the folder ``name`` for those of ``users`` whose ACL file
        for it the walk read and Dovecot wrote in its plain form (``acl_rows_from_file``), and who they are;
        the others are asked of doveadm. Where the folder's file lies below a mail root is asked once, for
        one user (``mailbox path -t control``: one userdb lookup instead of one per user); every user's
        lies at the same place below theirs (one mail location for all). Only for a user whose mail root the
        walk took lies in the home the userdb gives them now (``homes``): a home moved elsewhere with its
        old copy left where the walk found it is asked of doveadm. A folder without a file of its own is
        never answered here: Dovecot then shows INBOX's rights or the defaults."""
        known = [u for u in users if u in files.roots]
        if not known:
            return [], set()
        first = known[0]
        found, errs = self._json_for_users([first], ["mailbox", "path", "-t", "control", "--", name], 2)
        paths = [row.get("path", "") for row in found if row.get("username") == first]
        root = files.roots[first]
        if errs or len(paths) != 1 or not (paths[0] == root or paths[0].startswith(f"{root}/")):
            return [], set()
        below = paths[0][len(root):] + "/" + ACL_FILE
        home_of = homes()
        rows: list[dict[str, str]] = []
        covered: set[str] = set()
        for user in known:
            home = home_of.get(user)
            if home is None or not f"{files.roots[user]}/".startswith(f"{home}/"):
                continue
            lines = files.lines.get(files.roots[user] + below)
            parsed = acl_rows_from_file(lines) if lines is not None else None
            if parsed is not None:
                rows.extend({**row, "username": user} for row in parsed)
                covered.add(user)
        return rows, covered

    def _attribute_file(self) -> str | None:
        """Where below a user's home Dovecot keeps the mailbox attributes, when in a file of their own
        (``attribute_file_below_home``), from the mail host's settings (asked once); else None."""
        try:
            return attribute_file_below_home(self.config("mail_attribute_dict"))
        except ProviderError:
            return None

    def _homes_of(self, users: Sequence[str]) -> dict[str, str]:
        """{user: home} of ``users`` from the userdb (``doveadm user -f home -- USER…``: a lookup each, no
        iteration of the userdb; ``parse_user_field``). A user the userdb does not know (a mailbox the TOML
        adds) has none; so has every user of a batch whose answer is not in the form expected, or that
        failed otherwise: those users' views are read through doveadm."""
        out: dict[str, str] = {}
        for batch in arg_batches([u for u in users if predictable_user(u)]):
            command = doveadm_command(self.settings.doveadm, "user", "-f", "home", "--", *batch)
            rc, text, _err = self.run(command, check=False)
            homes = parse_user_field(text, batch) if rc in (0, EX_NOUSER) else None
            out.update((u, h.rstrip("/")) for u, h in (homes or {}).items() if h.startswith("/"))
        return out

    def _purposes_from_files(
        self,
        name: str,
        users: Sequence[str],
        entry: str,
        status: Future[tuple[dict[str, list[dict[str, str]]], dict[str, list[str]]]],
        homes: Callable[[], dict[str, str]],
        acl: Future[tuple[list[dict[str, str]], Any]] | None,
    ) -> tuple[list[dict[str, str]], set[str]]:
        """``mailbox metadata get`` rows (``username``, ``value``) of ``entry`` (a ``/shared/`` one) on the
        folder ``name`` for those of ``users`` whose attribute file (``_attribute_file``, below the home the
        userdb gives them: ``homes``) could be read and holds Dovecot's plain form
        (``parse_attribute_file``), and who they are; the others are asked of doveadm. The folder's key is
        ``shared/<its GUID>/<name>``, the GUID from the round's count (``status``); a folder the count did
        not find is asked of doveadm (which says it is none). Only for an owner who surely may read them
        (``owner_surely_reads_attributes``, from the folder's rows in ``acl``, its ``acl get`` answer):
        Dovecot shows an owner without the rights no attribute."""
        below = self._attribute_file()
        if below is None or not entry.startswith("/shared/") or acl is None:
            return [], set()
        acl_rows, acl_errors = acl.result()
        rights = rows_by_user(acl_rows)
        home_of = homes()
        counted, _errors = status.result()
        guids = {
            user: row["guid"] for user in users for row in counted.get(user, [])
            if row.get("mailbox") == name and row.get("guid") and user not in acl_errors
            and owner_surely_reads_attributes(rights.get(user, []), user)
        }
        paths = {user: f"{home_of[user]}/{below}" for user in guids if user in home_of}
        texts = self._grep_files(sorted(paths.values()))
        rows: list[dict[str, str]] = []
        covered: set[str] = set()
        for user, path in sorted(paths.items()):
            lines = texts.get(path)
            attributes = parse_attribute_file(lines) if lines is not None else None
            if attributes is not None:
                value = attributes.get(f"shared/{guids[user]}/{entry[len('/shared/'):]}", "")
                rows.append({"username": user, "value": value})
                covered.add(user)
        return rows, covered

    def _grep_files(self, paths: Sequence[str]) -> dict[str, list[str]]:
        """{path: its lines, as Dovecot's file dict reads them} of those of ``paths`` that exist, can be read
        and are not empty (``grep -aHZs``, then ``wc -l`` in the same command: ``with_line_ends``; a command
        per FIND_ARGS_MAX bytes of paths); the others are simply not in it."""
        out: dict[str, list[str]] = {}
        for batch in arg_batches(paths):
            quoted = " ".join(shlex.quote(p) for p in batch)
            command = f"grep -aHZs '' -- {quoted}; printf '\\0WC\\0\\n'; wc -l -- {quoted} 2>/dev/null"
            _rc, text, _err = self.run(command, check=False)
            out.update(with_line_ends(text))
        return out

    def userdb_users(self) -> list[str]:
        """Every user the mail host's userdb lists (``doveadm user '*'``: one iteration, no lookup)."""
        return [u for u in self.doveadm("user", "*").splitlines() if u.strip()]

    def config(self, name: str) -> str:
        """One setting of the mail host's Dovecot (``doveadm config -h NAME``), asked once per provider; one
        of SETTINGS_AT_ONCE waits for ``prefetch``'s one command for them all, when it is under way."""
        batch = self._config_batch
        if name not in self._config and batch is not None and name in SETTINGS_AT_ONCE:
            batch.result()
        if name not in self._config:
            self._config[name] = self.doveadm("config", "-h", name).strip()
        return self._config[name]

    def last_logins(self) -> dict[str, str]:
        ahead = self._ahead("last_logins")
        return dict(ahead) if ahead is not None else self._last_logins()

    def _last_logins(self) -> dict[str, str]:
        uri = self.config("plugin/last_login_dict")
        if not uri:
            raise ProviderError(
                f"ssh: Dovecot on {self.settings.host} has no plugin/last_login_dict: the inactivity rules "
                "(MOST art.13.3) need the last_login plugin"
            )
        prefix = last_login_prefix(self.config("plugin/last_login_key"))
        return parse_last_login(self.doveadm("-f", "tab", "dict", "iter", uri, prefix), prefix)

    def shared_owners(self) -> set[str]:
        """``_shared_owners``, or what ``prefetch`` read of it."""
        ahead = self._ahead("shared_owners")
        return set(ahead) if ahead is not None else self._shared_owners()

    def _shared_owners(self, ahead: bool = False) -> set[str]:
        """Every user with an ACL entry for someone else on a folder: the owners Dovecot's acl_shared_dict
        names (one pass), and those whose ACL files hold an entry the dict does not record (a negative right
        ``-user``, rights without lookup: ``acl_owners``, which learns where the files lie from the users
        the dict names — so the dict is read first). The files it read are kept for the views of the round
        of reads it belongs to (``_acl_files``; ``ahead``: a prefetch's, for the round about to begin)."""
        files: Future[AclFiles | None] = Future()
        with self._status_lock:
            self._acl_files = files
            self._acl_files_ahead = ahead and self._rounds == 0
        walked: AclFiles | None = None
        try:
            shared = self._shared_dict()
            owners, walked = self._acl_owners_and_files(shared)
            return parse_shared_owners(shared) | owners
        finally:
            files.set_result(walked)

    def _shared_dict(self) -> str:
        """The ACL shared dict's entries (``doveadm -f tab dict iter -R DICT shared/shared-boxes/``)."""
        uri = self.config("plugin/acl_shared_dict")
        if not uri:
            raise ProviderError(f"ssh: Dovecot on {self.settings.host} has no plugin/acl_shared_dict")
        return self.doveadm("-f", "tab", "dict", "iter", "-R", uri, SHARED_BOXES)

    def acl_owners(self, shared: str | None = None) -> set[str]:
        """Owners with any entry for someone else in their per-folder ACL files (``acl = vfile``), found by
        ``find … -name dovecot-acl`` and read with grep (a few commands for any number of users). A file's
        owner is the user whose mail root holds it (``doveadm mailbox path``: a userdb lookup per user,
        about half a millisecond of the mail host's each; listing the users, ``doveadm user '*'``, iterates
        the whole userdb). ``shared``: the ACL shared dict's entries (``_shared_dict``), read when not given.

        First without the user list (``_acl_owners_by_dict``, ``acl_roots`` "dict"): the roots of a spread
        sample of the users the shared dict names (owners and grantees, SHARED_SAMPLE) give the pattern
        every root follows (``root_pattern``: the userdb builds every home from one template); one ``find``
        walks the tree that holds them all and each file's owner is read from its path by the pattern; an
        owner the sample and the dict's owners do not vouch for is looked up, to be sure its root is where
        the pattern puts it. Else, as before, from the list of every user (``_acl_owners_by_userdb``)."""
        if shared is None:
            shared = self._shared_dict()
        return self._acl_owners_and_files(shared)[0]

    def _acl_owners_and_files(self, shared: str) -> tuple[set[str], AclFiles]:
        """``acl_owners``, and the ACL files read to find them with the roots of their owners."""
        found = self._acl_owners_by_dict(shared)
        if found is not None:
            self.acl_roots = "dict"
            return found
        return self._acl_owners_by_userdb()

    def _acl_owners_by_dict(self, shared: str) -> tuple[set[str], AclFiles] | None:
        """``acl_owners`` from the users the shared dict names, or None — the caller then lists every user —
        when fewer than two of them can stand in a path (nobody shares yet), their roots follow no pattern
        (a sampled user the userdb no longer knows simply has none), the tree holds a symbolic link, a file
        lies where the pattern puts no root (a home set by hand elsewhere in the tree), or an owner read from
        a path is unknown to the userdb (a directory left by a removed user, which the full path ignores) or
        has its root elsewhere. The one case taken on trust: a file at the root the pattern gives a user the
        dict names as an owner (who is in the result anyway) but that belongs to someone else, whose home
        was set by hand to lie exactly there — that someone is then not found by their files."""
        users = sorted(u for u in parse_shared_users(shared) if predictable_user(u))
        sample = spread_sample(users, self.shared_sample)
        if len(sample) < 2:
            return None
        known = self._roots_of(sample)
        pattern = root_pattern(known)
        if pattern is None:
            return None
        head, tail = pattern
        text, links = self._grep_tree(pattern_base(head))
        roots = None if links else roots_in_paths(text, head, tail)
        if roots is None:
            return None
        vouched = set(known.values()) | parse_shared_owners(shared)
        unknown = sorted(set(roots.values()) - vouched)
        if unknown:
            found = self._roots_of(unknown)
            if any(found.get(f"{head}{user}{tail}") != user for user in unknown):
                return None
        return parse_acl_files(text, roots), AclFiles.of(text, roots)

    def _acl_owners_by_userdb(self) -> tuple[set[str], AclFiles]:
        """``acl_owners`` from the list of every user (``doveadm user '*'``): when the roots of a spread
        sample of them (``root_sample``) follow one pattern, the others' are taken from it and one ``find``
        walks the tree that holds them all (``acl_roots`` "pattern"); a file under no root so found, a user
        whose name cannot stand in a path, or a sample without a pattern sends every user to the userdb
        (``acl_roots`` "userdb") — so a file is never left without its owner."""
        users = self.userdb_users()
        sample = spread_sample(users, self.root_sample)
        roots = self._roots_of(sample)
        pattern = root_pattern(roots) if len(sample) < len(users) else None
        if pattern is not None and all(predictable_user(u) for u in users):
            head, tail = pattern
            predicted = {f"{head}{user}{tail}": user for user in users}
            text, links = self._grep_tree(pattern_base(head))
            if not links and not unowned_acl_files(text, predicted):
                self.acl_roots = "pattern"
                return parse_acl_files(text, predicted), AclFiles.of(text, predicted)
        self.acl_roots = "userdb"
        if len(sample) < len(users):
            roots = self._roots_of(users)
        text = self._grep_acl_files(sorted(roots))
        return parse_acl_files(text, roots), AclFiles.of(text, roots)

    def _roots_of(self, users: Sequence[str]) -> dict[str, str]:
        """{mail root: user} of ``users`` from the userdb (``doveadm mailbox path``, ``for_users``)."""
        roots: dict[str, str] = {}
        for text in self.for_users(users, ["mailbox", "path", "-t", "control", "INBOX"]):
            roots.update(mail_roots(text))
        return roots

    def _grep_tree(self, base: str) -> tuple[bytes, bool]:
        """``grep -aHZ ''`` of every non-empty ACL file in the tree ``base`` (followed if it is itself a
        link: a mail store on another disk), and whether the tree holds a symbolic link — a home moved
        elsewhere and linked back, whose files this walk does not see (the caller then asks the userdb)."""
        words = ["find", "-H", base, "(", "-type", "l", "-printf", "LINK\t%p\n", ")", "-o", "(",
                 "-name", ACL_FILE, "-type", "f", "-size", "+0"]
        text = self._find(" ".join(shlex.quote(w) for w in words) + " -exec grep -aHZ '' {} + ')'", [base])
        links = any(line.startswith("LINK\t") and "\0" not in line for line in text.split("\n"))
        return text.encode("utf-8", "surrogateescape"), links

    def _grep_acl_files(self, dirs: Sequence[str]) -> bytes:
        """``grep -aHZ ''`` of every non-empty ACL file under ``dirs`` (a few ``find`` commands however many
        directories); a directory not made yet (no mail so far) is fine, any other failure raises."""
        out = b""
        for batch in arg_batches(dirs):
            words = ["find", *batch, "-name", ACL_FILE, "-type", "f", "-size", "+0"]
            command = " ".join(shlex.quote(w) for w in words) + " -exec grep -aHZ '' {} +"
            out += self._find(command, batch).encode("utf-8", "surrogateescape")
        return out

    def _find(self, command: str, dirs: Sequence[str]) -> str:
        """The output of a ``find DIRS … -exec grep …`` command; a directory of ``dirs`` not made yet (no
        mail so far) is fine, any other failure raises. Every grep of the files runs with ``-a``: without it
        grep takes a file with a NUL byte past its first buffer for binary and stops printing its lines
        there, and in a UTF-8 locale drops a line that is no UTF-8 — exit status 0 both times, so the lines
        after it (which Dovecot reads) were silently missing."""
        rc, text, err = self.run(command, check=False)
        missing = {f"find: {q}: No such file or directory" for d in dirs for q in (shlex.quote(d), f"'{d}'")}
        lines = [ln.strip() for ln in err.splitlines()]
        errors = [ln for ln in lines if ln.startswith(("find:", "grep:", "sh:")) and ln not in missing]
        if rc != 0 and (errors or not missing & set(lines)):
            raise ProviderError(
                f"ssh: reading the ACL files on {self.settings.host} failed: {' '.join(errors[-3:])}"
            )
        return text

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
        return other_namespace_prefixes(self._namespace_config())

    def _namespace_config(self) -> str:
        with self._connecting:
            if "namespace" not in self._config:
                self._config["namespace"] = self.doveadm("config", "-h", "namespace")  # multi-line
            return self._config["namespace"]

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
            self.archive(self.users.user(change.key))
        elif change.action is Action.DELETE:
            self.remove_mail(self.users.user(change.key))
        else:
            raise ProviderError(
                f"ssh: cannot apply {change.action.label} of a {change.kind} (archive, delete only)"
            )


def mailbox_users(records: Mapping[tuple[str, str], Any] | Sequence[Any]) -> list[str]:
    """Dovecot users of mailbox records (person / unit_mailbox keys are the users)."""
    items = records.values() if isinstance(records, Mapping) else records
    return sorted({r.key for r in items if getattr(r, "kind", None) in MAILBOX_KINDS})
