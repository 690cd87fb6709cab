"""The provider interface (DESIGN §4, STYLE): declare kinds and settings, read in bulk, apply one change.

A provider never diffs, orders or applies policy: that is central (reconciler). It only
- ``read(scope)``: the live records of the kinds it owns, in bulk (one paged search / one pass), limited
  to ``scope`` (unit ids; None = everything). A read that fails raises ProviderError — never "absent".
- ``apply(change)``: carry out one change idempotently (re-running a done change is a no-op).

Built-in providers are found exactly as a third party's are: entry points in the group
``mailstate.providers`` (see pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from mailstate.errors import ProviderError
from mailstate.reconciler.change import Change, Record

if TYPE_CHECKING:
    from mailstate.desired_state.model import State

ENTRY_POINT_GROUP = "mailstate.providers"


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


@runtime_checkable
class Provider(Protocol):
    name: ClassVar[str]
    kinds: ClassVar[frozenset[str]]
    settings_model: ClassVar[type[BaseModel]]

    def read(self, scope: Iterable[str] | None = None) -> Snapshot: ...

    def apply(self, change: Change) -> None: ...

    def close(self) -> None: ...


def provider_classes() -> dict[str, type]:
    """Every registered provider class by name (the built-in ones come through entry points too)."""
    found: dict[str, type] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # a broken third-party plug-in must not hide the others
            raise ProviderError(f"provider {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
    return found


def make_provider(name: str, state: State, **kwargs: Any) -> Provider:
    classes = provider_classes()
    if name not in classes:
        raise ProviderError(f"no provider named {name!r}; registered: {', '.join(sorted(classes)) or 'none'}")
    cls = classes[name]
    return cls.from_state(state, **kwargs)  # type: ignore[attr-defined]
