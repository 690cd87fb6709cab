"""The Plan: changes in apply order, the unlisted live objects, the safety rules, the JSON form. Pure.

- ``order(changes)``: topological by ``depends_on``; among changes ready at the same time, the action's
  phase (change.Action: revoke, unlock, create, rename, update, grant, lock, archive, delete), then the
  kind (units before mailboxes before people before groups …; reversed for removals), then the key, then
  the provider — deterministic. A dependency cycle (e.g. two groups naming each other) is broken at the
  smallest change by that same key and reported nowhere else: the providers' writes are idempotent.
- ``Plan.raise_if_unsafe(allow_destructive)`` (DESIGN §6.3, octoDNS ``Plan.raise_if_unsafe``).
- ``Plan.to_json()`` / ``Plan.from_json()``: the documented, versioned format (docs/plan-json.md,
  plan.schema.json beside this module).
- ``Plan.meta`` (``PlanMeta``): how the plan was made (fingerprints, state dir, scope, as_of, providers);
  ``plan_json`` is the one JSON form of a made plan (the documented JSON plus its ``engine`` block), which
  ``save_plan`` writes, ``load_plan`` reads and ``render(plan, "json")`` prints.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailstate.errors import MailstateError, UnsafePlan
from mailstate.model.change import Action, Change, jsonable
from mailstate.model.i18n import _, ngettext
from mailstate.model.records import KIND_ORDER, MAILBOX_KINDS, Record
from mailstate.private_files import open_private
from mailstate.reconciler.plan.diff import public_attrs
from mailstate.reconciler.plan.fingerprint import Fingerprint

if TYPE_CHECKING:  # the State type only: desired_state is below, nothing here is called on it
    from mailstate.desired_state.schema import State

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("plan.schema.json")

PLAN_FILE_SCHEMA = 1
"""Version of the ``engine`` block of a saved plan."""


def _kind_rank(kind: str, action: Action) -> int:
    rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    return -rank if action.removal else rank


def sort_key(c: Change) -> tuple[int, int, str, str, str]:
    """The tie-break among changes whose dependencies are met: phase, kind, key, provider, id."""
    return (c.action.phase, _kind_rank(c.kind, c.action), c.key, c.provider, c.id)


def order(changes: Iterable[Change]) -> list[Change]:
    """The changes in apply order: dependencies first, then phase, kind, key (deterministic)."""
    items = {c.id: c for c in changes}
    indeg: dict[str, int] = {i: 0 for i in items}
    dependents: dict[str, list[str]] = {i: [] for i in items}
    for c in items.values():
        for d in set(c.depends_on):
            if d in items and d != c.id:
                indeg[c.id] += 1
                dependents[d].append(c.id)
    ready = [(sort_key(items[i]), i) for i, n in indeg.items() if n == 0]
    heapq.heapify(ready)
    out: list[Change] = []
    done: set[str] = set()
    while len(out) < len(items):
        if not ready:  # a cycle: take the smallest remaining change and go on
            i = min((i for i in items if i not in done), key=lambda x: sort_key(items[x]))
            indeg[i] = 0
            heapq.heappush(ready, (sort_key(items[i]), i))
        _, i = heapq.heappop(ready)
        if i in done:
            continue
        done.add(i)
        out.append(items[i])
        for j in dependents[i]:
            if j in done:
                continue
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(ready, (sort_key(items[j]), j))
    return out


@dataclass(frozen=True)
class SafetyLimits:
    """DESIGN §6.3 thresholds (from ``[safety]``): counts and share of live mailboxes locked or removed."""

    max_destructive_count: int = 10
    max_destructive_share: float = 0.3
    min_existing: int = 10

    @classmethod
    def of(cls, safety: Any) -> SafetyLimits:
        if safety is None:
            return cls()
        if isinstance(safety, SafetyLimits):
            return safety
        if isinstance(safety, Mapping):
            return cls(**{k: safety[k] for k in ("max_destructive_count", "max_destructive_share",
                                                 "min_existing") if k in safety})
        return cls(
            max_destructive_count=safety.max_destructive_count,
            max_destructive_share=safety.max_destructive_share,
            min_existing=safety.min_existing,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "max_destructive_count": self.max_destructive_count,
            "max_destructive_share": self.max_destructive_share,
            "min_existing": self.min_existing,
        }


def record_to_json(rec: Record) -> dict[str, Any]:
    """A live record for the plan's ``unlisted`` section (private and secret attributes left out)."""

    return {
        "kind": rec.kind,
        "key": rec.key,
        "provider": rec.provider,
        "unit": rec.unit,
        "attrs": jsonable(public_attrs(rec.attrs)),
    }


