"""Process and port plumbing for the lab: the lab user, free ports, spawning, waiting, stopping by pid."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailstate.errors import LabError
from mailstate.model.i18n import _, ngettext

LAB_USER = "mailstate-lab"


@dataclass(frozen=True)
class LabUser:
    """Who the lab's servers run as: the dedicated system user when we are root, else ourselves."""

    name: str
    uid: int
    gid: int
    switch: bool
    """True when we are root and the servers must be started as another user."""


def lab_user() -> LabUser:
    """The user the servers run as; as root, create `mailstate-lab` if it is missing (never run as root)."""
    if os.geteuid() != 0:
        pw = pwd.getpwuid(os.geteuid())
        return LabUser(pw.pw_name, pw.pw_uid, pw.pw_gid, switch=False)
    try:
        pw = pwd.getpwnam(LAB_USER)
    except KeyError:
        # A login shell is needed for sshd to run commands; '*' is "no password" without being "locked".
        res = subprocess.run(
            ["useradd", "--system", "--user-group", "--shell", "/bin/sh", "--home-dir", "/nonexistent",
             "--no-create-home", "--password", "*", LAB_USER],
            capture_output=True, text=True, check=False,
        )
        try:
            pw = pwd.getpwnam(LAB_USER)
        except KeyError:
            raise LabError(_("could not create the lab user {user}: {error}").format(
                user=LAB_USER, error=res.stderr.strip())) from None
    if pw.pw_uid == 0:
        raise LabError(_("the lab user {user} has uid 0; the lab never runs a server as root").format(
            user=LAB_USER))
    return LabUser(pw.pw_name, pw.pw_uid, pw.pw_gid, switch=True)


SERVER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH of the servers and of the short commands run for the lab."""
PROGRAMS: dict[str, tuple[tuple[str, str], ...]] = {
    "slapd": (("slapd", "slapd"), ("slapadd", "slapd"), ("slaptest", "slapd")),
    "dovecot": (("dovecot", "dovecot-imapd"), ("doveadm", "dovecot-core")),
    "sshd": (("sshd", "openssh-server"), ("ssh-keygen", "openssh-client")),
}
"""Per lab service: (program, Debian package that ships it)."""


def missing_programs(services: tuple[str, ...], path: str = SERVER_PATH) -> list[tuple[str, str]]:
    """(program, package) of every program the services need that is not on path."""
    return [(prog, pkg) for svc in services for prog, pkg in PROGRAMS.get(svc, ())
            if shutil.which(prog, path=path) is None]


def chown(path: Path, user: LabUser) -> None:
    """Give a path to the lab user (a no-op when the servers run as ourselves)."""
    if user.switch:
        os.chown(path, user.uid, user.gid)


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (chosen by the kernel; held open together so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def proc_start_time(pid: int) -> int | None:
    """The kernel start time of a process (clock ticks since boot), to tell it from a reused pid."""
    fields = _proc_fields(pid)
    return int(fields[19]) if fields is not None else None


def _proc_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def alive(pid: int, start_time: int | None = None) -> bool:
    """Whether pid runs (not a zombie) and, if start_time is given, is the same process we started."""
    fields = _proc_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


def dying(pid: int) -> bool:
    """Whether pid is on its way out: already exiting (PF_EXITING) or with a SIGKILL pending. Right after
    `kill -9` a server is still "alive" for a moment, though it will never answer again."""
    fields = _proc_fields(pid)
    if fields is None:
        return False
    if int(fields[6]) & 0x4:  # PF_EXITING
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    kill_bit = 1 << (signal.SIGKILL - 1)
    return any(line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & kill_bit
               for line in status.splitlines())


def group_members(pgid: int) -> list[int]:
    """Live processes (not zombies) whose process group is pgid."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_fields(int(entry.name))
        if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live process below pid (children, their children, …). sshd's
    per-connection processes call setsid(): they and the commands they run leave the listener's process
    group, and are re-parented to init once the listener is gone — so they are collected beforehand."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_fields(int(entry.name))
        if fields is None or fields[0] in ("Z", "X"):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        starts[int(entry.name)] = int(fields[19])
    found: list[tuple[int, int]] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        found.append((p, starts[p]))
        todo.extend(children.get(p, []))
    return found


