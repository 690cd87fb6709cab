"""Carrying out a plan's changes: journal each one before and after, stop on a failure, skip what a refused
change blocks, stop cleanly on a signal; the errors that say what was done, what failed and what was not
tried. The pipeline (reconciler.pipeline.apply_plan) loads, checks and locks, then calls ``run``."""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import re
import signal
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from mailstate.desired_state.schema import State
from mailstate.errors import ChangeRefused, MailstateError, ProviderError
from mailstate.model.change import Action, Change
from mailstate.model.i18n import _, change_title, fmt_date, ngettext
from mailstate.model.provider import GroupsConnections, Provider
from mailstate.reconciler.apply.journal import Journal
from mailstate.reconciler.plan.plan import as_of_date
from mailstate.redact import hide_secrets


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
            _("apply stopped: {change} failed: {error}").format(change=_label(failed), error=error),
            "  " + _("done ({n}): {changes}").format(n=len(self.done), changes=_listed(self.done)),
            "  " + _("not tried ({n}): {changes}").format(
                n=len(self.not_tried), changes=_listed(self.not_tried)),
        ]
        for change, refusal in self.refused:
            lines.append("  " + _("refused before it: {change}: {error}").format(change=_label(change),
                                                                                  error=refusal))
        if self.skipped:
            lines.append("  " + _("skipped, depend on a refused change ({n}): {changes}").format(
                n=len(self.skipped), changes=_listed([c for c, _roots in self.skipped])))
        if journal is not None:
            lines.append("  " + _("journal: {file}").format(file=journal))
        self.passwords_file = passwords_file
        if passwords_file is not None:
            said = _("initial passwords of the people created so far: {file} (mode 0600)")
            lines.append("  " + said.format(file=passwords_file))
        lines.append("  " + _("fix the cause and run apply again: it only does what is still missing"))
        super().__init__("\n".join(lines))


def _listed(changes: Sequence[Change], limit: int = 20) -> str:
    more = " …" if len(changes) > limit else ""
    return (", ".join(_label(c) for c in changes[:limit]) or _("nothing")) + more


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
            ngettext("apply incomplete: {n} change refused by the server, {skipped} skipped because they "
                     "depend on one; {done} done",
                     "apply incomplete: {n} changes refused by the server, {skipped} skipped because they "
                     "depend on one; {done} done", len(self.refused)).format(
                n=len(self.refused), skipped=len(self.skipped), done=len(self.done))
        ]
        for change, error in self.refused:
            lines.append("  " + _("refused: {change}: {error}").format(change=_label(change), error=error))
            if waiting.get(change.id):
                after = waiting[change.id]
                lines.append("    " + _("skipped, depend on it ({n}): {changes}").format(
                    n=len(after), changes=_listed(after)))
        if journal is not None:
            lines.append("  " + _("journal: {file}").format(file=journal))
        if passwords_file is not None:
            lines.append("  " + _("initial passwords of the people created: {file} (mode 0600)").format(
                file=passwords_file))
        lines.append("  " + _("fix the refused changes in the TOML (or on the server) and run apply again"))
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
        if at_once is not None:
            head = _("apply stopped by {signal} at once during {change} (a second signal; that change may be "
                     "partly done); the apply lock is released").format(signal=name, change=_label(at_once))
        else:
            head = _("apply stopped by {signal} after the change in progress; the apply lock is "
                     "released").format(signal=name)
        lines = [
            head,
            "  " + _("done ({n}): {changes}").format(n=len(self.done), changes=_listed(self.done)),
            "  " + _("not tried ({n}): {changes}").format(
                n=len(self.not_tried), changes=_listed(self.not_tried)),
        ]
        if journal is not None:
            lines.append("  " + _("journal: {file}").format(file=journal))
        lines.append("  " + _("run apply again: it only does what is still missing"))
        super().__init__("\n".join(lines))


def _label(change: Change) -> str:
    return f"{change.id} ({change_title(change.action.label, change.kind, change.key)})"


