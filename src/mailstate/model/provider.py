"""The provider interface (docs/architecture.md): declare kinds and settings, read in bulk, apply one change.

A provider never diffs, orders or applies policy: that is central (reconciler). It only
- ``read(scope)``: the live records of the kinds it owns, in bulk (one paged search / one pass), limited
  to ``scope`` (unit ids; None = everything). A read that fails raises ProviderError — never "absent".
- ``apply(change)``: carry out one change idempotently (re-running a done change is a no-op).
- ``from_state(state, **options)``: an instance configured from the desired state's ``[providers.<name>]``
  (and its environment variables); ``state`` is anything shaped like ``DesiredState``.

What some providers offer beyond that is a capability of its own (a Protocol checked with ``isinstance``,
never a ``getattr`` guess): ``HoldsApplyLock``, ``HasNotices``, ``TakesLiveMailboxes``,
``AwaitsLiveMailboxes``, ``GroupsConnections``. Built-in providers are found exactly as a third party's
are: entry points in the group ``mailstate.providers`` (providers/registry.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from mailstate.model.change import Change
from mailstate.model.records import Record, login_of


@dataclass
class Snapshot:
    """What a provider read: its records, and digests of the raw objects (for stale-plan detection)."""

    provider: str
    records: dict[tuple[str, str], Record] = field(default_factory=dict)
    unmanaged: list[Record] = field(default_factory=list)
    """Live objects in the provider's subtrees that mailstate does not recognise as its own."""
    facts: dict[str, Any] = field(default_factory=dict)
    """Read-only facts for policies (e.g. last login per mailbox), never diffed."""

    def add(self, record: Record) -> None:
        self.records[record.ref] = record


class DesiredState(Protocol):
    """What a provider may read of the desired state (desired_state.schema.State is one)."""

    @property
    def root(self) -> Path | None: ...
    @property
    def domain(self) -> str: ...
    @property
    def base_dn(self) -> str: ...
    @property
    def providers(self) -> Any: ...
    @property
    def password(self) -> Any: ...
    @property
    def people(self) -> Mapping[str, Any]: ...
    @property
    def units(self) -> Mapping[str, Any]: ...
    @property
    def groups(self) -> Mapping[str, Any]: ...
    @property
    def shared_folders(self) -> Sequence[Any]: ...
    @property
    def access_grants(self) -> Sequence[Any]: ...


def desired_owners_of(state: DesiredState) -> set[str]:
    """Dovecot users whose mailbox the TOML gives rights on or folders in: units (delegation), the
    mailboxes of shared folders and of access grants (expired ones too: their rights must be revoked)."""
    refs = [f"unit:{u}" for u in state.units]
    refs += [sf.mailbox for sf in state.shared_folders] + [g.mailbox for g in state.access_grants]
    return {login_of(r) for r in refs if not r.startswith("group:")}


@dataclass
class MailboxView:
    """One mailbox's own folders as the mail host reports them without an IMAP login (doveadm): what the
    IMAP provider would learn from LIST, GETACL and GETMETADATA on a master-user connection."""

    folders: list[str] = field(default_factory=list)
    """The selectable folders of its own namespace, named exactly as the server names them."""
    acls: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """{folder: GETACL's answer, as (identifier, letters)} for each of ``folders``."""
    purposes: dict[str, str | None] = field(default_factory=dict)
    """{folder: its /shared/comment or None} for each folder but INBOX (when asked for)."""


@runtime_checkable
class Provider(Protocol):
    name: ClassVar[str]
    kinds: ClassVar[frozenset[str]]
    """The kinds whose changes this provider carries out: record kinds, and kinds of work
    (``model.change.WORK_KINDS``). A plan routes each change to the one provider in use declaring its
    ``Change.routed_kind`` (registry.routes)."""
    settings_model: ClassVar[type[BaseModel]]
    """The model of its ``[providers.<name>]`` table."""

    @classmethod
    def from_state(cls, state: DesiredState, **options: Any) -> Provider: ...

    def read(self, scope: Iterable[str] | None = None) -> Snapshot: ...

    def apply(self, change: Change) -> None: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------------
# Optional capabilities


@runtime_checkable
class HoldsApplyLock(Protocol):
    """A provider holding the organisation-wide apply lock (the LDAP lock entry)."""

    def apply_lock(
        self, holder: str, *, break_stale: bool = ..., stale_after_hours: float = ...
    ) -> AbstractContextManager[Any]: ...


@runtime_checkable
class HasNotices(Protocol):
    """A provider with things the operator should know after an apply (never a secret)."""

    notices: list[str]


@runtime_checkable
class TakesLiveMailboxes(Protocol):
    """A mail provider that can only read mailboxes the directory holds: told their logins before it reads
    (a master-user login to a user that does not exist fails; the plan creates it after the directory)."""

    def set_live_mailboxes(self, logins: set[str]) -> None: ...


@runtime_checkable
class AwaitsLiveMailboxes(Protocol):
    """A ``TakesLiveMailboxes`` provider whose read starts with work that needs no login (IMAP's doveadm
    bulk pass): it is handed a function returning the logins instead, called when it needs them (it waits
    for the directory's read, and raises if that read failed), so both reads overlap."""

    def await_live_mailboxes(self, logins: Callable[[], set[str]]) -> None: ...


@runtime_checkable
class TakesMailboxUsers(Protocol):
    """A mail provider that addresses each mailbox by what the server knows it as (its address on an
    iRedMail server; model/mailbox_users.py): handed a function returning the directory's {login: address}
    (called when first needed), and the mailboxes an apply creates."""

    def take_mailbox_users(self, users: Callable[[], Mapping[str, str]]) -> None: ...

    def add_mailbox_users(self, users: Mapping[str, str]) -> None: ...


@runtime_checkable
class Prefetches(Protocol):
    """A provider part of whose read needs only its settings, not the people: opened with the settings
    (``from_settings``) and started (``prefetch``) while the TOML still loads, then handed the whole state
    (``take_state``) before its read."""

    def prefetch(self) -> None: ...

    def take_state(self, state: DesiredState) -> None: ...


@runtime_checkable
class ReadsInRounds(Protocol):
    """A provider whose reads share work with the other providers' reads of one plan (doveadm's count of a
    mailbox's folders serves both the unit mailboxes' use and IMAP's views of the same mailboxes): told
    when a round of reads (``read_all``) begins and ends; what it keeps between them it drops at the end,
    so a read after an apply never sees what was read before it."""

    def begin_round(self) -> None: ...

    def end_round(self) -> None: ...


@runtime_checkable
class TakesUnitMailboxes(Protocol):
    """A mail provider that tells whether a unit mailbox has been used (worked in by anyone, delegates
    included): handed a function returning the directory's unit mailboxes (their logins), called during its
    read (after what it can read without them)."""

    def await_unit_mailboxes(self, logins: Callable[[], set[str]]) -> None: ...


@runtime_checkable
class GroupsConnections(Protocol):
    """A provider that makes changes over connections (the IMAP mailbox a change is made in): apply keeps
    one connection's changes together when the order allows."""

    def connection_group(self, change: Change) -> str | None: ...


@runtime_checkable
class ReadsThrough(Protocol):
    """A provider that reads through another one when that one is configured (IMAP's bulk discovery
    through doveadm): the registry opens the other once and hands it over (``peers``)."""

    peers: ClassVar[tuple[str, ...]]
