"""`Lab`: a throwaway OpenLDAP + Dovecot + sshd on 127.0.0.1, unprivileged, in one directory.

State of a lab (ports, pids, suffix, paths) lives in DIR/lab.json; its random secrets in DIR/secrets/
(mode 0700, files 0600, never readable by the lab user). Servers run as `mailstate-lab` when we are root,
as ourselves otherwise — never as root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import ssl
import stat
import subprocess
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException

from mailstate.desired_state.schema import base_dn_of
from mailstate.errors import LabError
from mailstate.lab import _proc, dovecot, postfix, slapd, sshd
from mailstate.lab._proc import LabUser
from mailstate.lab.iredmail import layout as iredmail_layout
from mailstate.lab.tls import make_tls
from mailstate.model.i18n import _
from mailstate.serverconfig import iredmail as iredmail_sc
from mailstate.serverconfig.site import PasswordRules

STATE_FILE = "lab.json"
_DOMAIN = re.compile(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
SECRET_NAMES = ("ldap_root", "ldap_service", "ldap_dovecot", "imap_master")
SERVICES: tuple[str, ...] = ("slapd", "dovecot", "sshd", "postfix")
"""Postfix runs only when the lab is started as root (its master needs root); otherwise it is left out and
`info["delivery"]` says why."""
LAYOUTS = ("default", "iredmail")
"""How the directory is laid out: mailstate's own, or an iRedMail server's (docs/iredmail.md)."""
READY_TIMEOUT = 10.0
LOCK_TIMEOUT = 60.0
FAST_RESET_ABOVE = 300
"""reset() restarts slapd on an empty database when more entries than this are to be deleted."""
_UNSAFE_IN_PATH = frozenset('"\\%$#,')
"""Characters of a lab directory's path that a server's configuration would misread: quotes and escapes
(slapd.conf, sshd_config), % and $ (Dovecot variables), # (comments), comma (Dovecot's user_attrs)."""
# Sub-directories `up` (re)creates; nothing else in DIR is ever touched.
_OWN = ("tls", "secrets", "slapd", "dovecot", "mail", "ssh", "archive", "postfix", STATE_FILE)


def _write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


