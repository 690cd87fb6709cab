"""slapd (OpenLDAP 2.5, cn=config): mailstate.schema as LDIF, the ppolicy overlay and default policy, the
access rules and limits of the service account and the read-only account, the bootstrap entries. Pure.

The lab's slapd.conf uses the same schema file and the same access rules (`access_rules`), so what the
tests exercise is what production loads.
"""

from __future__ import annotations

import base64
import re

from mailstate.serverconfig.site import PasswordRules, Site, readonly_dn, service_dn

PPOLICY_ATTRS = ",".join((
    "pwdAccountLockedTime", "pwdReset", "pwdFailureTime", "pwdChangedTime", "pwdHistory", "pwdGraceUseTime",
    "pwdPolicySubentry"))
CONTAINERS = ("people", "mailboxes", "units", "groups", "aliases", "system", "policies")
MANAGED = ("people", "mailboxes", "units", "groups", "aliases", "policies")
INDEXES = ("objectClass eq", "uid,mail,mailLocalAddress,cn,departmentNumber eq",
           "mailstateParent,mailstateMember,mailstateDelegate,mailstateHead eq", "entryUUID eq")


def default_policy(rules: PasswordRules) -> dict[str, list[str]]:
    """ppolicy's default policy from the state's `[password]`: what slapd itself enforces on a password a
    person sets (Password Modify or a modify of userPassword bound as themselves). A password set by the
    service account (manage on userPassword: a password administrator) skips these checks — mailstate
    checks its generated passwords itself (providers/passwords.py).

    - pwdCheckQuality 2: a password slapd cannot check (sent already hashed) is refused, not let through.
    - pwdLockout TRUE always: it is also what makes slapd honour mailstate's own locks
      (pwdAccountLockedTime 000001010000Z); pwdMaxFailure 0 keeps failed logins from locking anyone.
    - pwdSafeModify TRUE: a change must carry the current password.
    - character classes and the account name inside the password only with a check module
      (`rules.check_module`), which Debian 12's packages do not ship."""
    pol: dict[str, list[str]] = {
        "pwdAttribute": ["userPassword"],
        "pwdMustChange": ["TRUE" if rules.change_at_first_login else "FALSE"],
        "pwdAllowUserChange": ["TRUE"],
        "pwdSafeModify": ["TRUE"],
        "pwdMinLength": [str(rules.min_length)],
        "pwdCheckQuality": ["2"],
        "pwdInHistory": [str(rules.history)],
        "pwdMaxAge": [str(rules.max_age_seconds)],
        "pwdLockout": ["TRUE"],
        "pwdMaxFailure": [str(rules.max_failures)],
    }
    if rules.max_failures:
        pol["pwdLockoutDuration"] = [str(rules.lockout_seconds)]
    if rules.check_module:
        pol["pwdCheckModule"] = [rules.check_module]
        pol["pwdCheckModuleArg"] = [rules.check_module_arg or ppm_config(rules)]
    return pol


PPM_SPECIAL = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


def ppm_config(rules: PasswordRules) -> str:
    """pwdCheckModuleArg for ppm (OpenLDAP's contrib/slapd-modules/ppm): `minQuality` classes of the
    four, each class counting once it holds one character; `checkRDN` refuses a password holding the
    account name (the entry's RDN value)."""
    return "\n".join((
        f"minQuality {rules.min_classes}",
        f"checkRDN {1 if rules.forbid_account_name else 0}",
        "forbiddenChars",
        "maxConsecutivePerClass 0",
        "useCracklib 0",
        "class-upperCase ABCDEFGHIJKLMNOPQRSTUVWXYZ 0 1",
        "class-lowerCase abcdefghijklmnopqrstuvwxyz 0 1",
        "class-digit 0123456789 0 1",
        f"class-special {PPM_SPECIAL} 0 1",
    )) + "\n"


DEFAULT_POLICY: dict[str, list[str]] = default_policy(PasswordRules())
"""The default policy of a state whose `[password]` is all defaults."""


