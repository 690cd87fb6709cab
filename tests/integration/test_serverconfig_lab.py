"""The lab runs on `mailstate server-config`'s output (docs/production.md, docs/lab.md): its slapd, Dovecot,
sshd and Postfix files hold the generated text byte for byte (only loopback addresses, ports, paths, the
lab user and its throwaway secrets substituted); the generated LDIF of every example agency loads into
Debian's stock cn=config with OpenLDAP's own tools; and a lab started by an ordinary user works."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mailstate.desired_state.loader import load_state
from mailstate.lab import Lab, _proc, slapd
from mailstate.lab.site import lab_files
from mailstate.serverconfig import dovecot as sc_dovecot
from mailstate.serverconfig import ldap as sc_ldap
from mailstate.serverconfig import sshd as sc_sshd
from mailstate.serverconfig.generate import generate
from mailstate.serverconfig.site import Site

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[2] / "examples"
AGENCIES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "mailstate.toml").exists())


def _slapcat_config(lab: Lab) -> str:
    res = _proc.run_as(["slapcat", "-n0", "-o", "ldif-wrap=no", "-F", "slapd.d"], _proc.lab_user(),
                       lab.dir / "slapd")
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_lab_files_are_server_configs_output(lab: Lab) -> None:
    info, d = lab.info, lab.dir
    gen = lab_files(d, info, _proc.lab_user(), lab.secret("ldap_dovecot"))
    # Dovecot: 90-mailstate.conf inside dovecot.conf, after the lab's head; the LDAP file as generated
    conf = (d / "dovecot" / "dovecot.conf").read_text()
    assert conf.endswith("\n\n" + gen["dovecot/conf.d/90-mailstate.conf"].text)
    head = conf[: -len(gen["dovecot/conf.d/90-mailstate.conf"].text)]
    for setting in ("passdb", "userdb", "plugin", "protocols", "mail_location", "default_process_limit"):
        assert f"\n{setting} " not in head, setting  # the mail-related part comes only from server-config
    assert (d / "dovecot" / "dovecot-ldap.conf.ext").read_text() == gen["dovecot/dovecot-ldap.conf.ext"].text
    master = (d / "dovecot" / "master-users").read_text()
    template = gen["dovecot/master-users"].text
    assert master.startswith(template.split(sc_dovecot.MASTER_HASH)[0])
    assert sc_dovecot.MASTER_HASH not in master
    # sshd: the generated Match block closes sshd_config; authorized_keys is the template with the key
    sshd_config = (d / "ssh" / "sshd_config").read_text()
    assert sshd_config.endswith("\n\n" + gen["ssh/sshd_config.d/mailstate.conf"].text)
    key = Path(info["paths"]["ssh_key"] + ".pub").read_text().split()[1]
    assert (d / "ssh" / "authorized_keys").read_text() == gen["ssh/authorized_keys"].text.replace(
        sc_sshd.PUBLIC_KEY, key)
    # slapd: the generated LDIF as loaded, and cn=config holding what it says
    for rel, f in gen.items():
        if rel.startswith("ldap/"):
            assert (d / "slapd" / "ldif" / rel.split("/", 1)[1]).read_text() == f.text, rel
    config = _slapcat_config(lab)
    access = [line.split("}", 1)[1] for line in config.splitlines() if line.startswith("olcAccess: {")]
    rules = sc_ldap.access_rules(info["base_dn"])
    assert access[-len(rules):] == rules
    assert "olcOverlay: {0}ppolicy" in config and "olcPasswordHash: {SSHA}" in config
    assert "olcObjectClasses: {0}( mailstateClass:1 NAME 'mailstateAccount'" in config
    assert "cn: {4}misc" in config or "cn: {5}misc" in config
    # Postfix (root only): main.cf begins with the generated lines, the tables are the generated files
    if "postfix" in info["services"]:
        assert (d / "postfix" / "etc" / "main.cf").read_text().startswith(gen["postfix/main.cf"].text)
        for name in ("mailboxes", "groups", "refused"):
            assert (d / "postfix" / "etc" / "mailstate" / f"{name}.cf").read_text() == \
                gen[f"postfix/mailstate/{name}.cf"].text


@pytest.mark.parametrize("agency", AGENCIES)
def test_generated_ldif_loads_into_debians_stock_slapd(agency: str, tmp_path: Path) -> None:
    """Production's files (no lab substitution) on Debian's own cn=config, in docs/production.md's order, with
    slapadd/slapmodify -n0 (the offline ldapadd/ldapmodify): then slaptest, and the entries load."""
    state = load_state(EXAMPLES / agency)
    files = generate(Site(domain=state.domain, base_dn=state.base_dn, org_name=state.organization.name))
    (tmp_path / "slapd.d").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "ldif").mkdir()
    for rel, f in files.items():
        if rel.startswith("ldap/"):
            (tmp_path / "ldif" / rel.split("/", 1)[1]).write_text(f.text)
    stock = slapd.debian_config_ldif(base=state.base_dn, root_pw_hash="x")
    (tmp_path / "debian-config.ldif").write_text(stock)
    for tool, ldif in slapd.CONFIG_STEPS:
        if ldif == "lab-config.ldif":
            continue
        res = subprocess.run([tool, "-q", "-n0", "-F", "slapd.d", "-l", ldif], cwd=tmp_path,
                             capture_output=True, text=True, check=False)
        assert res.returncode == 0, f"{tool} {ldif}: {res.stderr}"
    (tmp_path / "entries.ldif").write_text(slapd.base_entry(state.base_dn, state.organization.name) + "\n"
                                           + files["ldap/05-entries.ldif"].text)
    res = subprocess.run(["slapadd", "-q", "-F", "slapd.d", "-b", state.base_dn, "-l", "entries.ldif"],
                         cwd=tmp_path, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    res = subprocess.run(["slaptest", "-F", "slapd.d"], cwd=tmp_path, capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr


def _system_python_for_others() -> str | None:
    """A Python another user can run with this virtualenv's packages (same minor version), or None."""
    py = Path("/usr/bin/python3")
    if not py.exists():
        return None
    res = subprocess.run([str(py), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                         text=True, check=False)
    return str(py) if res.stdout.strip() == str(sys.version_info[:2]) else None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a lab as another, ordinary user")
def test_lab_started_by_an_ordinary_user(tmp_path: Path) -> None:
    """The non-root path (docs/lab.md): servers run as the caller, no Postfix (`delivery` says why), and
    slapd, Dovecot (as the user's own group) and sshd all answer. Run as `mailstate-lab`, an ordinary user."""
    py = _system_python_for_others()
    if py is None:
        pytest.skip("no system Python of this version for another user to run")
    user = _proc.lab_user()
    root = Path("/dev/shm") / f"mailstate-ordinary-{os.getpid()}"
    root.mkdir(mode=0o700)
    os.chown(root, user.uid, user.gid)
    site_packages = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    src = Path(__file__).parents[2] / "src"
    script = textwrap.dedent(f"""
        from mailstate.lab import Lab
        from mailstate.lab.testing import doveadm
        from mailstate.model import i18n
        i18n.set_language("en")  # the lab's messages are in the language of the run; this test reads English
        lab = Lab({str(root / 'lab')!r}, die_with_parent=True)
        try:
            info = lab.up(domain="thuong.example.gov.vn")
            assert info["user"] == {user.name!r} and "postfix" not in info["services"], info
            assert info["delivery"].startswith("mail delivery is not available"), info["delivery"]
            lab.ldap("dovecot").unbind()  # up already waited for LDAPS, an IMAPS login and an SSH command
            doveadm(lab, "user", "-u", "*")
            print("OK", info["up_seconds"])
        finally:
            lab.down()
    """)
    try:
        res = subprocess.run(["runuser", "-u", user.name, "--", "env", f"PYTHONPATH={src}:{site_packages}",
                              py, "-c", script], capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 0 and "OK" in res.stdout, res.stdout + res.stderr
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)
