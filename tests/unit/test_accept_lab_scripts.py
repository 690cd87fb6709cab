"""Acceptance of the lab's plumbing that needs no server: the Makefile, install-debs.sh, the suffix entry."""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from mailstate.errors import LabError
from mailstate.lab import _proc, slapd

ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_passes_a_lab_dir_with_spaces_as_one_argument() -> None:
    """`make demo LABDIR='…/my lab'` hands demo.sh (and demo-down hands `lab down`) one quoted directory."""
    res = subprocess.run(["make", "-n", "-C", str(ROOT), "demo", "demo-down", "LABDIR=/tmp/my lab dir",
                          "EXAMPLE=examples/binhdinh-sct"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert 'bash scripts/demo.sh "examples/binhdinh-sct" "/tmp/my lab dir"' in res.stdout
    assert 'lab down --dir "/tmp/my lab dir"' in res.stdout


def _fake_bin(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH where dpkg-query says every package is missing, id says uid 1000, and sudo only logs."""
    bin_dir, log = tmp_path / "bin", tmp_path / "sudo.log"
    bin_dir.mkdir()
    scripts = {
        "dpkg-query": "exit 1",
        "id": 'if [ "$1" = "-u" ]; then echo 1000; else exec /usr/bin/id "$@"; fi',
        "sudo": f'printf "%s\\n" "$*" >>{log}; cat >/dev/null; exit 0',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return bin_dir, log


def test_install_debs_keeps_apt_noninteractive_through_sudo(tmp_path: Path) -> None:
    """As an ordinary user, apt-get runs under sudo with DEBIAN_FRONTEND=noninteractive given to `env`
    inside sudo (sudo drops it from the environment), and python3-venv is among the packages."""
    bin_dir, log = _fake_bin(tmp_path)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    res = subprocess.run(["bash", str(ROOT / "scripts" / "install-debs.sh")], capture_output=True, text=True,
                         env=env, stdin=subprocess.DEVNULL, timeout=30)
    assert res.returncode == 0, res.stderr
    apt = [line for line in log.read_text().splitlines() if "apt-get" in line]
    assert apt and all(line.startswith("env DEBIAN_FRONTEND=noninteractive apt-get") for line in apt)
    assert "python3-venv" in apt[-1]


def _entry(base: str, name: str) -> dict[str, list[str]]:
    attrs: dict[str, list[str]] = {}
    for line in slapd.base_entry(base, name).splitlines():
        key, _, value = line.partition(": ")
        if key.endswith(":"):
            key, value = key[:-1], base64.b64decode(value).decode()
        attrs.setdefault(key, []).append(value)
    return attrs


def test_suffix_entry_follows_the_first_rdn() -> None:
    """A dc=, o= or ou= suffix gets a base entry whose naming attribute matches its RDN (slapadd refused
    ou=… suffixes before); the organisation's name is kept (o or description)."""
    dc = _entry("dc=sotnmt,dc=hanoi,dc=gov,dc=vn", "Sở TN&MT")
    assert dc["dc"] == ["sotnmt"] and dc["o"] == ["Sở TN&MT"]
    o = _entry("o=sotnmt,c=vn", "Sở TN&MT")
    assert o["objectClass"] == ["top", "organization"] and o["o"] == ["sotnmt", "Sở TN&MT"]
    ou = _entry("ou=Thư\\, điện tử,dc=hanoi,dc=gov,dc=vn", "UBND")
    assert ou["objectClass"] == ["top", "organizationalUnit"] and ou["ou"] == ["Thư, điện tử"]
    assert ou["description"] == ["UBND"]


@pytest.mark.parametrize("base", ["cn=mail,dc=hanoi,dc=vn", "not a dn", ""])
def test_unusable_suffix_is_a_clear_lab_error(base: str) -> None:
    """A suffix the lab cannot make an entry for is refused with a LabError naming it, not a crash."""
    with pytest.raises(LabError, match="base_dn"):
        slapd.base_entry(base, "x")


def _demo_labdir(cwd: Path) -> str:
    res = subprocess.run(["bash", str(ROOT / "scripts" / "demo-labdir.sh")], cwd=cwd, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_demo_labdir_in_a_traversable_clone_is_dot_lab() -> None:
    """In a clone every user can traverse, `make demo` keeps its lab in .lab/demo."""
    clone = Path(tempfile.mkdtemp(prefix="mailstate-accept-clone-"))
    try:
        clone.chmod(0o755)
        assert _demo_labdir(clone) == ".lab/demo"
    finally:
        clone.rmdir()


@pytest.mark.skipif(os.geteuid() != 0, reason="the lab user differs from us only as root")
def test_demo_labdir_as_root_leaves_an_untraversable_clone(tmp_path: Path) -> None:
    """As root in a clone under a 0700 directory (like /root), the demo's lab goes to a root-owned,
    traversable place named after the clone (the lab user could not reach .lab/demo there)."""
    clone = tmp_path / "private" / "clone"
    clone.mkdir(parents=True)
    (tmp_path / "private").chmod(0o700)
    first = _demo_labdir(clone)
    assert first == _demo_labdir(clone)
    assert first.startswith(("/run/mailstate-demo/", "/var/tmp/mailstate-demo/"))


def test_missing_server_programs_are_named_with_their_package(tmp_path: Path) -> None:
    """On a machine without the lab's Debian packages, the lab names each missing program and the package
    that ships it (instead of an internal FileNotFoundError from slapadd)."""
    (tmp_path / "slapd").write_text("#!/bin/sh\n")
    (tmp_path / "slapd").chmod(0o755)
    missing = _proc.missing_programs(("slapd", "dovecot", "sshd"), path=str(tmp_path))
    assert ("slapadd", "slapd") in missing and ("sshd", "openssh-server") in missing
    assert ("slapd", "slapd") not in missing
    assert _proc.missing_programs(("slapd", "dovecot", "sshd")) == []  # this machine has them all


def test_a_process_just_killed_is_seen_dying() -> None:
    """Right after SIGKILL a process is still listed as alive; dying() tells it is on its way out, while a
    running process is not dying."""
    proc = subprocess.Popen(["sleep", "100"])
    try:
        start = _proc.proc_start_time(proc.pid)
        assert not _proc.dying(proc.pid)
        os.kill(proc.pid, 9)
        assert _proc.dying(proc.pid) or not _proc.alive(proc.pid, start)
    finally:
        proc.kill()
        proc.wait()
