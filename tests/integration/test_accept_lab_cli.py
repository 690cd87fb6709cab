"""Acceptance of `mailstate lab up|down|status|env` used like an outside script would, on a real lab."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mailstate.lab import Lab, _proc

MAILSTATE = Path(sys.executable).parent / "mailstate"


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory the lab user can traverse (under /dev/shm when possible); every lab in it is stopped."""
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="mailstate-accept-lab-", dir=shm))
    path.chmod(0o711)
    yield path
    for lab_json in path.rglob("lab.json"):
        Lab(lab_json.parent).down()
    shutil.rmtree(path, ignore_errors=True)


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MAILSTATE), *args], capture_output=True, text=True, timeout=timeout)


def _servers_under(lab_dir: Path) -> list[int]:
    """Pids of every live process whose command line names the lab directory (lab.json or not)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"{lab_dir}/" in cmdline and _proc.alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_very_long_domain_starts_a_lab(root: Path) -> None:
    """A valid 211-character domain starts a lab (the CA's CN is cut to X.520's 64 characters instead of
    crashing with ValueError and leaving a half-made directory that the next `up` refused)."""
    label = "a" * 63
    domain = f"{label}.{label}.{label}.tinh-ben-tre.gov.vn"
    res = _cli("lab", "up", "--dir", str(root / "lab"), "--domain", domain)
    assert res.returncode == 0, res.stderr
    lab = Lab(root / "lab")
    assert lab.info["base_dn"].startswith(f"dc={label},")
    lab.ldap("service").unbind()
    ca = x509.load_pem_x509_certificate(lab.ca_file.read_bytes())
    assert len(str(ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)) <= 64


def test_ou_suffix_from_the_state_starts_a_lab(root: Path) -> None:
    """A state whose base_dn is ou=…,dc=… gets a lab whose suffix entry is that organizationalUnit."""
    state = root / "state"
    state.mkdir()
    (state / "mailstate.toml").write_text(
        '[organization]\nname = "Sở Tài nguyên và Môi trường \\"Hà Nội\\""\n'
        'domain = "sotnmt.hanoi.gov.vn"\nbase_dn = "ou=email,dc=hanoi,dc=gov,dc=vn"\n', encoding="utf-8")
    res = _cli("lab", "up", "--dir", str(root / "lab"), "--state", str(state))
    assert res.returncode == 0, res.stderr
    conn = Lab(root / "lab").ldap("service")
    try:
        conn.search("ou=email,dc=hanoi,dc=gov,dc=vn", "(objectClass=organizationalUnit)", "BASE",
                    attributes=["ou", "description"])
        assert [str(e.description) for e in conn.entries] == ['Sở Tài nguyên và Môi trường "Hà Nội"']
    finally:
        conn.unbind()


def test_unusable_suffix_refused_before_anything_starts(root: Path) -> None:
    """A cn=… base_dn, a bad domain or an impossible directory is one clear error, and no lab directory
    is created."""
    state = root / "state"
    state.mkdir()
    (state / "mailstate.toml").write_text(
        '[organization]\nname = "x"\ndomain = "x.gov.vn"\nbase_dn = "cn=mail,dc=x,dc=gov,dc=vn"\n')
    res = _cli("lab", "up", "--dir", str(root / "lab"), "--state", str(state))
    assert res.returncode == 1 and res.stderr.startswith(("error: base_dn", "lỗi: base_dn"))
    assert "Traceback" not in res.stderr
    assert not (root / "lab").exists()
    res = _cli("lab", "up", "--dir", str(root / "lab"), "--domain", "bad domain.vn")
    assert res.returncode == 1 and res.stderr.startswith(("error: not a domain", "lỗi: not a domain"))
    assert not (root / "lab").exists()
    res = _cli("lab", "up", "--dir", "/proc/no/lab", "--domain", "a.vn")
    assert res.returncode == 1
    assert res.stderr.startswith(("error: cannot create the lab dir", "lỗi: cannot create the lab dir"))


def test_concurrent_ups_on_one_directory_leave_no_orphan(root: Path) -> None:
    """Three `lab up` at once on one directory: one starts the lab, the others refuse clearly, and after
    `lab down` no server of that directory is left (before, lost servers kept running, unstoppable)."""
    lab_dir = root / "lab"
    argv = [str(MAILSTATE), "lab", "up", "--dir", str(lab_dir), "--domain"]
    procs = [subprocess.Popen([*argv, f"c{i}.gov.vn"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(3)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert sorted(rc for rc, _out, _err in results) == [0, 1, 1], results
    assert all("already runs" in err for rc, _out, err in results if rc == 1)
    servers = len(Lab(lab_dir).info["services"])  # slapd, Dovecot, sshd (+ Postfix's master as root)
    assert len(_servers_under(lab_dir)) == servers == len(Lab(lab_dir).info["pids"])
    assert servers == (4 if os.geteuid() == 0 else 3)
    assert _cli("lab", "down", "--dir", str(lab_dir)).returncode == 0
    assert _servers_under(lab_dir) == []


def test_status_into_a_closed_pipe_is_quiet(root: Path) -> None:
    """`lab status | head -1` prints the first line and no "internal error: BrokenPipeError"."""
    assert _cli("lab", "up", "--dir", str(root / "lab"), "--domain", "a.vn").returncode == 0
    res = subprocess.run(["bash", "-c", f"'{MAILSTATE}' lab status --dir '{root}/lab' | head -1"],
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.startswith(f"lab {root}/lab: a.vn")
    assert res.stderr == ""


def test_down_twice_and_status_of_a_stopped_lab(root: Path) -> None:
    """A second `lab down` says nothing was running and keeps the first stop time; `lab status` of a
    stopped lab says it is stopped (exit 1) instead of listing servers with pid None."""
    lab_dir = root / "lab"
    assert _cli("lab", "up", "--dir", str(lab_dir), "--domain", "a.vn").returncode == 0
    first = _cli("lab", "down", "--dir", str(lab_dir))
    assert first.returncode == 0 and first.stdout == f"lab down: {lab_dir}\n"
    stopped_at = json.loads((lab_dir / "lab.json").read_text())["stopped_at"]
    second = _cli("lab", "down", "--dir", str(lab_dir))
    assert second.returncode == 0 and "nothing was running" in second.stdout
    assert json.loads((lab_dir / "lab.json").read_text())["stopped_at"] == stopped_at
    res = _cli("lab", "status", "--dir", str(lab_dir))
    assert res.returncode == 1 and f"stopped since {stopped_at}" in res.stdout and "None" not in res.stdout


def test_lab_in_a_path_with_spaces_and_a_quote_works_from_plain_tools(root: Path) -> None:
    """A relative --dir with spaces and an apostrophe starts (slapd, Dovecot and sshd read their paths
    right), `lab env` evals in bash, and ssh with the exported key/known_hosts runs the exported
    MAILSTATE_SSH_DOVEADM (also set by sshd) as the lab user; unusable characters are refused clearly."""
    work = root / "my work"
    work.mkdir()
    work.chmod(0o711)
    rel = "lab dir/Sở x'y"
    res = subprocess.run([str(MAILSTATE), "lab", "up", "--dir", rel, "--domain", "sotnmt.hanoi.gov.vn"],
                         cwd=work, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    script = f"""set -e
