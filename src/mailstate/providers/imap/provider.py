"""The IMAP provider: shared folders, their ACLs, delegation of unit mailboxes, access grants, quota facts.

Kinds owned: ``shared_folder`` (key ``<mailbox ref>/<path>``, attrs ``purpose``) and ``acl`` (key
``<mailbox ref>/<folder>#<identifier>``, attrs ``rights`` as sorted RFC 4314 letters, ``why`` not diffed);
see docs/records.md and docs/imap.md.

How it talks to Dovecot: imapclient over TLS (``imaps://`` or STARTTLS on ``imap://``; plain only with
``allow_plain``), logging in as the master user on behalf of each mailbox owner (``<owner>*<admin_user>``),
so every ACL is read and set as the owner would (RFC 4314 GETACL / SETACL / DELETEACL), over a pool of at
most ``max_connections`` connections (one per owner, least recently used logged out first; docs/imap.md
§7a), folders are
created with CREATE (names passed to imapclient as ``str``: it does the modified UTF-7), the purpose of a
shared folder is kept as IMAP METADATA (RFC 5464) ``/shared/comment`` on the folder, and the quota limit
that the LDAP side set (``mailstateQuota`` → ``quota_rule``) is read back with GETQUOTAROOT as a fact.

The first half of this module is pure (rights mapping, keys, group expansion, parsing of server
answers and of doveadm's tab output), unit-tested on recorded data in tests/unit/test_imap_pure.py.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from mailstate.errors import ChangeRefused, ProviderError
from mailstate.model.change import Action, Change
from mailstate.model.i18n import _
from mailstate.model.mailbox_users import MailboxUsers, layout_user_key
from mailstate.model.provider import DesiredState, MailboxView, ReadsInRounds, Snapshot, desired_owners_of
from mailstate.model.records import (
    INBOX,
    AclKey,
    Record,
    folder_key,
    login_of,
    parse_acl_key,
    parse_folder_key,
)
from mailstate.model.rights import normalise_rights
from mailstate.model.settings import ImapSettings
from mailstate.providers.imap.parse import (
    METADATA_ENTRY,
    _text,
    mailbox_acl_records,
    parse_metadata_value,
    parse_quota_limit,
)
from mailstate.providers.registry import open_peers
from mailstate.redact import refuse_userinfo, remember_secret

# --------------------------------------------------------------------------------------------------
# Settings and connections


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def settings_from_env(settings: ImapSettings | None) -> ImapSettings:
    """The state's [providers.imap] with MAILSTATE_IMAP_URL/USER/CA_FILE overriding it."""
    base = settings.model_copy() if settings is not None else ImapSettings()
    updates: dict[str, Any] = {}
    for env, name in (
        ("MAILSTATE_IMAP_URL", "url"),
        ("MAILSTATE_IMAP_USER", "admin_user"),
        ("MAILSTATE_IMAP_CA_FILE", "ca_file"),
    ):
        value = _env(env)
        if value is not None:
            updates[name] = value

    where = "MAILSTATE_IMAP_URL" if "url" in updates else "providers.imap.url"
    refuse_userinfo(where, updates.get("url", base.url))
    return base.model_copy(update=updates)


