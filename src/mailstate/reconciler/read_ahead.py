"""Read the live state in a child process while this one loads and validates the TOML.

Both are CPU-bound Python (decoding 10,000 directory entries; parsing and validating 10,000 people), so
threads cannot overlap them; two processes can. ``read_ahead(root, names)`` reads only the settings a
provider opens with (``[organization]``, ``[password]``, ``[providers]`` of ``mailstate.toml``), forks,
and the child opens the providers and reads them exactly as ``pipeline.read_all`` does, then sends the
snapshots back pickled through a pipe. ``ReadAhead.snapshots(state)`` takes them once the whole state is
loaded, and only when what the providers opened with equals the loaded state's: otherwise (settings in
another file, a provider that wants the people or units to open, no fork on this system, a thread already
running) it answers None and the caller reads as before.

A read that failed in the child fails the plan with the same error (its type and message, secrets hidden
by the child, which alone knows them); the child never prints. Leaving the ``with`` block kills and reaps
a child still running (an invalid TOML, an interrupt): no zombie, no read left going.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mailstate.desired_state.documents import Document, scan_positions
from mailstate.desired_state.schema import State
from mailstate.desired_state.validate import build_state
from mailstate.errors import MailstateError, ProviderError
from mailstate.model.provider import Snapshot
from mailstate.model.records import MAILBOX_KINDS
from mailstate.providers.registry import (
    close_providers,
    configured_providers,
    open_providers,
    provider_class,
)
from mailstate.redact import hide_secrets

DISABLE_ENV = "MAILSTATE_READ_AHEAD"
"""``0`` turns the read-ahead off (every read then happens in the one process, as before)."""

SETTINGS_FILE = "mailstate.toml"
SETTINGS_TABLES = ("organization", "password", "providers")
"""What a provider may open with besides the people and units (model.provider.DesiredState)."""


class NeedsWholeState(BaseException):
    """A provider asked for the people, units … to open: the read must wait for the whole state. (Not an
    ``Exception``: a provider's ``except Exception`` must not turn it into an error of its own.)"""


class SettingsOnly:
    """The settings part of the desired state: what ``open_providers`` may use before the rest is loaded.
    Asking it for the people, units, groups, folders or grants raises ``NeedsWholeState``."""

    def __init__(self, state: State) -> None:
        self._state = state

    @property
    def root(self) -> Path:
        return self._state.root

    @property
    def domain(self) -> str:
        return self._state.domain

    @property
    def base_dn(self) -> str:
        return self._state.base_dn

    @property
    def providers(self) -> Any:
        return self._state.providers

    @property
    def password(self) -> Any:
        return self._state.password

    def _whole(self) -> Any:
        raise NeedsWholeState

    people = units = groups = shared_folders = access_grants = property(_whole)


def settings_of(state: State) -> tuple[Any, ...]:
    """What decides how the providers open and read: the settings a provider reads, the environment."""
    return (
        str(state.root),
        state.organization.model_dump(),
        state.password.model_dump(),
        state.providers.model_dump(),
    )


def settings_state(root: Path) -> State | None:
    """The state built from ``mailstate.toml``'s settings tables alone (None: not there, or not valid)."""
    path = root / SETTINGS_FILE
    try:
        text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
        data = tomllib.loads(text)
        positions = scan_positions(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError, IndexError):
        return None
    data = {k: v for k, v in data.items() if k in SETTINGS_TABLES}
    if "organization" not in data:
        return None
    state, _problems = build_state(root, [Document(path, SETTINGS_FILE, text, data, positions)],
                                   complete=False)
    return state


class ReadAhead:
    """A child process reading the providers (see the module); ``snapshots`` takes its answer."""

    def __init__(
        self,
        pid: int,
        pipe: int,
        settings: tuple[Any, ...],
        names: list[str],
        wanted: list[str] | None = None,
    ) -> None:
        self.pid: int | None = pid
        self._pipe: int | None = pipe
        self._settings = settings
        self._names = names
        """The providers the child reads."""
        self._wanted = wanted if wanted is not None else names
        """The providers of the plan: more than ``_names`` when the child reads only the directory."""
        self.timings: dict[str, float] = {}

    def directory(
        self, state: State, names: Iterable[str] | None = None, timings: dict[str, float] | None = None
    ) -> tuple[str, Callable[[], Snapshot]] | None:
        """When the child reads only the directory of a plan that has mail providers too (they open with
        the people and units, so they read in this process): (its name, a function waiting for its
        snapshot — read here after all if the child could not), for ``pipeline.read_all``. None: the child
        reads every provider (``snapshots``), or the settings changed (the child is stopped)."""
        wanted = list(names or configured_providers(state))
        if self._wanted == self._names:
            return None
        if wanted != self._wanted or settings_of(state) != self._settings:
            self.close()
            return None
        name = self._names[0]

        def snapshot() -> Snapshot:
            snapshots = self._answer(timings)
            if snapshots is None:  # read here after all
                snapshots = _read(state, [name])[0]
            return snapshots[name]

        return name, snapshot

    def snapshots(
        self, state: State, names: Iterable[str] | None = None, timings: dict[str, float] | None = None
    ) -> dict[str, Snapshot] | None:
        """What the child read, when it read the providers ``names`` (default: the configured ones) with
        ``state``'s settings (its ``read:NAME`` timings added to ``timings``); None: the caller reads them
        itself. A failed read raises its error."""
        wanted = list(names or configured_providers(state))
        if wanted != self._names or self._wanted != self._names or settings_of(state) != self._settings:
            self.close()
            return None
        return self._answer(timings)

    def _answer(self, timings: dict[str, float] | None) -> dict[str, Snapshot] | None:
        """The snapshots the child sent (its timings and the wait added to ``timings``); None when it
        could not read them (the caller reads); the child's error raised."""
        t0 = time.perf_counter()
        answer = self._receive()
        self.timings["wait"] = time.perf_counter() - t0  # the child's read outlasting the load, unpickling
        if answer is None or answer[0] == "again":
            return None
        if answer[0] == "error":
            raise answer[1]
        self.timings.update(answer[2])
        if timings is not None:
            timings.update(self.timings)
        snapshots: dict[str, Snapshot] = answer[1]
        return snapshots

    def _receive(self) -> tuple[Any, ...] | None:
        """The child's pickled answer (None: it died without one), the child reaped."""
        if self._pipe is None:
            return None
        chunks: list[bytes] = []
        try:
            while chunk := os.read(self._pipe, 1 << 20):
                chunks.append(chunk)
        finally:
            self.close(kill=False)
        if not chunks:
            return None
        collecting = gc.isenabled()
        gc.disable()  # tens of thousands of small acyclic objects
        try:
            answer: tuple[Any, ...] = pickle.loads(b"".join(chunks))
        except Exception:  # cut short (the child killed while writing): read in this process
            return None
        finally:
            if collecting:
                gc.enable()
        return answer

    def close(self, kill: bool = True) -> None:
        """Stop the child if still running (``kill``), close the pipe, reap it."""
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        if self.pid is not None:
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = None


def _child(write: int, state: State, names: list[str]) -> None:
    """In the child: read, send the answer, leave (never returns, never runs the parent's exit code)."""
    code = 0
    try:
        answer: tuple[Any, ...]
        try:
            answer = ("ok", *_read(state, names))
        except NeedsWholeState:
            answer = ("again",)
        except MailstateError as exc:
            answer = ("error", _shown(exc))
        except Exception:  # a bug: the parent reads again and meets it there
            answer = ("again",)
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            data = pickle.dumps(("again",))
        view = memoryview(data)
        while view:
            view = view[os.write(write, view):]
    except BaseException:  # an interrupt, the parent gone (a broken pipe): just leave
        code = 1
    finally:
        os._exit(code)


def _read(state: State, names: list[str]) -> tuple[dict[str, Snapshot], dict[str, float]]:
    from mailstate.reconciler.pipeline import read_all

    timings: dict[str, float] = {}
    providers = open_providers(SettingsOnly(state), names, for_plan=True)
    try:
        snapshots = read_all(providers, None, timings)
    finally:
        close_providers(providers)
    return snapshots, timings


def _shown(exc: MailstateError) -> MailstateError:
    """The error as the parent may show it: the secrets only this process knows hidden from its text."""
    args = tuple(hide_secrets(a) if isinstance(a, str) else a for a in exc.args)
    try:
        shown = type(exc)(*args)
        pickle.loads(pickle.dumps(shown))
    except Exception:
        shown = ProviderError(hide_secrets(str(exc)))
        shown.exit_code = exc.exit_code
    return shown


def start(root: Path, names: Sequence[str] | None = None) -> ReadAhead | None:
    """Fork a child reading the providers ``names`` (default: the configured ones); None when it cannot
    (or need not) read ahead."""
    if os.environ.get(DISABLE_ENV) == "0" or not hasattr(os, "fork") or threading.active_count() > 1:
        return None
    state = settings_state(Path(root))
    if state is None:
        return None
    try:
        wanted = list(names or configured_providers(state))
        for name in wanted:  # imported once, before the fork: the plan routes by them after the read
            provider_class(name)
    except MailstateError:
        return None
    if not wanted:
        return None
    # the mail providers open with the people and units: with them the child reads the directory alone
    directory = [n for n in wanted if MAILBOX_KINDS & provider_class(n).kinds]
    reads = directory[:1] if len(directory) == 1 and len(wanted) > 1 else wanted
    read, write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        _child(write, state, reads)
    os.close(write)
    return ReadAhead(pid, read, settings_of(state), reads, wanted)


def prefetching(root: Path, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The providers among ``names`` (default: the configured ones) that can start part of their read with
    the settings alone (``Prefetches``: doveadm's pass over the mail host), opened and started now, while
    the TOML loads; {} when none can (or the settings cannot be read alone). The caller hands them to
    ``make_plan`` (``preopened``), which closes them, or closes them itself."""
    if os.environ.get(DISABLE_ENV) == "0":
        return {}
    state = settings_state(Path(root))
    if state is None:
        return {}
    out: dict[str, Any] = {}
    try:
        for name in list(names or configured_providers(state)):
            cls = provider_class(name)
            if hasattr(cls, "from_settings") and hasattr(cls, "prefetch"):
                prov = cls.from_settings(SettingsOnly(state))
                out[name] = prov
                prov.prefetch()
    except NeedsWholeState:
        close_providers(out)
        return {}
    except MailstateError:  # read as before, where the error is reported in its place
        close_providers(out)
        return {}
    return out


@contextlib.contextmanager
def read_ahead(root: Path, names: Sequence[str] | None = None) -> Iterator[ReadAhead | None]:
    """``start`` for the ``with`` block; a child still running at its end is stopped and reaped."""
    t0 = time.perf_counter()
    ahead = start(root, names)
    if ahead is not None:
        ahead.timings["fork"] = time.perf_counter() - t0
    try:
        yield ahead
    finally:
        if ahead is not None:
            ahead.close()