eval "$('{MAILSTATE}' lab env --dir "{rel}")"
ssh -i "$MAILSTATE_SSH_KEY_FILE" -o "UserKnownHostsFile=\\"$MAILSTATE_SSH_KNOWN_HOSTS\\"" \\
    -o StrictHostKeyChecking=yes -o BatchMode=yes -p "$MAILSTATE_SSH_PORT" \\
    "$MAILSTATE_SSH_USER@$MAILSTATE_SSH_HOST" \\
    "$MAILSTATE_SSH_DOVEADM user '*' && eval \\"\\$MAILSTATE_SSH_DOVEADM who\\""
"""
    res = subprocess.run(["bash", "-c", script], cwd=work, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "username" in res.stdout  # the header of `doveadm who`, run through sshd's SetEnv value
    Lab(work / rel).ldap("service").unbind()
    bad = _cli("lab", "up", "--dir", str(root / "50%"), "--domain", "a.vn")
    assert bad.returncode == 1 and "cannot contain '%'" in bad.stderr


def test_env_warns_when_a_server_of_the_lab_died(root: Path) -> None:
    """After slapd is killed, `lab env` still prints the exports (exit 0) but says on stderr which server
    is not running; with every server dead it refuses (exit 1)."""
    lab_dir = root / "lab"
    assert _cli("lab", "up", "--dir", str(lab_dir), "--domain", "a.vn").returncode == 0
    lab = Lab(lab_dir)
    lab.stop_service("slapd")
    res = _cli("lab", "env", "--dir", str(lab_dir))
    assert res.returncode == 0 and "export MAILSTATE_LDAP_URL=" in res.stdout
    assert res.stderr.startswith("warning: slapd of the lab")
    lab.down()
    res = _cli("lab", "env", "--dir", str(lab_dir))
    assert res.returncode == 1 and res.stdout == "" and "not running" in res.stderr


def test_slapd_reads_the_schema_from_the_lab_directory(root: Path) -> None:
    """mailstate.schema is loaded into cn=config (from a copy of server-config's LDIF in DIR/slapd), never
    read from the package, which the lab user cannot read when root runs a clone under /root."""
    lab = Lab(root / "lab")
    lab.up(domain="a.vn")
    config = "".join(p.read_text() for p in (root / "lab" / "slapd" / "slapd.d").rglob("*.ldif"))
    assert "mailstateAccount" in config
    assert "site-packages" not in config and "/src/mailstate/" not in config
    lab.ldap("service").unbind()


def test_down_stops_a_command_running_over_ssh(root: Path) -> None:
    """A command still running through the lab's sshd (its session is a process group of its own) is
    stopped by `lab down` too — before, `sleep` and sshd's session processes outlived the lab."""
    lab_dir = root / "lab"
    assert _cli("lab", "up", "--dir", str(lab_dir), "--domain", "a.vn").returncode == 0
    env = Lab(lab_dir).env()
    client = subprocess.Popen(
        ["ssh", "-i", env["MAILSTATE_SSH_KEY_FILE"],
         "-o", f"UserKnownHostsFile={env['MAILSTATE_SSH_KNOWN_HOSTS']}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", "-p", env["MAILSTATE_SSH_PORT"],
         f"{env['MAILSTATE_SSH_USER']}@127.0.0.1", "sleep 4242"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sleeper: list[int] = []
        def cmdline(pid: int) -> bytes:
            try:
                return Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:  # a short-lived process of the session ended between listing and reading
                return b""

        for _ in range(200):
            sleeper = [p for p in Lab(lab_dir).pids() if cmdline(p).startswith(b"sleep\0" + b"4242")]
            if sleeper:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert sleeper, "the ssh command did not start"
        assert _cli("lab", "down", "--dir", str(lab_dir)).returncode == 0
        assert not [p for p in sleeper if _proc.alive(p)]
        client.wait(timeout=10)  # its server side is gone, so the client ends
    finally:
        client.kill()
        client.wait()


def test_plain_ldap_port_refuses_a_bind_without_tls(root: Path) -> None:
    """On the lab's plain ldap:// port a simple bind without StartTLS is refused (confidentiality
    required), while StartTLS then bind works — the lab is TLS-only like its LDAPS port."""
    lab = Lab(root / "lab")
    lab.up(domain="a.vn", services=("slapd",))
    env = {"LDAPTLS_CACERT": str(lab.ca_file), "PATH": "/usr/bin:/bin"}
    argv = ["ldapsearch", "-x", "-LLL", "-H", f"ldap://127.0.0.1:{lab.info['ports']['ldap']}",
            "-D", lab.info["dns"]["service"], "-w", lab.secret("ldap_service"), "-s", "base", "-b", "",
            "namingContexts"]
    plain = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
    assert plain.returncode == 13 and "Confidentiality required" in plain.stderr
    tls = subprocess.run([argv[0], "-ZZ", *argv[1:]], capture_output=True, text=True, env=env, timeout=30)
    assert tls.returncode == 0 and "namingContexts: dc=a,dc=vn" in tls.stdout


def test_start_service_right_after_kill_9(root: Path) -> None:
    """start_service right after `kill -9` of slapd restarts it (a full-suite run under load failed with
    "slapd already runs": the dying process is still listed as alive for a moment)."""
    lab = Lab(root / "lab")
    lab.up(domain="a.vn", services=("slapd",))
    for _ in range(3):
        pid = lab.info["pids"]["slapd"]["pid"]
        os.kill(pid, signal.SIGKILL)
        lab.start_service("slapd")
        assert lab.info["pids"]["slapd"]["pid"] != pid
        lab.ldap("service").unbind()
