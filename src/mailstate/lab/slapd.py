"""slapd for the lab: cn=config built offline from Debian's stock configuration and the LDIF of
`mailstate server-config` (schema, ppolicy, access rules, limits, indexes), plus TLS and the lab's
settings; bootstrap entries."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn

from mailstate.errors import LabError
from mailstate.lab import _proc
from mailstate.lab._proc import LabUser
from mailstate.model.i18n import _
from mailstate.serverconfig import ldap as sc_ldap

SCHEMA_DIR = Path("/etc/ldap/schema")
DEBIAN_INIT = Path("/usr/share/slapd/slapd.init.ldif")
MODULE_DIR = Path("/usr/lib/ldap")
PPOLICY_ATTRS = sc_ldap.PPOLICY_ATTRS

PEOPLE, MAILBOXES, UNITS, GROUPS, ALIASES, SYSTEM, POLICIES = (
    "people", "mailboxes", "units", "groups", "aliases", "system", "policies")
CONTAINERS = (PEOPLE, MAILBOXES, UNITS, GROUPS, ALIASES, SYSTEM, POLICIES)
MANAGED = (PEOPLE, MAILBOXES, UNITS, GROUPS, ALIASES, POLICIES)

DEFAULT_POLICY: dict[str, list[str]] = sc_ldap.DEFAULT_POLICY


def lab_policy(info: dict[str, Any]) -> dict[str, list[str]]:
    """The lab's default policy: server-config's, from the `[password]` the lab was made with."""
    from mailstate.lab.site import lab_rules

    return sc_ldap.default_policy(lab_rules(info))


def mailstate_schema() -> Path:
    """Path of mailstate.schema shipped in this package."""
    return Path(str(files("mailstate.lab") / "schema" / "mailstate.schema"))


def ssha(password: str) -> str:
    """{SSHA} of a password (salted SHA-1, what slapd itself writes with `password-hash {SSHA}`)."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def service_dn(base: str) -> str:
    return f"cn=mailstate,ou={SYSTEM},{base}"


def dovecot_dn(base: str) -> str:
    return f"cn=dovecot,ou={SYSTEM},{base}"


def root_dn(base: str) -> str:
    return f"cn=lab-admin,{base}"


def policy_dn(base: str) -> str:
    return f"cn=default,ou={POLICIES},{base}"


def bootstrap_dns(base: str) -> list[str]:
    """The entries `reset()` keeps: base, containers, service accounts, default policy."""
    containers = [f"ou={c},{base}" for c in CONTAINERS]
    return [base, *containers, service_dn(base), dovecot_dn(base), policy_dn(base)]


def _ldif_line(attr: str, value: str) -> str:
    """One LDIF attribute line; base64 when the value is not plain printable ASCII (RFC 2849)."""
    if value and value.isascii() and value.isprintable() and value[0] not in " :<" and value[-1] != " ":
        return f"{attr}: {value}"
    return f"{attr}:: {base64.b64encode(value.encode()).decode()}"


def debian_config_ldif(*, base: str, root_pw_hash: str) -> str:
    """Debian's own cn=config (the slapd package's slapd.init.ldif, what `dpkg-reconfigure slapd` loads)
    with the lab's suffix, root DN and password, and its database under DIR/slapd. (The files slapd opens
    are relative to DIR/slapd, slapd's working directory: cn=config cannot hold a path with spaces.)"""
    try:
        text = DEBIAN_INIT.read_text(encoding="utf-8")
    except OSError as exc:
        raise LabError(_("{file}: {error} (install the Debian package slapd: scripts/install-debs.sh, make "
                         "deps)").format(file=DEBIAN_INIT, error=exc.strerror)) from None
    subs = {"olcSuffix: @SUFFIX@": _ldif_line("olcSuffix", base),
            "olcRootDN: cn=admin,@SUFFIX@": _ldif_line("olcRootDN", root_dn(base)),
            "olcRootPW: @PASSWORD@": _ldif_line("olcRootPW", root_pw_hash),
            "olcDbDirectory: /var/lib/ldap": "olcDbDirectory: data"}
    for old, new in subs.items():
        if old not in text:
            raise LabError(_("{file}: no line {line}; the lab expects Debian 12's slapd package").format(
                file=DEBIAN_INIT, line=repr(old)))
        text = text.replace(old, new)
    return text


LAB_CONFIG_LDIF = """# Lab only (mailstate lab): TLS with the lab CA, no plain binds, no pid/args files
# (the lab records slapd's pid), no fsync, the lab's size limits.
dn: cn=config
changetype: modify
delete: olcPidFile
-
delete: olcArgsFile
-
add: olcTLSCACertificateFile
olcTLSCACertificateFile: ../tls/ca.pem
-
add: olcTLSCertificateFile
olcTLSCertificateFile: ../tls/server.pem
-
add: olcTLSCertificateKeyFile
olcTLSCertificateKeyFile: ../tls/server.key
-
add: olcTLSProtocolMin
olcTLSProtocolMin: 3.3
-
add: olcSecurity
olcSecurity: tls=128

dn: olcDatabase={1}mdb,cn=config
changetype: modify
add: olcDbNoSync
olcDbNoSync: TRUE
-
add: olcSizeLimit
olcSizeLimit: size.soft=500 size.hard=500 size.pr=1000 size.prtotal=unlimited
"""
"""What the lab sets beyond Debian's cn=config and server-config's LDIF. The plain port serves nothing but
StartTLS before TLS: a bind there is refused (confidentialityRequired)."""

