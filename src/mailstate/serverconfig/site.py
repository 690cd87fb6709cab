"""`Site`: where an agency's servers are — the only values the lab substitutes in the production output.

Production defaults name the usual Debian 12 paths and standard ports on one mail server
(slapd, Dovecot, Postfix on the same host, LMTP on loopback). Secrets are never known here: the files
hold placeholders (``@READONLY_PASSWORD@``, …) that docs/production.md fills in from the agency's secret
store; the lab puts its own throwaway passwords in their place.
"""

from __future__ import annotations

from dataclasses import dataclass

READONLY_PASSWORD = "@READONLY_PASSWORD@"
"""Placeholder for the read-only account's password (cn=dovecot) in Dovecot's and Postfix's LDAP files."""


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
