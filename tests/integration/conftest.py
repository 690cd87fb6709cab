"""Fixtures for integration tests: real slapd + Dovecot + sshd on loopback, started once per session.

Fixture API (stable; others build on it):

- ``lab_for(domain, org_name=None, layout="default", password=None) -> Lab`` (session): one running lab
  per domain (and layout: "iredmail" is docs/iredmail.md's), started on first use (``password``:
  serverconfig.site.PasswordRules of a `[password]`, else the defaults),
  stopped (every process, by pid) at the end of the session. Labs live in /dev/shm (tmpfs) when possible.
  Their servers also die with the pytest process if it is killed (``Lab(dir, die_with_parent=True)``).
  ``make test`` runs two pytest-xdist workers (``--dist loadfile``: a file whole, in order, on one worker;
  a module-scoped story stays in one piece). Each worker is a session with labs of
  its own, and which tests ran before on a shared lab differs from run to run — a test that needs a lab
  nobody else touched (its logs, say) asks for a domain of its own.
- ``lab -> Lab`` (session): ``lab_for("lab.example.gov.vn")`` — base DN ``dc=lab,dc=example,dc=gov,dc=vn``.
- ``clean_lab -> Lab`` (function): ``lab`` after ``lab.reset()``: only the bootstrap entries of docs/ldap.md
  (base, ou=people/mailboxes/units/groups/aliases/system/policies, cn=mailstate and cn=dovecot under
  ou=system, cn=default,ou=policies), default password policy, empty mail store, dicts and archive.
- ``lab_env -> dict[str, str]`` (function): ``clean_lab`` plus every MAILSTATE_* variable of docs/lab.md
  (and MAILSTATE_SSH_DOVEADM, MAILSTATE_SSH_ARCHIVE_DIR) set with monkeypatch; returns them.

Useful ``Lab`` members: ``info`` (lab.json: ports ldap/ldaps/imaps/ssh, pids, base_dn, domain, user, dns
{root, service, dovecot, policy}, paths {ca_file, dovecot_conf, mail, shared_dict, last_login_dict,
ssh_key, known_hosts, archive, …}), ``base_dn``, ``ca_file``, ``env()``, ``secret(name)`` (ldap_root,
ldap_service, ldap_dovecot, imap_master), ``ldap(as_="service"|"root"|"dovecot")`` (bound ldap3
connection over LDAPS, CA-verified), ``ldap_tls()``, ``ssl_context()``, ``run_as_lab_user(argv)``,
``pids()`` (every live process of the lab), ``status()``, ``is_running()``, ``stop_service(name)`` /
``start_service(name)`` (one server — "slapd", "dovecot", "sshd" — stopped, or restarted after a test killed
it, on the same ports and data; waits until it answers). Use a lab of its own (``lab_for("x.example…")``)
for tests that kill servers.

Helpers (plain functions, ``from mailstate.lab.testing import …``): ``make_person(lab, uid, password,
cn=, mail=, quota=, unit=, locked=, container="people"|"mailboxes", extra=) -> dn``, ``person_dn``,
``set_password``, ``lock(lab, dn, locked=True)``, ``imap_connect``, ``imap_login(lab, user, pw)``,
``imap_master_login(lab, user)`` (``user*mailstate``), ``own_mail(client)`` (Counter of (folder, SHA-256)
of every own message, read over IMAP), ``doveadm(lab, *args)`` (as the lab user),
``ssh_client(lab)`` (paramiko, known_hosts + RejectPolicy), ``LOCKED`` = "000001010000Z".
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailstate.cli import LANG_ENV
from mailstate.errors import LabError
from mailstate.lab import Lab
from mailstate.model import i18n
from mailstate.serverconfig.site import PasswordRules

DEFAULT_DOMAIN = "lab.example.gov.vn"


@pytest.fixture(autouse=True)
def _english(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The integration tests assert behaviour through English texts, in the library and through the CLI
    (MAILSTATE_LANG, the environment form of --lang). The language itself — Vietnamese by default — is
    tested where it is the subject (test_i18n_apply_lab.py unsets this; tests/unit/test_i18n.py)."""
    monkeypatch.setenv(LANG_ENV, "en")
    with i18n.use("en"):
        yield


def _remove_stale_roots(parent: Path) -> None:
    """Remove lab roots left by killed sessions (older than 10 minutes, no server of theirs alive)."""
    for old in parent.glob("mailstate-lab-*"):
        try:
            if time.time() - old.stat().st_mtime < 600:
                continue
            if any(Lab(d).is_running() for d in old.iterdir() if (d / "lab.json").exists()):
                continue
        except (OSError, ValueError, LabError):
            continue
        shutil.rmtree(old, ignore_errors=True)


def _lab_root() -> Path:
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    _remove_stale_roots(parent)
    root = Path(tempfile.mkdtemp(prefix="mailstate-lab-", dir=parent))
    root.chmod(0o711)  # the lab user (mailstate-lab when we are root) must traverse it
    return root


@pytest.fixture(scope="session")
def lab_for() -> Iterator[Callable[..., Lab]]:
    """Factory: one running lab per domain for the whole session; all stopped and removed at the end."""
    root = _lab_root()
    labs: dict[str, Lab] = {}

    def get(domain: str = DEFAULT_DOMAIN, org_name: str | None = None, layout: str = "default",
            password: PasswordRules | None = None) -> Lab:
        key = domain if layout == "default" else f"{domain}.{layout}"
        if key not in labs:
            lab = Lab(root / key, die_with_parent=True)
            lab.up(domain=domain, org_name=org_name or f"Lab {domain}", layout=layout, password=password)
            labs[key] = lab
        return labs[key]

    try:
        yield get
    finally:
        errors = []
        for lab in labs.values():
            try:
                lab.down()
            except Exception as exc:  # keep stopping the others
                errors.append(exc)
        shutil.rmtree(root, ignore_errors=True)
        if errors:
            raise errors[0]


@pytest.fixture(scope="session")
def lab(lab_for: Callable[..., Lab]) -> Lab:
    """The session's default lab (domain lab.example.gov.vn), running."""
    return lab_for(DEFAULT_DOMAIN)


@pytest.fixture
def clean_lab(lab: Lab) -> Lab:
    """The default lab reset to its bootstrap entries with an empty mail store."""
    lab.reset()
    return lab


@pytest.fixture
def lab_env(clean_lab: Lab, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean lab with every MAILSTATE_* connection variable pointing at it."""
    env = clean_lab.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def sct_all(lab_for: Callable[..., Lab], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Lab:
    """A clean lab for sct.binhdinh.gov.vn with every MAILSTATE_* variable of the lab set (and only those)."""
    lab = lab_for("sct.binhdinh.gov.vn", "Sở Công Thương tỉnh Bình Định")
    lab.reset()
    for key in list(os.environ):
        if key.startswith("MAILSTATE_") and key != LANG_ENV:
            monkeypatch.delenv(key)
    for key, value in lab.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    return lab
