"""Build the lab's servers for the iRedMail layout from `mailstate.serverconfig.iredmail`'s output, the way
slapd.py, dovecot.py and postfix.py build the default layout from server-config's: same lab head, same
TLS, ports, paths and unprivileged users; only the generated files differ."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailstate.errors import LabError
from mailstate.lab import _proc, dovecot, postfix, slapd
from mailstate.lab._proc import LabUser
from mailstate.lab.site import lab_site
from mailstate.serverconfig import dovecot as sc_dovecot
from mailstate.serverconfig import iredmail as irm

if TYPE_CHECKING:
    from mailstate.lab.lab import Lab
    from mailstate.serverconfig.generate import GeneratedFile

CONFIG_STEPS: tuple[tuple[str, str], ...] = (
    ("slapadd", "debian-config.ldif"),
    *(("slapadd", str(slapd.SCHEMA_DIR / f"{s}.ldif")) for s in irm.EXTRA_SCHEMAS),
    ("slapadd", "ldif/01-iredmail-schema.ldif"),
    ("slapadd", "ldif/02-mailstate-schema.ldif"),
    ("slapmodify", "ldif/04-database.ldif"),
    ("slapmodify", "lab-config.ldif"),
)
"""cn=config of the iRedMail layout: Debian's (core, cosine, nis, inetorgperson), misc, iRedMail's schema,
mailstate's, the access rules, the lab's settings. No ppolicy: iRedMail locks with accountStatus."""


def dns(base: str) -> dict[str, str]:
    """lab.json's `dns` for this layout (no password policy entry)."""
    return {"root": slapd.root_dn(base), "service": irm.service_dn(base), "dovecot": irm.readonly_dn(base)}


def lab_files(lab_dir: Path, info: dict[str, Any], user: LabUser, readonly_password: str
              ) -> dict[str, GeneratedFile]:
    return irm.generate(lab_site(lab_dir, info, user, readonly_password))


def _write_private(path: Path, text: str, user: LabUser) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
    _proc.chown(path, user)


def configure_slapd(lab_dir: Path, info: dict[str, Any], pw: dict[str, str], user: LabUser) -> None:
    """DIR/slapd for the iRedMail layout, built offline like the default one (slapd.configure)."""
    base, d = info["base_dn"], lab_dir / "slapd"
    gen = lab_files(lab_dir, info, user, pw["ldap_dovecot"])
    (d / "ldif").mkdir(mode=0o755, exist_ok=True)
    files = {f"ldif/{rel.split('/', 1)[1]}": f.text for rel, f in gen.items() if rel.startswith("ldap/")}
    root_hash = slapd.ssha(pw["ldap_root"])
    files["debian-config.ldif"] = slapd.debian_config_ldif(base=base, root_pw_hash=root_hash)
    files["lab-config.ldif"] = slapd.LAB_CONFIG_LDIF
    entries = slapd.with_passwords(gen["ldap/05-entries.ldif"].text,
                                   {irm.service_dn(base): slapd.ssha(pw["ldap_service"]),
                                    irm.readonly_dn(base): slapd.ssha(pw["ldap_dovecot"])})
    files["bootstrap.ldif"] = slapd.bootstrap_ldif(base=base, org_name=info["org_name"], entries=entries)
    for name, text in files.items():
        _write_private(d / name, text, user)
    for tool, ldif in CONFIG_STEPS:
        res = _proc.run_as([tool, "-q", "-n0", "-F", "slapd.d", "-l", ldif], user, d)
        if res.returncode != 0:
            raise LabError(f"{tool} -n0 of {ldif} failed: {(res.stderr or res.stdout).strip()}")
    res = _proc.run_as(["slapadd", "-q", "-F", "slapd.d", "-b", base, "-l", "bootstrap.ldif"], user, d)
    if res.returncode != 0:
        raise LabError(f"slapadd of the bootstrap entries failed: {(res.stderr or res.stdout).strip()}")


def start_dovecot(lab: Lab, info: dict[str, Any], pw: dict[str, str], user: LabUser) -> None:
    """Dovecot with the lab's head and the iRedMail layout's snippet and LDAP files."""
    d = lab.dir / "dovecot"
    for sub in ("run", "state"):
        (d / sub).mkdir(mode=0o755, exist_ok=True)
        _proc.chown(d / sub, user)
    gen = lab_files(lab.dir, info, user, pw["ldap_dovecot"])
    files = {
        "dovecot.conf": dovecot.dovecot_conf(d=d, user=user, imaps_port=info["ports"]["imaps"],
                                             instance=f"mailstate-lab-{info['ports']['imaps']}",
                                             generated=gen["dovecot/conf.d/90-mailstate.conf"].text),
        "dovecot-ldap.conf.ext": gen["dovecot/dovecot-ldap.conf.ext"].text,
        "dovecot-ldap-disabled.conf.ext": gen["dovecot/dovecot-ldap-disabled.conf.ext"].text,
        "master-users": gen["dovecot/master-users"].text.replace(sc_dovecot.MASTER_HASH,
                                                                  dovecot.ssha512(pw["imap_master"])),
    }
    for name, text in files.items():
        _write_private(d / name, text, user)
    lab._spawn("dovecot", ["/usr/sbin/dovecot", "-F", "-c", str(d / "dovecot.conf")], d / "dovecot.log",
               user, d, info)


def start_postfix(lab: Lab, info: dict[str, Any], pw: dict[str, str], user: LabUser) -> None:
    """Postfix with iRedMail's lookup tables (etc/ldap/*.cf) and the lab's own block (postfix.start)."""
    gen = lab_files(lab.dir, info, user, pw["ldap_dovecot"])
    postfix.start(lab, info, pw, user, gen=gen, table_dir="ldap", tables=irm.TABLES)
