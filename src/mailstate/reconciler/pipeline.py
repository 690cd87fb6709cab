"""The reconcile loop, top to bottom: load → read → project → diff → plan, then apply.

``make_plan`` never writes anything. ``apply_fresh`` (``apply --yes``) plans under the apply lock and
applies; ``apply_plan`` refuses a stale plan, checks the safety rules,
takes the apply lock (docs/operations.md), carries out the changes in plan order through their providers,
journals each one before and after, writes the audit log (docs/operations.md), and on a failure stops and
raises ``ApplyFailed`` saying what was done, what failed and what was not tried. Rerunning converges:
every provider change is idempotent and a new plan only holds what is still different.

Each step is a module of its own: desired_state (load, project), providers.registry (open, read),
reconciler.plan (scope, diff, order, fingerprint, the Plan), reconciler.apply (lock, journal, run).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import date
from pathlib import Path
from typing import Any

from mailstate.desired_state.assign import live_addresses_of
from mailstate.desired_state.lifecycle import notice_of
from mailstate.desired_state.loader import load_state
from mailstate.desired_state.naming import derive_addresses
from mailstate.desired_state.projection import Desired, project
from mailstate.desired_state.projection_imap import FOLDER_KINDS
from mailstate.desired_state.schema import State
from mailstate.errors import MailstateError, ProviderError, StalePlan
from mailstate.model.change import Change
from mailstate.model.i18n import _, change_title, fmt_date
from mailstate.model.mailbox_users import users_of
from mailstate.model.provider import (
    AwaitsLiveMailboxes,
    HasNotices,
    Provider,
    ReadsInRounds,
    Snapshot,
    TakesLiveMailboxes,
    TakesMailboxUsers,
    TakesUnitMailboxes,
)
from mailstate.model.records import MAILBOX_KINDS, Record
from mailstate.private_files import home_dir, open_private, private_dir
from mailstate.providers.registry import (
    close_providers,
    configured_providers,
    open_providers,
    option_for,
    provider_class,
    routes,
    unlisted_kinds,
)
from mailstate.reconciler.apply.journal import Journal, actor, git_commit, now_iso
from mailstate.reconciler.apply.lock import apply_lock
from mailstate.reconciler.apply.notify import send_pending
from mailstate.reconciler.apply.run import (
    ApplyIncomplete,
    ApplyInterrupted,
    ApplyResult,
    StopNow,
    StopSignals,
    change_json,
    group_by_connection,
    refuse_future,
    run,
    secrets_of,
)
from mailstate.reconciler.plan.diff import diff
from mailstate.reconciler.plan.fingerprint import fingerprint, stale_reasons, state_files
from mailstate.reconciler.plan.plan import (
    Plan,
    PlanMeta,
    SafetyLimits,
    as_of_date,
    build_plan,
    plan_changes,
    plan_meta,
)
from mailstate.reconciler.plan.scope import parse_scope, scope_filter, scope_plan

# --------------------------------------------------------------------------------------------------
# Read

ReadAheadAnswer = Callable[[State, list[str] | None, dict[str, float]], Mapping[str, Snapshot] | None]
"""What another process read meanwhile (``ReadAhead.snapshots``), for the state and provider names given."""
DirectoryAhead = Callable[
    [State, list[str] | None, dict[str, float]], tuple[str, Callable[[], Snapshot]] | None
]
"""When another process reads only the directory (``ReadAhead.directory``): its name and a function that
waits for its snapshot, for the state and provider names given; None: nothing read ahead that way."""


def read_all(
    providers: Mapping[str, Provider],
    scope_units: list[str] | None,
    timings: dict[str, float] | None = None,
    directory: tuple[str, Callable[[], Snapshot]] | None = None,
) -> dict[str, Snapshot]:
    """Every provider's snapshot; a failed read aborts (never treated as "absent").

    The providers read at the same time, one thread each. A mail provider can only read mailboxes the
    directory (the provider of the mailbox kinds) holds: one that ``AwaitsLiveMailboxes`` starts at once and
    asks for the directory's logins when it needs them (IMAP: after its doveadm pass); one that only
    ``TakesLiveMailboxes`` starts when the directory's read is done. When several reads fail, the error
    raised is the directory's, else the first provider's by name.

    Every provider reads everything, whatever ``scope_units`` (kept for callers): a scoped plan is the full
    plan filtered (``scope_plan``) — a person transferred into the scope is still under their old unit
    live, a grant to the scope's people lives in another unit's mailbox; a narrowed read would miss them
    and plan changes that do not exist.

    ``directory``: (name, a function returning its snapshot) of a directory read elsewhere (another
    process, ``read_ahead``), not among ``providers``: the mail providers read beside the wait for it.

    The reads are one round for the providers that share work across them (``ReadsInRounds``: one count
    of a mailbox's folders for the ssh and imap providers), begun before the first and ended after the
    last."""
    names = sorted(providers, key=lambda n: (not _holds_mailboxes(providers[n]), n))
    directory_name = next((n for n in names if _holds_mailboxes(providers[n])), None)
    directory_read: Future[Snapshot] = Future()
    if directory is not None:
        directory_name = directory[0]
    elif directory_name is None:
        directory_read.set_result(Snapshot("none"))

    def logins() -> set[str]:
        try:
            return live_logins(directory_read.result())
        except BaseException:
            raise ProviderError("the directory could not be read") from None

    def unit_logins() -> set[str]:
        try:
            snapshot = directory_read.result()
        except BaseException:
            raise ProviderError("the directory could not be read") from None
        return {rec.key for rec in snapshot.records.values() if rec.kind == "unit_mailbox"}

    def users() -> dict[str, str]:
        try:
            return users_of(directory_read.result().records.values())
        except BaseException:
            raise ProviderError("the directory could not be read") from None

    def read_one(name: str) -> Snapshot:
        prov = providers[name]
        is_directory = name == directory_name
        if not is_directory:
            if isinstance(prov, TakesMailboxUsers):
                prov.take_mailbox_users(users)
            if isinstance(prov, AwaitsLiveMailboxes):
                prov.await_live_mailboxes(logins)
            elif isinstance(prov, TakesLiveMailboxes):
                prov.set_live_mailboxes(logins())
            if isinstance(prov, TakesUnitMailboxes):
                prov.await_unit_mailboxes(unit_logins)
        t0 = time.perf_counter()
        try:
            snapshot = prov.read(None)
        except BaseException as exc:
            if is_directory:
                directory_read.set_exception(exc)
            if isinstance(exc, MailstateError) or not isinstance(exc, Exception):
                raise
            # a provider that leaked a library error: still abort, clearly
            raise ProviderError(
                _("{provider}: reading the live state failed: {error}").format(
                    provider=name, error=f"{type(exc).__name__}: {exc}")
            ) from exc
        if is_directory:
            directory_read.set_result(snapshot)
        if timings is not None:
            timings[f"read:{name}"] = time.perf_counter() - t0
        return snapshot

    def read_elsewhere() -> Snapshot:
        assert directory is not None
        t0 = time.perf_counter()
        try:
            snapshot = directory[1]()
        except BaseException as exc:
            directory_read.set_exception(exc)
            raise
        directory_read.set_result(snapshot)
        if timings is not None:
            timings[f"read:{directory[0]}"] = time.perf_counter() - t0
        return snapshot

    rounds = [prov for prov in providers.values() if isinstance(prov, ReadsInRounds)]
    for prov in rounds:
        prov.begin_round()
    try:
        if len(names) == 1 and directory is None:
            return {names[0]: read_one(names[0])}
        with ThreadPoolExecutor(max_workers=len(names) + 1, thread_name_prefix="read") as threads:
            futures = {name: threads.submit(read_one, name) for name in names}
            if directory is not None:
                futures = {directory[0]: threads.submit(read_elsewhere), **futures}
            wait(futures.values())
        return {name: futures[name].result() for name in futures}
    finally:
        for prov in rounds:
            prov.end_round()


def _holds_mailboxes(prov: Provider) -> bool:
    return bool(MAILBOX_KINDS & prov.kinds)


def hand_mailbox_users(
    providers: Mapping[str, Provider], changes: Iterable[Change], *, were_read: bool = False
) -> None:
    """Before an apply: tell the mail providers that address mailboxes by what the server knows
    (``TakesMailboxUsers``) the directory's {login: address} — read from the directory only if one of them
    needs it and no stale check read it meanwhile; with ``were_read``, the providers were just read
    (``read_all`` gave them the directory's) — and the address each change of a mailbox sets (a new hire's
    mailbox, made by this apply)."""
    takers = [p for p in providers.values() if isinstance(p, TakesMailboxUsers)]
    if not takers:
        return
    directory = next((p for p in providers.values() if _holds_mailboxes(p)), None)
    read: list[dict[str, str]] = []
    reading = threading.Lock()

    def users() -> dict[str, str]:
        with reading:
            if not read:
                read.append(users_of(directory.read(None).records.values()) if directory else {})
            return read[0]

    made = {
        c.key: str(c.after["address"])
        for c in changes
        if c.kind in MAILBOX_KINDS and c.after and isinstance(c.after.get("address"), str)
    }
    for prov in takers:
        if not were_read:
            prov.take_mailbox_users(users)
        prov.add_mailbox_users(made)


def read_live_addresses(state: State) -> dict[str, str]:
    """The addresses in use live (address → owner), read from the directory as ``plan`` reads it: what
    ``assign --live`` must never hand out (desired_state.assign takes it as ``read_live``)."""
    names = [n for n in configured_providers(state) if MAILBOX_KINDS & provider_class(n).kinds]
    providers = open_providers(state, names)
    try:
        snapshots = read_all(providers, None)
    finally:
        close_providers(providers)
    return live_addresses_of(snapshots.values())


def live_logins(snapshot: Snapshot) -> set[str]:
    """The logins (person and unit mailbox ids) of the mailboxes that exist in the directory."""
    return {rec.key for rec in snapshot.records.values() if rec.kind in MAILBOX_KINDS}


# --------------------------------------------------------------------------------------------------
# Plan


def _project(
    state: State,
    as_of: date,
    snapshots: Mapping[str, Snapshot],
    live: Mapping[tuple[str, str], Record],
    routes: Mapping[str, str],
) -> Desired:
    facts: dict[str, Any] = {}
    for snap in snapshots.values():
        for name, value in snap.facts.items():
            if isinstance(value, Mapping) and isinstance(facts.get(name), Mapping):
                facts[name] = {**facts[name], **value}
            else:
                facts[name] = value
    folders = all(k in routes for k in FOLDER_KINDS)
    return project(state, as_of, None, facts=facts, live=live, folders=folders)


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
    read_ahead: ReadAheadAnswer | None = None,
    directory_ahead: DirectoryAhead | None = None,
    preopened: Mapping[str, Provider] | None = None,
) -> Plan:
    """Load the state, read every provider (in bulk), project, diff, order and fingerprint. Writes nothing.

    ``scope`` takes ``unit:<id>`` values (or bare unit ids). ``providers`` is either opened providers by
    name (not closed here), or the names of the providers to use (default: the configured ones), which
    are opened and closed here. ``read_ahead(state, names, timings)`` (reconciler.read_ahead) gives what
    was read meanwhile by another process, or None: then they are read here. ``directory_ahead``: the
    directory alone read by another process (its snapshot waited for while the mail providers read here).
    ``preopened``: providers opened with the settings and already reading (``Prefetches``); closed here.
    """
    root = Path(state_dir)
    scope_units = parse_scope([s if ":" in s else f"unit:{s}" for s in scope] if scope else None)
    day = as_of_date(as_of)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if state is None:
        state = load_state(root)
    timings["load"] = time.perf_counter() - t0
    if scope_units:
        unknown = [u for u in scope_units if u not in state.units]
        if unknown:
            raise MailstateError(_("--scope: no unit {units} in the desired state").format(
                units=", ".join(unknown)))
    names = None if providers is None or isinstance(providers, Mapping) else list(providers)
    elsewhere = None
    if directory_ahead is not None and not isinstance(providers, Mapping):
        elsewhere = directory_ahead(state, names, timings)
    if elsewhere is None and read_ahead is not None and not isinstance(providers, Mapping):
        ahead = read_ahead(state, names, timings)
        if ahead is not None:
            close_providers(preopened or {})
            return plan_from(state, root, ahead, scope_units=scope_units, as_of=day, timings=timings)
    own = not isinstance(providers, Mapping)
    if isinstance(providers, Mapping):
        provs = dict(providers)
    elif elsewhere is not None:  # the directory read by another process: the mail providers read here
        rest = [n for n in (names or configured_providers(state)) if n != elsewhere[0]]
        provs = open_providers(state, rest, for_plan=True, preopened=preopened)
    else:
        provs = open_providers(state, providers, for_plan=True, preopened=preopened)
    try:
        snapshots = read_all(provs, scope_units, timings, directory=elsewhere)
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
    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    sf = scope_filter(scope_units, state, snapshots)
    live, unmanaged = _live_records(snapshots)
    used = sorted(snapshots)
    routes_used = routes(used)
    desired = _project(state, as_of, snapshots, live, routes_used)
    t1 = time.perf_counter()
    manage = unlisted_kinds(state, used)
    changes, unlisted = diff(
        desired, live, unmanaged=unmanaged, manage_unlisted=manage or False, routes=routes_used)
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
        created_at=now_iso(),
        providers=sorted(snapshots),
    )
    plan = build_plan(state, changes, unlisted, meta, live)
    if sf is not None:  # a scoped plan is the full plan filtered: nothing else can be right
        scope_plan(plan, sf, desired.records, live)
    timings["order"] = time.perf_counter() - t3
    return plan


# --------------------------------------------------------------------------------------------------
# Apply


def check_fresh(plan: Plan, state_dir: Path, providers: Mapping[str, Provider], state: State) -> Plan:
    """Raise StalePlan when the TOML or a live object in the plan's scope changed since the plan was made;
    return the plan made again from them (same changes; its safety rules and live mailbox count are the
    TOML's and the servers', never those written in the plan file)."""
    meta = plan_meta(plan)
    scope_units = meta.scope
    snapshots = read_all(providers, scope_units)
    sf = scope_filter(scope_units, state, snapshots)
    current = fingerprint(state_dir, snapshots, sf, files=state.files or state_files(state_dir))
    reasons = stale_reasons(meta.fingerprint, current)
    if reasons:
        more = [_("… and {n} more").format(n=len(reasons) - 20)] if len(reasons) > 20 else []
        shown = reasons[:20] + more
        raise StalePlan(
            _("the saved plan is stale; nothing was applied. Since it was made:") + "\n  "
            + "\n  ".join(shown)
            + "\n" + _("make a new plan")
        )
    # Same TOML, same live objects: planning again gives the same changes. Anything else means the plan
    # file was edited (or is not this state's): what was reviewed is all that may be applied.
    again = plan_from(state, state_dir, snapshots, scope_units=scope_units, as_of=as_of_date(meta.as_of))
    saved = {c.id: c for c in plan_changes(plan)}
    fresh = {c.id: c for c in plan_changes(again)}
    edited = sorted(
        change_title(c.action.label, c.kind, c.key)
        for cid, c in {**fresh, **saved}.items()
        if change_json(saved.get(cid)) != change_json(fresh.get(cid))
    )
    if edited or [*saved] != [*fresh]:
        shown = edited[:20] + ([_("… and {n} more").format(n=len(edited) - 20)] if len(edited) > 20 else [])
        raise StalePlan(
            _("the saved plan does not hold the changes its TOML and the live state give (was the file "
              "edited?); nothing was applied:") + "\n  "
            + "\n  ".join(shown or [_("the order of the changes")])
            + "\n" + _("make a new plan")
        )
    return again


def _raise_if_unsafe(plan: Plan, state: State, allow_destructive: bool) -> None:
    """The ``[safety]`` rules of the TOML, never those a saved plan file carries: an edited file could raise
    its own limits (or its live mailbox count, which ``check_fresh``'s plan made again corrects)."""
    dataclasses.replace(plan, safety=SafetyLimits.of(state.safety)).raise_if_unsafe(allow_destructive)


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
    parallelism: int = 1,
) -> ApplyResult:
    """Apply ``plan`` (see module doc). ``on_change(change, event)`` is called after each journal line
    (event: started / done / failed / refused / skipped) — progress display, and the tests' way to stop a
    server mid-apply.

    A change the server refuses (``ChangeRefused``) does not stop the run: the changes that depend on it are
    skipped, the others made, and ``ApplyIncomplete`` names both at the end. Any other failure stops at once
    (``ApplyFailed``). SIGINT, SIGTERM, SIGHUP stop it after the change in progress (``ApplyInterrupted``).
    A plan or ``as_of`` for a day after today is refused before anything is read. ``parallelism`` above 1
    carries out changes that do not depend on each other at once, that many per provider (``run_parallel``);
    1 (the default here, ``DEFAULT_PARALLELISM`` on the command line) one after another."""
    refuse_future(as_of, "--as-of")
    meta = plan_meta(plan)
    refuse_future(meta.as_of, _("the plan applies the lifecycle rules as of"))
    refuse_future(plan.as_of, _("the plan applies the lifecycle rules as of"))
    root = Path(state_dir)
    state = load_state(root)
    if meta.domain != state.domain:
        raise StalePlan(_("the plan was made for {domain}, the state directory is {state_domain}").format(
            domain=meta.domain, state_domain=state.domain))
    today = date.today().isoformat()
    confirmed = as_of_date(as_of).isoformat() if as_of is not None else None
    if meta.as_of != today and meta.as_of != confirmed:
        raise StalePlan(
            _("the plan applies the lifecycle rules as of {date}, not today ({today}); nothing was applied. "
              "Make a new plan, or confirm that date explicitly with --as-of {iso}").format(
                date=fmt_date(meta.as_of), today=fmt_date(today), iso=meta.as_of)
        )
    _raise_if_unsafe(plan, state, allow_destructive)
    if not isinstance(providers, Mapping):
        # the providers the plan was read from (a stale check re-reads them all), and any a change names
        names = (
            list(providers) if providers is not None else list(meta.providers or configured_providers(state))
        )
        providers = names + [c.provider for c in plan_changes(plan) if c.provider not in names]

    def checked(provs: Mapping[str, Provider]) -> Plan:
        if check_stale:
            fresh = check_fresh(plan, root, provs, state)
            _raise_if_unsafe(fresh, state, allow_destructive)
        return plan

    result = _apply(
        root, state, checked, providers, given=plan, journal_dir=journal_dir, audit_log=audit_log,
        passwords_out=passwords_out, on_change=on_change, break_lock=break_lock, parallelism=parallelism,
    )
    assert result is not None  # a given plan is always carried out (an empty one: nothing to do)
    return result


def apply_fresh(
    state_dir: Path | str,
    *,
    show: Callable[[Plan], None],
    state: State | None = None,
    scope: Iterable[str] | None = None,
    as_of: date | str | None = None,
    providers: Iterable[str] | None = None,
    allow_destructive: bool = False,
    journal_dir: Path | str | None = None,
    audit_log: Path | str | None = None,
    passwords_out: Path | str | None = None,
    on_change: Callable[[Change, str], None] | None = None,
    break_lock: bool = False,
    parallelism: int = 1,
) -> ApplyResult | None:
    """Plan and apply in one go, without a confirmation in between (``apply --yes``): the state loaded once,
    the providers opened once, and the live state read once — under the apply lock, so that no other apply
    can change it between this read and these changes: what a saved plan's stale check re-reads to make
    sure of. ``show(plan)`` is called with the plan before anything is written (printing it); a plan with no
    changes returns None, the lock released, nothing written. Otherwise as ``apply_plan``."""
    refuse_future(as_of, "--as-of")
    root = Path(state_dir)
    loaded = state if state is not None else load_state(root)
    names = list(providers) if providers is not None else None

    def planned(provs: Mapping[str, Provider]) -> Plan:
        plan = make_plan(root, scope=scope, as_of=as_of, providers=provs, state=loaded)
        show(plan)
        if plan_changes(plan):
            _raise_if_unsafe(plan, loaded, allow_destructive)
        return plan

    return _apply(
        root, loaded, planned, names, given=None, journal_dir=journal_dir, audit_log=audit_log,
        passwords_out=passwords_out, on_change=on_change, break_lock=break_lock, parallelism=parallelism,
    )


def _apply(
    root: Path,
    state: State,
    plan_of: Callable[[Mapping[str, Provider]], Plan],
    providers: Mapping[str, Provider] | list[str] | None,
    *,
    given: Plan | None,
    journal_dir: Path | str | None,
    audit_log: Path | str | None,
    passwords_out: Path | str | None,
    on_change: Callable[[Change, str], None] | None,
    break_lock: bool,
    parallelism: int,
) -> ApplyResult | None:
    """The apply both ways share: open the providers (``providers``: opened ones, or names; None: the
    configured ones), take the apply lock, have ``plan_of(providers)`` give the plan to carry out under it
    (``given``'s stale check, or a plan made there), journal and run its changes, send the lock notices.
    None when a plan made under the lock has no changes."""
    home = home_dir(state.domain)
    jdir = Path(journal_dir) if journal_dir is not None else home
    journal_path = jdir / "journal.jsonl"
    audit_path = Path(audit_log) if audit_log is not None else home / "audit.jsonl"
    pw_path = Path(passwords_out) if passwords_out is not None else None
    secrets = secrets_of(state)

    private_dir(jdir, tighten=journal_dir is None)  # the default home is mailstate's own: 0700
    for private in (journal_path, audit_path, pw_path):  # a link or another's file: refused before any change
        if private is not None and os.path.lexists(private):
            os.close(open_private(private, os.O_WRONLY | os.O_APPEND))

    own = not isinstance(providers, Mapping)
    if isinstance(providers, Mapping):
        provs = dict(providers)
    else:
        names = providers if providers is not None else configured_providers(state)
        provider_kwargs = option_for(names, "writes_passwords", passwords_out=pw_path) if pw_path else {}
        provs = open_providers(state, names, for_plan=True, **provider_kwargs)
    changes: list[Change] = []
    if given is not None:
        changes = group_by_connection(plan_changes(given), provs)
        hand_mailbox_users(provs, changes)
    done: list[Change] = []
    refused: list[tuple[Change, str]] = []
    skipped: list[tuple[Change, list[str]]] = []
    who = actor()
    warnings: list[str] = []

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
                        plan = plan_of(provs)
                        if given is None:
                            changes = group_by_connection(plan_changes(plan), provs)
                            if not changes:
                                return None
                            # the providers read the directory for this plan: only the new mailboxes to add
                            hand_mailbox_users(provs, changes, were_read=True)
                        signals.armed = False  # from here, only a change in progress is cut short
                        journal = Journal(journal_path, audit_path, who=who, commit=git_commit(root))
                        try:
                            run(
                                changes, provs, journal, signals, secrets, tell, done, refused, skipped,
                                journal_path, pw_written, plan_meta(plan).fingerprint.combined, parallelism,
                            )
                        finally:
                            journal.close()
                        # the owners of the temporary locks made (or of earlier ones not yet told)
                        told = [c.key for c in done if notice_of(c.reasons)]
                        warnings = send_pending(state, journal_path, audit_path, who=who,
                                                commit=journal.commit, told_now=told,
                                                addresses=lambda: person_addresses(state))
                    finally:
                        signals.armed = False  # a further signal must not cut the lock's release
            except StopNow as stop:  # a second signal before the first change (stale check, lock)
                raise ApplyInterrupted(stop.signum, done, changes[len(done):], journal=None) from None
        notices = [str(n) for p in provs.values() if isinstance(p, HasNotices) for n in p.notices]
    finally:
        if own:
            close_providers(provs)
    if refused:
        raise ApplyIncomplete(done, refused, skipped, journal_path, pw_written(), notices + warnings)
    return ApplyResult(
        notices=notices,
        done=done,
        journal=journal_path,
        audit_log=audit_path,
        passwords_file=pw_written(),
        warnings=warnings,
    )


def person_addresses(state: State) -> dict[str, str]:
    """Every person's address as a plan gives it: pinned in the TOML, else derived keeping the live
    directory's (a notice to the owner of a lock names the mailbox)."""
    try:
        live = read_live_addresses(state)
    except MailstateError:
        live = None
    return derive_addresses(state, live).people


def retry_notices(root: Path, journal_dir: Path | None = None, audit_log: Path | None = None) -> list[str]:
    """What an apply with nothing to change still does: send the notices to the owners of temporary locks
    still pending (reconciler.apply.notify), to the journal and audit log ``apply_plan`` writes; the
    warnings."""
    state = load_state(root)
    home = home_dir(state.domain)
    journal_path = (Path(journal_dir) if journal_dir is not None else home) / "journal.jsonl"
    if not journal_path.exists():
        return []
    audit_path = Path(audit_log) if audit_log is not None else home / "audit.jsonl"
    return send_pending(state, journal_path, audit_path, who=actor(), commit=git_commit(root),
                        addresses=lambda: person_addresses(state))
