"""Lifecycle policy (docs/regulation.md): is a mailbox locked, or removed, on a given date? Pure.

``decide(state, ref, as_of, facts)`` looks at one personal mailbox (``ref`` = person id) or unit mailbox
(``ref`` = ``unit:<id>``) and returns a ``Decision``: ``locked``, ``remove`` (which always implies a lock
first: lock → archive → remove: mail is never destroyed), the ``reasons`` (each names its rule and
its dates) and a stable ``lock_reason`` (what is written to the directory: it names the rule and the
event's date but not ``as_of``, so it does not change from one day to the next).

Rules, in order (each with its rule code; the article comes from the organisation's regulation):
- suspended (person)                      → locked            lifecycle.suspended
- left_on + lock_after_leaving passed      → locked            lifecycle.lock_after_leaving
- left_on + remove_after_leaving passed    → removed           lifecycle.remove_after_leaving
  unless keep_after_leaving (lifecycle.keep_after_leaving)
- no login since L (or since creation C when never logged in)
  + lock_after_inactivity passed           → locked            lifecycle.lock_after_inactivity (personal)
  + remove_after_inactivity passed         → removed           lifecycle.remove_after_inactivity
- unit dissolved on D                      → unit mailbox locked  lifecycle.dissolved
  + remove_after_leaving passed            → removed (archived first)  lifecycle.dissolved
- unit mailbox never used, created C
  + remove_unused_unit_mailbox passed      → removed           lifecycle.unused_unit_mailbox

Facts (from the providers' ``Snapshot.facts``, all optional): ``last_login: {uid: ISO datetime}``,
``created: {uid: ISO date/datetime}`` (the directory entry's createTimestamp) and ``used: {uid: sign}`` (a
unit mailbox someone worked in, whoever logged in: a read message, mail filed or moved). The inactivity
rules only apply when ``last_login`` facts were read at all (no facts → no inactivity decision: an unknown
is never a reason to lock). A mailbox absent from ``last_login`` is treated as never logged in since its
creation, and only when its creation date is known. Unit mailboxes are not subject to the personal
inactivity rule (delegates reach them through the shared namespace, which does not count as a login of the
unit mailbox), only to the unused rule, for which a unit mailbox is used when it has a login or appears in
``used``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from mailstate.desired_state.schema import Person, State, Unit
from mailstate.model.i18n import use
from mailstate.model.reason import Reason, reason
from mailstate.model.regulation import Regulation
from mailstate.model.settings import Duration


@dataclass(frozen=True)
class Decision:
    """What the lifecycle policy says about one mailbox on one date."""

    locked: bool = False
    remove: bool = False
    reasons: list[Reason] = field(default_factory=list)
    lock_reason: str | None = None
    """Stable text stored with the lock (names the rule and the event's date, never ``as_of``)."""
    refuse_mail: str | None = None
    """Locked because the person left (and ``deliver_to_leavers`` is off), or the mailbox is being removed
    (a person's or a unit's: no mail may arrive between its archive and its removal): the short ASCII
    text mail to it is refused with at RCPT (docs/mailflow.md). None: mail is delivered (suspended, …)."""


def as_date(value: Any) -> date | None:
    """A date from a ``date``, a ``datetime`` or an ISO string (date or datetime, 'Z' accepted); else None.
    An instant with a zone (a last login, a creation, recorded in UTC) counts on its day in the local zone,
    the one ``date.today()`` gives the plan: a login at 06:30 in Hà Nội is that day's, not the UTC day's."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.astimezone().date() if value.tzinfo is not None else value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value).date()  # noqa: DTZ006 - a day is precise enough
    text = str(value).strip()
    if len(text) > 10:
        try:
            return as_date(datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            pass
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _fact(facts: Mapping[str, Any] | None, name: str, uid: str) -> date | None:
    table = (facts or {}).get(name) or {}
    return as_date(table.get(uid)) if isinstance(table, Mapping) else None


def _used(facts: Mapping[str, Any] | None, uid: str) -> bool:
    """A unit mailbox was put into use: its own login, or anyone's work in it (``used``: delegates read,
    file and move its mail under their own login, which records no login of the unit mailbox)."""
    if _fact(facts, "last_login", uid) is not None:
        return True
    table = (facts or {}).get("used") or {}
    return isinstance(table, Mapping) and bool(table.get(uid))


def _logins_known(facts: Mapping[str, Any] | None) -> bool:
    return isinstance((facts or {}).get("last_login"), Mapping)


def _dur(d: Duration) -> tuple[int, str]:
    return (d.amount, d.unit)


def _decision(
    state: State, locked: bool, remove: bool, reasons: list[Reason], locks: list[Reason],
    refuse_mail: str | None = None,
) -> Decision:
    lock_reason = None
    if locked and locks:
        with use(state.language):  # stored in the directory: the organisation's language, not --lang
            lock_reason = locks[0].text()
    return Decision(locked=locked, remove=remove, reasons=reasons, lock_reason=lock_reason,
                    refuse_mail=refuse_mail)


def _cited(reg: Regulation, rule: str, configured: Duration | None) -> Regulation:
    """``reg``, without the article of ``rule`` when ``configured`` is longer than the article allows: the
    change is then the agency's own setting, and its reason says so rather than cite the article."""
    return reg if reg.allows(rule, configured) else reg.without(rule)