def not_enforced(rules: PasswordRules) -> list[str]:
    """The `[password]` rules slapd cannot enforce without a check module (empty when one is set)."""
    if rules.check_module:
        return []
    out = [f"min_classes = {rules.min_classes}: at least {rules.min_classes} of upper case, lower case, "
           "digit, special"]
    if rules.forbid_account_name:
        out.append("forbid_account_name = true: the password may not contain the account name")
    return out


DATABASE = "olcDatabase={1}mdb,cn=config"
"""The database Debian's slapd package creates for the suffix given at `dpkg-reconfigure slapd`."""
FRONTEND = "olcDatabase={-1}frontend,cn=config"
PASSWORD_PLACEHOLDER = "{SSHA}set-with-ldappasswd"
"""userPassword of the two accounts in 05-entries.ldif: replaced by ldappasswd (the lab: its own hashes)."""
EXTRA_SCHEMAS = ("misc",)
"""Schemas of /etc/ldap/schema that Debian's slapd does not load but mailstate needs (misc:
mailLocalAddress); loaded before 01-mailstate-schema.ldif."""


def policy_dn(base: str) -> str:
    return f"cn=default,ou=policies,{base}"


def access_rules(base: str) -> list[str]:
    """slapd's access rules, in order (each `to … by …`): slapd.conf `access` lines, or olcAccess values."""
    svc, ro = service_dn(base), readonly_dn(base)
    rules = [
        'to dn.base="" by * read',
        'to dn.base="cn=Subschema" by * read',
        f'to dn.subtree="{base}" attrs=userPassword by dn.exact="{svc}" manage by self write '
        "by anonymous auth by * none",
        f'to dn.subtree="{base}" attrs={PPOLICY_ATTRS} by dn.exact="{svc}" manage by dn.exact="{ro}" read '
        "by self read by * none",
        f'to dn.base="ou=system,{base}" attrs=children by dn.exact="{svc}" write by users read by * none',
        f'to dn.exact="cn=apply-lock,ou=system,{base}" by dn.exact="{svc}" manage by users read by * none',
    ]
    rules += [f'to dn.subtree="ou={c},{base}" by dn.exact="{svc}" manage by dn.exact="{ro}" read '
              "by self read by users read by * none" for c in MANAGED]
    rules.append(f'to * by dn.exact="{svc}" read by dn.exact="{ro}" read by users read by * none')
    return rules


def limits(base: str) -> list[str]:
    """No silent truncation for the two accounts (the reconciler reads everything, paged)."""
    return [f'dn.exact="{service_dn(base)}" size=unlimited time=unlimited',
            f'dn.exact="{readonly_dn(base)}" size=unlimited time=unlimited']


def schema_ldif(schema_text: str) -> str:
    """mailstate.schema (slapd.conf syntax) as a cn=schema entry for `ldapadd -Y EXTERNAL -H ldapi:///`."""
    text = "\n".join(line for line in schema_text.splitlines() if not line.lstrip().startswith("#"))
    blocks = re.split(r"\n(?=(?:objectIdentifier|attributetype|objectclass)\b)", "\n" + text, flags=re.I)
    out = ["dn: cn=mailstate,cn=schema,cn=config", "objectClass: olcSchemaConfig", "cn: mailstate"]
    for block in blocks:
        block = " ".join(block.split())
        if not block:
            continue
        keyword, _, rest = block.partition(" ")
        attr = {"objectidentifier": "olcObjectIdentifier", "attributetype": "olcAttributeTypes",
                "objectclass": "olcObjectClasses"}[keyword.lower()]
        out.append(f"{attr}: {rest}")
    head = "# mailstate.schema for cn=config (generated by `mailstate server-config`)\n"
    return head + "\n".join(out) + "\n"


def ppolicy_module_ldif() -> str:
    """Load the ppolicy module (its schema is built in, OpenLDAP 2.5). A file of its own: the overlay's
    object class exists only once the module is loaded (offline tools such as `slapmodify -n0` load
    modules when they start, so the overlay must come in a later run)."""
    return """# ppolicy: locks (pwdAccountLockedTime) and "change at first login" enforced by slapd itself
dn: cn=module{0},cn=config
changetype: modify
add: olcModuleLoad
olcModuleLoad: ppolicy
"""


