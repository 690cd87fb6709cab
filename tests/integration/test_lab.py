"""The lab itself: real slapd (+ Dovecot, sshd) on loopback, TLS verified against the lab CA."""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ldap3
import paramiko
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from ldap3.core.exceptions import LDAPException

from mailstate.errors import LabError
from mailstate.lab import Lab, _proc
from mailstate.lab.lab import FAST_RESET_ABOVE
from mailstate.lab.testing import (
    LOCKED,
    doveadm,
    imap_login,
    imap_master_login,
    lock,
    make_person,
    set_password,
    ssh_client,
)

MAILSTATE = Path(sys.executable).parent / "mailstate"


def _bind(lab: Lab, dn: str, password: str, ca: bool = True) -> bool:
    tls = lab.ldap_tls() if ca else ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT)
    server = ldap3.Server("127.0.0.1", port=lab.info["ports"]["ldaps"], use_ssl=True, tls=tls,
                          connect_timeout=3)
    conn = ldap3.Connection(server, user=dn, password=password)
    try:
        return bool(conn.bind())
    finally:
        conn.unbind()


def test_ldaps_bind_verifies_against_the_lab_ca(lab: Lab) -> None:
    """The service account binds over LDAPS when the lab CA is trusted, and the handshake fails without it."""
    dn, pw = lab.info["dns"]["service"], lab.secret("ldap_service")
    assert _bind(lab, dn, pw)
    with pytest.raises(LDAPException):
        _bind(lab, dn, pw, ca=False)


def test_starttls_on_the_plain_port(lab: Lab) -> None:
    """StartTLS on the ldap:// port verifies against the lab CA and then the service account binds."""
    server = ldap3.Server("127.0.0.1", port=lab.info["ports"]["ldap"], tls=lab.ldap_tls(), connect_timeout=3)
    conn = ldap3.Connection(server, user=lab.info["dns"]["service"], password=lab.secret("ldap_service"))
    conn.open()
    assert conn.start_tls()
    assert conn.bind()
    conn.unbind()


def test_bootstrap_entries_present(clean_lab: Lab) -> None:
    """A clean lab holds exactly the bootstrap entries of docs/ldap.md."""
    conn = clean_lab.ldap("service")
    conn.search(clean_lab.base_dn, "(objectClass=*)", attributes=["1.1"])
    dns = {e.entry_dn for e in conn.entries}
    conn.unbind()
    base = clean_lab.base_dn
    assert f"ou=people,{base}" in dns and f"cn=default,ou=policies,{base}" in dns
    assert len(dns) == 11


def test_password_modify_hashes_and_sets_pwd_reset(clean_lab: Lab) -> None:
    """A password set by the service account is stored hashed, binds, and carries pwdReset (must change)."""
    dn = make_person(clean_lab, "hoanv", "Mật-khẩu-dài-1", cn="Nguyễn Văn Hòa", must_change=True)
    assert _bind(clean_lab, dn, "Mật-khẩu-dài-1")
    assert not _bind(clean_lab, dn, "wrong-password")
    conn = clean_lab.ldap("root")
    conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["userPassword", "pwdReset"])
    entry = conn.entries[0]
    conn.unbind()
    value = entry.userPassword.value
    assert (value.decode() if isinstance(value, bytes) else value).startswith("{SSHA}")
    assert str(entry.pwdReset.value).upper() == "TRUE"


def test_ppolicy_lock_refuses_bind(clean_lab: Lab) -> None:
    """pwdAccountLockedTime=000001010000Z set by the service account refuses binds; removing it restores."""
    dn = make_person(clean_lab, "khoatd", "Khoa-password-1")
    assert _bind(clean_lab, dn, "Khoa-password-1")
    conn = clean_lab.ldap("service")
    assert conn.modify(dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, [LOCKED])]})
    assert not _bind(clean_lab, dn, "Khoa-password-1")
    assert conn.modify(dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_DELETE, [])]})
    conn.unbind()
    assert _bind(clean_lab, dn, "Khoa-password-1")