def removal_on(person: Person, state: State, start: date) -> tuple[date, bool]:
    """The day a leaver's mailbox is removed and whether the notice of the leaving sets it.

    Without a notice: the first day after ``remove_after_leaving`` counted from ``start`` (the leaving,
    or the end of a keep_after_leaving). With ``notice_on`` and ``remove_after_notice``: within that period
    of the notice, i.e. on its last day at the latest, when that comes first (never before ``start``)."""
    lc = state.lifecycle
    remove_on = lc.remove_after_leaving.due(start)
    if person.notice_on is not None and lc.remove_after_notice is not None and start == person.left_on:
        by_notice = max(lc.remove_after_notice.after(person.notice_on), start)
        if by_notice < remove_on:
            return by_notice, True
    return remove_on, False


def decide_person(
    person: Person, state: State, as_of: date, facts: Mapping[str, Any] | None = None
) -> Decision:
    """The lifecycle decision for one personal mailbox on ``as_of``."""
    lc = state.lifecycle
    reg = state.rules
    reasons: list[Reason] = []
    lock_reasons: list[Reason] = []
    locked = remove = False
    left_locked = False

    if person.suspension:
        locked = True
        r = reason("lifecycle.suspended", reg, text=person.suspension)
        reasons.append(r)
        if not person.disabled_before:  # the directory's own lock, kept as found: no reason written to it
            lock_reasons.append(r)
        reasons.append(notify_reason(person, reg))

    keep = person.keep_after_leaving
    if person.left_on is not None and person.left_on <= as_of:
        left = person.left_on.isoformat()
        start = person.left_on
        if keep is not None:
            post = keep.post or person.title or ""
            if keep.until is None or as_of <= keep.until:
                reasons.append(reason("lifecycle.keep_after_leaving" + (".until" if keep.until else ""), reg,
                                      left_on=left, decision=keep.decision, until=keep.until, post=post))
            else:
                reasons.append(reason("lifecycle.keep_after_leaving.ended", reg, left_on=left,
                                      decision=keep.decision, until=keep.until))
                start = keep.until
        if keep is None or (keep.until is not None and as_of > keep.until):
            lock_reg = _cited(reg, "lifecycle.lock_after_leaving", lc.lock_after_leaving)
            remove_on, by_notice = removal_on(person, state, start)
            lock_on = min(lc.lock_after_leaving.due(start), remove_on)
            if as_of >= remove_on:
                locked = remove = left_locked = True
                if by_notice:
                    reasons.append(reason(
                        "lifecycle.remove_after_notice",
                        _cited(reg, "lifecycle.remove_after_notice", lc.remove_after_notice),
                        left_on=left, notice_on=person.notice_on.isoformat() if person.notice_on else None,
                        duration=_dur(lc.remove_after_notice or lc.remove_after_leaving),
                        remove_on=remove_on.isoformat()))
                else:
                    reasons.append(reason(
                        "lifecycle.remove_after_leaving",
                        _cited(reg, "lifecycle.remove_after_leaving", lc.remove_after_leaving),
                        left_on=left, duration=_dur(lc.remove_after_leaving)))
                lock_reasons.append(reason("lifecycle.lock_after_leaving.locked", lock_reg, left_on=left))
            elif as_of >= lock_on:
                locked = left_locked = True
                reasons.append(reason("lifecycle.lock_after_leaving.removal_due", lock_reg, left_on=left,
                                      duration=_dur(lc.lock_after_leaving), remove_on=remove_on.isoformat()))
                lock_reasons.append(reason("lifecycle.lock_after_leaving.locked", lock_reg, left_on=left))
            else:
                reasons.append(reason("lifecycle.lock_after_leaving.pending", lock_reg, left_on=left,
                                      lock_on=lock_on.isoformat()))

    if _logins_known(facts):
        last = _fact(facts, "last_login", person.id)
        created = _fact(facts, "created", person.id)
        since = last or created
        if since is not None:
            never = ".never" if last is None else ""
            lock_reg = _cited(reg, "lifecycle.lock_after_inactivity", lc.lock_after_inactivity)
            if as_of >= lc.remove_after_inactivity.due(since):
                locked = remove = True
                reasons.append(reason(
                    "lifecycle.remove_after_inactivity" + never,
                    _cited(reg, "lifecycle.remove_after_inactivity", lc.remove_after_inactivity),
                    since=since.isoformat(), duration=_dur(lc.remove_after_inactivity)))
                lock_reasons.append(reason("lifecycle.lock_after_inactivity.locked", lock_reg,
                                           since=since.isoformat()))
            elif as_of >= lc.lock_after_inactivity.due(since):
                locked = True
                reasons.append(reason("lifecycle.lock_after_inactivity" + never, lock_reg,
                                      since=since.isoformat(), duration=_dur(lc.lock_after_inactivity)))
                lock_reasons.append(reason("lifecycle.lock_after_inactivity.locked", lock_reg,
                                           since=since.isoformat()))

    refuse = None
    if left_locked and person.left_on is not None and not lc.deliver_to_leavers:
        refuse = refuse_text(person.left_on)
    elif remove:
        refuse = REMOVAL_REFUSE_TEXT
    return _decision(state, locked, remove, reasons, lock_reasons, refuse)


