"""Changes: one step of a plan (an ``Action`` on one record), in the JSON form a saved plan holds."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mailstate.model.reason import Reason


class Action(enum.Enum):
    """What a change does; ``phase`` orders changes of different actions (lower first)."""

    REVOKE = ("revoke", 10)      # ACLs and grants go before the mailbox they name is locked or removed
    UNLOCK = ("unlock", 20)
    CREATE = ("create", 30)
    RENAME = ("rename", 35)
    UPDATE = ("update", 40)
    GRANT = ("grant", 50)        # rights come after the mailbox they name exists
    LOCK = ("lock", 60)
    ARCHIVE = ("archive", 70)    # archive (verified) before any removal
    DELETE = ("delete", 80)

    def __init__(self, label: str, phase: int) -> None:
        self.label = label
        self.phase = phase

    @classmethod
    def from_label(cls, label: str) -> Action:
        for a in cls:
            if a.label == label:
                return a
        raise ValueError(label)

    @property
    def destructive(self) -> bool:
        return self in (Action.LOCK, Action.DELETE)

    @property
    def removal(self) -> bool:
        """Revoke, lock, archive, delete: ordered with the kinds reversed, never merged with a creation."""
        return self in REMOVAL_ACTIONS


REMOVAL_ACTIONS = frozenset({Action.REVOKE, Action.LOCK, Action.ARCHIVE, Action.DELETE})

MAIL_ARCHIVE = "mail_archive"
"""The work of archiving a mailbox's mail (verified) before it is removed: a kind a provider declares."""
MAIL_DELETE = "mail_delete"
"""The work of deleting a mailbox's mail, once its verified archive holds it: a kind a provider declares."""
WORK_KINDS = frozenset({MAIL_ARCHIVE, MAIL_DELETE})
"""Kinds of work that are not a record kind: a change of a record carrying one is routed by it."""


@dataclass(frozen=True)
class Change:
    """One step of a plan. ``before``/``after`` hold only the attributes that differ for an update."""

    id: str
    action: Action
    kind: str
    key: str
    provider: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    reasons: tuple[Reason, ...] = ()
    depends_on: tuple[str, ...] = ()
    unit: str | None = None
    fields: tuple[str, ...] = field(default=())
    work: str = ""
    """The kind of work when it is not the record's kind (``MAIL_ARCHIVE``, ``MAIL_DELETE``): the
    provider that declares it carries the change out."""

    @property
    def routed_kind(self) -> str:
        """The kind a provider must declare to carry this change out."""
        return self.work or self.kind

    def __post_init__(self) -> None:
        # a reason given as plain text (older callers, plan files without "why") is kept as such
        if any(not isinstance(r, Reason) for r in self.reasons):
            object.__setattr__(self, "reasons", tuple(
                r if isinstance(r, Reason) else Reason.from_json(str(r)) for r in self.reasons))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action.label,
            "kind": self.kind,
            "key": self.key,
            "provider": self.provider,
            "unit": self.unit,
            "fields": list(self.fields),
            "before": jsonable(self.before),
            "after": jsonable(self.after),
            "reasons": [r.text() for r in self.reasons],
            "why": [r.to_json() for r in self.reasons],
            "depends_on": list(self.depends_on),
            **({"work": self.work} if self.work else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Change:
        return cls(
            id=data["id"],
            action=Action.from_label(data["action"]),
            kind=data["kind"],
            key=data["key"],
            provider=data["provider"],
            before=data.get("before"),
            after=data.get("after"),
            reasons=tuple(Reason.from_json(r) for r in (data.get("why") or data.get("reasons") or ())),
            depends_on=tuple(data.get("depends_on") or ()),
            unit=data.get("unit"),
            fields=tuple(data.get("fields") or ()),
            work=data.get("work") or "",
        )


def jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    return str(value)