def _die_with_parent(parent: int) -> Callable[[], None]:
    """preexec_fn: ask the kernel to SIGTERM the child when its parent dies (Linux PR_SET_PDEATHSIG).
    Runs after the switch to the lab user (a credential change would clear the setting)."""

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def spawn(argv: list[str], log: Path, user: LabUser, cwd: Path, env: dict[str, str] | None = None,
          die_with_parent: bool = False) -> subprocess.Popen[bytes]:
    """Start a server in its own session (so its whole process group can be stopped), as the lab user.
    With die_with_parent, the server gets SIGTERM when the calling process dies (test sessions)."""
    preexec = _die_with_parent(os.getpid()) if die_with_parent else None
    base_env = {"PATH": SERVER_PATH, "LANG": "C.UTF-8", "HOME": str(cwd)}
    if env:
        base_env.update(env)
    with open(log, "ab") as fh:
        chown(log, user)  # the server may open its own log file by name too
        if user.switch:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=base_env,
                start_new_session=True, user=user.uid, group=user.gid, extra_groups=[], preexec_fn=preexec,
            )
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=base_env,
            start_new_session=True, preexec_fn=preexec,
        )


def run_as(argv: list[str], user: LabUser, cwd: Path, timeout: float = 30.0
           ) -> subprocess.CompletedProcess[str]:
    """Run a short command (slaptest, slapadd, doveadm) as the lab user; output captured as text."""
    env = {"PATH": SERVER_PATH, "LANG": "C.UTF-8", "HOME": str(cwd)}
    if user.switch:
        return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
                              user=user.uid, group=user.gid, extra_groups=[], check=False)
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
                          check=False)


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file (for error messages); empty if there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def stop(pid: int, start_time: int | None, timeout: float = 5.0, child: subprocess.Popen[bytes] | None = None
         ) -> None:
    """Stop the process group a server leads (SIGTERM, then SIGKILL after timeout) and wait until it is gone.

    Only processes of that group are signalled, and only if the leader is still the process we started;
    then the leader's other descendants (collected first, each checked by its start time: sshd sessions
    and the commands they run, in sessions of their own) get the same treatment.
    """
    family: list[tuple[int, int]] = []
    if alive(pid, start_time):
        group = set(group_members(pid))
        family = [(p, st) for p, st in descendants(pid) if p not in group]
    _stop_group(pid, start_time, timeout, child)
    _stop_pids(family, timeout)


def _stop_pids(family: list[tuple[int, int]], timeout: float) -> None:
    """SIGTERM each (pid, start time) still alive, wait, SIGKILL what is left; LabError if one survives."""
    for p, st in family:
        if alive(p, st):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p, st) for p, st in family):
        time.sleep(0.02)
    for p, st in family:
        if alive(p, st):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(alive(p, st) for p, st in family):
        time.sleep(0.02)
    left = [p for p, st in family if alive(p, st)]
    if left:
        raise LabError(ngettext("process {pids} did not stop", "processes {pids} did not stop",
                                len(left)).format(pids=", ".join(map(str, left))))


def _stop_group(pid: int, start_time: int | None, timeout: float, child: subprocess.Popen[bytes] | None
                ) -> None:
    if alive(pid, start_time):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.02)
        if not alive(pid, start_time) and not group_members(pid):
            return
        time.sleep(0.02)
    for member in group_members(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGKILL)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=2)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and (alive(pid, start_time) or group_members(pid)):
        time.sleep(0.02)
    if alive(pid, start_time) or group_members(pid):
        raise LabError(ngettext("process {pids} did not stop", "processes {pids} did not stop", 1).format(
            pids=pid))
