"""The reconcile loop as a library: plan (read → project → diff → order → fingerprint), save/load, apply.

``make_plan`` never writes anything. ``apply_plan`` refuses a stale plan, checks the safety rules,
takes the apply lock (DESIGN §6.4), carries out the changes in plan order through their providers,
journals each one before and after, writes the audit log (DESIGN §6.5), and on a failure stops and
raises ``ApplyFailed`` saying what was done, what failed and what was not tried. Rerunning converges:
every provider change is idempotent and a new plan only holds what is still different.

Fingerprints (what makes a saved plan stale):
- desired: sha256 over every state file (relative path, NUL, content), sorted by path; the per-file
  digests are kept so that a stale check says which file changed;
- live: sha256 over the canonical JSON of every live record read (within the scope); the per-record
  digests are kept so that a stale check says which live object changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailstate.errors import ChangeRefused, MailstateError, ProviderError, StalePlan
from mailstate.reconciler.change import Change, Record
from mailstate.reconciler.journal import Journal, actor, git_commit, home_dir, open_private, private_dir
from mailstate.redact import hide_secrets

if TYPE_CHECKING:
    from mailstate.desired_state.model import State
    from mailstate.providers.base import Provider, Snapshot
    from mailstate.reconciler.plan import Plan

PLAN_FILE_SCHEMA = 1


class ApplyFailed(MailstateError):
    """An apply stopped on a failed change: what was done, what failed (and why), what was not tried."""

    def __init__(
        self,
        done: Sequence[Change],
        failed: Change,
        error: str,
        not_tried: Sequence[Change],
        journal: Path | None = None,
        passwords_file: Path | None = None,
        refused: Sequence[tuple[Change, str]] = (),
        skipped: Sequence[tuple[Change, Sequence[str]]] = (),
    ) -> None:
        self.done = list(done)
        self.refused = list(refused)
        self.skipped = list(skipped)
        self.failed = failed
        self.error = error
        self.not_tried = list(not_tried)
        self.journal = journal
        lines = [
            f"apply stopped: {_label(failed)} failed: {error}",
            f"  done ({len(self.done)}): "
            + (", ".join(_label(c) for c in self.done[:20]) or "nothing")
            + (" …" if len(self.done) > 20 else ""),
            f"  not tried ({len(self.not_tried)}): "
            + (", ".join(_label(c) for c in self.not_tried[:20]) or "nothing")
            + (" …" if len(self.not_tried) > 20 else ""),
        ]
        for change, refusal in self.refused:
            lines.append(f"  refused before it: {_label(change)}: {refusal}")
        if self.skipped:
            lines.append(f"  skipped, depend on a refused change ({len(self.skipped)}): "
                         + _listed([c for c, _ in self.skipped]))
        if journal is not None:
            lines.append(f"  journal: {journal}")
        self.passwords_file = passwords_file
        if passwords_file is not None:
            lines.append(f"  initial passwords of the people created so far: {passwords_file} (mode 0600)")
        lines.append("  fix the cause and run apply again: it only does what is still missing")
        super().__init__("\n".join(lines))


class ApplyLocked(MailstateError):
    """Another apply holds the organisation's apply lock."""


def _listed(changes: Sequence[Change], limit: int = 20) -> str:
    more = " …" if len(changes) > limit else ""
    return (", ".join(_label(c) for c in changes[:limit]) or "nothing") + more


class ApplyIncomplete(MailstateError):
    """An apply went through, but the server refused some changes: those and the changes that depend on them
    (``Change.depends_on``, transitively) were not made; everything else was."""

    def __init__(
        self,
        done: Sequence[Change],
        refused: Sequence[tuple[Change, str]],
        skipped: Sequence[tuple[Change, Sequence[str]]],
        journal: Path | None = None,
        passwords_file: Path | None = None,
        notices: Sequence[str] = (),
    ) -> None:
        self.done = list(done)
        self.refused = list(refused)
        self.skipped = list(skipped)
        self.journal = journal
        self.passwords_file = passwords_file
        self.notices = list(notices)
        waiting: dict[str, list[Change]] = {}
        for change, roots in self.skipped:
            for root in roots:
                waiting.setdefault(root, []).append(change)
        lines = [
            f"apply incomplete: {len(self.refused)} change{'' if len(self.refused) == 1 else 's'} refused by "
            f"the server, {len(self.skipped)} skipped because they depend on one; {len(self.done)} done"
        ]
        for change, error in self.refused:
            lines.append(f"  refused: {_label(change)}: {error}")
            if waiting.get(change.id):
                after = waiting[change.id]
                lines.append(f"    skipped, depend on it ({len(after)}): {_listed(after)}")
        if journal is not None:
            lines.append(f"  journal: {journal}")
        if passwords_file is not None:
            lines.append(f"  initial passwords of the people created: {passwords_file} (mode 0600)")
        lines.append("  fix the refused changes in the TOML (or on the server) and run apply again")
        super().__init__("\n".join(lines))


class ApplyInterrupted(MailstateError):
    """A signal (SIGINT, SIGTERM, SIGHUP) stopped an apply; the journal says where, the lock is released.
    The exit code is the shell's for that signal (128 + its number)."""

    def __init__(
        self,
        signum: int,
        done: Sequence[Change],
        not_tried: Sequence[Change],
        *,
        at_once: Change | None = None,
        journal: Path | None = None,
    ) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        self.done = list(done)
        self.not_tried = list(not_tried)
        name = signal.Signals(signum).name
        how = (
            f"at once during {_label(at_once)} (a second signal; that change may be partly done)"
            if at_once is not None
            else "after the change in progress"
        )
        lines = [
            f"apply stopped by {name} {how}; the apply lock is released",
            f"  done ({len(self.done)}): {_listed(self.done)}",
            f"  not tried ({len(self.not_tried)}): {_listed(self.not_tried)}",
        ]
        if journal is not None:
            lines.append(f"  journal: {journal}")
        lines.append("  run apply again: it only does what is still missing")
        super().__init__("\n".join(lines))