def notify_reason(person: Person, reg: Regulation) -> Reason:
    """Who must be told of a temporary lock, and how: the owner, at the backup mailbox the TOML holds, or
    (none recorded) in person or through the unit's head. ``notice_of`` reads it back from a change."""
    if person.backup_email:
        return reason("lifecycle.suspended.notify", reg, owner=person.id, backup=person.backup_email)
    return reason("lifecycle.suspended.notify_in_person", reg, owner=person.id, unit=person.unit or "-")


def notice_of(reasons: Iterable[Reason]) -> dict[str, Any] | None:
    """The notice a change's reasons ask for (``{"who", "how", "to"}``), or None: for the journal and
    the apply."""
    for r in reasons:
        if r.code in ("lifecycle.suspended.notify", "lifecycle.suspended.notify_in_person"):
            params = dict(r.params)
            if r.code.endswith("in_person"):
                return {"who": params.get("owner"), "how": "in_person", "to": None}
            return {"who": params.get("owner"), "how": "backup_email", "to": params.get("backup")}
    return None


REMOVAL_REFUSE_TEXT = "this mailbox is being removed; mail to this address is not delivered"
"""What a sender is told at RCPT while a mailbox is archived and removed (ASCII: an SMTP reply)."""


def dissolved_refuse_text(dissolved_on: date) -> str:
    """What a sender is told at RCPT about the mailbox of a dissolved unit whose removal is due."""
    return (f"this unit was dissolved on {dissolved_on.isoformat()}; mail to this address is not "
            "delivered")


def refuse_text(left_on: date) -> str:
    """What a sender is told at RCPT about a person who left (ASCII: an SMTP reply; stable, no as_of)."""
    return f"this person left the agency on {left_on.isoformat()}; mail to this address is not delivered"


def decide_unit_mailbox(
    unit: Unit, state: State, as_of: date, facts: Mapping[str, Any] | None = None
) -> Decision:
    """The lifecycle decision for one unit mailbox on ``as_of``."""
    lc = state.lifecycle
    reg = state.rules
    reasons: list[Reason] = []
    lock_reasons: list[Reason] = []
    locked = remove = False

    if unit.dissolved_on is not None and unit.dissolved_on <= as_of:
        locked = True
        on = unit.dissolved_on.isoformat()
        lock_reasons.append(reason("lifecycle.dissolved.locked", reg, dissolved_on=on))
        remove_on = lc.remove_after_leaving.due(unit.dissolved_on)
        if as_of >= remove_on:
            remove = True
            reasons.append(reason("lifecycle.dissolved.remove", reg, dissolved_on=on,
                                  duration=_dur(lc.remove_after_leaving)))
        else:
            reasons.append(reason("lifecycle.dissolved", reg, dissolved_on=on,
                                  remove_on=remove_on.isoformat()))

    if _logins_known(facts):
        uid = unit.id
        used = _used(facts, uid)
        created = _fact(facts, "created", uid)
        if not used and created is not None:
            due = lc.remove_unused_unit_mailbox.due(created)
            if as_of >= due:
                locked = remove = True
                unused_reg = _cited(reg, "lifecycle.unused_unit_mailbox", lc.remove_unused_unit_mailbox)
                reasons.append(reason("lifecycle.unused_unit_mailbox", unused_reg,
                                      created=created.isoformat(),
                                      duration=_dur(lc.remove_unused_unit_mailbox)))
                lock_reasons.append(reason("lifecycle.unused_unit_mailbox.locked", unused_reg,
                                           created=created.isoformat()))

    refuse = None
    if remove:
        dissolved = unit.dissolved_on is not None and unit.dissolved_on <= as_of
        refuse = dissolved_refuse_text(unit.dissolved_on) if dissolved and unit.dissolved_on else (
            REMOVAL_REFUSE_TEXT)
    return _decision(state, locked, remove, reasons, lock_reasons, refuse)


def decide(state: State, ref: str, as_of: date, facts: Mapping[str, Any] | None = None) -> Decision:
    """The decision for a mailbox reference: a person id, or ``unit:<id>`` for a unit mailbox."""
    if ref.startswith("unit:"):
        return decide_unit_mailbox(state.units[ref[5:]], state, as_of, facts)
    return decide_person(state.people[ref], state, as_of, facts)


def old_address_expires(changed_on: date, state: State) -> date:
    """The last day an old address keeps delivering (``keep_old_address`` after the change)."""
    return state.lifecycle.keep_old_address.after(changed_on)
