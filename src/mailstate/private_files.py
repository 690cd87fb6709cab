"""mailstate's own files: its home directory per organisation, created private (0700), and files
opened private (0600) — journals, audit logs, saved plans, the apply lock."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from mailstate.errors import MailstateError


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


class UnsafeFile(MailstateError, PermissionError):
    """A private file's name is a link or another user's file (an ``OSError`` too, for callers that catch
    those)."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}: refused (name a file of your own, not a link; nothing was written)")
        self.strerror = str(self)


def open_private(path: Path, flags: int) -> int:
    """``os.open`` of a file that may hold personal data: created 0600, and an existing file that others may
    read or write (an older version, a copy, a umask of 022) tightened to 0600 on every open.

    The name must be the file itself: a symbolic link, a file of another user or one with a second hard
    link is refused (``PermissionError``) — someone who can write the directory (a shared --journal-dir or
    --passwords-out place) would otherwise receive the journal or the initial passwords in a file they
    read, or have mailstate append to (and chmod) a file it should never touch."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(path, "is a symbolic link") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(path, "is not a regular file")
        if info.st_uid != os.geteuid():
            raise UnsafeFile(path, "belongs to another user")
        if info.st_nlink > 1:
            raise UnsafeFile(path, "has another name (a hard link)")
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, PRIVATE_FILE)
    except OSError:
        os.close(fd)
        raise
    return fd
