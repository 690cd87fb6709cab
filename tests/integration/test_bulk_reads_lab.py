"""The mail host's bulk reads on the real lab (Dovecot, sshd): how many doveadm processes a read starts does
not grow with the number of mailboxes (a userdb lookup and a process start per mailbox made a province's
plan take minutes), and what they find is what the one-mailbox-at-a-time reads found."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailstate.desired_state.loader import load_state
from mailstate.errors import ProviderError
from mailstate.lab import Lab
from mailstate.lab.testing import imap_master_login
from mailstate.providers.doveadm.provider import SshProvider
from mailstate.providers.registry import close_providers, open_providers

pytestmark = pytest.mark.integration

MAILSTATE = Path(sys.executable).with_name("mailstate")
DOMAIN = "lab.example.gov.vn"
MSG = b"From: a@example.com\r\nTo: x@" + DOMAIN.encode() + b"\r\nSubject: x\r\n\r\nbody\r\n"


def write_state(root: Path, units: int, per_unit: int) -> Path:
    (root / "units").mkdir(parents=True, exist_ok=True)
    (root / "mailstate.toml").write_text(
        f'[organization]\nname = "Lab"\ndomain = "{DOMAIN}"\n\n[providers.ldap]\nurl = "ldaps://ldap.invalid"\n'
        'password_env = "MAILSTATE_LDAP_PASSWORD"\n',
        encoding="utf-8",
    )
    for u in range(units):
        people = [f"b{u}x{i}" for i in range(per_unit)]
        rows = [f'[unit]\nid = "bu{u}"\nname = "Phòng {u}"\nhead = "{people[0]}"\n'
                f'delegates = ["{people[1]}", "{people[2]}"]\n']
        rows += [f'[[person]]\nid = "{p}"\nname = "Trần Văn Người {u} {i}"\n' for i, p in enumerate(people)]
        readers = ", ".join(f'"{p}"' for p in people[1:])
        rows.append(f'[[shared_folder]]\nmailbox = "unit:bu{u}"\npath = "Đến"\npurpose = "Văn bản"\n'
                    f"read = [{readers}]\n")
        (root / "units" / f"bu{u}.toml").write_text("\n".join(rows), encoding="utf-8")
    return root


class Counting:
    """The commands an SshProvider ran on the host (its own ``run``, wrapped: the server is real)."""

    def __init__(self, prov: SshProvider) -> None:
        self.commands: list[str] = []
        inner = prov.run

        def run(command: str, check: bool = True) -> tuple[int, str, str]:
            self.commands.append(command)
            return inner(command, check)

        prov.run = run  # type: ignore[method-assign]

    def doveadm(self, words: str) -> int:
        """How many doveadm processes of ``words`` (e.g. "mailbox status") the commands started."""
        return sum(c.count(f" {words} ") for c in self.commands)


@pytest.fixture
def applied(
    lab_env: dict[str, str], clean_lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    state = write_state(tmp_path / "state", units=4, per_unit=3)
    r = subprocess.run([str(MAILSTATE), "apply", "--yes", "--state", str(state)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return state


def test_unit_mailbox_use_read_by_two_doveadm_processes(applied: Path, clean_lab: Lab) -> None:
    """Four unit mailboxes with two delegates each: whether each was worked in takes two ``mailbox status``
    processes (its own counters, then the delegates' views) and one ``fetch`` of flags, not one per mailbox
    and one per delegate; a read
    under the mailbox's own login and one by a delegate under theirs (a private \\Seen) both count, mail only
    delivered does not."""
    own = imap_master_login(clean_lab, "bu0")
    try:
        own.append("INBOX", MSG, flags=[b"\\Seen"])
    finally:
        own.logout()
    for unit in ("bu1", "bu2"):
        c = imap_master_login(clean_lab, unit)
        try:
            c.append("INBOX", MSG)  # delivered, unread
        finally:
            c.logout()
    delegate = imap_master_login(clean_lab, "b1x2")  # reads bu1's mail under her own login
    try:
        delegate.select_folder("shared/bu1/INBOX")
        delegate.fetch(delegate.search(), ["BODY[]"])
    finally:
        delegate.logout()
    provs = open_providers(load_state(applied), ["ssh"])
    try:
        prov = provs["ssh"]
        assert isinstance(prov, SshProvider)
        seen = Counting(prov)
        used = prov.units_used(["bu0", "bu1", "bu2", "bu3"])
        assert used == {"bu0": "INBOX: 1 read", "bu1": "b1x2: shared/bu1/INBOX: 1 read"}
        assert seen.doveadm("mailbox status") == 2, seen.commands
        assert seen.doveadm("fetch") == 1, seen.commands  # the flags of those still without a sign
        with pytest.raises(ProviderError, match="nobodyhere's folders failed"):  # unknown to the userdb
            prov.units_used(["bu0", "nobodyhere"])
        assert prov.units_used(["b0x0"]) == {}  # known, but no mail folder made yet: not used, no error
        # one user a line on doveadm's input: a name with a line break would be read as two users
        with pytest.raises(ProviderError, match=r"'bu1.+nbu0' is not a user name"):
            prov.units_used(["bu2", "bu1\nbu0"])
    finally:
        close_providers(provs)


def test_acl_files_found_through_a_few_processes_for_every_user(applied: Path, clean_lab: Lab) -> None:
    """The owners with rights for others in their ACL files: a negative right set by hand on a person's
    mailbox (Dovecot's shared dict does not record it) is found, and the mail roots of every user come from
    at most four ``mailbox path`` processes (the users on their input), as ``mailbox path -A`` gave them."""
    c = imap_master_login(clean_lab, "b3x1")
    try:
        c.setacl("INBOX", "-b3x2", "r")
    finally:
        c.logout()
    provs = open_providers(load_state(applied), ["ssh"])
    try:
        prov = provs["ssh"]
        assert isinstance(prov, SshProvider)
        seen = Counting(prov)
        owners = prov.acl_owners()
        assert "b3x1" in owners and {"bu0", "bu1", "bu2", "bu3"} <= owners
        assert 1 <= seen.doveadm("mailbox path") <= 4, seen.commands
        assert not any(" -A" in c for c in seen.commands), seen.commands
        everyone = set(prov.userdb_users())
        assert {"b0x0", "b3x2", "bu3"} <= everyone
    finally:
        close_providers(provs)