CONFIG_STEPS: tuple[tuple[str, str], ...] = (
    ("slapadd", "debian-config.ldif"),
    *(("slapadd", str(SCHEMA_DIR / f"{s}.ldif")) for s in sc_ldap.EXTRA_SCHEMAS),
    ("slapadd", "ldif/01-mailstate-schema.ldif"),
    ("slapmodify", "ldif/02-ppolicy-module.ldif"),
    ("slapadd", "ldif/03-ppolicy-overlay.ldif"),
    ("slapmodify", "ldif/04-database.ldif"),
    ("slapmodify", "lab-config.ldif"),
)
"""How the lab builds cn=config, in order (offline, `-n0`, in DIR/slapd): Debian's stock configuration,
then the schema and the files of `mailstate server-config` exactly as production loads them with
ldapadd/ldapmodify (docs/production.md), then the lab's own settings."""


def with_passwords(entries: str, hashes: dict[str, str]) -> str:
    """05-entries.ldif with the password placeholder of each account (DN → hash) replaced."""
    blocks = entries.split("\n\n")
    for i, block in enumerate(blocks):
        for dn, value in hashes.items():
            if block.startswith(f"dn: {dn}\n") or f"\ndn: {dn}\n" in block:
                blocks[i] = block.replace(f"userPassword: {sc_ldap.PASSWORD_PLACEHOLDER}",
                                          f"userPassword: {value}")
    out = "\n\n".join(blocks)
    if sc_ldap.PASSWORD_PLACEHOLDER in out:
        raise LabError(_("server-config's entries hold an account the lab has no password for"))
    return out


def _first_rdn(base: str) -> tuple[str, str]:
    """(attribute type in lower case, unescaped value) of the first RDN of the suffix."""
    try:
        attr, value, _sep = parse_dn(base)[0]
    except (LDAPInvalidDnError, IndexError):
        raise LabError(_("base_dn {base}: not a distinguished name").format(base=repr(base))) from None
    return attr.lower(), re.sub(r"\\(.)", r"\1", value)


def base_entry(base: str, org_name: str) -> str:
    """LDIF of the suffix entry, shaped by its first RDN: dc= (dcObject + organization), o= (organization)
    or ou= (organizationalUnit, the name in description); any other suffix is refused with a clear error."""
    def b64(value: str) -> str:
        return base64.b64encode(value.encode()).decode()

    attr, value = _first_rdn(base)
    head = f"dn: {base}\nobjectClass: top\n"
    if attr == "dc":
        return head + f"objectClass: dcObject\nobjectClass: organization\ndc: {value}\no:: {b64(org_name)}\n"
    if attr == "o":
        names = [value] + ([org_name] if org_name.lower() != value.lower() else [])
        return head + "objectClass: organization\n" + "".join(f"o:: {b64(n)}\n" for n in names)
    if attr == "ou":
        return (head + f"objectClass: organizationalUnit\nou:: {b64(value)}\n"
                f"description:: {b64(org_name)}\n")
    raise LabError(_("base_dn {base}: the lab makes the suffix entry from a dc=, o= or ou= first RDN, not "
                     "{attr}=").format(base=repr(base), attr=attr))


def bootstrap_ldif(*, base: str, org_name: str, entries: str) -> str:
    """LDIF of the bootstrap entries of docs/ldap.md (loaded with slapadd before slapd starts): the suffix
    entry (production: made by `dpkg-reconfigure slapd`), then server-config's 05-entries.ldif (containers,
    the two accounts, the default policy) with the lab's password hashes."""
    return base_entry(base, org_name) + "\n" + entries


def configure(lab_dir: Path, info: dict[str, Any], pw: dict[str, str], user: LabUser) -> None:
    """Write DIR/slapd (server-config's LDIF in ldif/, Debian's stock cn=config, the lab's settings, the
    bootstrap entries) and build slapd.d and the database with OpenLDAP's offline tools, as the lab user."""
    from mailstate.lab.site import lab_files

    base, d = info["base_dn"], lab_dir / "slapd"
    gen = lab_files(lab_dir, info, user, pw["ldap_dovecot"])
    (d / "ldif").mkdir(mode=0o755, exist_ok=True)
    files = {f"ldif/{rel.split('/', 1)[1]}": f.text for rel, f in gen.items() if rel.startswith("ldap/")}
    files["debian-config.ldif"] = debian_config_ldif(base=base, root_pw_hash=ssha(pw["ldap_root"]))
    files["lab-config.ldif"] = LAB_CONFIG_LDIF
    entries = with_passwords(gen["ldap/05-entries.ldif"].text,
                             {service_dn(base): ssha(pw["ldap_service"]),
                              dovecot_dn(base): ssha(pw["ldap_dovecot"])})
    files["bootstrap.ldif"] = bootstrap_ldif(base=base, org_name=info["org_name"], entries=entries)
    for name, text in files.items():
        path = d / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(path, 0o600)
        _proc.chown(path, user)
    for tool, ldif in CONFIG_STEPS:
        res = _proc.run_as([tool, "-q", "-n0", "-F", "slapd.d", "-l", ldif], user, d)
        if res.returncode != 0:
            raise LabError(_("{tool} -n0 of {ldif} failed: {error}").format(
                tool=tool, ldif=ldif, error=(res.stderr or res.stdout).strip()))
    res = _proc.run_as(["slapadd", "-q", "-F", "slapd.d", "-b", base, "-l", "bootstrap.ldif"], user, d)
    if res.returncode != 0:
        raise LabError(_("slapadd of the bootstrap entries failed: {error}").format(
            error=(res.stderr or res.stdout).strip()))