def test_short_password_refused_by_policy(clean_lab: Lab) -> None:
    """A person changing their own password to 5 characters is refused (pwdMinLength 8); 12 are accepted."""
    dn = make_person(clean_lab, "ngantt", "Ngan-password-1")
    conn = clean_lab.ldap(dn=dn, password="Ngan-password-1")
    with pytest.raises(LDAPException):
        conn.extend.standard.modify_password(dn, old_password="Ngan-password-1", new_password="short")
    assert conn.extend.standard.modify_password(dn, old_password="Ngan-password-1",
                                                new_password="Ngan-better-22")
    conn.unbind()
    assert _bind(clean_lab, dn, "Ngan-better-22")


def test_reset_removes_everything_but_bootstrap(lab: Lab) -> None:
    """reset() deletes added entries (even nested ones) and keeps the bootstrap ones."""
    make_person(lab, "tmpuser", "Tmp-password-1")
    conn = lab.ldap("service")
    assert conn.add(f"ou=qlcn,ou=units,{lab.base_dn}", ["organizationalUnit", "mailstateUnit"],
                    {"description": "Phòng Quản lý công nghiệp"})
    conn.unbind()
    lab.reset()
    conn = lab.ldap("service")
    conn.search(lab.base_dn, "(objectClass=*)", attributes=["1.1"])
    assert len(conn.entries) == 11
    conn.unbind()


def test_service_account_sees_more_than_500(clean_lab: Lab) -> None:
    """The service account's paged search returns all 600 entries (no silent truncation at 500)."""
    conn = clean_lab.ldap("root")
    for i in range(600):
        conn.add(f"cn=g{i},ou=groups,{clean_lab.base_dn}", ["nisMailAlias", "mailstateGroup"],
                 {"rfc822MailMember": f"x{i}@example.org"})
    conn.unbind()
    conn = clean_lab.ldap("service")
    got = list(conn.extend.standard.paged_search(f"ou=groups,{clean_lab.base_dn}",
                                                 "(objectClass=nisMailAlias)", attributes=["cn"],
                                                 paged_size=200, generator=True))
    conn.unbind()
    assert len([e for e in got if e["type"] == "searchResEntry"]) == 600


# ------------------------------------------------------------------ Dovecot


def test_imaps_login_with_directory_password(clean_lab: Lab) -> None:
    """A person created in the directory logs in over IMAPS (CA-verified) with the password set for them."""
    make_person(clean_lab, "bangnv", "Bang-password-1", cn="Nguyễn Văn Bằng")
    client = imap_login(clean_lab, "bangnv", "Bang-password-1")
    assert client.select_folder("INBOX")[b"EXISTS"] == 0
    client.logout()
    with pytest.raises(LoginError):
        imap_login(clean_lab, "bangnv", "wrong-password-1")


def test_imaps_refused_without_the_lab_ca(clean_lab: Lab) -> None:
    """An IMAPS client that does not trust the lab CA fails the TLS handshake."""
    with pytest.raises(ssl.SSLError):
        IMAPClient("127.0.0.1", port=clean_lab.info["ports"]["imaps"], ssl=True,
                   ssl_context=ssl.create_default_context(), timeout=5)


def test_locked_entry_cannot_log_in(clean_lab: Lab) -> None:
    """After pwdAccountLockedTime=000001010000Z the IMAP login with the right password is refused."""
    dn = make_person(clean_lab, "khoatd", "Khoa-password-1")
    imap_login(clean_lab, "khoatd", "Khoa-password-1").logout()
    lock(clean_lab, dn)
    with pytest.raises(LoginError):
        imap_login(clean_lab, "khoatd", "Khoa-password-1")
    lock(clean_lab, dn, locked=False)
    imap_login(clean_lab, "khoatd", "Khoa-password-1").logout()


