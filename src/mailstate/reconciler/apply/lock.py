"""The apply lock (DESIGN §6.4): a local file lock, and the lock of every provider holding one."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mailstate.errors import MailstateError, ProviderError
from mailstate.model.i18n import _
from mailstate.model.provider import HoldsApplyLock, Provider
from mailstate.private_files import open_private, private_dir


class ApplyLocked(MailstateError):
    """Another apply holds the organisation's apply lock."""


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
                _("another apply is running on this machine (lock file {file})").format(
                    file=lock_dir / "apply.lock")
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, holder.encode())
        held: list[Any] = []
        try:
            for prov in providers.values():
                if isinstance(prov, HoldsApplyLock):
                    held.append(_take_lock(prov.apply_lock, holder, break_lock))
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