def record_from_json(data: Mapping[str, Any]) -> Record:
    return Record(
        kind=data["kind"],
        key=data["key"],
        attrs=dict(data.get("attrs") or {}),
        provider=data.get("provider") or "",
        unit=data.get("unit"),
    )


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class PlanMeta:
    """What the engine adds to the core ``Plan``: its fingerprint and how it was made."""

    fingerprint: Fingerprint
    state_dir: str
    scope: list[str] | None
    as_of: str
    domain: str
    created_at: str
    providers: list[str] = field(default_factory=list)
    """The providers whose live state the plan read (a stale check re-reads the same ones)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per phase: load, read:<provider>, project, diff, fingerprint, order (MAILSTATE_TIMINGS=1)."""



def as_of_date(value: date | str | None) -> date:
    """A date from an ``--as-of`` (today when None); anything but YYYY-MM-DD is a clear error."""
    if value is None:
        return date.today()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise MailstateError(f"--as-of {value!r}: expected a date YYYY-MM-DD") from exc




@dataclass
class Plan:
    """An ordered list of changes, what was left alone, and what the engine needs to apply it safely."""

    changes: list[Change] = field(default_factory=list)
    unlisted: list[Record] = field(default_factory=list)
    as_of: date | None = None
    scope: list[str] | None = None
    created_at: str = field(default_factory=_now)
    organization: str | None = None
    """The organisation's domain, for renderings and stale checks."""
    desired_fingerprint: str = ""
    live_fingerprint: str = ""
    live_digests: dict[str, str] = field(default_factory=dict)
    safety: SafetyLimits = field(default_factory=SafetyLimits)
    live_mailboxes: int = 0
    """How many personal and unit mailboxes exist live (the base of the share threshold)."""
    unit_names: dict[str, str] = field(default_factory=dict)
    """unit id → name, for renderings (a unit head reads the Markdown)."""
    language: str = "vi"
    """The organisation's language ([organization] language): renderings use it unless --lang says."""
    meta: PlanMeta | None = field(default=None, compare=False, repr=False)
    """How the plan was made (``make_plan``, ``load_plan``): what apply's stale check compares."""

    @classmethod
    def build(
        cls,
        changes: Iterable[Change],
        unlisted: Iterable[Record] = (),
        *,
        as_of: date | None = None,
        scope: Sequence[str] | None = None,
        safety: Any = None,
        live: Mapping[Any, Record] | None = None,
        live_mailboxes: int | None = None,
        organization: str | None = None,
        unit_names: Mapping[str, str] | None = None,
    ) -> Plan:
        """A plan from the diff's output: orders the changes and counts the live mailboxes."""
        if live_mailboxes is None:
            live_mailboxes = sum(1 for r in (live or {}).values() if r.kind in MAILBOX_KINDS)
        return cls(
            changes=order(changes),
            unlisted=sorted(unlisted, key=lambda r: (r.kind, r.key)),
            as_of=as_of,
            scope=list(scope) if scope else None,
            safety=SafetyLimits.of(safety),
            live_mailboxes=live_mailboxes,
            organization=organization,
            unit_names=dict(unit_names or {}),
        )

    # ---------------------------------------------------------------------------------------------
    @property
    def summary(self) -> dict[str, int]:
        """Number of changes per action label, in phase order (only actions present)."""
        counts = Counter(c.action for c in self.changes)
        return {a.label: counts[a] for a in sorted(counts, key=lambda a: a.phase)}

    @property
    def empty(self) -> bool:
        return not self.changes

    def __len__(self) -> int:
        return len(self.changes)

    def destructive_mailboxes(self) -> list[tuple[str, str]]:
        """(kind, key) of every mailbox this plan locks or removes (each counted once)."""
        seen: dict[tuple[str, str], None] = {}
        for c in self.changes:
            if c.kind in MAILBOX_KINDS and c.action.destructive:
                seen.setdefault((c.kind, c.key), None)
        return list(seen)

    def raise_if_unsafe(self, allow_destructive: bool = False) -> None:
        """Raise UnsafePlan when mailbox locks + removals pass the count or share threshold ([safety])."""
        if allow_destructive:
            return
        n = len(self.destructive_mailboxes())
        if n == 0:
            return
        lim = self.safety
        problems: list[str] = []
        if n > lim.max_destructive_count:
            problems.append(
                _("more than max_destructive_count = {limit}").format(limit=lim.max_destructive_count))
        if self.live_mailboxes >= lim.min_existing and self.live_mailboxes > 0:
            share = n / self.live_mailboxes
            if share > lim.max_destructive_share:
                problems.append(
                    _("{share} of the {n} live mailboxes, more than max_destructive_share = {limit}").format(
                        share=f"{share:.0%}", n=self.live_mailboxes, limit=f"{lim.max_destructive_share:.0%}")
                )
        if problems:
            raise UnsafePlan(
                ngettext("unsafe plan: it locks or removes {n} mailbox ({problems}) — [safety] in "
                         "mailstate.toml; review the plan, then rerun with --allow-destructive",
                         "unsafe plan: it locks or removes {n} mailboxes ({problems}) — [safety] in "
                         "mailstate.toml; review the plan, then rerun with --allow-destructive", n).format(
                    n=n, problems="; ".join(problems))
            )

    # ---------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The documented JSON form (docs/plan-json.md, schema_version 1)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "created_at": self.created_at,
            "organization": self.organization,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "scope": list(self.scope) if self.scope else None,
            "fingerprint": {
                "desired": self.desired_fingerprint,
                "live": self.live_fingerprint,
                "live_digests": dict(sorted(self.live_digests.items())),
            },
            "safety": {**self.safety.to_json(), "live_mailboxes": self.live_mailboxes},
            "summary": self.summary,
            "changes": [c.to_json() for c in self.changes],
            "unlisted": [record_to_json(r) for r in self.unlisted],
            "unit_names": dict(sorted(self.unit_names.items())),
            "language": self.language,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        """Read a plan written by ``to_json``; refuses an unknown schema_version with a clear error."""
        if not isinstance(data, Mapping):
            raise MailstateError("plan file: not a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise MailstateError(
                f"plan file: schema_version {version!r} is not supported "
                f"(this mailstate reads {SCHEMA_VERSION})"
            )
        try:
            fp = data.get("fingerprint") or {}
            safety = dict(data.get("safety") or {})
            live_mailboxes = int(safety.pop("live_mailboxes", 0))
            return cls(
                changes=[Change.from_json(c) for c in data["changes"]],
                unlisted=[record_from_json(r) for r in data.get("unlisted") or ()],
                as_of=date.fromisoformat(data["as_of"]) if data.get("as_of") else None,
                scope=list(data["scope"]) if data.get("scope") else None,
                created_at=str(data["created_at"]),
                organization=data.get("organization"),
                desired_fingerprint=str(fp.get("desired") or ""),
                live_fingerprint=str(fp.get("live") or ""),
                live_digests=dict(fp.get("live_digests") or {}),
                safety=SafetyLimits.of(safety),
                live_mailboxes=live_mailboxes,
                unit_names=dict(data.get("unit_names") or {}),
                language=str(data.get("language") or "vi"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MailstateError(f"plan file: malformed ({type(exc).__name__}: {exc})") from None

    @classmethod
    def loads(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MailstateError(f"plan file: not JSON (line {exc.lineno}: {exc.msg})") from None
        return cls.from_json(data)


# --------------------------------------------------------------------------------------------------
# A made plan: its metadata, its one JSON form, saved and loaded


def build_plan(
    state: State, changes: list[Change], unlisted: list[Record], meta: PlanMeta, live: Mapping[Any, Record]
) -> Plan:
    plan = Plan.build(
        changes,
        unlisted,
        as_of=date.fromisoformat(meta.as_of),
        scope=[f"unit:{u}" for u in meta.scope] if meta.scope else None,
        safety=state.safety,
        live=live,
        organization=state.domain,
        unit_names={uid: u.name for uid, u in state.units.items()},
    )
    plan.created_at = meta.created_at
    plan.language = state.language
    plan.desired_fingerprint = meta.fingerprint.desired
    plan.live_fingerprint = meta.fingerprint.live
    plan.live_digests = dict(meta.fingerprint.records)
    plan.meta = meta
    return plan


def plan_meta(plan: Plan) -> PlanMeta:
    meta = plan.meta
    if meta is None:
        raise MailstateError("this plan has no fingerprint (it was not made by make_plan or load_plan)")
    return meta


def plan_changes(plan: Plan) -> list[Change]:
    return list(plan.changes)


def plan_unlisted(plan: Plan) -> list[Record]:
    return list(plan.unlisted)


def plan_json(plan: Plan) -> dict[str, Any]:
    """The documented JSON of the plan plus the engine's block (fingerprints, scope, as_of, state dir)."""
    meta = plan_meta(plan)
    data: dict[str, Any] = dict(plan.to_json())
    data["fingerprint"] = {**data.get("fingerprint", {}), "combined": meta.fingerprint.combined}
    data["engine"] = {
        "schema": PLAN_FILE_SCHEMA,
        "domain": meta.domain,
        "state_dir": meta.state_dir,
        "scope": meta.scope,
        "as_of": meta.as_of,
        "created_at": meta.created_at,
        "files": dict(meta.fingerprint.files),
        "providers": list(meta.providers),
    }
    return data


def plan_from_json(data: Mapping[str, Any], source: str = "<plan>") -> Plan:
    eng = data["engine"]
    if not isinstance(eng, Mapping):
        raise MailstateError(f"{source}: damaged plan file (its engine block is not an object)")
    if eng.get("schema") != PLAN_FILE_SCHEMA:
        raise MailstateError(
            f"{source}: plan file schema {eng.get('schema')!r} is not supported "
            f"(this mailstate reads {PLAN_FILE_SCHEMA})"
        )
    try:
        plan = Plan.from_json(data)
    except MailstateError as exc:  # "plan file: …": say which file
        raise MailstateError(f"{source}: {str(exc).removeprefix('plan file: ')}") from None
    try:
        fp = data["fingerprint"]
        fpr = Fingerprint(
            desired=str(fp["desired"]),
            live=str(fp["live"]),
            files=dict(eng["files"]),
            records=dict(fp.get("live_digests") or {}),
        )
        meta = PlanMeta(
            fingerprint=fpr,
            state_dir=str(eng.get("state_dir") or ""),
            scope=eng.get("scope"),
            as_of=str(eng["as_of"]),
            domain=str(eng["domain"]),
            created_at=str(eng.get("created_at") or ""),
            providers=[str(p) for p in eng.get("providers") or []],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MailstateError(f"{source}: damaged plan file ({type(exc).__name__}: {exc})") from exc
    plan.meta = meta
    return plan


def save_plan(plan: Plan, path: Path | str) -> None:
    """Write the plan as JSON (the documented schema plus the engine's fingerprints); never a secret, but
    names, addresses and phone numbers of people: the file is created 0600 (replacing a wider one)."""
    data = plan_json(plan)
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover of a killed run: start from a new file (its mode is ours)
    fd = open_private(tmp, os.O_WRONLY | os.O_EXCL)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, target)


def load_plan(path: Path | str) -> Plan:
    """Read a plan saved by ``save_plan``; a file that is not one is a clear error."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MailstateError(f"{p}: no such plan file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MailstateError(f"{p}: not a mailstate plan file ({exc})") from exc
    if not isinstance(data, dict) or "engine" not in data or "changes" not in data:
        raise MailstateError(f"{p}: not a mailstate plan file saved with `plan --out`")
    return plan_from_json(data, source=str(p))