def password_of(settings: ImapSettings) -> str:
    """The master user's password: $MAILSTATE_IMAP_PASSWORD, else the variable or file the settings name."""
    value = _env("MAILSTATE_IMAP_PASSWORD")
    if value is None and settings.password_env:
        value = _env(settings.password_env)
    if value is None and settings.password_file:
        try:
            value = Path(settings.password_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ProviderError(
                f"imap: cannot read password_file {settings.password_file}: {exc.strerror}"
            ) from None
    if not value:
        raise ProviderError(
            "imap: no password for the master user: set MAILSTATE_IMAP_PASSWORD"
            + (f" or {settings.password_env}"
               if settings.password_env and settings.password_env != "MAILSTATE_IMAP_PASSWORD" else "")
            + " (or password_file in [providers.imap])"
        )

    remember_secret(value)
    return value


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool  # implicit TLS (imaps)
    starttls: bool


def parse_url(url: str, allow_plain: bool = False) -> Endpoint:
    """``imaps://host[:993]`` → implicit TLS; ``imap://host[:143]`` → STARTTLS, or plain with allow_plain."""
    parts = urlsplit(url)
    if parts.scheme not in ("imap", "imaps") or not parts.hostname:
        raise ProviderError(f"imap: url {url!r} is not imaps://host[:port] or imap://host[:port]")
    if parts.scheme == "imaps":
        return Endpoint(parts.hostname, parts.port or 993, True, False)
    return Endpoint(parts.hostname, parts.port or 143, False, not allow_plain)


@dataclass
class MailboxInfo:
    """A mailbox the provider looks after: its reference, its Dovecot user and its unit."""
    ref: str
    login: str
    unit: str | None


def mailboxes_of(state: DesiredState) -> dict[str, MailboxInfo]:
    """Every mailbox of the desired state by Dovecot user: people, and unit mailboxes of undissolved units."""
    out: dict[str, MailboxInfo] = {}
    for pid, person in state.people.items():
        out[pid] = MailboxInfo(pid, pid, person.unit)
    for uid in state.units:
        out[uid] = MailboxInfo(f"unit:{uid}", uid, uid)
    return out


def _unknown_mailbox(login: str) -> MailboxInfo:
    """A mailbox the TOML does not know (found live): taken as a person's."""
    return MailboxInfo(login, login, None)


class BulkSource(Protocol):
    """One-pass discovery on the mail host (implemented by providers.ssh.SshProvider)."""
    def shared_owners(self) -> set[str]: ...

    def mailbox_views(
        self,
        users: Sequence[str],
        entry: str | None = None,
        expected: Mapping[str, Iterable[str]] | None = None,
    ) -> tuple[dict[str, MailboxView], set[str]]: ...

    def imap_metadata(self) -> bool: ...

    def other_prefixes(self) -> list[str]: ...

    def quotas(self) -> dict[str, int | None]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------------
# A bounded pool of connections, one per owner

C = TypeVar("C")
T = TypeVar("T")


class ConnectionPool(Generic[C]):
    """At most ``size`` open connections, each logged in on behalf of one owner, shared by threads.

    ``acquire(login)`` hands out the idle connection of ``login`` if there is one; otherwise it opens a new
    one, first closing the least recently used idle connection when ``size`` are open, or waiting for a
    connection to come back when all ``size`` are in use. ``release`` puts it back as idle (or closes it:
    broken, or a second one of the same login). So however many mailboxes a read or an apply touches, the
    server never sees more than ``size`` connections from it. A thread must not hold two connections at
    once (with ``size`` 1 it would wait for itself).
    """
    def __init__(self, size: int, connect: Callable[[str], C], close: Callable[[C], None]) -> None:
        if size < 1:
            raise ValueError("a connection pool needs room for one connection")
        self.size = size
        self._connect, self._close = connect, close
        self._idle: OrderedDict[str, C] = OrderedDict()
        self._busy = 0
        self._cond = threading.Condition()
        self.opened = 0
        """Connections opened so far (logins)."""
        self.peak = 0
        """The most connections open at one time."""
    @property
    def open(self) -> int:
        """Connections open now (idle and in use)."""
        with self._cond:
            return len(self._idle) + self._busy

    def acquire(self, login: str) -> C:
        evict: C | None = None
        with self._cond:
            while True:
                client = self._idle.pop(login, None)
                if client is not None:
                    self._busy += 1
                    return client
                if len(self._idle) + self._busy < self.size:
                    break
                if self._idle:
                    _, evict = self._idle.popitem(last=False)
                    break
                self._cond.wait()
            self._busy += 1  # the slot is taken before connecting: the bound holds while logging in
            self.peak = max(self.peak, len(self._idle) + self._busy)
        try:
            if evict is not None:
                self._close(evict)
            client = self._connect(login)
        except BaseException:
            with self._cond:
                self._busy -= 1
                self._cond.notify()
            raise
        with self._cond:
            self.opened += 1
        return client

    def release(self, login: str, client: C, broken: bool = False) -> None:
        with self._cond:
            self._busy -= 1
            keep = not broken and login not in self._idle
            if keep:
                self._idle[login] = client
            self._cond.notify()
        if not keep:
            self._close(client)

    @contextmanager
    def connection(self, login: str) -> Iterator[C]:
        """``acquire`` … ``release``; an exception that escapes marks the connection broken (closed)."""
        client = self.acquire(login)
        try:
            yield client
        except BaseException:
            self.release(login, client, broken=True)
            raise
        self.release(login, client)

    def close(self) -> None:
        """Close every idle connection (those in use are closed when they come back broken, or here later)."""
        with self._cond:
            idle, self._idle = list(self._idle.values()), OrderedDict()
        for client in idle:
            self._close(client)


DROPPED: tuple[type[BaseException], ...] = (IMAPClientAbortError, OSError)
"""What a connection the server dropped raises (reset, broken pipe, EOF, timeout, TLS failure): the
connection is replaced and the same, idempotent, work done once more."""

# --------------------------------------------------------------------------------------------------
# The provider


@dataclass
class _OwnerRead:
    records: list[Record] = field(default_factory=list)
    unlisted: list[Record] = field(default_factory=list)
    quota: int | None = None
    folders: list[str] = field(default_factory=list)


class ImapProvider:
    """Shared folders and ACLs over IMAP (RFC 4314, 5464, 9208) with a Dovecot master user."""
    name: ClassVar[str] = "imap"
    kinds: ClassVar[frozenset[str]] = frozenset({"shared_folder", "acl"})
    settings_model: ClassVar[type[ImapSettings]] = ImapSettings
    peers: ClassVar[tuple[str, ...]] = ("ssh",)
    """Read through doveadm (the ``ssh`` provider) when it is configured: bulk discovery and quotas."""
    plan_options: ClassVar[dict[str, Any]] = {"quota_facts": False}
    """A plan (and apply's stale check) uses no quota fact (quota is the directory's mailstateQuota), and
    their doveadm pass is 2/3 of a bulk read."""
    def __init__(
        self,
        settings: ImapSettings,
        password: str,
        mailboxes: Mapping[str, MailboxInfo] | None = None,
        listed_folders: Iterable[str] | Mapping[str, str | None] = (),
        workers: int = 4,
        bulk: BulkSource | None = None,
        desired_owners: Iterable[str] = (),
        quota_facts: bool = True,
        own_bulk: bool = True,
    ) -> None:
        self.settings = settings
        self._password = password
        self.endpoint = parse_url(settings.url, settings.allow_plain)
        self.mailboxes: dict[str, MailboxInfo] = dict(mailboxes or {})
        self.listed_folders: dict[str, str | None] = (
            dict(listed_folders) if isinstance(listed_folders, Mapping) else dict.fromkeys(listed_folders)
        )
        """shared_folder keys the TOML lists; other shared folders read live are reported as unlisted."""
        self.workers = max(1, workers)
        self.bulk = bulk
        self.own_bulk = own_bulk
        """Whether ``close`` closes ``bulk`` too (not when the registry shares the doveadm provider)."""
        """doveadm over SSH, when configured: which mailboxes have ACL entries at all (the ACL shared dict)
        and every quota limit, each in one pass; then only those mailboxes are read over IMAP."""
        self.quota_facts = quota_facts
        """Read every quota limit as facts["quota"] (with bulk: one doveadm quota get -A, about 2/3 of a
        no-op read at 2,000 mailboxes); False leaves facts["quota"] empty."""
        self.desired_owners = frozenset(desired_owners)
        """Dovecot users the TOML gives rights on or folders in: always read."""
        self.pool: ConnectionPool[IMAPClient] = ConnectionPool(
            settings.max_connections, self.connect, _logout
        )
        """Every master-user connection of this provider, reads and apply alike: at most
        ``settings.max_connections`` at once, the least recently used closed first."""
        self._other_prefixes: tuple[str, ...] | None = None
        self.metadata_supported: bool | None = None
        self.timings: dict[str, float] = {}
        self._live_source: Callable[[], set[str]] | None = None
        self.users = MailboxUsers(settings.user_key or "login", "imap")
        """login ↔ Dovecot user (the address on an iRedMail server): logins and ACL identifiers name the
        user, records the login (``TakesMailboxUsers``)."""

    def __repr__(self) -> str:  # never the password
        return f"ImapProvider({self.settings.url!r}, admin_user={self.settings.admin_user!r})"

    @classmethod
    def from_state(cls, state: DesiredState, **kwargs: Any) -> ImapProvider:
        """Settings from [providers.imap] and MAILSTATE_IMAP_*; with an SSH host configured ([providers.ssh]
        or MAILSTATE_SSH_HOST) the bulk discovery goes through doveadm (``bulk=False`` turns it off)."""
        settings = settings_from_env(state.providers.imap)
        settings = settings.model_copy(update={"user_key": layout_user_key(state, settings.user_key)})
        try:
            parse_url(settings.url, settings.allow_plain)
        except ProviderError as exc:
            if os.environ.get("MAILSTATE_IMAP_URL"):
                where = "MAILSTATE_IMAP_URL"
            elif state.providers.imap is not None:
                src = state.providers.imap.source
                where = f"{src.file}:{src.line_of('url')}: providers.imap.url"
            else:
                where = "providers.imap.url (default)"
            raise ProviderError(f"{where}: {exc}") from None
        listed = {folder_key(sf.mailbox, sf.path): sf.purpose or None for sf in state.shared_folders}
        # the bulk discovery goes through doveadm when it is configured: the registry hands over the
        # doveadm provider it opened (shared: one SSH session) or one opened for this provider alone
        if "peers" not in kwargs and kwargs.get("bulk") is not False and "bulk" not in kwargs:
            # made directly, not by the registry: the registry opens the peers for this provider alone
            kwargs["peers"], kwargs["own_peers"] = open_peers(cls, state)
        shared, owned = dict(kwargs.pop("peers", None) or {}), dict(kwargs.pop("own_peers", None) or {})
        if kwargs.get("bulk") is False:
            kwargs["bulk"] = None
            for peer in owned.values():
                peer.close()
        elif "bulk" not in kwargs and (shared or owned):
            kwargs["bulk"] = (shared or owned)["ssh"]
            kwargs["own_bulk"] = bool(owned)
        return cls(
            settings,
            password_of(settings),
            mailboxes_of(state),
            listed,
            desired_owners=desired_owners_of(state),
            **kwargs,
        )

    # -- connections ---------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(
            cafile=os.path.expanduser(self.settings.ca_file) if self.settings.ca_file else None
        )
        return ctx

    def connect(self, login: str, password: str | None = None, master: bool = True) -> IMAPClient:
        """A new logged-in connection: as ``login*admin_user`` (master) or as ``login`` with its password.
        A connection the server drops or resets while it is being made is tried once more."""
        ep = self.endpoint
        user = self.users.user(login)
        user = f"{user}*{self.settings.admin_user}" if master else user
        for attempt in (1, 2):
            client: IMAPClient | None = None
            try:
                client = IMAPClient(
                    ep.host,
                    port=ep.port,
                    ssl=ep.tls,
                    ssl_context=self._ssl_context() if ep.tls else None,
                    timeout=self.settings.timeout,
                )
                if ep.starttls:
                    client.starttls(self._ssl_context())
                client.login(user, self._password if password is None else password)
                return client
            except (IMAPClientError, OSError) as exc:
                if client is not None:
                    _logout(client)
                dropped = isinstance(exc, DROPPED) and not isinstance(exc, ssl.SSLCertVerificationError)
                if attempt == 1 and dropped:
                    continue
                raise ProviderError(
                    f"imap: cannot log in to {self.settings.url} as {user}: {_clean(exc)}"
                ) from None
        raise AssertionError("unreachable")

    def _on(self, login: str, work: Callable[[IMAPClient], T], what: str) -> T:
        """``work`` on the pooled connection of ``login``. A connection found dropped (the server reset or
        closed it, also while it sat idle in the pool) is replaced and ``work`` — idempotent — done once
        more; dropped again, it is an error. Any other IMAP failure closes the connection and names
        ``what`` was being done."""
        for attempt in (1, 2):
            client = self.pool.acquire(login)
            try:
                result = work(client)
            except DROPPED as exc:
                self.pool.release(login, client, broken=True)
                if attempt == 1:
                    continue
                raise ProviderError(
                    f"imap: {what}: the server dropped the connection twice in a row ({_clean(exc)}); "
                    "is it refusing connections? (a default Dovecot accepts 100 at once)"
                ) from None
            except IMAPClientError as exc:
                self.pool.release(login, client, broken=True)
                raise ProviderError(f"imap: {what} failed: {_clean(exc)}") from None
            except ProviderError:
                self.pool.release(login, client)  # refused by the server or by mailstate: still usable
                raise
            except BaseException:
                self.pool.release(login, client, broken=True)
                raise
            self.pool.release(login, client)
            return result
        raise AssertionError("unreachable")

    def take_mailbox_users(self, users: Callable[[], Mapping[str, str]]) -> None:
        self.users.take(users)

    def add_mailbox_users(self, users: Mapping[str, str]) -> None:
        self.users.add(users)

    def await_live_mailboxes(self, logins: Callable[[], set[str]]) -> None:
        """``AwaitsLiveMailboxes``: ``read`` asks for the directory's logins after its doveadm pass."""
        self._live_source = logins

    def set_live_mailboxes(self, logins: set[str]) -> None:
        """Read only mailboxes the directory holds (``TakesLiveMailboxes``): a master-user login to a user
        that does not exist fails; such a mailbox has no folders or rights yet."""
        self.mailboxes = {k: v for k, v in self.mailboxes.items() if k in logins}
        self.desired_owners = frozenset(o for o in self.desired_owners if o in logins)

    def _take_live_mailboxes(self) -> None:
        if self._live_source is not None:
            t0 = time.perf_counter()
            source, self._live_source = self._live_source, None
            self.set_live_mailboxes(source())
            self.timings["waited_for_directory"] = time.perf_counter() - t0

    def begin_round(self) -> None:
        """``ReadsInRounds``: passed on to a doveadm source of its own (a shared one is told by the plan)."""
        if isinstance(self.bulk, ReadsInRounds) and self.own_bulk:
            self.bulk.begin_round()

    def end_round(self) -> None:
        if isinstance(self.bulk, ReadsInRounds) and self.own_bulk:
            self.bulk.end_round()

    def close(self) -> None:
        if self.bulk is not None and self.own_bulk:
            self.bulk.close()
        self.pool.close()

    # -- read ----------------------------------------------------------------------------------

    def _other_namespaces(self, client: IMAPClient) -> tuple[str, ...]:
        if self._other_prefixes is None:
            ns = client.namespace()
            prefixes = [
                _text(p[0]) for group in (ns.other or (), ns.shared or ()) for p in group if p and p[0]
            ]
            self._other_prefixes = tuple(prefixes)
        return self._other_prefixes

    def read_owner(
        self, info: MailboxInfo, client: IMAPClient | None = None, quota: bool = True
    ) -> _OwnerRead:
        """One mailbox: LIST its own folders, GETACL each, GETMETADATA of the shared ones, GETQUOTAROOT
        (on the pooled connection of its owner unless ``client`` is given)."""
        if client is None:
            return self._on(
                info.login, lambda c: self._read_owner(info, c, quota), f"reading the mailbox of {info.login}"
            )
        try:
            return self._read_owner(info, client, quota)
        except (IMAPClientError, OSError) as exc:
            raise ProviderError(f"imap: reading the mailbox of {info.login} failed: {_clean(exc)}") from None

    def _read_owner(self, info: MailboxInfo, client: IMAPClient, quota: bool) -> _OwnerRead:
        folders = self._own_folders(client)
        self._check_listed_paths(info, self._other_namespaces(client))
        acls = {folder: client.getacl(folder) for folder in folders}
        metadata = self._has_metadata(client)
        out = self._owner_read(info, folders, acls, lambda f: self._get_purpose(client, f), metadata)
        if quota and client.has_capability("QUOTA"):
            _root, quotas = client.get_quota_root(INBOX)
            out.quota = parse_quota_limit(quotas)
        return out

    def _owner_read(
        self,
        info: MailboxInfo,
        folders: list[str],
        acls: Mapping[str, Iterable[tuple[Any, Any]]],
        purpose_of: Callable[[str], str | None],
        metadata: bool,
    ) -> _OwnerRead:
        """Records of one mailbox from its folders, their GETACL answers and their purposes (read over IMAP
        or through doveadm: ``MailboxView``)."""
        out = _OwnerRead()
        out.folders = folders
        by_login = {
            folder: [(self.users.login(_text(who)), what) for who, what in acls[folder]] for folder in folders
        }
        listed = {f for f in folders if folder_key(info.ref, f) in self.listed_folders}
        records, shared = mailbox_acl_records(info.ref, info.login, info.unit, by_login, listed)
        out.records.extend(records)
        for folder in folders:
            if folder.upper() == INBOX:
                continue
            purpose = purpose_of(folder) if metadata else None
            if not metadata:
                # not stored (no METADATA on this server): reported by facts["metadata"], never diffed
                purpose = self.listed_folders.get(folder_key(info.ref, folder))
            rec = Record(
                "shared_folder", folder_key(info.ref, folder), {"purpose": purpose}, "imap", info.unit
            )
            if folder in listed:
                out.records.append(rec)
            elif folder in shared or purpose is not None:
                out.unlisted.append(rec)
        return out

    def _check_listed_paths(self, info: MailboxInfo, prefixes: Iterable[str]) -> None:
        """A listed shared folder must lie in its owner's own namespace: a path under the server's shared
        (or other users') namespace prefix, e.g. ``shared/vp/INBOX``, names another mailbox's folder — CREATE
        and SETACL would act on that mailbox, and the plan would never converge."""
        prefixes = tuple(prefixes)
        for key in self.listed_folders:
            ref, path = parse_folder_key(key)
            if ref != info.ref:
                continue
            hit = next((p for p in prefixes if (path + "/").startswith(p.rstrip("/") + "/")), None)
            if hit is not None:
                raise ProviderError(
                    f"imap: shared folder {path!r} of {ref} lies in the server's namespace {hit!r} (another "
                    "mailbox's folders): name a folder of the mailbox itself, or list the folder under the "
                    "mailbox that holds it"
                )

    def _check_login(self, login: str) -> None:
        """One master-user login as ``login`` (pooled: apply reuses it), or ProviderError."""
        self._on(login, lambda client: client.capabilities(), f"logging in as {login}")

    def _read_through_bulk(
        self, infos: list[MailboxInfo], bulk: BulkSource
    ) -> tuple[dict[str, tuple[MailboxInfo, _OwnerRead]], list[MailboxInfo]]:
        """The mailboxes ``infos`` read through doveadm (``MailboxView``: no IMAP login, any number of
        mailboxes in a few processes): {login: (info, read)}, and those doveadm could not answer for, to be
        read over IMAP."""
        done: dict[str, tuple[MailboxInfo, _OwnerRead]] = {}
        if not infos:
            return done, []
        if self.metadata_supported is None:
            self.metadata_supported = bulk.imap_metadata()
        metadata = bool(self.metadata_supported)
        by_user = {self.users.user(i.login): i for i in infos}
        folders: dict[str, list[str]] = {}
        for key in self.listed_folders:  # the folders the TOML lists: asked at once, not after the LIST
            ref, path = parse_folder_key(key)
            folders.setdefault(ref, []).append(path)
        expected = {user: folders.get(info.ref, []) for user, info in by_user.items()}
        views, failed = bulk.mailbox_views(sorted(by_user), METADATA_ENTRY if metadata else None, expected)
        prefixes = bulk.other_prefixes()
        rest: list[MailboxInfo] = []
        for user, info in sorted(by_user.items()):
            view = views.get(user)
            if view is None or user in failed:
                rest.append(info)
                continue
            self._check_listed_paths(info, prefixes)
            read = self._owner_read(info, view.folders, view.acls, view.purposes.get, metadata)
            done[info.login] = (info, read)
        return done, rest

    def read(self, scope: Iterable[str] | None = None) -> Snapshot:
        """Every shared folder and ACL of the mailboxes in scope (unit ids; None = all); facts["quota"] =
        {user: limit bytes or None}.

        Without ``bulk``: every mailbox, one master-user connection each, ``workers`` at a time (LIST, GETACL
        per folder, GETMETADATA, GETQUOTAROOT). With ``bulk`` (doveadm over SSH): the ACL shared dict names
        every mailbox where someone other than the owner has a right; only those and the ones the TOML names
        are read over IMAP, and the quotas come from one ``doveadm quota get -A``.
        """
        units = set(scope) if scope is not None else None
        t0 = time.perf_counter()
        quota: dict[str, int | None] = {}
        with_quota = self.bulk is None and self.quota_facts

        def in_scope(infos: Iterable[MailboxInfo]) -> list[MailboxInfo]:
            return [m for m in infos if units is None or m.unit in units]

        read: dict[str, tuple[MailboxInfo, _OwnerRead]] = {}
        # as many threads as the pool has connections, at most: a thread always finds or makes one
        with ThreadPoolExecutor(max_workers=min(self.workers, self.pool.size)) as threads:

            def read_all(infos: list[MailboxInfo]) -> None:
                results = threads.map(lambda i: self.read_owner(i, quota=with_quota), infos)
                for info, res in zip(infos, results, strict=True):
                    read[info.login] = (info, res)

            def read_some(infos: list[MailboxInfo], bulk: BulkSource) -> None:
                # through doveadm (no login); over IMAP only what doveadm could not answer for
                done, rest = self._read_through_bulk(infos, bulk)
                read.update(done)
                self.timings["mailboxes_bulk"] = self.timings.get("mailboxes_bulk", 0) + len(done)
                read_all(rest)

            if self.bulk is not None:
                # through doveadm, no IMAP login: the mailboxes the TOML names at once — before the
                # directory's logins are known (one it does not hold is dropped then: doveadm's userdb did
                # not know it either) — beside the pass that finds the owners with rights for others; then
                # the others that pass found. On the address layout a name needs the directory first.
                bulk = self.bulk
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap-bulk") as side:
                    owners_read = side.submit(bulk.shared_owners)
                    quotas_read = side.submit(bulk.quotas) if self.quota_facts else None
                    if self.users.by_address:
                        self._take_live_mailboxes()
                    named = in_scope(
                        self.mailboxes[u] for u in sorted(self.desired_owners) if u in self.mailboxes
                    )
                    done, rest = self._read_through_bulk(named, bulk)
                    self._take_live_mailboxes()
                    read.update({login: r for login, r in done.items() if login in self.mailboxes})
                    self.timings["mailboxes_bulk"] = len(read)
                    # one master-user login all the same: a plan that cannot log in fails here, not at apply
                    first = min(self.desired_owners & set(self.mailboxes), default=None) or min(
                        self.mailboxes, default=None)
                    login = threads.submit(self._check_login, first) if first else None
                    read_all([info for info in rest if info.login in self.mailboxes])
                    if login is not None:
                        login.result()
                    owners = {self.users.login(u) for u in owners_read.result()}
                    self.timings["bulk_owners"] = time.perf_counter() - t0
                    if quotas_read is not None:
                        quota.update({self.users.login(u): q for u, q in quotas_read.result().items()})
                    self.timings["bulk"] = time.perf_counter() - t0
                logins = (set(self.desired_owners) | owners) - set(read)
                others = (self.mailboxes.get(u) or _unknown_mailbox(u) for u in sorted(logins))
                read_some(in_scope(others), bulk)
            else:
                self._take_live_mailboxes()
                read_all(in_scope(self.mailboxes.values()))
        snap = Snapshot(self.name)
        infos = [read[login][0] for login in sorted(read)]
        results = [read[login][1] for login in sorted(read)]
        for info, res in zip(infos, results, strict=True):
            for rec in res.records:
                snap.add(rec)
            snap.unmanaged.extend(res.unlisted)
            if with_quota:
                quota[info.login] = res.quota
        self.timings["read"] = time.perf_counter() - t0
        self.timings["mailboxes_read"] = len(infos)
        self.timings["folders_read"] = sum(len(r.folders) for r in results)
        if units is not None:
            quota = {
                u: q for u, q in quota.items() if (m := self.mailboxes.get(u)) is None or m.unit in units
            }
        snap.facts["quota"] = quota
        snap.facts["metadata"] = bool(self.metadata_supported)
        return snap

    def _get_purpose(self, client: IMAPClient, folder: str) -> str | None:
        if not self._has_metadata(client):
            return None
        try:
            data = client._raw_command_untagged(
                b"GETMETADATA",
                [_folder_arg(client, folder), METADATA_ENTRY.encode()],
                uid=False,
                response_name="METADATA",
            )
        except IMAPClientError as exc:
            if isinstance(exc, DROPPED):
                raise
            return None
        return parse_metadata_value(data)

    def _has_metadata(self, client: IMAPClient) -> bool:
        if self.metadata_supported is None:
            self.metadata_supported = bool(client.has_capability("METADATA"))
        return self.metadata_supported

    def _set_purpose(self, client: IMAPClient, folder: str, purpose: str | None) -> None:
        """SETMETADATA folder (/shared/comment value|NIL); the value goes as a LITERAL+ (it is UTF-8 text)."""
        if not self._has_metadata(client):
            return
        imap = client._imap
        tag = imap._new_tag()
        head = tag + b" SETMETADATA " + _folder_arg(client, folder) + b" (" + METADATA_ENTRY.encode() + b" "
        if purpose is None:
            imap.send(head + b"NIL)\r\n")
        else:
            value = unicodedata.normalize("NFC", purpose).encode("utf-8")
            imap.send(head + b"{" + str(len(value)).encode() + b"+}\r\n" + value + b")\r\n")
        typ, data = imap._command_complete("SETMETADATA", tag)
        if typ != "OK":
            raise ProviderError(f"imap: SETMETADATA on {folder!r} failed: {_text(data[0] if data else '')}")

    # -- apply ---------------------------------------------------------------------------------

    def apply(self, change: Change) -> None:
        """Carry out one change idempotently (CREATE, SETMETADATA, SETACL, DELETEACL)."""
        if change.kind == "shared_folder":
            self._apply_folder(change)
        elif change.kind == "acl":
            self._apply_acl(change)
        else:
            raise ProviderError(f"imap: cannot apply {change.action.label} of a {change.kind}")

    def _apply_folder(self, change: Change) -> None:
        ref, folder = parse_folder_key(change.key)
        login = login_of(ref)
        if change.action in (Action.DELETE, Action.REVOKE):
            # a shared folder holds mail; mailstate never deletes it
            raise ProviderError(
                _("imap: refusing to delete the folder {folder} of {owner}: mail is never destroyed; it is "
                  "reported as unlisted — move or remove it by hand after checking its content").format(
                    folder=repr(folder), owner=ref)
            )
        after = change.after or {}

        def work(client: IMAPClient) -> None:
            live = self._live_name(client, folder)
            if live is None:
                try:
                    client.create_folder(folder)
                except IMAPClientError as exc:
                    if isinstance(exc, DROPPED):
                        raise
                    if not client.folder_exists(folder):
                        # the server answered NO/BAD (the connection works): only this folder is refused
                        what = f"imap: cannot create {folder!r} in {ref}: {_clean(exc)}"
                        raise _refused(exc)(what) from None
                live = folder
            if "purpose" in after:
                self._set_purpose(client, live, after.get("purpose"))

        self._on(login, work, f"{change.action.label} of the folder {folder!r} in {ref}")

    def _apply_acl(self, change: Change) -> None:
        key = parse_acl_key(change.key)
        revoke = change.action in (Action.DELETE, Action.REVOKE)
        rights = "" if revoke else normalise_rights(str((change.after or {}).get("rights", "")))
        if not revoke and not rights:
            raise ProviderError(f"imap: {change.key}: no rights to set")

        def work(client: IMAPClient) -> None:
            folders = [key.folder]
            if key.folder.upper() != INBOX:
                # the folder by its own name first; its folder list (LIST) is read only when the server
                # does not know that name: a client may have written it in another Unicode form
                if self._set_as_named(client, key, rights):
                    return
                folders = [self._live_name(client, key.folder) or key.folder]
            else:
                # mailbox-wide: INBOX and every folder but the listed shared folders (they have their own)
                folders += [
                    f
                    for f in self._own_folders(client)
                    if f.upper() != INBOX and folder_key(key.ref, f) not in self.listed_folders
                ]
            for folder in folders:
                self._set_one(client, key, folder, rights)

        self._on(key.login, work, f"{change.action.label} of {change.key}")

    def connection_group(self, change: Change) -> str | None:
        """The mailbox whose connection ``change`` goes over (its owner's login); apply brings the changes of
        one mailbox together so that each owner is logged in once (reconciler.engine)."""
        try:
            if change.kind == "acl":
                return parse_acl_key(change.key).login
            if change.kind == "shared_folder":
                return login_of(parse_folder_key(change.key)[0])
        except ValueError:
            return None
        return None

    def _own_folders(self, client: IMAPClient) -> list[str]:
        """The selectable folders of the logged-in mailbox, named exactly as the server names them: a
        client may have created a name in another Unicode form (NFD), and a command with the NFC form of
        that name is refused as a mailbox that does not exist. Keys are made NFC (``folder_key``)."""
        others = self._other_namespaces(client)
        out = []
        for flags, _delim, name in client.list_folders():
            folder = _text(name)
            if {_text(f).lower() for f in flags} & {"\\noselect", "\\nonexistent"}:
                continue
            if not any(folder.startswith(p) for p in others):
                out.append(folder)
        return out

    def _live_name(self, client: IMAPClient, folder: str) -> str | None:
        """The server's name of ``folder``: itself if it exists so, else the folder whose NFC form is the same
        (made by a client that writes NFD), else None."""
        folders = self._own_folders(client)
        if folder in folders:
            return folder
        want = unicodedata.normalize("NFC", folder)
        return next((f for f in folders if unicodedata.normalize("NFC", f) == want), None)

    def _set_as_named(self, client: IMAPClient, key: AclKey, rights: str) -> bool:
        """SETACL / DELETEACL on ``key.folder`` as named; False when the server answered NO or BAD (the
        caller looks the folder up and sets it as ``_set_one`` does, with its errors)."""
        ident = self.users.identifier(key.identifier)
        try:
            if rights:
                client.setacl(key.folder, ident, rights)
            else:
                client._command_and_check("deleteacl", client._normalise_folder(key.folder), ident)
        except IMAPClientError as exc:
            if isinstance(exc, DROPPED):
                raise
            return False
        return True

    def _set_one(self, client: IMAPClient, key: AclKey, folder: str, rights: str) -> None:
        """SETACL (exact rights) or, with no rights, DELETEACL (a missing entry is fine: idempotent)."""
        ident = self.users.identifier(key.identifier)
        try:
            if rights:
                client.setacl(folder, ident, rights)
            else:
                client._command_and_check("deleteacl", client._normalise_folder(folder), ident)
        except IMAPClientError as exc:
            if isinstance(exc, DROPPED):
                raise
            if not rights and not client.folder_exists(folder):
                return
            verb = f"SETACL {key.identifier} {rights}" if rights else f"DELETEACL {key.identifier}"
            raise _refused(exc)(f"imap: {verb} on {folder!r} of {key.ref}: {_clean(exc)}") from None


def _folder_arg(client: IMAPClient, folder: str) -> bytes:
    arg = client._normalise_folder(folder)
    return arg if isinstance(arg, bytes) else str(arg).encode("ascii")


def _refused(exc: BaseException) -> type[ProviderError]:
    """ChangeRefused when the server answered the command with NO/BAD (the connection is fine), else
    ProviderError (the connection broke: the apply stops)."""
    return ProviderError if isinstance(exc, (IMAPClientAbortError, OSError)) else ChangeRefused


def _logout(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - closing a broken connection must not hide the real error
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001
            pass


def _clean(exc: BaseException) -> str:
    """An exception's message for users: one line, without imaplib's byte-string noise."""
    text = str(exc).replace("\r", " ").replace("\n", " ")
    return text.strip() or type(exc).__name__