class Lab:
    """One lab in one directory: `up`, `down`, `status`, `env`, `reset`, `info`."""

    def __init__(self, directory: str | os.PathLike[str], die_with_parent: bool = False) -> None:
        """die_with_parent: the servers get SIGTERM if this process dies without `down()` (test sessions
        killed by a timeout leave no lab behind). Off for `mailstate lab up`, whose lab outlives it."""
        self.dir = Path(directory).absolute()
        self.die_with_parent = die_with_parent
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # ----------------------------------------------------------------- state
    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def info(self) -> dict[str, Any]:
        """lab.json: domain, base_dn, user, ports, pids (with start times), paths, timings."""
        try:
            return dict(json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            raise LabError(_("no lab in {dir} (run `{command}`)").format(
                dir=self.dir, command=f"mailstate lab up --dir {self.dir}")) from None
        except (OSError, ValueError) as exc:
            raise LabError(_("{file}: unreadable lab state: {error}").format(
                file=self.state_file, error=exc)) from None

    def _save(self, info: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        _write(tmp, json.dumps(info, indent=2, sort_keys=True) + "\n", 0o644)
        tmp.replace(self.state_file)

    def secret(self, name: str) -> str:
        """One of the lab's random passwords: ldap_root, ldap_service, ldap_dovecot, imap_master."""
        try:
            data = json.loads((self.dir / "secrets" / "passwords.json").read_text())
        except OSError as exc:
            raise LabError(_("cannot read the lab's secrets in {dir}: {error}").format(
                dir=self.dir / "secrets", error=exc.strerror)) from None
        return str(data[name])

    @property
    def base_dn(self) -> str:
        return str(self.info["base_dn"])

    @property
    def layout(self) -> str:
        """"default" or "iredmail" (labs made before layouts existed are "default")."""
        return str(self.info.get("layout", "default"))

    @property
    def ca_file(self) -> Path:
        return self.dir / "tls" / "ca.pem"

    def is_running(self) -> bool:
        """Whether any server recorded in lab.json still runs."""
        if not self.state_file.exists():
            return False
        return any(s["alive"] for s in self.status().values())

    # ----------------------------------------------------------------- up
    def up(self, domain: str, org_name: str | None = None, base_dn: str | None = None,
           services: tuple[str, ...] = SERVICES, reset: bool = False, layout: str = "default",
           password: PasswordRules | None = None) -> dict[str, Any]:
        """Start a new lab for an organisation; return its info once every server answers over TLS.

        ``password``: the state's `[password]` (serverconfig.site.password_rules), built into slapd's
        default policy and Dovecot's configuration exactly as `mailstate server-config` writes them
        (default: `[password]` with every setting at its default).

        A lab that has run before may hold data (directory entries, mail, archives): `up` refuses it
        unless ``reset`` (which wipes it); `start` brings it back as it was. Ports are chosen free just
        before the servers bind them; if another process takes one in between (another lab starting at the
        same moment), the start is retried once with new ports."""
        if layout not in LAYOUTS:
            raise LabError(_("unknown lab layout {layout} (one of: {layouts})").format(
                layout=repr(layout), layouts=", ".join(LAYOUTS)))
        self._check(domain, org_name, base_dn, services)  # bad input: refused before DIR is even created
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LabError(_("cannot create the lab directory {dir}: {error}").format(
                dir=self.dir, error=exc.strerror)) from None
        with self._locked():
            if not reset and not self.is_running() and self.has_data():
                raise LabError(_(
                    "{dir} holds a lab that has run (its directory entries, mail and archives): `up` would "
                    "wipe it. Start it again as it was: {start}; or wipe it and start afresh: {reset}"
                ).format(
                    dir=self.dir, start=f"mailstate lab start --dir {self.dir}",
                    reset=f"mailstate lab up --reset --dir {self.dir}"))
            try:
                return self._up(domain, org_name, base_dn, services, layout, password)
            except LabError as exc:
                if "already in use" not in str(exc):
                    raise
                return self._up(domain, org_name, base_dn, services, layout, password)

    def has_data(self) -> bool:
        """Whether DIR holds a lab that came up at least once (its servers may have written data since),
        or mail or archives. A lab whose first `up` failed holds nothing but its bootstrap: reused."""
        if not self.state_file.exists():
            return False
        try:
            started = bool(self.info.get("started_at"))
        except LabError:
            started = False
        return started or any(any(_iter_children(self.dir / name)) for name in ("mail", "archive"))

    def start(self, services: tuple[str, ...] | None = None) -> list[str]:
        """Bring back the servers of a stopped (or partly stopped) lab with the commands they were started
        with: same configuration, ports, secrets and data. Returns the servers started (those that were
        down), in start order (slapd first: the others authenticate against it), once each answers."""
        if not self.state_file.exists():
            raise LabError(_("no lab in {dir} (create one with `{command}`)").format(
                dir=self.dir, command=f"mailstate lab up --dir {self.dir}"))
        with self._locked():
            info = self.info
            names = self._service_names(info, services)
            started: list[str] = []
            for name in names:
                entry = info["pids"].get(name)
                if entry and _running(entry):
                    continue
                self._spawn_recorded(info, name)
                started.append(name)
                self._wait_ready(info, only=(name,))
            if started:
                info["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                info.pop("stopped_at", None)
            self._save(info)
            return started

    def restart(self, services: tuple[str, ...] | None = None) -> list[str]:
        """Stop the named servers (default: all) and start them again on the same ports and data."""
        if not self.state_file.exists():
            raise LabError(_("no lab in {dir} (create one with `{command}`)").format(
                dir=self.dir, command=f"mailstate lab up --dir {self.dir}"))
        with self._locked():
            info = self.info
            names = self._service_names(info, services)
            for name in reversed(names):
                entry = info["pids"].pop(name, None)
                if entry:
                    _proc.stop(entry["pid"], entry["start_time"], child=self._children.pop(name, None))
                    self._save(info)
        return self.start(tuple(names))

    def _service_names(self, info: dict[str, Any], services: tuple[str, ...] | None) -> list[str]:
        """The lab's servers named (all by default), in start order; an unknown name is an error."""
        known = list(info.get("services", SERVICES))
        unknown = sorted(set(services or ()) - set(known))
        if unknown:
            raise LabError(_("the lab in {dir} has no {servers} (it runs {known})").format(
                dir=self.dir, servers=", ".join(unknown), known=", ".join(known)))
        missing = [n for n in known if n not in info.get("commands", {})]
        if missing:
            raise LabError(_("the lab in {dir} never started completely ({servers} never ran): make it again "
                             "with `{command}`").format(dir=self.dir, servers=", ".join(missing),
                                                        command=f"mailstate lab up --reset --dir {self.dir}"))
        return [n for n in known if services is None or n in services]

    def _spawn_recorded(self, info: dict[str, Any], name: str) -> None:
        """Spawn one server with the command recorded when it was first started."""
        old = self._children.pop(name, None)
        if old is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                old.wait(timeout=1)
        cmd = info["commands"][name]
        user = postfix.ROOT if name == "postfix" else _proc.lab_user()  # Postfix's master needs root
        self._spawn(name, list(cmd["argv"]), Path(cmd["log"]), user, Path(cmd["cwd"]), info, cmd.get("env"))

    @contextlib.contextmanager
    def _locked(self, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Hold an exclusive lock on DIR (flock of the directory itself, nothing written) while `up` or
        `down` works: two `up` at once on one directory would otherwise both start servers and one set of
        them would be lost from lab.json, never to be stopped. A second caller waits, then sees the first's
        result (a running lab: `up` refuses)."""
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LabError(_("another `mailstate lab` command has been working on {dir} for "
                                         "{seconds} s; try again when it is done").format(
                                             dir=self.dir, seconds=f"{timeout:.0f}")) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _check(self, domain: str, org_name: str | None, base_dn: str | None, services: tuple[str, ...]
               ) -> None:
        """Refuse what cannot make a lab (unknown service, missing program, bad domain, suffix or path)."""
        unknown = set(services) - {"slapd", "dovecot", "sshd", "postfix"}
        if unknown:
            raise LabError(_("unknown lab service(s): {services}").format(
                services=", ".join(sorted(unknown))))
        missing = _proc.missing_programs(tuple(s for s in services if s != "postfix"))
        if missing:
            progs = ", ".join(prog for prog, _ in missing)
            pkgs = " ".join(sorted({pkg for _, pkg in missing}))
            raise LabError(_("the lab needs {programs}, not found in {path}: install the Debian packages "
                             "({packages}) with scripts/install-debs.sh (make deps)").format(
                programs=progs, path=_proc.SERVER_PATH, packages=pkgs))
        domain = domain.strip().lower()
        if not _DOMAIN.fullmatch(domain) or len(domain) > 253:
            raise LabError(_("not a domain name: {domain} (e.g. sct.binhdinh.gov.vn)").format(
                domain=repr(domain)))
        org_name = unicodedata.normalize("NFC", org_name) if org_name else None
        slapd.base_entry(base_dn or base_dn_of(domain), org_name or domain)  # an unusable suffix
        bad = sorted({c for c in str(self.dir) if c in _UNSAFE_IN_PATH or not c.isprintable()})
        if bad:
            raise LabError(_("{dir}: a lab directory's path cannot contain {chars} (it is written into the "
                             "slapd, Dovecot and sshd configuration); spaces are fine").format(
                dir=self.dir, chars=" ".join(map(repr, bad))))

    def _up(self, domain: str, org_name: str | None, base_dn: str | None, services: tuple[str, ...],
            layout: str = "default", password: PasswordRules | None = None) -> dict[str, Any]:
        t0 = time.monotonic()
        self._check(domain, org_name, base_dn, services)
        if self.is_running():
            raise LabError(_("a lab already runs in {dir}; stop it first with `{command}`").format(
                dir=self.dir, command=f"mailstate lab down --dir {self.dir}"))
        domain = domain.strip().lower()
        org_name = unicodedata.normalize("NFC", org_name) if org_name else None
        base = base_dn or base_dn_of(domain)
        user = _proc.lab_user()
        self._prepare_dir(user)
        delivery = postfix.unavailable(user, self.dir) if "postfix" in services else _("not requested")
        if delivery is not None:
            services = tuple(s for s in services if s != "postfix")
        ports = dict(zip(("ldap", "ldaps", "imaps", "ssh", "lmtp", "smtp"), _proc.free_ports(6), strict=True))
        info: dict[str, Any] = {
            "version": 1,
            "domain": domain,
            "org_name": org_name or domain,
            "base_dn": base,
            "layout": layout,
            "user": user.name,
            "uid": user.uid,
            "services": list(services),
            "delivery": delivery or "available",
            "ports": ports,
            "password": dataclasses.asdict(password or PasswordRules()),
            "pids": {},
            "paths": self._paths(),
            "dns": {
                "root": slapd.root_dn(base),
                "service": slapd.service_dn(base),
                "dovecot": slapd.dovecot_dn(base),
                "policy": slapd.policy_dn(base),
            },
        }
        if layout == "iredmail":
            info["dns"] = iredmail_layout.dns(base)
        timings: dict[str, float] = {}
        info["timings"] = timings
        # lab.json first: whatever fails after this point, the directory is a (stopped) lab that the next
        # `up` reuses and `down` understands — never a half-written directory that `up` refuses.
        self._save(info)
        try:
            pw = {k: secrets.token_urlsafe(18) for k in SECRET_NAMES}
            _write(self.dir / "secrets" / "passwords.json", json.dumps(pw, indent=2) + "\n", 0o600)
            make_tls(self.dir / "tls" / "ca.pem", self.dir / "secrets" / "ca.key",
                     self.dir / "tls" / "server.pem", self.dir / "tls" / "server.key", label=domain)
            _proc.chown(self.dir / "tls" / "server.key", user)
            timings["prepare"] = round(time.monotonic() - t0, 3)
            t = time.monotonic()
            self._start_slapd(info, pw, user)
            timings["slapd_config_and_start"] = round(time.monotonic() - t, 3)
            t = time.monotonic()
            irm = layout == "iredmail"
            if "postfix" in services:  # first: its master takes longest to listen
                (iredmail_layout.start_postfix if irm else postfix.start)(self, info, pw, user)
            if "dovecot" in services:
                (iredmail_layout.start_dovecot if irm else dovecot.start)(self, info, pw, user)
            if "sshd" in services:
                sshd.start(self, info, user)
            timings["dovecot_sshd_config_and_start"] = round(time.monotonic() - t, 3)
            self._wait_ready(info, pw)
        except BaseException:
            with contextlib.suppress(Exception):
                self._down()
            raise
        info["up_seconds"] = round(time.monotonic() - t0, 3)
        info["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._save(info)
        return info

    def _paths(self) -> dict[str, str]:
        d = self.dir
        return {
            "dir": str(d),
            "ca_file": str(d / "tls" / "ca.pem"),
            "server_cert": str(d / "tls" / "server.pem"),
            "slapd_conf": str(d / "slapd" / "slapd.d"),
            "slapd_log": str(d / "slapd" / "slapd.log"),
            "dovecot_conf": str(d / "dovecot" / "dovecot.conf"),
            "dovecot_log": str(d / "dovecot" / "dovecot.log"),
            "mail": str(d / "mail"),
            "shared_dict": str(d / "dovecot" / "shared-mailboxes.db"),
            "last_login_dict": str(d / "dovecot" / "last-login.db"),
            "sshd_conf": str(d / "ssh" / "sshd_config"),
            "sshd_log": str(d / "ssh" / "sshd.log"),
            "ssh_key": str(d / "secrets" / "id_ed25519"),
            "known_hosts": str(d / "ssh" / "known_hosts"),
            "archive": str(d / "archive"),
            "postfix_conf": str(d / "postfix" / "etc"),
            "postfix_log": str(d / "postfix" / "postfix.log"),
        }

    def _prepare_dir(self, user: LabUser) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.state_file.exists() and any(self.dir.iterdir()):
            # Never wipe someone's directory: only an empty one or an earlier lab's is (re)used.
            raise LabError(_("{dir} is not empty and holds no lab (lab.json): give an empty or new "
                             "directory").format(dir=self.dir))
        for name in _OWN:
            p = self.dir / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        if user.switch:
            mode = stat.S_IMODE(self.dir.stat().st_mode)
            os.chmod(self.dir, mode | 0o011)  # the lab user must traverse DIR (nothing more)
            for parent in self.dir.parents:
                st = parent.stat()
                if not (st.st_mode & stat.S_IXOTH or st.st_uid == user.uid):
                    raise LabError(_(
                        "the lab user {user} cannot reach {dir}: {parent} is mode {mode}; use a directory "
                        "under /tmp, /dev/shm or /work").format(user=user.name, dir=self.dir, parent=parent,
                                                                mode=f"{stat.S_IMODE(st.st_mode):04o}"))
        (self.dir / "secrets").mkdir(mode=0o700)
        os.chmod(self.dir / "secrets", 0o700)
        for name in ("tls", "slapd", "dovecot", "mail", "ssh", "archive"):
            (self.dir / name).mkdir(mode=0o755)
            if name in ("slapd", "dovecot", "mail", "archive"):
                os.chmod(self.dir / name, 0o750)
                _proc.chown(self.dir / name, user)
        for name in ("slapd/data", "slapd/slapd.d"):
            (self.dir / name).mkdir(mode=0o700)
            _proc.chown(self.dir / name, user)

    def _start_slapd(self, info: dict[str, Any], pw: dict[str, str], user: LabUser) -> None:
        if info.get("layout") == "iredmail":  # iRedMail's schema, tree and accounts (docs/iredmail.md)
            iredmail_layout.configure_slapd(self.dir, info, pw, user)
        else:
            slapd.configure(self.dir, info, pw, user)  # cn=config from Debian's + server-config's LDIF
        self._spawn_slapd(info, user)

    def _spawn_slapd(self, info: dict[str, Any], user: LabUser) -> None:
        d = self.dir / "slapd"
        p = info["ports"]
        urls = f"ldap://127.0.0.1:{p['ldap']}/ ldaps://127.0.0.1:{p['ldaps']}/"
        self._spawn("slapd", ["/usr/sbin/slapd", "-d", "none", "-F", str(d / "slapd.d"), "-h", urls],
                    d / "slapd.log", user, d, info)

    def _spawn(self, name: str, argv: list[str], log: Path, user: LabUser, cwd: Path, info: dict[str, Any],
               env: dict[str, str] | None = None) -> None:
        proc = _proc.spawn(argv, log, user, cwd, env, die_with_parent=self.die_with_parent)
        self._children[name] = proc
        info["pids"][name] = {"pid": proc.pid, "start_time": _proc.proc_start_time(proc.pid), "log": str(log)}
        info.setdefault("commands", {})[name] = {"argv": argv, "log": str(log), "cwd": str(cwd), "env": env}
        self._save(info)

    # ----------------------------------------------------------------- readiness
    def _wait_ready(self, info: dict[str, Any], pw: dict[str, str] | None = None,
                    only: tuple[str, ...] | None = None) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        checks = [("slapd", self._ldap_ready)]
        if "dovecot" in info["services"]:
            checks.append(("dovecot", lambda: dovecot.ready(self)))
        if "sshd" in info["services"]:
            checks.append(("sshd", lambda: sshd.ready(self)))
        if "postfix" in info["services"]:
            checks.append(("postfix", lambda: postfix.ready(self)))
        for name, check in checks:
            if only is not None and name not in only:
                continue
            t = time.monotonic()
            last = ""
            while True:
                entry = info["pids"][name]
                if not _proc.alive(entry["pid"], entry["start_time"]):
                    raise LabError(_("{server} did not start: {log}").format(
                        server=name, log=_proc.tail(Path(entry["log"])) or _("no output")))
                try:
                    check()
                    info["timings"][f"{name}_ready"] = round(time.monotonic() - t, 3)
                    break
                except Exception as exc:  # not ready yet: any failure means "try again until the deadline"
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise LabError(_("{server} did not answer within {seconds} s ({error}): {log}").format(
                        server=name, seconds=f"{READY_TIMEOUT:.0f}", error=last,
                        log=_proc.tail(Path(entry["log"]))))
                time.sleep(0.03)

    # ----------------------------------------------------------------- one server at a time (failure tests)
    def stop_service(self, name: str) -> None:
        """Stop one server of the lab (SIGTERM to its process group, wait), e.g. to test a provider's
        behaviour when slapd is gone; `start_service` brings it back on the same ports and data."""
        info = self.info
        entry = info["pids"].get(name)
        if entry is None:
            return
        _proc.stop(entry["pid"], entry["start_time"], child=self._children.pop(name, None))
        del info["pids"][name]
        self._save(info)

    def start_service(self, name: str) -> None:
        """(Re)start one server with the command it was started with (same config, ports, data) and wait
        until it answers. A server that died (killed by a test) is restarted; one that runs is an error."""
        info = self.info
        if name not in info.get("commands", {}):
            raise LabError(_("the lab in {dir} has no {servers} (it runs {known})").format(
                dir=self.dir, servers=name, known=", ".join(info.get("commands", {}))))
        entry = info["pids"].get(name)
        if entry and _running(entry):
            raise LabError(_("{server} already runs (pid {pid})").format(server=name, pid=entry["pid"]))
        self._spawn_recorded(info, name)
        self._wait_ready(info, only=(name,))
        self._save(info)

    def _ldap_ready(self) -> None:
        conn = self.ldap(as_="service")
        conn.unbind()

    # ----------------------------------------------------------------- clients
    def ldap_tls(self) -> ldap3.Tls:
        """ldap3 TLS settings that verify the server against the lab CA."""
        return ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(self.ca_file),
                         version=ssl.PROTOCOL_TLS_CLIENT)

    def ldap(self, as_: str = "service", dn: str | None = None, password: str | None = None
             ) -> ldap3.Connection:
        """A bound ldap3 connection over LDAPS: as the service account, the root DN ("root"),
        the Dovecot reader ("dovecot"), or any dn/password."""
        info = self.info
        if dn is None:
            dn = {"service": info["dns"]["service"], "root": info["dns"]["root"],
                  "dovecot": info["dns"]["dovecot"]}[as_]
            password = self.secret({"service": "ldap_service", "root": "ldap_root",
                                    "dovecot": "ldap_dovecot"}[as_])
        server = ldap3.Server("127.0.0.1", port=info["ports"]["ldaps"], use_ssl=True, tls=self.ldap_tls(),
                              connect_timeout=3, get_info=ldap3.NONE)
        conn = ldap3.Connection(server, user=dn, password=password, raise_exceptions=True,
                                receive_timeout=10, auto_referrals=False)
        try:
            conn.bind()
        except LDAPException as exc:
            raise LabError(_("LDAP bind as {dn} failed: {error}").format(dn=dn, error=exc)) from None
        return conn

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts only the lab CA (for IMAPS)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return ctx

    # ----------------------------------------------------------------- status / down
    def status(self) -> dict[str, dict[str, Any]]:
        """Per server: pid, alive, ports, log."""
        info = self.info
        ports = info["ports"]
        svc_ports = {"slapd": {"ldap": ports["ldap"], "ldaps": ports["ldaps"]},
                     "dovecot": {"imaps": ports["imaps"],
                                 **({"lmtp": ports["lmtp"]} if "postfix" in info["services"] else {})},
                     "sshd": {"ssh": ports["ssh"]}, "postfix": {"smtp": ports.get("smtp")}}
        out: dict[str, dict[str, Any]] = {}
        for name in info.get("services", SERVICES):
            entry = info["pids"].get(name)
            out[name] = {
                "pid": entry["pid"] if entry else None,
                "alive": bool(entry) and _proc.alive(entry["pid"], entry["start_time"]),
                "ports": svc_ports[name],
                "log": entry["log"] if entry else None,
            }
        return out

    def down(self) -> None:
        """Stop exactly the processes this lab started (by pid and start time), wait until none is left."""
        if not self.state_file.exists():
            return
        with self._locked():
            self._down()

    def _down(self) -> None:
        info = self.info
        if not info["pids"]:
            return  # already down: keep the recorded stopped_at
        errors: list[str] = []
        for name in reversed(list(info["pids"])):
            entry = info["pids"][name]
            try:
                _proc.stop(entry["pid"], entry["start_time"], child=self._children.get(name))
            except LabError as exc:
                errors.append(f"{name}: {exc}")
            self._children.pop(name, None)
        info["pids"] = {}
        info["stopped_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._save(info)
        if errors:
            raise LabError(_("lab down: {errors}").format(errors="; ".join(errors)))

    def pids(self) -> list[int]:
        """Every live process the lab's servers consist of (leaders, their process groups and their other
        descendants, e.g. sshd's sessions and the commands they run)."""
        found: list[int] = []
        for entry in self.info["pids"].values():
            if _proc.alive(entry["pid"], entry["start_time"]):
                found.append(entry["pid"])
                found.extend(p for p, _st in _proc.descendants(entry["pid"]) if p not in found)
            found.extend(p for p in _proc.group_members(entry["pid"]) if p not in found)
        return found

    # ----------------------------------------------------------------- env
    def env(self) -> dict[str, str]:
        """The connection settings of docs/lab.md for this lab (includes its throwaway passwords)."""
        info = self.info
        p, paths = info["ports"], info["paths"]
        env = {
            "MAILSTATE_LDAP_URL": f"ldaps://127.0.0.1:{p['ldaps']}",
            "MAILSTATE_LDAP_BIND_DN": info["dns"]["service"],
            "MAILSTATE_LDAP_PASSWORD": self.secret("ldap_service"),
            "MAILSTATE_LDAP_CA_FILE": paths["ca_file"],
            "MAILSTATE_LAB_LAYOUT": self.layout,
        }
        if "dovecot" in info["services"]:
            env.update({
                "MAILSTATE_IMAP_URL": f"imaps://127.0.0.1:{p['imaps']}",
                "MAILSTATE_IMAP_USER": "mailstate",
                "MAILSTATE_IMAP_PASSWORD": self.secret("imap_master"),
                "MAILSTATE_IMAP_CA_FILE": paths["ca_file"],
            })
        if "sshd" in info["services"]:
            env.update({
                "MAILSTATE_SSH_HOST": "127.0.0.1",
                "MAILSTATE_SSH_PORT": str(p["ssh"]),
                "MAILSTATE_SSH_USER": info["user"],
                "MAILSTATE_SSH_KEY_FILE": paths["ssh_key"],
                "MAILSTATE_SSH_KNOWN_HOSTS": paths["known_hosts"],
                "MAILSTATE_SSH_DOVEADM": f"doveadm -c {shlex.quote(paths['dovecot_conf'])}",
                "MAILSTATE_SSH_ARCHIVE_DIR": paths["archive"],
            })
        if "postfix" in info["services"]:
            env["MAILSTATE_LAB_SMTP"] = f"127.0.0.1:{p['smtp']}"
        return env

    def env_script(self) -> str:
        """`export NAME=value` lines (shell-quoted) for eval in a shell."""
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env().items())

    # ----------------------------------------------------------------- reset
    def reset(self) -> None:
        """A clean organisation, cheaply: delete every entry but the bootstrap ones, restore the default
        password policy, empty the mail store, the dicts and the archive."""
        info = self.info
        base = info["base_dn"]
        iredmail = info.get("layout") == "iredmail"
        bootstrap = iredmail_sc.bootstrap_dns(base, info["domain"]) if iredmail else slapd.bootstrap_dns(base)
        keep = {dn.lower() for dn in bootstrap}
        conn = self.ldap(as_="root")
        try:
            conn.search(base, "(objectClass=*)", ldap3.SUBTREE, attributes=["1.1"])
            doomed = [e.entry_dn for e in conn.entries if e.entry_dn.lower() not in keep]
            if len(doomed) > FAST_RESET_ABOVE:
                conn.unbind()
                self._fresh_slapd()
            else:
                for dn in sorted(doomed, key=lambda d: d.count(","), reverse=True):
                    conn.delete(dn)
                if not iredmail:  # the iRedMail layout has no password policy
                    pol = {k: [(ldap3.MODIFY_REPLACE, v)] for k, v in slapd.lab_policy(info).items()}
                    conn.modify(slapd.policy_dn(base), pol)
        except LDAPException as exc:
            raise LabError(_("lab reset failed in the directory: {error}").format(error=exc)) from None
        finally:
            conn.unbind()
        if "dovecot" in info["services"]:
            dovecot.reset(self)
        for child in _iter_children(self.dir / "archive"):
            _remove(child)

    def _fresh_slapd(self) -> None:
        """Many entries to delete: faster to stop slapd, empty its database, reload the bootstrap entries
        and start it again on the same ports (Dovecot reconnects by itself)."""
        info = self.info
        user = _proc.lab_user()
        entry = info["pids"]["slapd"]
        _proc.stop(entry["pid"], entry["start_time"], child=self._children.pop("slapd", None))
        d = self.dir / "slapd"
        for f in (d / "data").iterdir():
            f.unlink()
        res = _proc.run_as(["slapadd", "-q", "-F", str(d / "slapd.d"), "-b", info["base_dn"], "-l",
                            str(d / "bootstrap.ldif")], user, d)
        if res.returncode != 0:
            raise LabError(_("slapadd of the bootstrap entries failed: {error}").format(
                error=(res.stderr or res.stdout).strip()))
        self._spawn_slapd(info, user)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                self._ldap_ready()
                return
            except LabError:
                if time.monotonic() > deadline or not _proc.alive(info["pids"]["slapd"]["pid"]):
                    raise LabError(_("slapd did not restart: {log}").format(
                        log=_proc.tail(d / "slapd.log"))) from None
                time.sleep(0.02)

    # ----------------------------------------------------------------- misc
    def run_as_lab_user(self, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a command as the lab user (e.g. doveadm) and capture its output."""
        return _proc.run_as(argv, _proc.lab_user(), self.dir, timeout=timeout)


def _running(entry: dict[str, Any]) -> bool:
    """Whether a recorded server runs. One killed a moment ago is still "alive" while it exits: wait for
    that, briefly, so that it is not taken for running (nor started again while it holds its port)."""
    deadline = time.monotonic() + 5
    while (_proc.alive(entry["pid"], entry["start_time"]) and _proc.dying(entry["pid"])
           and time.monotonic() < deadline):
        time.sleep(0.02)
    return _proc.alive(entry["pid"], entry["start_time"])


def _iter_children(path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield from path.iterdir()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
