"""Lifecycle policy (REGULATIONS.md §3): is a mailbox locked, or removed, on a given date? Pure.

``decide(state, ref, as_of, facts)`` looks at one personal mailbox (``ref`` = person id) or unit mailbox
(``ref`` = ``unit:<id>``) and returns a ``Decision``: ``locked``, ``remove`` (which always implies a lock
first: lock → archive → remove, MOST art.13.2b and DESIGN §6.1), the ``reasons`` (each names its rule and
its dates) and a stable ``lock_reason`` (what is written to the directory: it names the rule and the
event's date but not ``as_of``, so it does not change from one day to the next).

Rules, in order:
- suspended (person)                      → locked            MOST art.18.4
- left_on + lock_after_leaving passed      → locked            MIC art.5.3
- left_on + remove_after_leaving passed    → removed           MOST art.13.2b
  unless keep_after_leaving (neither lock nor removal for leaving: MOST art.18.3 exception)
- no login since L (or since creation C when never logged in)
  + lock_after_inactivity passed           → locked            MOST art.13.3   (personal mailboxes)
  + remove_after_inactivity passed         → removed           MOST art.13.3
- unit dissolved on D                      → unit mailbox locked  MOST art.13.1
  + remove_after_leaving passed            → removed (archived first)  MOST art.13.1, 13.2b
- unit mailbox never logged in, created C
  + remove_unused_unit_mailbox passed      → removed           BĐ art.5.2

Facts (from the providers' ``Snapshot.facts``, all optional): ``last_login: {uid: ISO datetime}`` and
``created: {uid: ISO date/datetime}``. The inactivity rules only apply when ``last_login`` facts were
read at all (no facts → no inactivity decision: an unknown is never a reason to lock). A mailbox absent
from ``last_login`` is treated as never logged in since its creation, and only when its creation date is
known. Unit mailboxes are not subject to the personal inactivity rule (delegates reach them through the
shared namespace, which does not count as a login of the unit mailbox), only to BĐ art.5.2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from mailstate.desired_state.model import Duration, Person, State, Unit


@dataclass(frozen=True)
class Decision:
    """What the lifecycle policy says about one mailbox on one date."""

    locked: bool = False
    remove: bool = False
    reasons: list[str] = field(default_factory=list)
    lock_reason: str | None = None
    """Stable text stored with the lock (names the rule and the event's date, never ``as_of``)."""
    refuse_mail: str | None = None
    """Locked because the person left (and ``deliver_to_leavers`` is off): the short ASCII text mail to
    them is refused with at RCPT (docs/mailflow.md). None: mail is delivered (suspended, inactive, …)."""


def as_date(value: Any) -> date | None:
    """A date from a ``date``, a ``datetime`` or an ISO string (date or datetime, 'Z' accepted); else None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value).date()  # noqa: DTZ006 - a day is precise enough
    text = str(value).strip()
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _fact(facts: Mapping[str, Any] | None, name: str, uid: str) -> date | None:
    table = (facts or {}).get(name) or {}
    return as_date(table.get(uid)) if isinstance(table, Mapping) else None


def _logins_known(facts: Mapping[str, Any] | None) -> bool:
    return isinstance((facts or {}).get("last_login"), Mapping)


def _ago(d: Duration) -> str:
    return f"more than {d}"


def decide_person(
    person: Person, state: State, as_of: date, facts: Mapping[str, Any] | None = None
) -> Decision:
    """The lifecycle decision for one personal mailbox on ``as_of``."""
    lc = state.lifecycle
    reasons: list[str] = []
    lock_reasons: list[str] = []
    locked = remove = False
    left_locked = False

    if person.suspended:
        locked = True
        text = f"{lc.citation('suspended')}: suspended: {person.suspended}"
        reasons.append(text)
        lock_reasons.append(text)

    if person.left_on is not None and person.left_on <= as_of:
        lock_on = lc.lock_after_leaving.after(person.left_on)
        remove_on = lc.remove_after_leaving.after(person.left_on)
        if person.keep_after_leaving:
            reasons.append(
                f"{lc.citation('keep_after_leaving')}: left on {person.left_on.isoformat()} "
                "but kept on request "
                f"(keep_after_leaving): not locked or removed for leaving"
            )
        elif as_of >= remove_on:
            locked = remove = left_locked = True
            reasons.append(
                f"{lc.citation('remove_after_leaving')}: left on {person.left_on.isoformat()}, "
                f"{_ago(lc.remove_after_leaving)} before {as_of.isoformat()}: "
                f"locked, archived, then removed"
            )
            lock_reasons.append(
                f"{lc.citation('lock_after_leaving')}: left on {person.left_on.isoformat()}"
            )
        elif as_of >= lock_on:
            locked = left_locked = True
            text = f"{lc.citation('lock_after_leaving')}: left on {person.left_on.isoformat()}"
            reasons.append(
                f"{text}, {_ago(lc.lock_after_leaving)} before {as_of.isoformat()} "
                f"(removal due {remove_on.isoformat()}, {lc.citation('remove_after_leaving')})"
            )
            lock_reasons.append(text)
        else:
            reasons.append(
                f"{lc.citation('lock_after_leaving')}: left on {person.left_on.isoformat()}; "
                f"lock due {lock_on.isoformat()}"
            )

    if _logins_known(facts):
        last = _fact(facts, "last_login", person.id)
        created = _fact(facts, "created", person.id)
        since = last or created
        if since is not None:
            what = (
                f"no login since {last.isoformat()}"
                if last is not None
                else f"never logged in since creation on {since.isoformat()}"
            )
            if as_of >= lc.remove_after_inactivity.after(since):
                locked = remove = True
                reasons.append(
                    f"{lc.citation('inactivity')}: {what}, {_ago(lc.remove_after_inactivity)}: "
                    "locked, archived, then removed"
                )
                lock_reasons.append(f"{lc.citation('inactivity')}: {what}")
            elif as_of >= lc.lock_after_inactivity.after(since):
                locked = True
                text = f"{lc.citation('inactivity')}: {what}"
                reasons.append(f"{text}, {_ago(lc.lock_after_inactivity)}")
                lock_reasons.append(text)

    refuse = None
    if left_locked and person.left_on is not None and not lc.deliver_to_leavers:
        refuse = refuse_text(person.left_on)
    return Decision(
        locked=locked,
        remove=remove,
        reasons=reasons,
        lock_reason=lock_reasons[0] if locked and lock_reasons else None,
        refuse_mail=refuse,
    )


def refuse_text(left_on: date) -> str:
    """What a sender is told at RCPT about a person who left (ASCII: an SMTP reply; stable, no as_of)."""
    return f"this person left the agency on {left_on.isoformat()}; mail to this address is not delivered"


def decide_unit_mailbox(
    unit: Unit, state: State, as_of: date, facts: Mapping[str, Any] | None = None
) -> Decision:
    """The lifecycle decision for one unit mailbox on ``as_of``."""
    lc = state.lifecycle
    reasons: list[str] = []
    lock_reasons: list[str] = []
    locked = remove = False

    if unit.dissolved_on is not None and unit.dissolved_on <= as_of:
        locked = True
        text = f"{lc.citation('dissolved')}: unit dissolved on {unit.dissolved_on.isoformat()}"
        lock_reasons.append(text)
        remove_on = lc.remove_after_leaving.after(unit.dissolved_on)
        if as_of >= remove_on:
            remove = True
            reasons.append(
                f"{text}, {_ago(lc.remove_after_leaving)} before {as_of.isoformat()} "
                f"({lc.citation('remove_after_leaving')}): locked, archived, then removed"
            )
        else:
            reasons.append(f"{text}: locked; archived and removed from {remove_on.isoformat()}")

    if _logins_known(facts):
        uid = unit.id
        last = _fact(facts, "last_login", uid)
        created = _fact(facts, "created", uid)
        if last is None and created is not None:
            due = lc.remove_unused_unit_mailbox.after(created)
            if as_of >= due:
                locked = remove = True
                text = (
                    f"{lc.citation('unused_unit_mailbox')}: unit mailbox never used since its creation "
                    f"on {created.isoformat()}"
                )
                reasons.append(
                    f"{text}, {_ago(lc.remove_unused_unit_mailbox)}: locked, archived, then removed"
                )
                lock_reasons.append(text)

    return Decision(
        locked=locked,
        remove=remove,
        reasons=reasons,
        lock_reason=lock_reasons[0] if locked and lock_reasons else None,
    )


def decide(state: State, ref: str, as_of: date, facts: Mapping[str, Any] | None = None) -> Decision:
    """The decision for a mailbox reference: a person id, or ``unit:<id>`` for a unit mailbox."""
    if ref.startswith("unit:"):
        return decide_unit_mailbox(state.units[ref[5:]], state, as_of, facts)
    return decide_person(state.people[ref], state, as_of, facts)


def old_address_expires(changed_on: date, state: State) -> date:
    """The last day an old address keeps delivering (DESIGN §3: ``keep_old_address`` after the change)."""
    return state.lifecycle.keep_old_address.after(changed_on)