@dataclass
class ApplyResult:
    done: list[Change]
    journal: Path
    audit_log: Path
    passwords_file: Path | None
    notices: list[str] = field(default_factory=list)
    """What the providers want the operator to know (never a secret)."""
    warnings: list[str] = field(default_factory=list)
    """What went wrong beside the changes: a notice to the owner of a lock not sent
    (reconciler.apply.notify)."""


_PASSWORD_ENV = re.compile(r"^MAILSTATE_[A-Z0-9_]+_PASSWORD$")
"""The providers' default password variables (MAILSTATE_LDAP_PASSWORD, MAILSTATE_IMAP_PASSWORD …)."""


def secrets_of(state: State) -> list[str]:
    """The configured secret values (to scrub them from any error text that might echo them): every
    provider's ``password_env`` / ``password_file``, and every MAILSTATE_*_PASSWORD variable."""
    found: list[str] = []
    providers = state.providers
    settings = [getattr(providers, name) for name in type(providers).model_fields]
    env_names = {n for n in os.environ if _PASSWORD_ENV.match(n)}
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


def change_json(change: Change | None) -> str | None:
    if change is None:
        return None
    return json.dumps(change.to_json(), sort_keys=True, ensure_ascii=False, default=str)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""What ends a run: Ctrl-C, `timeout` / systemd / a cancelled CI job, a closed terminal or SSH session."""


class StopNow(BaseException):
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
                said = _("{signal}: stopping after the change in progress (again: at once)").format(
                    signal=name)
                os.write(2, f"\n{said}\n".encode())
            return
        if self.armed:
            raise StopNow(signum)


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
    wanted = as_of_date(day)
    today = date.today()
    if wanted > today:
        raise MailstateError(
            _("{what} {date} is after today ({today}): a lock, archive or removal is never applied before "
              "its date; nothing was applied. Preview that day with `mailstate plan --as-of {iso}`, and "
              "apply on or after it").format(what=what, date=fmt_date(wanted), today=fmt_date(today),
                                    iso=wanted.isoformat())
        )


def run(
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
    parallelism: int = 1,
) -> None:
    """The change loop of ``apply_plan``: journal, apply, and on a refusal skip its dependents. With
    ``parallelism`` above 1, ``run_parallel`` (same journal, same outcomes, changes that do not depend on
    each other at once)."""
    if parallelism > 1:
        run_parallel(
            changes, provs, journal, signals, secrets, tell, done, refused, skipped, journal_path, pw_written,
            plan_fingerprint, parallelism,
        )
        return
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
                raise ProviderError(_("provider {name} is not configured").format(name=repr(change.provider)))
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
        except (KeyboardInterrupt, StopNow) as exc:
            # a second signal (or Ctrl-C without our handler): the change may or may not have happened;
            # say so, a rerun converges either way
            signum = exc.signum if isinstance(exc, StopNow) else signal.SIGINT
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
        prov = provs.get(c.provider)
        group = prov.connection_group(c) if isinstance(prov, GroupsConnections) else None
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


DEFAULT_PARALLELISM = 4
"""Changes in progress at once per provider (``apply --parallelism``). A default slapd runs 16 threads, a
default Dovecot accepts 100 connections per service and the IMAP provider keeps at most ``max_connections``
(8) open: four changes per provider keep well inside all three while each waits on its server."""

ONE_AT_A_TIME = frozenset({Action.ARCHIVE, Action.DELETE})
"""Actions a provider carries out one after another even in a parallel apply: an archive is verified by
reading it back, a removal follows it — mail is not where throughput is won."""


GRANT_PHASE = Action.GRANT.phase
CROSS_PROVIDER_FREE = frozenset({Action.CREATE.phase, Action.RENAME.phase, Action.UPDATE.phase})
"""Lower phases a grant waits for only in its own provider: another provider's creations and updates make
nothing a right needs but what its dependencies name (revokes and unlocks still go first everywhere)."""


class Schedule:
    """Which changes of a plan may start, for ``run_parallel``: bookkeeping only, no I/O.

    A change may start when
    - every change it depends on (``depends_on``, earlier in the plan: a dependency cycle broken by the
      plan's order is ordered by it) is finished;
    - every earlier change of a lower phase (``Action.phase``: revokes before creates before grants …) is
      finished — the order the plan promises among changes that do not name each other — except that a
      grant does not wait for another provider's creations and updates (``CROSS_PROVIDER_FREE``): the
      mailboxes and folders a right names are among its dependencies (its owner, its folder, whom it is
      for), so the rights of a first apply are set while the directory's thousands of people are still
      being added, each unit mailbox's folder and rights over one connection;
    - no other change of its connection (``GroupsConnections``: one IMAP mailbox) or, for an archive or a
      removal, no other such change of its provider is in progress;
    - its provider has fewer than ``parallelism`` changes in progress.
    Among the changes that may start, the earliest in the plan first."""

    def __init__(
        self,
        changes: Sequence[Change],
        group_of: Callable[[Change], str | None],
        parallelism: int,
    ) -> None:
        self.changes = list(changes)
        self.parallelism = max(1, parallelism)
        pos = {c.id: i for i, c in enumerate(self.changes)}
        n = len(self.changes)
        self.unmet = [0] * n
        self.dependents: list[list[int]] = [[] for _ in range(n)]
        for i, c in enumerate(self.changes):
            for d in set(c.depends_on):
                j = pos.get(d)
                if j is not None and j < i:
                    self.unmet[i] += 1
                    self.dependents[j].append(i)
        self.phase = [c.action.phase for c in self.changes]
        self.phases = sorted(set(self.phase))
        self.by_phase: dict[int, list[int]] = {p: [] for p in self.phases}
        self.by_own: dict[tuple[int, str], list[int]] = {}
        """Per (phase, provider), its changes in plan order (the lower phases a grant waits for in its own
        provider only)."""
        for i, p in enumerate(self.phase):
            self.by_phase[p].append(i)
            self.by_own.setdefault((p, self.changes[i].provider), []).append(i)
        self.low = dict.fromkeys(self.phases, 0)
        """Per phase, the index (in by_phase) of its earliest unfinished change."""
        self.low_own = dict.fromkeys(self.by_own, 0)
        self.group: list[tuple[str, str] | None] = []
        for c in self.changes:
            g = "\0one at a time" if c.action in ONE_AT_A_TIME else group_of(c)
            self.group.append((c.provider, g) if g is not None else None)
        self.finished = [False] * n
        self.waiting_phase: dict[tuple[int, str], list[int]] = {}
        self.ready: dict[str, list[int]] = {}
        self.busy: set[tuple[str, str]] = set()
        self.group_wait: dict[tuple[str, str], list[int]] = {}
        self.running: dict[str, int] = {}
        self.available: list[int] = []
        """Changes whose dependencies are all finished, not yet placed (the caller may skip them): a heap,
        taken in plan order."""
        self.available.extend(i for i in range(n) if self.unmet[i] == 0)

    def _limit(self, phase: int, provider: str) -> int:
        """Changes of ``phase`` and ``provider`` before this position have every earlier lower-phase change
        they wait for finished."""
        limit = len(self.changes)
        for q in self.phases:
            if q >= phase:
                break
            if phase == GRANT_PHASE and q in CROSS_PROVIDER_FREE:
                members, at = self.by_own.get((q, provider), []), self.low_own.get((q, provider), 0)
            else:
                members, at = self.by_phase[q], self.low[q]
            if at < len(members):
                limit = min(limit, members[at])
        return limit

    def place(self, i: int) -> None:
        """A change whose dependencies are finished, and which is not skipped: queue it to start."""
        p, prov = self.phase[i], self.changes[i].provider
        if i < self._limit(p, prov):
            heapq.heappush(self.ready.setdefault(prov, []), i)
        else:
            heapq.heappush(self.waiting_phase.setdefault((p, prov), []), i)

    def startable(self) -> list[int]:
        """Take the changes that may start now (marked in progress)."""
        out: list[int] = []
        for prov, heap in self.ready.items():
            while heap and self.running.get(prov, 0) < self.parallelism:
                i = heapq.heappop(heap)
                g = self.group[i]
                if g is not None:
                    if g in self.busy:
                        heapq.heappush(self.group_wait.setdefault(g, []), i)
                        continue
                    self.busy.add(g)
                self.running[prov] = self.running.get(prov, 0) + 1
                out.append(i)
        return sorted(out)

    def finish(self, i: int, started: bool) -> None:
        """Change ``i`` is over (done, refused, or skipped without starting)."""
        self.finished[i] = True
        if started:
            prov = self.changes[i].provider
            self.running[prov] -= 1
            g = self.group[i]
            if g is not None:
                self.busy.discard(g)
                waiting = self.group_wait.get(g)
                if waiting:
                    heapq.heappush(self.ready.setdefault(prov, []), heapq.heappop(waiting))
        p, own = self.phase[i], (self.phase[i], self.changes[i].provider)
        members = self.by_phase[p]
        moved = False
        while self.low[p] < len(members) and self.finished[members[self.low[p]]]:
            self.low[p] += 1
            moved = True
        mine = self.by_own[own]
        while self.low_own[own] < len(mine) and self.finished[mine[self.low_own[own]]]:
            self.low_own[own] += 1
            moved = True
        if moved:
            for (q, prov), heap in self.waiting_phase.items():
                if q <= p:
                    continue
                limit = self._limit(q, prov)
                while heap and heap[0] < limit:
                    j = heapq.heappop(heap)
                    heapq.heappush(self.ready.setdefault(prov, []), j)
        for j in self.dependents[i]:
            self.unmet[j] -= 1
            if self.unmet[j] == 0:
                heapq.heappush(self.available, j)

    def all_finished(self) -> bool:
        return all(self.finished)


def run_parallel(
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
    parallelism: int,
) -> None:
    """``run`` with up to ``parallelism`` changes in progress per provider (``Schedule`` says which may
    start). The journal, the signals and the outcomes are ``run``'s: only this thread writes the journal —
    a change's ``started`` line before it is handed to a worker, its ``done`` / ``failed`` line when it comes
    back — so every change has its pair and a dependent's ``started`` follows its dependency's ``done``. The
    lines go to the OS in one write per round (``Journal.held``): before the changes of the round begin
    (their ``started`` lines and every line before them), and before the thread waits for the next to come
    back; a crash loses at most the ``done`` lines of changes that just came back, which the journal then
    shows started, not finished — as it would had the crash come a moment earlier. A refused change skips
    only its dependents. A failed change, or a signal, stops new changes from starting; those in progress
    are waited for and journaled, then the run ends as ``run`` ends it. A second signal stops at once: the
    changes in progress are journaled as possibly partly done."""

    def group_of(change: Change) -> str | None:
        prov = provs.get(change.provider)
        return prov.connection_group(change) if isinstance(prov, GroupsConnections) else None

    sched = Schedule(changes, group_of, parallelism)
    blocked = Blocked()
    handled = [False] * len(changes)
    failures: list[tuple[Change, str]] = []

    def told(change: Change, event: str) -> None:
        try:
            tell(change, event)
        except OSError:  # the output is gone: as SIGPIPE would, stop after the changes in progress
            if signals.received is None:
                signals.received = signal.SIGPIPE

    def apply_one(change: Change) -> None:
        prov = provs.get(change.provider)
        if prov is None:
            raise ProviderError(f"provider {change.provider!r} is not configured")
        prov.apply(change)

    def not_tried() -> list[Change]:
        return [c for i, c in enumerate(changes) if not handled[i]]

    def finish(outcome: str, failed: int, **extra: Any) -> None:
        journal.run_finished(
            outcome=outcome, done=len(done), failed=failed, not_tried=len(not_tried()), skipped=len(skipped),
            **extra,
        )

    journal.run_started(plan_fingerprint=plan_fingerprint, changes=len(changes))
    providers_used = len({c.provider for c in changes}) or 1
    threads = ThreadPoolExecutor(max_workers=sched.parallelism * providers_used, thread_name_prefix="apply")
    in_progress: dict[Future[None], int] = {}
    told_later: list[tuple[Change, str]] = []

    def tell_now() -> None:
        """The lines are with the OS: tell what they say (progress, the tests' hooks)."""
        journal.flush()
        for change, event in told_later:
            told(change, event)
        told_later.clear()

    try:
        with journal.held():  # one write per batch of lines; flushed before any change begins (below)
            while True:
                stopping = bool(failures) or signals.received is not None
                while not stopping and sched.available:
                    # dependencies all over: skip what a refusal blocks (its dependents become available
                    # in turn), place the rest
                    i = heapq.heappop(sched.available)
                    roots = blocked.roots(changes[i])
                    if roots:
                        handled[i] = True
                        journal.skipped(changes[i], roots)
                        skipped.append((changes[i], roots))
                        told_later.append((changes[i], "skipped"))
                        sched.finish(i, started=False)
                    else:
                        sched.place(i)
                starting = [] if stopping else sched.startable()
                for i in starting:
                    handled[i] = True
                    journal.started(changes[i])
                # every line written so far — these changes' ``started`` — is with the OS before any of them
                # begins, and before this thread waits
                tell_now()
                for i in starting:
                    told(changes[i], "started")
                    in_progress[threads.submit(apply_one, changes[i])] = i
                if not in_progress:
                    if not stopping and sched.available:
                        continue
                    break
                signals.armed = True
                try:
                    over, _ = wait(in_progress, timeout=0.5, return_when=FIRST_COMPLETED)
                finally:
                    signals.armed = False
                for fut in sorted(over, key=lambda f: in_progress[f]):
                    i = in_progress.pop(fut)
                    change = changes[i]
                    exc = fut.exception()
                    if exc is None:
                        journal.done(change)
                        done.append(change)
                        told_later.append((change, "done"))
                    elif isinstance(exc, ChangeRefused):
                        error = redact(_describe(exc), secrets)
                        journal.failed(change, error, refused=True)
                        refused.append((change, error))
                        blocked.refuse(change)
                        told_later.append((change, "refused"))
                    else:
                        error = redact(_describe(exc), secrets)
                        journal.failed(change, error)
                        failures.append((change, error))
                        told_later.append((change, "failed"))
                    sched.finish(i, started=True)
                tell_now()
    except (KeyboardInterrupt, StopNow) as exc:
        # a second signal: the changes in progress may or may not have happened; say so, a rerun converges
        signum = exc.signum if isinstance(exc, StopNow) else signal.SIGINT
        name = signal.Signals(signum).name
        cut = [changes[i] for i in sorted(in_progress.values())]
        for change in cut:
            journal.failed(change, f"interrupted ({name}); the change may be partly done")
        threads.shutdown(wait=False, cancel_futures=True)
        finish("interrupted", len(refused) + len(failures) + len(cut), signal=name)
        raise ApplyInterrupted(
            signum, done, [*cut[1:], *not_tried()], at_once=cut[0] if cut else None, journal=journal_path
        ) from None
    threads.shutdown(wait=True)
    if failures:
        failed, error = failures[0]
        if len(failures) > 1:
            error += "; in progress at the same time and failed too: " + "; ".join(
                f"{_label(c)}: {e}" for c, e in failures[1:]
            )
        finish("failed", len(refused) + len(failures))
        raise ApplyFailed(done, failed, error, not_tried(), journal_path, pw_written(), refused, skipped)
    rest = not_tried()
    if signals.received is not None and rest:
        name = signal.Signals(signals.received).name
        finish("interrupted", len(refused), signal=name)
        raise ApplyInterrupted(signals.received, done, rest, journal=journal_path)
    if rest or not sched.all_finished():  # pragma: no cover - a scheduling bug must never claim success
        raise ProviderError(f"apply: {len(rest)} changes could not be scheduled (a bug in mailstate)")
    finish("incomplete" if refused else "ok", len(refused))