def test_master_user_manages_acl_quota_and_metadata(clean_lab: Lab) -> None:
    """The master user, logged in as the owner (`owner*mailstate`), creates a folder, sets and reads ACLs
    (GETACL/MYRIGHTS), sees the quota from mailstateQuota (GETQUOTAROOT) and stores a folder comment."""
    make_person(clean_lab, "vanthu", "Vanthu-password-1", container="mailboxes", quota=10_240_000)
    client = imap_master_login(clean_lab, "vanthu")
    folder = "Văn bản đến/2026"
    client.create_folder(folder)
    client.setacl(folder, "hoatt", "lrs")
    assert (b"hoatt", b"lrs") in client.getacl(folder)
    assert b"a" in client._imap.myrights(client._normalise_folder(folder))[1][0].split()[-1]
    roots, quotas = client.get_quota_root("INBOX")
    assert quotas and quotas[0].resource == "STORAGE" and quotas[0].limit == 10_000
    imaplib.Commands.setdefault("SETMETADATA", ("AUTH", "SELECTED"))
    typ, _ = client._imap._simple_command("SETMETADATA", client._normalise_folder(folder),
                                          b'(/shared/comment "purpose")')
    assert typ == "OK"
    client.logout()
    assert "user=hoatt" in doveadm(clean_lab, "acl", "get", "-u", "vanthu", folder).stdout


def test_delegate_sees_shared_inbox(clean_lab: Lab) -> None:
    """A delegate given rights on a unit mailbox's INBOX logs in with their own password and opens
    shared/<unit>/INBOX; a colleague without rights cannot."""
    make_person(clean_lab, "vanthu", "Vanthu-password-1", container="mailboxes")
    make_person(clean_lab, "hoatt", "Hoatt-password-1")
    make_person(clean_lab, "namlv", "Namlv-password-1")
    owner = imap_master_login(clean_lab, "vanthu")
    owner.setacl("INBOX", "hoatt", "lrswi")
    owner.logout()
    delegate = imap_login(clean_lab, "hoatt", "Hoatt-password-1")
    names = [name for _flags, _sep, name in delegate.list_folders("shared/", "*")]
    assert "shared/vanthu/INBOX" in names  # mail_shared_explicit_inbox = yes
    assert delegate.select_folder("shared/vanthu/INBOX")[b"EXISTS"] == 0
    delegate.logout()
    other = imap_login(clean_lab, "namlv", "Namlv-password-1")
    assert not [n for _f, _s, n in other.list_folders("shared/", "*") if "vanthu" in n]
    with pytest.raises(IMAPClientError):
        other.select_folder("shared/vanthu/INBOX")
    other.logout()


def test_last_login_recorded_but_not_for_master(clean_lab: Lab) -> None:
    """A user's own login is recorded in the last_login dict; a master-user login does not touch it."""
    make_person(clean_lab, "bangnv", "Bang-password-1")
    make_person(clean_lab, "vanthu", "Vanthu-password-1", container="mailboxes")
    imap_login(clean_lab, "bangnv", "Bang-password-1").logout()
    imap_master_login(clean_lab, "vanthu").logout()
    out = doveadm(clean_lab, "dict", "iter", "-u", "bangnv",
                  "file:" + clean_lab.info["paths"]["last_login_dict"], "shared/last-login/").stdout
    assert "shared/last-login/bangnv" in out
    assert "shared/last-login/vanthu" not in out


def test_reset_empties_the_mail_store(lab: Lab) -> None:
    """reset() removes mailboxes created before, so a re-created person starts with only INBOX."""
    make_person(lab, "tmpmail", "Tmpmail-password-1")
    client = imap_login(lab, "tmpmail", "Tmpmail-password-1")
    client.create_folder("Old")
    client.logout()
    lab.reset()
    make_person(lab, "tmpmail", "Tmpmail-password-1")
    client = imap_login(lab, "tmpmail", "Tmpmail-password-1")
    assert [n for _f, _s, n in client.list_folders("", "*")] == ["INBOX"]
    client.logout()


