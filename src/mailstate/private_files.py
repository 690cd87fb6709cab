"""mailstate's own files: its home directory per organisation, created private (0700), and files
opened private (0600) — journals, audit logs, saved plans, the apply lock."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def home_dir(domain: str) -> Path:
    """Where journal and audit log live by default for this organisation (never inside the state repo)."""
    base = os.environ.get("MAILSTATE_HOME")
    if base:
        return Path(base).expanduser() / domain
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg).expanduser() / "mailstate" / domain


PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Make ``path`` and any missing parent with mode 0700 (``Path.mkdir(parents=True)`` gives the parents
    the umask's 0755). With ``tighten``, an existing ``path`` (a directory of mailstate's own, e.g. the
    default home) that others may read is set to 0700 too; a directory someone named explicitly is left as
    it is (the files in it are 0600 either way)."""
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for part in reversed(missing):
        try:
            part.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue
        part.chmod(PRIVATE_DIR)  # mkdir's mode is masked by the umask; 0700 is never widened by it
    if tighten and not missing:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077 and info.st_uid == os.geteuid():
            path.chmod(PRIVATE_DIR)
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` of a file that may hold personal data: created 0600, and an existing file that others may
    read or write (an older version, a copy, a umask of 022) tightened to 0600 on every open."""
    fd = os.open(path, flags | os.O_CREAT, PRIVATE_FILE)
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, PRIVATE_FILE)
    except OSError:
        os.close(fd)
        raise
    return fd
