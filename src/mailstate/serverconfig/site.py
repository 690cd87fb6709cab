"""`Site`: where an agency's servers are — the only values the lab substitutes in the production output.

Production defaults name the usual Debian 12 paths and standard ports on one mail server
(slapd, Dovecot, Postfix on the same host, LMTP on loopback). Secrets are never known here: the files
hold placeholders (``@READONLY_PASSWORD@``, …) that docs/production.md fills in from the agency's secret
store; the lab puts its own throwaway passwords in their place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

READONLY_PASSWORD = "@READONLY_PASSWORD@"
"""Placeholder for the read-only account's password (cn=dovecot) in Dovecot's and Postfix's LDAP files."""


@dataclass(frozen=True)
class PasswordRules:
    """The state's `[password]` as the servers enforce it (serverconfig.ldap.default_policy: ppolicy's
    default policy; serverconfig.dovecot: who must change their password before logging in)."""

    min_length: int = 8
    min_classes: int = 3
    """Of upper, lower, digit, special: needs a check module (none in Debian 12's packages)."""
    forbid_account_name: bool = True
    """Needs a check module too."""
    change_at_first_login: bool = True
    max_age_seconds: int = 0
    """0: passwords do not expire."""
    history: int = 0
    max_failures: int = 0
    """Failed binds in a row that lock the account (0: never)."""
    lockout_seconds: int = 0
    """How long such a lock lasts (0: until an administrator unlocks)."""
    change_url: str = ""
    """Where people change their password (shown by Dovecot to one whose password must be changed)."""
    check_module: str = ""
    """A check_password() module on the slapd host (pwdCheckModule), e.g. ppm.so built from OpenLDAP's
    contrib; empty: none (Debian 12 ships none)."""
    check_module_arg: str = ""
    """Its pwdCheckModuleArg (ppm: its configuration text), generated when empty."""


@dataclass(frozen=True)
class Site:
    """Organisation facts (from the state) and server locations (production defaults; the lab its own)."""

    domain: str
    base_dn: str
    org_name: str
    ldap_uri: str = ""
    """URI Dovecot and Postfix use to reach slapd (default: ldaps://ldap.<domain>)."""
    ldap_ca_file: str = "/etc/ssl/certs/ca-certificates.crt"
    """CA bundle that verifies slapd's certificate."""
    readonly_password: str = READONLY_PASSWORD
    # Postfix
    postfix_dir: str = "/etc/postfix"
    smtp_interfaces: str = "all"
    myhostname: str = ""
    """Postfix's host name (default: mail.<domain>)."""
    # Dovecot
    dovecot_dir: str = "/etc/dovecot"
    mail_root: str = "/var/vmail"
    """Each account's home is <mail_root>/<uid> (mail in mdbox/ there)."""
    vmail_user: str = "vmail"
    """The system user owning the mail store (Dovecot's mail_uid), also the archive account (SSH)."""
    vmail_group: str = "vmail"
    """Its group (Dovecot's mail_gid)."""
    dict_dir: str = "/var/lib/dovecot"
    """Where Dovecot keeps the shared-mailboxes and last-login dicts."""
    lmtp_host: str = "127.0.0.1"
    lmtp_port: int = 24
    ssl_cert: str = "/etc/dovecot/private/dovecot.pem"
    ssl_key: str = "/etc/dovecot/private/dovecot.key"
    # archive account (doveadm over SSH)
    archive_dir: str = "/var/vmail-archive"
    ssh_authorized_keys: str = "/etc/ssh/mailstate/authorized_keys"
    """mailstate's public key (root-owned: the archive account cannot change who may log in as it)."""
    doveadm: str = "doveadm"
    password: PasswordRules = field(default_factory=PasswordRules)
    """The state's `[password]` (slapd's default policy, Dovecot's refusal of a password to change)."""

    @property
    def ldap(self) -> str:
        return self.ldap_uri or f"ldaps://ldap.{self.domain}"

    @property
    def hostname(self) -> str:
        return self.myhostname or f"mail.{self.domain}"

    @property
    def postfix_ldap_dir(self) -> str:
        return f"{self.postfix_dir}/mailstate"

    @property
    def lmtp(self) -> str:
        return f"lmtp:inet:{self.lmtp_host}:{self.lmtp_port}"


def service_dn(base: str) -> str:
    """The reconciler's service account (write + manage on the managed subtrees)."""
    return f"cn=mailstate,ou=system,{base}"


def readonly_dn(base: str) -> str:
    """The read-only account Dovecot and Postfix look the directory up with."""
    return f"cn=dovecot,ou=system,{base}"


DURATION_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
"""ppolicy counts seconds: a month of `[password].max_age` is 30 days, a year 365."""


def password_rules(policy: Any, *, check_module: str = "", check_module_arg: str = "") -> PasswordRules:
    """PasswordRules from the state's `[password]` (model.settings.PasswordPolicy)."""
    age = policy.max_age
    max_failures = int(getattr(policy, "max_failures", 0) or 0)
    return PasswordRules(
        min_length=int(policy.min_length), min_classes=int(policy.min_classes),
        forbid_account_name=bool(policy.forbid_account_name),
        change_at_first_login=bool(policy.change_at_first_login),
        max_age_seconds=age.amount * DURATION_DAYS[age.unit] * 86400 if age else 0,
        history=int(getattr(policy, "history", 0) or 0), max_failures=max_failures,
        lockout_seconds=int(getattr(policy, "lockout_minutes", 0) or 0) * 60 if max_failures else 0,
        change_url=str(getattr(policy, "change_url", None) or ""),
        check_module=check_module, check_module_arg=check_module_arg)