# ------------------------------------------------------------------ sshd


def test_doveadm_over_ssh(clean_lab: Lab) -> None:
    """mailstate's key logs in over SSH (host key checked with RejectPolicy) and runs the lab's doveadm."""
    make_person(clean_lab, "bangnv", "Bang-password-1")
    client = ssh_client(clean_lab)
    try:
        doveadm_cmd = clean_lab.env()["MAILSTATE_SSH_DOVEADM"]
        _i, stdout, _e = client.exec_command(f"{doveadm_cmd} user -f home bangnv")
        assert stdout.read().decode().strip() == f"{clean_lab.info['paths']['mail']}/bangnv"
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()


def test_unknown_host_key_refused(clean_lab: Lab, tmp_path: Path) -> None:
    """With a known_hosts that does not hold the lab's host key, RejectPolicy refuses the connection."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    client = paramiko.SSHClient()
    client.load_host_keys(str(empty))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException):
        client.connect("127.0.0.1", port=clean_lab.info["ports"]["ssh"], username=clean_lab.info["user"],
                       key_filename=clean_lab.info["paths"]["ssh_key"], allow_agent=False,
                       look_for_keys=False, timeout=5)
    client.close()


def test_ssh_refuses_a_foreign_key(clean_lab: Lab, tmp_path: Path) -> None:
    """A key that is not in the lab's authorized_keys cannot log in."""
    key = paramiko.Ed25519Key.from_private_key_file(clean_lab.info["paths"]["ssh_key"])
    assert key.get_name() == "ssh-ed25519"
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    client = paramiko.SSHClient()
    client.load_host_keys(clean_lab.info["paths"]["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect("127.0.0.1", port=clean_lab.info["ports"]["ssh"], username=clean_lab.info["user"],
                       key_filename=str(other), allow_agent=False, look_for_keys=False, timeout=5)
    client.close()


# ------------------------------------------------------------------ the lab as a whole, through the CLI


def _pids_of(lab_dir: Path) -> list[int]:
    return Lab(lab_dir).pids()


def test_cli_up_env_status_down_beside_another_lab(lab: Lab) -> None:
    """`mailstate lab up` starts a second lab beside the session's (other ports) in under 5 s, its
    `lab env` evals in bash, `lab status` shows it, and `lab down` leaves none of its processes."""
    root = Path(tempfile.mkdtemp(prefix="mailstate-cli-lab-", dir="/dev/shm" if Path("/dev/shm").is_dir()
                                 else None))
    root.chmod(0o711)
    lab_dir = root / "lab"
    mailstate = [sys.executable, "-m", "mailstate.cli"] if not MAILSTATE.exists() else [str(MAILSTATE)]
    try:
        res = subprocess.run([*mailstate, "lab", "up", "--dir", str(lab_dir), "--domain",
                              "second.example.gov.vn"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        second = Lab(lab_dir)
        info = second.info
        assert info["up_seconds"] > 0  # how long it took is bench/ matter, never a timed test
        assert set(info["ports"].values()).isdisjoint(lab.info["ports"].values())
        pids = _pids_of(lab_dir)
        assert len(pids) >= 3
        res = subprocess.run([*mailstate, "lab", "status", "--dir", str(lab_dir)], capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 0 and "slapd" in res.stdout and "sshd" in res.stdout
        script = (f'eval "$({" ".join(mailstate)} lab env --dir {lab_dir})" && '
                  'printf "%s\\n%s\\n%s\\n" "$MAILSTATE_LDAP_URL" "$MAILSTATE_SSH_DOVEADM" '
                  '"$MAILSTATE_IMAP_USER"')
        res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        url, doveadm_cmd, imap_user = res.stdout.splitlines()
        assert url == f"ldaps://127.0.0.1:{info['ports']['ldaps']}"
        assert doveadm_cmd == f"doveadm -c {lab_dir}/dovecot/dovecot.conf"
        assert imap_user == "mailstate"
        # both labs answer at once
        assert second.ldap("service").unbind() and lab.ldap("service").unbind()
        res = subprocess.run([*mailstate, "lab", "down", "--dir", str(lab_dir)], capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert not [p for p in pids if Path(f"/proc/{p}").exists() and _proc.alive(p)]
        res = subprocess.run([*mailstate, "lab", "status", "--dir", str(lab_dir)], capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 1 and "stopped" in res.stdout
    finally:
        Lab(lab_dir).down()
        shutil.rmtree(root, ignore_errors=True)
    assert lab.is_running()


def test_lab_env_refused_when_not_running(tmp_path: Path) -> None:
    """`lab env` on a directory without a running lab exits 1 with a one-line error, no traceback."""
    res = subprocess.run([str(MAILSTATE), "lab", "env", "--dir", str(tmp_path)], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 1
    assert res.stderr.startswith(("error: ", "lỗi: ")) and "Traceback" not in res.stderr


def test_api_up_down_leaves_no_process() -> None:
    """Lab.up() reports its start-up time; Lab.down() stops every process of the lab (leaders, children)."""
    root = Path(tempfile.mkdtemp(prefix="mailstate-api-lab-"))
    root.chmod(0o711)
    the_lab = Lab(root / "lab")
    try:
        info = the_lab.up(domain="third.example.gov.vn", org_name="Sở Thứ Ba")
        assert info["up_seconds"] > 0
        pids = the_lab.pids()
        assert pids
        the_lab.down()
        assert not [p for p in pids if _proc.alive(p)]
        assert not the_lab.is_running()
    finally:
        the_lab.down()
        shutil.rmtree(root, ignore_errors=True)


def test_fast_reset_restarts_slapd_and_dovecot_reconnects(lab: Lab) -> None:
    """reset() of many entries (the restart path) leaves the bootstrap entries, and Dovecot logs in
    against the restarted slapd."""
    conn = lab.ldap("root")
    for i in range(FAST_RESET_ABOVE + 20):
        conn.add(f"cn=bulk{i},ou=groups,{lab.base_dn}", ["nisMailAlias"],
                 {"rfc822MailMember": "x@example.org"})
    conn.unbind()
    old_pid = lab.info["pids"]["slapd"]["pid"]
    lab.reset()
    assert lab.info["pids"]["slapd"]["pid"] != old_pid
    conn = lab.ldap("service")
    conn.search(lab.base_dn, "(objectClass=*)", attributes=["1.1"])
    assert len(conn.entries) == 11
    conn.unbind()
    make_person(lab, "afterreset", "After-reset-1")
    imap_login(lab, "afterreset", "After-reset-1").logout()


def test_master_login_as_unknown_user_is_refused_cleanly(clean_lab: Lab) -> None:
    """The master user logging in as someone absent from the directory gets NO [AUTHORIZATIONFAILED]
    (not a dropped connection); as a locked person it still gets in (administration of locked mailboxes)."""
    with pytest.raises(LoginError, match="AUTHORIZATIONFAILED"):
        imap_master_login(clean_lab, "nobody")
    dn = make_person(clean_lab, "locked1", "Locked-password-1", locked=True)
    with pytest.raises(LoginError):
        imap_login(clean_lab, "locked1", "Locked-password-1")
    imap_master_login(clean_lab, "locked1").logout()
    assert dn.startswith("uid=locked1,")


def test_setting_a_password_unlocks(clean_lab: Lab) -> None:
    """Good to know for the LDAP provider: slapd's ppolicy removes pwdAccountLockedTime when an
    administrator sets a password, so a lock must be (re)applied after any password change."""
    dn = make_person(clean_lab, "relock", "Relock-password-1", locked=True)
    assert not _bind(clean_lab, dn, "Relock-password-1")
    set_password(clean_lab, dn, "Relock-password-2")
    assert _bind(clean_lab, dn, "Relock-password-2")


def test_secrets_stay_in_0600_files(lab_for: Callable[..., Lab]) -> None:
    """The lab's passwords appear in no log, not in lab.json nor `lab status --json`; the secret files and
    keys are mode 0600 in a 0700 directory (Postfix's LDAP tables 0640, readable by the lab user's group
    only); nothing runs as root but Postfix's master (it refuses to run otherwise; its daemons run as the
    lab user).

    A lab of its own, used first with every secret (binds, logins, doveadm over SSH): the session's labs
    also serve tests that give a password where a user name belongs on purpose, which the server logs."""
    lab = lab_for("secrets.example.gov.vn")
    for account in ("root", "service", "dovecot"):
        assert lab.ldap(as_=account).unbind()
    make_person(lab, "logsecret", "Logsecret-password-1")
    imap_login(lab, "logsecret", "Logsecret-password-1").logout()
    imap_master_login(lab, "logsecret").logout()
    ssh = ssh_client(lab)
    try:
        _, out, _ = ssh.exec_command(f"{lab.env()['MAILSTATE_SSH_DOVEADM']} user logsecret")
        assert out.channel.recv_exit_status() == 0
    finally:
        ssh.close()
    secrets_dir = lab.dir / "secrets"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    private = [f for f in secrets_dir.iterdir() if f.suffix != ".pub"]
    for f in (*private, lab.dir / "tls" / "server.key", lab.dir / "dovecot" / "dovecot-ldap.conf.ext"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    values = [lab.secret(n) for n in ("ldap_root", "ldap_service", "ldap_dovecot", "imap_master")]
    res = subprocess.run([str(MAILSTATE), "lab", "status", "--json", "--dir", str(lab.dir)],
                         capture_output=True, text=True, timeout=30)
    texts = [res.stdout, res.stderr, lab.state_file.read_text()]
    texts += [Path(p).read_text(errors="replace") for p in (lab.info["paths"]["slapd_log"],
                                                             lab.info["paths"]["dovecot_log"],
                                                             lab.info["paths"]["sshd_log"])]
    master = lab.info["pids"].get("postfix", {}).get("pid")
    if master is not None:
        texts.append(Path(lab.info["paths"]["postfix_log"]).read_text(errors="replace"))
        tables = list((Path(lab.info["paths"]["postfix_conf"]) / "mailstate").iterdir())
        assert tables
        for f in tables:
            assert stat.S_IMODE(f.stat().st_mode) == 0o640, f
            assert (f.stat().st_uid, f.stat().st_gid) == (0, pwd.getpwnam(lab.info["user"]).pw_gid)
    for text in texts:
        assert not [v for v in values if v in text]
    postfix_master = b"/usr/lib/postfix/sbin/master"
    as_root = {master} | {p for p, _ in _proc.descendants(master or 0)
                          if Path(f"/proc/{p}/cmdline").read_bytes().startswith(postfix_master)}
    for pid in lab.pids():
        if pid not in as_root:  # Postfix's master (and the guard that starts it) only
            assert Path(f"/proc/{pid}").stat().st_uid != 0, pid


def test_organisation_from_state_or_toml(tmp_path: Path) -> None:
    """`lab up --state` takes domain and name from the state; a state that does not validate still gives
    them from [organization] in mailstate.toml; a missing domain is a clear error naming the file."""
    from mailstate.cli.lab_cmds import organisation_of
    from mailstate.errors import LabError

    (tmp_path / "mailstate.toml").write_text(
        '[organization]\nname = "Sở Thử"\ndomain = "Thu.Example.gov.vn"\n[nonsense]\nx = 1\n',
        encoding="utf-8")
    assert organisation_of(tmp_path) == ("thu.example.gov.vn", "Sở Thử", None)
    (tmp_path / "mailstate.toml").write_text('[organization]\nname = "x"\n', encoding="utf-8")
    with pytest.raises(LabError, match="mailstate.toml: organization.domain"):
        organisation_of(tmp_path)


def test_servers_die_with_a_killed_test_session() -> None:
    """A lab made with die_with_parent=True (as the fixtures do) leaves no process when its creator dies
    without calling down()."""
    root = Path(tempfile.mkdtemp(prefix="mailstate-orphan-lab-"))
    root.chmod(0o711)
    script = (
        "import os, sys\n"
        "from mailstate.lab import Lab\n"
        f"lab = Lab({str(root / 'lab')!r}, die_with_parent=True)\n"
        "lab.up(domain='orphan.example.gov.vn')\n"
        "print(' '.join(map(str, lab.pids())), flush=True)\n"
        "os._exit(0)\n"
    )
    try:
        res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        pids = [int(p) for p in res.stdout.split()]
        assert len(pids) >= 3
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and [p for p in pids if _proc.alive(p)]:
            time.sleep(0.05)
        assert not [p for p in pids if _proc.alive(p)]
    finally:
        Lab(root / "lab").down()
        shutil.rmtree(root, ignore_errors=True)


def test_stop_and_start_one_server(lab_for: Callable[..., Lab]) -> None:
    """A killed slapd comes back with start_service on the same port and data; a stopped Dovecot too."""
    the_lab = lab_for("restart.example.gov.vn")
    the_lab.reset()
    make_person(the_lab, "keepme", "Keep-password-1")
    entry = the_lab.info["pids"]["slapd"]
    os.kill(entry["pid"], signal.SIGKILL)
    with pytest.raises(LabError):
        the_lab.ldap("service")
    the_lab.start_service("slapd")
    assert the_lab.info["pids"]["slapd"]["pid"] != entry["pid"]
    imap_login(the_lab, "keepme", "Keep-password-1").logout()
    the_lab.stop_service("dovecot")
    assert not the_lab.status()["dovecot"]["alive"]
    the_lab.start_service("dovecot")
    imap_login(the_lab, "keepme", "Keep-password-1").logout()
    with pytest.raises(LabError, match="already runs"):
        the_lab.start_service("slapd")


def test_up_refuses_a_non_empty_foreign_directory(tmp_path: Path) -> None:
    """`up` into a directory that has files but no lab.json fails clearly and deletes nothing."""
    keep = tmp_path / "mail"
    keep.mkdir()
    (keep / "important").write_text("do not delete")
    with pytest.raises(LabError, match="not empty"):
        Lab(tmp_path).up(domain="x.example.gov.vn")
    assert (keep / "important").read_text() == "do not delete"


DOVECOT_LIMITS = (
    "default_process_limit",
    "default_client_limit",
    "mail_max_userip_connections",
    "service/imap-login/service_count",
    "service/imap-login/process_limit",
    "service/imap-login/client_limit",
    "service/imap/process_limit",
    "service/imap/client_limit",
)


def test_dovecot_connection_limits_are_a_default_dovecots(lab: Lab, tmp_path: Path) -> None:
    """The lab refuses connections where a Dovecot installed with its defaults does (a service's
    process_limit / client_limit of 0 means default_process_limit / default_client_limit)."""
    empty = tmp_path / "empty.conf"
    empty.write_text("")

    def effective(values: dict[str, str]) -> dict[str, str]:
        out = dict(values)
        for name, value in values.items():
            if name.startswith("service/") and name.endswith("_limit") and value == "0":
                out[name] = values["default_" + name.rsplit("/", 1)[1]]
        return out

    def conf(argv: list[str]) -> dict[str, str]:
        return {n: subprocess.run([*argv, "-h", n], capture_output=True, text=True, check=True).stdout.strip()
                for n in DOVECOT_LIMITS}

    defaults = effective(conf(["doveconf", "-c", str(empty)]))
    lab_conf = lab.info["paths"]["dovecot_conf"]
    got = effective({
        n: lab.run_as_lab_user(["doveconf", "-c", lab_conf, "-h", n]).stdout.strip() for n in DOVECOT_LIMITS
    })
    assert got == defaults
    assert got["service/imap-login/process_limit"] == "100"  # with TLS: 100 connections at once


def test_eleventh_connection_of_one_user_is_refused(clean_lab: Lab) -> None:
    """mail_max_userip_connections = 10, as in production: one owner, one connection is the rule."""
    make_person(clean_lab, "bangnv", "Mk-Bangnv-2026")
    held = [imap_master_login(clean_lab, "bangnv") for _ in range(10)]
    try:
        with pytest.raises(IMAPClientError, match="mail_max_userip_connections=10"):
            imap_master_login(clean_lab, "bangnv")
    finally:
        for c in held:
            c.logout()


def test_start_and_restart_keep_the_data_and_up_refuses_to_wipe_it() -> None:
    """A stopped lab comes back with `lab start` holding its directory entry and its mail; `lab restart
    dovecot` restarts Dovecot alone; `lab up` on it is refused (nothing wiped) unless --reset, which wipes."""
    root = Path(tempfile.mkdtemp(prefix="mailstate-restart-lab-", dir="/dev/shm" if Path("/dev/shm").is_dir()
                                 else None))
    root.chmod(0o711)
    lab_dir = root / "lab"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(MAILSTATE), "lab", *args, "--dir", str(lab_dir)], capture_output=True,
                              text=True, timeout=120)

    message = b"From: a@lab.vn\r\nTo: keep@keep.example.gov.vn\r\nSubject: keep me\r\n\r\nStill here.\r\n"

    def kept(lab: Lab) -> bool:
        client = imap_login(lab, "keep", "Keep-password-1")
        try:
            client.select_folder("INBOX")
            bodies = [m[b"RFC822"] for m in client.fetch(client.search(), ["RFC822"]).values()]
        finally:
            client.logout()
        return bodies == [message]

    try:
        assert cli("up", "--domain", "keep.example.gov.vn").returncode == 0
        lab = Lab(lab_dir)
        make_person(lab, "keep", "Keep-password-1")
        client = imap_master_login(lab, "keep")
        client.append("INBOX", message)
        client.logout()
        ports = lab.info["ports"]
        assert cli("down").returncode == 0

        refused = cli("up", "--domain", "keep.example.gov.vn")
        assert refused.returncode == 1 and "lab start" in refused.stderr and "--reset" in refused.stderr
        assert not lab.is_running() and any((lab_dir / "mail").iterdir())

        started = cli("start")
        assert started.returncode == 0 and "started slapd" in started.stdout, started.stderr
        assert all(name in started.stdout for name in lab.info["commands"]), started.stdout
        assert lab.info["ports"] == ports and kept(lab)
        assert cli("status").returncode == 0
        assert "everything runs" in cli("start").stdout

        slapd_pid, dovecot_pid = (lab.info["pids"][n]["pid"] for n in ("slapd", "dovecot"))
        assert cli("restart", "dovecot").returncode == 0
        assert lab.info["pids"]["slapd"]["pid"] == slapd_pid
        assert lab.info["pids"]["dovecot"]["pid"] != dovecot_pid and kept(lab)
        os.kill(lab.info["pids"]["sshd"]["pid"], signal.SIGKILL)  # one server down: start brings it back
        assert "started sshd" in cli("start").stdout
        assert cli("restart").returncode == 0 and kept(lab)
        unknown = cli("restart", "postgres")
        assert unknown.returncode == 1 and "has no postgres" in unknown.stderr

        assert cli("down").returncode == 0
        assert cli("up", "--reset", "--domain", "keep.example.gov.vn").returncode == 0
        conn = lab.ldap("service")
        try:
            assert conn.search(f"ou=people,{lab.base_dn}", "(uid=keep)") is False  # wiped, as asked
        finally:
            conn.unbind()
        assert list((lab_dir / "mail").iterdir()) == []
    finally:
        Lab(lab_dir).down()
        shutil.rmtree(root, ignore_errors=True)