def ppolicy_overlay_ldif(site: Site) -> str:
    return f"""# ppolicy overlay on {site.base_dn}: the default policy (05-entries.ldif) applies to all
dn: olcOverlay=ppolicy,{DATABASE}
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: ppolicy
olcPPolicyDefault: {policy_dn(site.base_dn)}
olcPPolicyHashCleartext: TRUE
olcPPolicyUseLockout: TRUE
"""


def database_ldif(site: Site) -> str:
    """Access rules, limits and indexes of the suffix's database (replaces its olcAccess)."""
    access = "\n".join(f"olcAccess: {{{i}}}{r}" for i, r in enumerate(access_rules(site.base_dn)))
    lim = "\n".join(f"olcLimits: {{{i}}}{v}" for i, v in enumerate(limits(site.base_dn)))
    idx = "\n".join(f"olcDbIndex: {v}" for v in INDEXES)
    return f"""# Access rules (service account cn=mailstate: manage; read-only account cn=dovecot for Dovecot
# and Postfix), limits and indexes of {site.base_dn}. Replaces the database's olcAccess: review it first.
dn: {DATABASE}
changetype: modify
replace: olcAccess
{access}
-
replace: olcLimits
{lim}
-
replace: olcDbIndex
{idx}

# Passwords written in clear (ppolicy hashes them) are stored salted: a setting of the frontend.
dn: {FRONTEND}
changetype: modify
replace: olcPasswordHash
olcPasswordHash: {{SSHA}}
"""


def entries_ldif(site: Site) -> str:
    """Containers, the two accounts (their passwords are set afterwards with ldappasswd) and the policy."""
    base = site.base_dn
    blocks = [f"dn: ou={c},{base}\nobjectClass: top\nobjectClass: organizationalUnit\nou: {c}\n"
              for c in CONTAINERS]
    blocks.append(f"dn: {service_dn(base)}\nobjectClass: applicationProcess\nobjectClass: "
                  "simpleSecurityObject\ncn: mailstate\ndescription: mailstate reconciler service account\n"
                  f"userPassword: {PASSWORD_PLACEHOLDER}\n")
    blocks.append(f"dn: {readonly_dn(base)}\nobjectClass: applicationProcess\nobjectClass: "
                  "simpleSecurityObject\ncn: dovecot\ndescription: Dovecot and Postfix lookups (read only)\n"
                  f"userPassword: {PASSWORD_PLACEHOLDER}\n")
    rules = site.password
    policy = "".join(_ldif_line(k, v) + "\n" for k, vs in default_policy(rules).items() for v in vs)
    checker = "objectClass: pwdPolicyChecker\n" if rules.check_module else ""
    missing = "".join(f"# NOT ENFORCED by slapd (no check module): {m}\n" for m in not_enforced(rules))
    if missing:
        missing += ("# Debian 12's slapd ships no password check module; mailstate checks its own generated\n"
                    "# passwords, people's own passwords are only checked for length and history. With a\n"
                    "# module such as ppm: mailstate server-config --password-check-module PATH.\n")
    blocks.append(f"{missing}dn: {policy_dn(base)}\nobjectClass: device\nobjectClass: pwdPolicy\n{checker}"
                  "cn: default\ndescription: default password policy (from [password] of the state)\n"
                  f"{policy}")
    return (f"# Entries under {base} (the suffix entry itself exists: dpkg-reconfigure slapd made it).\n"
            + "\n".join(blocks))


def _ldif_line(attr: str, value: str) -> str:
    """One LDIF attribute line; base64 when the value is not plain printable ASCII (RFC 2849)."""
    if value and value.isascii() and value.isprintable() and value[0] not in " :<" and value[-1] != " ":
        return f"{attr}: {value}"
    return f"{attr}:: {base64.b64encode(value.encode()).decode()}"