def _label(change: Change) -> str:
    return f"{change.id} ({change.action.label} {change.kind} {change.key})"


# --------------------------------------------------------------------------------------------------
# Fingerprints


@dataclass
class Fingerprint:
    """Digests of what a plan was made from; ``files`` and ``records`` say which object changed."""

    desired: str
    live: str
    files: dict[str, str] = field(default_factory=dict)
    records: dict[str, str] = field(default_factory=dict)

    @property
    def combined(self) -> str:
        return hashlib.sha256(f"{self.desired}:{self.live}".encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "desired": self.desired,
            "live": self.live,
            "combined": self.combined,
            "files": dict(self.files),
            "records": dict(self.records),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fingerprint:
        return cls(
            desired=str(data["desired"]),
            live=str(data["live"]),
            files=dict(data.get("files") or {}),
            records=dict(data.get("records") or {}),
        )


def state_files(state_dir: Path) -> list[Path]:
    """Every state file, exactly as the loader finds them (``*.toml``, hidden files and folders skipped)."""
    from mailstate.desired_state.loader import iter_toml_files

    return list(iter_toml_files(Path(state_dir)))


def file_digests(state_dir: Path, files: Iterable[Path] | None = None) -> dict[str, str]:
    root = state_dir.resolve()
    digests: dict[str, str] = {}
    for path in files if files is not None else state_files(root):
        rel = Path(path).resolve().relative_to(root).as_posix()
        h = hashlib.sha256(rel.encode() + b"\0")
        h.update(Path(path).read_bytes())
        digests[rel] = h.hexdigest()
    return digests


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=str)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def record_id(record: Record) -> str:
    return f"{record.provider}:{record.kind}:{record.key}"


def record_digest(record: Record) -> str:
    """The digest of one live record: the provider's digest of the raw object when it gives one
    (``attrs["_digest"]``), else sha256 of the record's canonical JSON."""
    raw = record.attrs.get("_digest")
    if isinstance(raw, str) and raw:
        return hashlib.sha256(f"{record.kind}\0{record.key}\0{record.provider}\0{raw}".encode()).hexdigest()
    data = {
        "kind": record.kind,
        "key": record.key,
        "provider": record.provider,
        "unit": record.unit,
        "attrs": _canonical(record.attrs),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def combine(digests: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(digests):
        h.update(name.encode() + b"\0" + digests[name].encode() + b"\n")
    return h.hexdigest()


def live_digests(snapshots: Mapping[str, Snapshot], scope: ScopeFilter | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    for snap in snapshots.values():
        for rec in list(snap.records.values()) + list(snap.unmanaged):
            if scope is None or scope.covers(rec):
                out[record_id(rec)] = record_digest(rec)
    return out


def fingerprint(
    state_dir: Path,
    snapshots: Mapping[str, Snapshot],
    scope: ScopeFilter | None = None,
    files: Iterable[Path] | None = None,
) -> Fingerprint:
    fd = file_digests(state_dir, files)
    rd = live_digests(snapshots, scope)
    return Fingerprint(desired=combine(fd), live=combine(rd), files=fd, records=rd)


def stale_reasons(old: Fingerprint, new: Fingerprint) -> list[str]:
    """What differs between the fingerprint a plan was made from and the current one, object by object."""
    reasons: list[str] = []
    for name in sorted(set(old.files) | set(new.files)):
        a, b = old.files.get(name), new.files.get(name)
        if a == b:
            continue
        reasons.append(f"{name} {'added' if a is None else 'removed' if b is None else 'changed'}")
    for rid in sorted(set(old.records) | set(new.records)):
        a, b = old.records.get(rid), new.records.get(rid)
        if a == b:
            continue
        _provider, kind, key = rid.split(":", 2)
        what = "appeared" if a is None else "disappeared" if b is None else "changed"
        reasons.append(f"live {kind} {key} {what}")
    if not reasons and (old.desired != new.desired or old.live != new.live):
        reasons.append("the fingerprint differs")
    return reasons


# --------------------------------------------------------------------------------------------------
# Scope


def parse_scope(values: Iterable[str] | None) -> list[str] | None:
    """Unit ids from ``unit:<id>`` values (None when no scope is given: everything)."""
    if not values:
        return None
    units: list[str] = []
    for value in values:
        kind, _, ident = value.partition(":")
        if kind != "unit" or not ident:
            raise MailstateError(f"--scope {value!r}: expected unit:<id>")
        units.append(ident)
    return sorted(set(units))


_REF_SPLIT = re.compile(r"[/#]")


@dataclass
class ScopeFilter:
    """Which records a scoped plan covers: the units, their people and mailboxes, objects naming them.

    A scoped plan is the full plan filtered (``scope_plan``): a change belongs to the scope when its
    desired record or its live record is covered, so a change whose before or after touches the scope is
    in it (a person transferred from one unit to another is in both units' plans)."""

    units: frozenset[str]
    people: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    """Groups naming an object of the scope in the TOML or live (both sides of such a group are planned)."""
    addresses: frozenset[str] = frozenset()
    """Addresses of the scope's people and unit mailboxes (TOML and live): an alias pointing at one is in."""

    def names(self) -> set[str]:
        return set(self.people) | {f"unit:{u}" for u in self.units}

    def covers(self, record: Record) -> bool:
        if record.unit is not None and record.unit in self.units:
            return True
        if record.kind in ("unit", "unit_mailbox") and record.key in self.units:
            return True
        if record.kind == "person" and record.key in self.people:
            return True
        names = self.names()
        attrs = record.attrs
        if record.kind == "unit":  # a unit headed or delegated by a person of the scope names them
            return attrs.get("head") in names or any(d in names for d in attrs.get("delegates") or ())
        if record.kind == "group":
            return (
                record.key in self.groups
                or any(m in names for m in attrs.get("members") or ())
                or any(str(a).lower() in self.addresses for a in attrs.get("delivers_to") or ())
            )
        if record.kind == "alias":
            targets = {t.strip().lower() for t in str(attrs.get("target") or "").split(",")}
            return str(attrs.get("_owner") or "") in names or bool(targets & self.addresses)
        if record.kind in ("shared_folder", "acl", "grant", "quota"):
            head = _REF_SPLIT.split(record.key, 1)[0]
            if head in names:
                return True
            if record.kind == "acl":
                ident = record.key.rsplit("#", 1)[-1]
                return ident in names or ident.removeprefix("unit:") in self.units
        return False


def _scope_filter(
    scope_units: list[str] | None, state: State, snapshots: Mapping[str, Snapshot]
) -> ScopeFilter | None:
    if scope_units is None:
        return None
    people = {pid for pid, p in state.people.items() if (p.unit or "") in scope_units}
    live_records = [rec for snap in snapshots.values() for rec in snap.records.values()]
    for rec in live_records:
        if rec.kind == "person" and (rec.unit in scope_units or rec.attrs.get("unit") in scope_units):
            people.add(rec.key)
    names = people | {f"unit:{u}" for u in scope_units}
    groups = {gid for gid, g in state.groups.items() if any(m in names for m in g.members)}
    addresses: set[str] = set()
    for pid in people:
        person = state.people.get(pid)
        addresses.update(a.lower() for a in ([person.address] if person and person.address else []))
    for u in scope_units:
        unit = state.units.get(u)
        addresses.update(a.lower() for a in ([unit.address] if unit and unit.address else []))
    for rec in live_records:
        if rec.kind == "group" and any(m in names for m in rec.attrs.get("members") or ()):
            groups.add(rec.key)
        in_scope = rec.key in people if rec.kind == "person" else rec.key in scope_units
        if rec.kind in ("person", "unit_mailbox") and in_scope:
            address = rec.attrs.get("address")  # a tuple when the entry holds several `mail` values
            primaries = address if isinstance(address, tuple) else (address,)
            for a in (*primaries, *(rec.attrs.get("aliases") or ())):
                if a:
                    addresses.add(str(a).lower())
    return ScopeFilter(
        units=frozenset(scope_units),
        people=frozenset(people),
        groups=frozenset(groups),
        addresses=frozenset(addresses),
    )


def _ref_key(kind: str, key: str) -> tuple[str, str]:
    return (kind, key.strip().lower() if kind == "alias" else key)  # as the diff matches them


def scope_plan(
    plan: Plan, sf: ScopeFilter, desired: Mapping[tuple[str, str], Record], live: Mapping[Any, Record]
) -> Plan:
    """The full ``plan`` filtered to the scope, in place: the changes whose desired or live record the
    scope covers (in the full plan's order, unchanged), and the unlisted records it covers."""
    sides = [{_ref_key(*ref): rec for ref, rec in side.items()} for side in (desired, live)]

    def touches(change: Change) -> bool:
        ref = _ref_key(change.kind, change.key)
        return any((rec := side.get(ref)) is not None and sf.covers(rec) for side in sides)

    plan.changes = [c for c in plan.changes if touches(c)]
    plan.unlisted = [rec for rec in plan.unlisted if sf.covers(rec)]
    return plan


# --------------------------------------------------------------------------------------------------
# Providers


def _env_set(*names: str) -> bool:
    return any(os.environ.get(n) for n in names)


def configured_providers(state: State) -> list[str]:
    """ldap always; imap and ssh when configured in [providers] or their environment variables are set."""
    names = ["ldap"]
    if state.providers.imap is not None or _env_set("MAILSTATE_IMAP_URL"):
        names.append("imap")
    if state.providers.ssh is not None or _env_set("MAILSTATE_SSH_HOST"):
        names.append("ssh")
    return names


def provider_class(name: str) -> type:
    """Load one provider class from the ``mailstate.providers`` entry points (only the one asked for)."""
    from mailstate.providers.base import ENTRY_POINT_GROUP

    eps = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not eps:
        known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise ProviderError(f"no provider named {name!r}; registered: {', '.join(known) or 'none'}")
    try:
        cls = eps[0].load()
    except Exception as exc:  # a missing or broken plug-in: one clear message
        raise ProviderError(f"provider {name!r} ({eps[0].value}) failed to load: {exc}") from exc
    return cls


PLAN_READ_OPTIONS: dict[str, dict[str, Any]] = {"imap": {"quota_facts": False}}
"""Provider options of the reads a plan (and apply's stale check) makes: nothing in a plan uses the quota
facts (quota is the directory's mailstateQuota), and their doveadm pass is 2/3 of a bulk IMAP read."""


def open_providers(state: State, names: Iterable[str] | None = None, **kwargs: Any) -> dict[str, Provider]:
    """Instantiate the providers (``from_state``); on a failure close those already opened."""
    opened: dict[str, Provider] = {}
    try:
        for name in names or configured_providers(state):
            cls = provider_class(name)
            extra = kwargs.get(name) or {}
            opened[name] = cls.from_state(state, **extra)  # type: ignore[attr-defined]
    except BaseException:
        close_providers(opened)
        raise
    return opened


def close_providers(providers: Mapping[str, Provider]) -> None:
    for prov in providers.values():
        with contextlib.suppress(Exception):
            prov.close()


def read_all(
    providers: Mapping[str, Provider], scope_units: list[str] | None, timings: dict[str, float] | None = None
) -> dict[str, Snapshot]:
    """Every provider's snapshot; a failed read aborts (never treated as "absent").

    Every provider reads everything, whatever ``scope_units`` (kept for callers): a scoped plan is the full
    plan filtered (``scope_plan``) — a person transferred into the scope is still under their old unit
    live, a grant to the scope's people lives in another unit's mailbox; a narrowed read would miss them
    and plan changes that do not exist."""
    snapshots: dict[str, Snapshot] = {}
    # the directory first: the mail providers can only read mailboxes that exist in it
    names = sorted(providers, key=lambda n: (n != "ldap", n))
    for name in names:
        prov = providers[name]
        if name != "ldap" and "ldap" in snapshots:
            _tell_live_mailboxes(prov, snapshots["ldap"])
        t0 = time.perf_counter()
        try:
            snapshots[name] = prov.read(None)
        except MailstateError:
            raise
        except Exception as exc:  # a provider that leaked a library error: still abort, clearly
            raise ProviderError(
                f"{name}: reading the live state failed: {type(exc).__name__}: {exc}"
            ) from exc
        if timings is not None:
            timings[f"read:{name}"] = time.perf_counter() - t0
    return snapshots


def live_logins(snapshot: Snapshot) -> set[str]:
    """The logins (person and unit mailbox ids) of the mailboxes that exist in the directory."""
    return {rec.key for rec in snapshot.records.values() if rec.kind in ("person", "unit_mailbox")}


def _tell_live_mailboxes(prov: Provider, ldap_snapshot: Snapshot) -> None:
    """Let a mail provider skip mailboxes the directory does not hold yet (a master-user login to a user
    that does not exist fails; such a mailbox has no folders or rights yet, and the plan creates them
    after the directory entry). Providers opt in with ``set_live_mailboxes(logins)``; the IMAP provider's
    ``mailboxes`` / ``desired_owners`` are narrowed directly until it offers that method."""
    logins = live_logins(ldap_snapshot)
    hook = getattr(prov, "set_live_mailboxes", None)
    if callable(hook):
        hook(logins)
        return
    mailboxes = getattr(prov, "mailboxes", None)
    if isinstance(mailboxes, dict):
        object.__setattr__(prov, "mailboxes", {k: v for k, v in mailboxes.items() if k in logins})
    owners = getattr(prov, "desired_owners", None)
    if isinstance(owners, (set, frozenset)):
        object.__setattr__(prov, "desired_owners", frozenset(o for o in owners if o in logins))


# --------------------------------------------------------------------------------------------------
# Plan


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


def _as_of(value: date | str | None) -> date:
    if value is None:
        return date.today()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise MailstateError(f"--as-of {value!r}: expected a date YYYY-MM-DD") from exc


def _project(
    state: State, as_of: date, snapshots: Mapping[str, Snapshot], live: Mapping[tuple[str, str], Record]
) -> Any:
    from mailstate.reconciler.desired import project

    facts: dict[str, Any] = {}
    for snap in snapshots.values():
        for name, value in snap.facts.items():
            if isinstance(value, Mapping) and isinstance(facts.get(name), Mapping):
                facts[name] = {**facts[name], **value}
            else:
                facts[name] = value
    return project(state, as_of, None, facts=facts, live=live, imap="imap" in snapshots)


def _live_records(snapshots: Mapping[str, Snapshot]) -> tuple[dict[tuple[str, str], Record], list[Record]]:
    live: dict[tuple[str, str], Record] = {}
    unmanaged: list[Record] = []
    for snap in snapshots.values():
        live.update(snap.records)
        unmanaged.extend(snap.unmanaged)
    return live, unmanaged


def make_plan(
    state_dir: Path | str,
    *,
    scope: Iterable[str] | None = None,
    as_of: date | str | None = None,
    providers: Mapping[str, Provider] | Iterable[str] | None = None,
    state: State | None = None,
) -> Plan:
    """Load the state, read every provider (in bulk), project, diff, order and fingerprint. Writes nothing.

    ``scope`` takes ``unit:<id>`` values (or bare unit ids). ``providers`` is either opened providers by
    name (not closed here), or the names of the providers to use (default: the configured ones), which
    are opened and closed here.
    """
    from mailstate.desired_state.loader import load_state

    root = Path(state_dir)
    scope_units = parse_scope([s if ":" in s else f"unit:{s}" for s in scope] if scope else None)
    day = _as_of(as_of)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if state is None:
        state = load_state(root)
    timings["load"] = time.perf_counter() - t0
    if scope_units:
        unknown = [u for u in scope_units if u not in state.units]
        if unknown:
            raise MailstateError(f"--scope: no unit {', '.join(unknown)} in the desired state")
    own = not isinstance(providers, Mapping)
    provs = (
        dict(providers)
        if isinstance(providers, Mapping)
        else open_providers(state, providers, **PLAN_READ_OPTIONS)
    )
    try:
        snapshots = read_all(provs, scope_units, timings)
    finally:
        if own:
            close_providers(provs)
    return plan_from(state, root, snapshots, scope_units=scope_units, as_of=day, timings=timings)


def plan_from(
    state: State,
    root: Path,
    snapshots: Mapping[str, Snapshot],
    *,
    scope_units: list[str] | None,
    as_of: date,
    timings: dict[str, float] | None = None,
) -> Plan:
    """The pure part of planning: given the state and what was read, build the ordered, fingerprinted plan."""
    from mailstate.reconciler.diff import diff

    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    sf = _scope_filter(scope_units, state, snapshots)
    live, unmanaged = _live_records(snapshots)
    desired = _project(state, as_of, snapshots, live)
    t1 = time.perf_counter()
    manage = list(state.providers.ldap.manage_unlisted)
    changes, unlisted = diff(desired, live, unmanaged=unmanaged, manage_unlisted=manage or False)
    t2 = time.perf_counter()
    fp = fingerprint(root, snapshots, sf, files=state.files or None)
    t3 = time.perf_counter()
    timings.update({"project": t1 - t0, "diff": t2 - t1, "fingerprint": t3 - t2})
    meta = PlanMeta(
        timings=timings,
        fingerprint=fp,
        state_dir=str(root),
        scope=scope_units,
        as_of=as_of.isoformat(),
        domain=state.domain,
        created_at=_now(),
        providers=sorted(snapshots),
    )
    plan = _build_plan(state, changes, unlisted, meta, live)
    if sf is not None:  # a scoped plan is the full plan filtered: nothing else can be right
        scope_plan(plan, sf, desired.records, live)
    timings["order"] = time.perf_counter() - t3
    return plan


def _now() -> str:
    from mailstate.reconciler.journal import now_iso

    return now_iso()


# --------------------------------------------------------------------------------------------------
# Saved plans


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


# --------------------------------------------------------------------------------------------------
# The apply lock (DESIGN §6.4)


@contextlib.contextmanager
def apply_lock(
    providers: Mapping[str, Provider], holder: str, lock_dir: Path, break_lock: bool = False
) -> Iterator[None]:
    """Hold the organisation's apply lock: the LDAP provider's lock entry in the directory when it offers
    one (``apply_lock(holder)``, a context manager), and always a local file lock as well."""
    private_dir(lock_dir)
    fd = open_private(lock_dir / "apply.lock", os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ApplyLocked(
                f"another apply is running on this machine (lock file {lock_dir / 'apply.lock'})"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, holder.encode())
        held: list[Any] = []
        try:
            for prov in providers.values():
                lock = getattr(prov, "apply_lock", None)
                if callable(lock):
                    held.append(_take_lock(lock, holder, break_lock))
        except BaseException:
            for cm in reversed(held):  # a later provider refused: give back the locks already taken
                with contextlib.suppress(Exception):
                    cm.__exit__(None, None, None)
            raise
        try:
            yield
        except BaseException as exc:
            # release what we can, but never let a release failure (e.g. slapd gone) hide the real error
            for cm in reversed(held):
                with contextlib.suppress(Exception):
                    cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            for cm in reversed(held):
                cm.__exit__(None, None, None)
    finally:
        os.close(fd)


_HOLDER_RE = re.compile(r"@(?P<host>[^\s@]+) pid (?P<pid>\d+)(?: since|$)")


def holder_is_dead(description: str) -> bool:
    """Whether a lock holder description names a process of THIS host that no longer runs (safe to break)."""
    m = _HOLDER_RE.search(description)
    if not m or m.group("host") != os.uname().nodename:
        return False
    try:
        os.kill(int(m.group("pid")), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _take_lock(lock: Callable[..., Any], holder: str, break_lock: bool) -> Any:
    """Enter a provider's lock; break it when asked (--break-lock, the provider's age rule) or when its
    holder is a dead process of this very host (an apply killed mid-way on this machine)."""
    cm = lock(holder, break_stale=True) if break_lock else lock(holder)
    try:
        cm.__enter__()
        return cm
    except ProviderError as exc:
        if break_lock or not holder_is_dead(str(exc)):
            raise
    cm = lock(holder, break_stale=True, stale_after_hours=0)
    cm.__enter__()
    return cm


# --------------------------------------------------------------------------------------------------
# Apply


@dataclass
class ApplyResult:
    done: list[Change]
    journal: Path
    audit_log: Path
    passwords_file: Path | None
    notices: list[str] = field(default_factory=list)
    """What the providers want the operator to know (never a secret)."""


def _secrets(state: State) -> list[str]:
    """The configured secret values (to scrub them from any error text that might echo them)."""
    found: list[str] = []
    settings = [state.providers.ldap, state.providers.imap, state.providers.ssh]
    env_names = {"MAILSTATE_LDAP_PASSWORD", "MAILSTATE_IMAP_PASSWORD"}
    for s in settings:
        if s is None:
            continue
        env = getattr(s, "password_env", None)
        if env:
            env_names.add(env)
        pf = getattr(s, "password_file", None)
        if pf:
            with contextlib.suppress(OSError):
                found.append(Path(pf).expanduser().read_text(encoding="utf-8").strip())
    found.extend(os.environ[n] for n in env_names if os.environ.get(n))
    return [s for s in found if len(s) >= 4]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` without the configured secret values and without the user and password of any URL."""
    return hide_secrets(text, secrets)


def check_fresh(plan: Plan, state_dir: Path, providers: Mapping[str, Provider], state: State) -> Plan:
    """Raise StalePlan when the TOML or a live object in the plan's scope changed since the plan was made;
    return the plan made again from them (same changes; its safety rules and live mailbox count are the
    TOML's and the servers', never those written in the plan file)."""
    meta = plan_meta(plan)
    scope_units = meta.scope
    snapshots = read_all(providers, scope_units)
    sf = _scope_filter(scope_units, state, snapshots)
    current = fingerprint(state_dir, snapshots, sf, files=state.files or state_files(state_dir))
    reasons = stale_reasons(meta.fingerprint, current)
    if reasons:
        shown = reasons[:20] + ([f"… and {len(reasons) - 20} more"] if len(reasons) > 20 else [])
        raise StalePlan(
            "the saved plan is stale; nothing was applied. Since it was made:\n  "
            + "\n  ".join(shown)
            + "\nmake a new plan"
        )
    # Same TOML, same live objects: planning again gives the same changes. Anything else means the plan
    # file was edited (or is not this state's): what was reviewed is all that may be applied.
    again = plan_from(state, state_dir, snapshots, scope_units=scope_units, as_of=_as_of(meta.as_of))
    saved = {c.id: c for c in plan_changes(plan)}
    fresh = {c.id: c for c in plan_changes(again)}
    edited = sorted(
        f"{c.action.label} {c.kind} {c.key}"
        for cid, c in {**fresh, **saved}.items()
        if _change_json(saved.get(cid)) != _change_json(fresh.get(cid))
    )
    if edited or [*saved] != [*fresh]:
        shown = edited[:20] + ([f"… and {len(edited) - 20} more"] if len(edited) > 20 else [])
        raise StalePlan(
            "the saved plan does not hold the changes its TOML and the live state give (was the file "
            "edited?); nothing was applied:\n  " + "\n  ".join(shown or ["the order of the changes"])
            + "\nmake a new plan"
        )
    return again


def _change_json(change: Change | None) -> str | None:
    if change is None:
        return None
    return json.dumps(change.to_json(), sort_keys=True, ensure_ascii=False, default=str)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""What ends a run: Ctrl-C, `timeout` / systemd / a cancelled CI job, a closed terminal or SSH session."""


class _StopNow(BaseException):
    """A second stop signal: interrupt the change in progress (raised by the handler, caught by apply)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopSignals:
    """While an apply runs, SIGINT / SIGTERM / SIGHUP ask it to stop after the change in progress (it is
    journaled, the run's end too, and the lock released); a second one stops the change in progress at once
    — except while the journal is closed and the lock released (``armed`` False). Handlers can only be set in
    the main thread: elsewhere the signals keep their defaults."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.count = 0
        self.armed = True
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.received is None:
            self.received = signum
        if self.count == 1:
            name = signal.Signals(signum).name
            with contextlib.suppress(OSError):  # a hung-up terminal: nowhere to say it
                os.write(2, f"\n{name}: stopping after the change in progress (again: at once)\n".encode())
            return
        if self.armed:
            raise _StopNow(signum)


class Blocked:
    """Which changes cannot be made because a change they depend on (``depends_on``, transitively) was
    refused. Changes are given in plan order (dependencies first), so one pass knows every blocker."""

    def __init__(self) -> None:
        self._roots: dict[str, frozenset[str]] = {}

    def refuse(self, change: Change) -> None:
        self._roots[change.id] = frozenset({change.id})

    def roots(self, change: Change) -> list[str]:
        """The refused changes ``change`` waits for (empty: it can be made); remembered for its dependents."""
        found: set[str] = set()
        for dep in change.depends_on:
            found |= self._roots.get(dep, frozenset())
        if found:
            self._roots[change.id] = frozenset(found)
        return sorted(found)


def refuse_future(day: date | str | None, what: str) -> None:
    """A lifecycle action is never applied before its date: ``day`` (an --as-of, a saved plan's as_of) after
    today is refused with ``MailstateError`` saying how to preview it instead."""
    if day is None:
        return
    wanted = _as_of(day)
    today = date.today()
    if wanted > today:
        raise MailstateError(
            f"{what} {wanted.isoformat()} is after today ({today.isoformat()}): a lock, archive or removal "
            f"is never applied before its date; nothing was applied. Preview that day with `mailstate plan "
            f"--as-of {wanted.isoformat()}`, and apply on or after it"
        )


def apply_plan(
    plan: Plan,
    state_dir: Path | str,
    *,
    allow_destructive: bool = False,
    journal_dir: Path | str | None = None,
    audit_log: Path | str | None = None,
    passwords_out: Path | str | None = None,
    providers: Mapping[str, Provider] | Iterable[str] | None = None,
    check_stale: bool = True,
    on_change: Callable[[Change, str], None] | None = None,
    break_lock: bool = False,
    as_of: date | str | None = None,
) -> ApplyResult:
    """Apply ``plan`` (see module doc). ``on_change(change, event)`` is called after each journal line
    (event: started / done / failed / refused / skipped) — progress display, and the tests' way to stop a
    server mid-apply.

    A change the server refuses (``ChangeRefused``) does not stop the run: the changes that depend on it are
    skipped, the others made, and ``ApplyIncomplete`` names both at the end. Any other failure stops at once
    (``ApplyFailed``). SIGINT, SIGTERM, SIGHUP stop it after the change in progress (``ApplyInterrupted``).
    A plan or ``as_of`` for a day after today is refused before anything is read."""
    from mailstate.desired_state.loader import load_state

    refuse_future(as_of, "--as-of")
    meta = plan_meta(plan)
    refuse_future(meta.as_of, "the plan applies the lifecycle rules as of")
    refuse_future(getattr(plan, "as_of", None), "the plan applies the lifecycle rules as of")
    root = Path(state_dir)
    state = load_state(root)
    if meta.domain != state.domain:
        raise StalePlan(f"the plan was made for {meta.domain}, the state directory is {state.domain}")
    today = date.today().isoformat()
    confirmed = _as_of(as_of).isoformat() if as_of is not None else None
    if meta.as_of != today and meta.as_of != confirmed:
        raise StalePlan(
            f"the plan applies the lifecycle rules as of {meta.as_of}, not today ({today}); nothing was "
            f"applied. Make a new plan, or confirm that date explicitly with --as-of {meta.as_of}"
        )
    home = home_dir(state.domain)
    jdir = Path(journal_dir) if journal_dir is not None else home
    journal_path = jdir / "journal.jsonl"
    audit_path = Path(audit_log) if audit_log is not None else home / "audit.jsonl"
    pw_path = Path(passwords_out) if passwords_out is not None else None
    secrets = _secrets(state)

    _raise_if_unsafe(plan, state, allow_destructive)
    changes = list(plan_changes(plan))
    private_dir(jdir, tighten=journal_dir is None)  # the default home is mailstate's own: 0700
    for private in (journal_path, audit_path, pw_path):  # a link or another's file: refused before any change
        if private is not None and os.path.lexists(private):
            os.close(open_private(private, os.O_WRONLY | os.O_APPEND))

    own = not isinstance(providers, Mapping)
    provider_kwargs: dict[str, dict[str, Any]] = dict(PLAN_READ_OPTIONS)
    if pw_path is not None:
        provider_kwargs["ldap"] = {"passwords_out": pw_path}
    if isinstance(providers, Mapping):
        provs = dict(providers)
    else:
        # the providers the plan was read from (a stale check re-reads them all), and any a change names
        names = (
            list(providers) if providers is not None else list(meta.providers or configured_providers(state))
        )
        names += [c.provider for c in changes if c.provider not in names]
        provs = open_providers(state, names, **provider_kwargs)
    changes = group_by_connection(changes, provs)
    done: list[Change] = []
    refused: list[tuple[Change, str]] = []
    skipped: list[tuple[Change, list[str]]] = []
    who = actor()

    def pw_written() -> Path | None:
        return pw_path if pw_path is not None and pw_path.exists() else None

    def tell(change: Change, event: str) -> None:
        if on_change:
            on_change(change, event)

    try:
        holder = f"{who}@{os.uname().nodename} pid {os.getpid()}"
        with StopSignals() as signals:
            try:
                with apply_lock(provs, holder, jdir, break_lock):
                    try:
                        if check_stale:
                            fresh = check_fresh(plan, root, provs, state)
                            _raise_if_unsafe(fresh, state, allow_destructive)
                        signals.armed = False  # from here, only a change in progress is cut short
                        journal = Journal(journal_path, audit_path, who=who, commit=git_commit(root))
                        try:
                            _run(
                                changes, provs, journal, signals, secrets, tell, done, refused, skipped,
                                journal_path, pw_written, meta.fingerprint.combined,
                            )
                        finally:
                            journal.close()
                    finally:
                        signals.armed = False  # a further signal must not cut the lock's release
            except _StopNow as stop:  # a second signal before the first change (stale check, lock)
                raise ApplyInterrupted(stop.signum, done, changes[len(done):], journal=None) from None
        notices = [str(n) for p in provs.values() for n in getattr(p, "notices", None) or []]
    finally:
        if own:
            close_providers(provs)
    if refused:
        raise ApplyIncomplete(done, refused, skipped, journal_path, pw_written(), notices)
    return ApplyResult(
        notices=notices,
        done=done,
        journal=journal_path,
        audit_log=audit_path,
        passwords_file=pw_written(),
    )


def _run(
    changes: list[Change],
    provs: Mapping[str, Provider],
    journal: Journal,
    signals: StopSignals,
    secrets: list[str],
    tell: Callable[[Change, str], None],
    done: list[Change],
    refused: list[tuple[Change, str]],
    skipped: list[tuple[Change, list[str]]],
    journal_path: Path,
    pw_written: Callable[[], Path | None],
    plan_fingerprint: str,
) -> None:
    """The change loop of ``apply_plan``: journal, apply, and on a refusal skip its dependents."""
    blocked = Blocked()
    report = tell

    def told(change: Change, event: str) -> None:
        try:
            report(change, event)
        except OSError:
            # the output is gone (`| head`, a log collector that died): a write to a closed pipe is what
            # SIGPIPE signals, and it stops the run the same way — after this change, journaled, unlocked
            if signals.received is None:
                signals.received = signal.SIGPIPE

    journal.run_started(plan_fingerprint=plan_fingerprint, changes=len(changes))

    def finish(outcome: str, failed: int, not_tried: int, **extra: Any) -> None:
        journal.run_finished(
            outcome=outcome, done=len(done), failed=failed, not_tried=not_tried, skipped=len(skipped), **extra
        )

    for i, change in enumerate(changes):
        if signals.received is not None:
            name = signal.Signals(signals.received).name
            finish("interrupted", len(refused), len(changes) - i, signal=name)
            raise ApplyInterrupted(signals.received, done, changes[i:], journal=journal_path)
        roots = blocked.roots(change)
        if roots:
            journal.skipped(change, roots)
            skipped.append((change, roots))
            told(change, "skipped")
            continue
        prov = provs.get(change.provider)
        journal.started(change)
        told(change, "started")
        try:
            if prov is None:
                raise ProviderError(f"provider {change.provider!r} is not configured")
            signals.armed = True
            try:
                prov.apply(change)
            finally:
                signals.armed = False
        except ChangeRefused as exc:
            error = redact(_describe(exc), secrets)
            journal.failed(change, error, refused=True)
            refused.append((change, error))
            blocked.refuse(change)
            told(change, "refused")
            continue
        except Exception as exc:
            error = redact(_describe(exc), secrets)
            journal.failed(change, error)
            finish("failed", len(refused) + 1, len(changes) - i - 1)
            told(change, "failed")
            raise ApplyFailed(
                done, change, error, changes[i + 1 :], journal_path, pw_written(), refused, skipped
            ) from None
        except (KeyboardInterrupt, _StopNow) as exc:
            # a second signal (or Ctrl-C without our handler): the change may or may not have happened;
            # say so, a rerun converges either way
            signum = exc.signum if isinstance(exc, _StopNow) else signal.SIGINT
            name = signal.Signals(signum).name
            journal.failed(change, f"interrupted ({name}); the change may be partly done")
            finish("interrupted", len(refused) + 1, len(changes) - i - 1, signal=name)
            rest = changes[i + 1 :]
            raise ApplyInterrupted(signum, done, rest, at_once=change, journal=journal_path) from None
        journal.done(change)
        done.append(change)
        told(change, "done")
    finish("incomplete" if refused else "ok", len(refused), 0)


def group_by_connection(changes: Sequence[Change], provs: Mapping[str, Provider]) -> list[Change]:
    """The plan's order, except that a change a provider places on a connection
    (``provider.connection_group(change)``, e.g. the IMAP mailbox it is made in) is moved up to follow the
    previous change of that connection, as long as everything it depends on still comes before it. So one
    mailbox's folder creation, revokes and grants go over one connection, instead of one login per phase."""
    slots: list[list[Change]] = []
    slot_of: dict[str, int] = {}
    last: dict[tuple[str, str], int] = {}
    for c in changes:
        fn = getattr(provs.get(c.provider), "connection_group", None)
        group = fn(c) if fn is not None else None
        ready = max((slot_of[d] for d in c.depends_on if d in slot_of), default=-1)
        at = last.get((c.provider, group)) if group is not None else None
        if at is None or at < ready:
            slots.append([])
            at = len(slots) - 1
            if group is not None:
                last[(c.provider, group)] = at
        slots[at].append(c)
        slot_of[c.id] = at
    return [c for slot in slots for c in slot]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MailstateError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------------
# Adapters to the core Plan (reconciler/plan.py) and renderers (reconciler/render.py)

_META_ATTR = "engine_meta"


def _build_plan(
    state: State, changes: list[Change], unlisted: list[Record], meta: PlanMeta, live: Mapping[Any, Record]
) -> Plan:
    from mailstate.reconciler.plan import Plan

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
    _set_meta(plan, meta)
    return plan


def _set_meta(plan: Any, meta: PlanMeta) -> None:
    object.__setattr__(plan, _META_ATTR, meta)


def plan_meta(plan: Any) -> PlanMeta:
    meta = getattr(plan, _META_ATTR, None)
    if meta is None:
        raise MailstateError("this plan has no fingerprint (it was not made by make_plan or load_plan)")
    return meta


def plan_changes(plan: Any) -> list[Change]:
    return list(plan.changes)


def plan_unlisted(plan: Any) -> list[Record]:
    return list(getattr(plan, "unlisted", None) or [])


def plan_json(plan: Any) -> dict[str, Any]:
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
    from mailstate.reconciler import plan as planmod

    eng = data["engine"]
    if eng.get("schema") != PLAN_FILE_SCHEMA:
        raise MailstateError(
            f"{source}: plan file schema {eng.get('schema')!r} is not supported "
            f"(this mailstate reads {PLAN_FILE_SCHEMA})"
        )
    try:
        plan = planmod.Plan.from_json(data)
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
    _set_meta(plan, meta)
    return plan


def _raise_if_unsafe(plan: Any, state: State, allow_destructive: bool) -> None:
    """The ``[safety]`` rules of the TOML, never those a saved plan file carries: an edited file could raise
    its own limits (or its live mailbox count, which ``check_fresh``'s plan made again corrects)."""
    from mailstate.reconciler.plan import SafetyLimits

    if dataclasses.is_dataclass(plan) and not isinstance(plan, type) and hasattr(plan, "safety"):
        plan = dataclasses.replace(plan, safety=SafetyLimits.of(state.safety))
    plan.raise_if_unsafe(allow_destructive)


def render_plan(plan: Any, fmt: str, out: Any, *, color: bool = False, **options: Any) -> None:
    """Render with the core renderers; JSON is the saved-plan JSON (same schema, plus fingerprints)."""
    if fmt == "json":
        out.write(json.dumps(plan_json(plan), ensure_ascii=False, indent=2) + "\n")
        return
    try:
        from mailstate.reconciler.render import render
    except ModuleNotFoundError as exc:  # the renderers are another module; stay usable without them
        if exc.name != "mailstate.reconciler.render":
            raise
        _plain(plan, out)
        return
    if fmt == "text":
        options["color"] = color
    text = render(plan, fmt, **options)
    out.write(text if text.endswith("\n") else text + "\n")


def _plain(plan: Any, out: Any) -> None:
    changes = plan_changes(plan)
    summary = ", ".join(f"{n} {a}" for a, n in plan.summary.items()) or "no changes"
    out.write(f"Plan: {summary}\n")
    for c in changes:
        out.write(f"  {c.action.label:8} {c.kind:13} {c.key}\n")
    unlisted = plan_unlisted(plan)
    if unlisted:
        out.write(f"Not in the TOML (left alone): {len(unlisted)}\n")
