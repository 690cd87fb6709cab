"""The iRedMail layout (docs/iredmail.md): slapd, Dovecot and Postfix configured the way an iRedMail server
is, so that mailstate can be tested — and later run — against a directory iRedMail's own Postfix, Dovecot
and admin panel keep using untouched. Pure, like the default layout's generators beside it.

The facts (object classes, attribute names, OIDs, syntaxes, LDAP filters, the tree under
``o=domains,<suffix>``, the two service accounts ``cn=vmail`` and ``cn=vmailadmin``) are those of the
iRedMail project (github.com/iredmail/iRedMail: samples/iredmail/iredmail.schema,
samples/postfix/ldap/*.cf, samples/dovecot/dovecot-ldap.conf, functions/ldap_server.sh; GPL v3+),
restated here in our own words. The differences from a stock iRedMail server are only those of the
transport (LDAPS with a CA, LMTP to Dovecot instead of its LDA) and what mailstate itself needs on top
(the master user, ACL plugin and shared namespace of the default layout, mailstate.schema for the unit
tree kept under ``ou=mailstate``); docs/iredmail.md lists them.

``generate(site)`` returns the same kind of ``{relative path: GeneratedFile}`` as the default layout's
``serverconfig.generate.generate``.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from mailstate.serverconfig import dovecot as sc_dovecot
from mailstate.serverconfig import ldap as sc_ldap
from mailstate.serverconfig import postfix as sc_postfix
from mailstate.serverconfig import sshd as sc_sshd
from mailstate.serverconfig.site import Site

if TYPE_CHECKING:
    from mailstate.serverconfig.generate import GeneratedFile

LAYOUT = "iredmail"
LAYOUTS = ("default", LAYOUT)

EXTRA_SCHEMAS: tuple[str, ...] = ()
"""Besides Debian's core/cosine/nis/inetorgperson: none. Not misc: its mailHost clashes with iRedMail's
(an iRedMail server never loads it), and mailstate.schema does not need it."""
CONTAINERS = ("Users", "Groups", "Aliases", "Externals")
"""The organizational units iRedMail makes under each domain (functions/ldap_server.sh)."""
MAILSTATE_OUS = ("units",)
"""mailstate's own subtree under the domain (ou=mailstate): what iRedMail has no place for."""
INDEXES = (
    "objectClass eq", "entryUUID eq", "uid,mail,cn eq,pres",
    "domainName,accountStatus,enabledService eq,pres",
    "shadowAddress,memberOfGroup,mailForwardingAddress eq,pres", "departmentNumber eq",
    "mailstateParent,mailstateHead,mailstateDelegate eq")
DOMAIN_SETTINGS = ("minPasswordLength:8", "defaultQuota:1024")
"""accountSetting values iRedMail's installer gives the first domain (quota in MB)."""

# ----------------------------------------------------------------------------------------- the tree


def domains_dn(base: str) -> str:
    """Where iRedMail keeps its mail domains (its LDAP_BASEDN)."""
    return f"o=domains,{base}"


def admins_dn(base: str) -> str:
    """Where iRedMail keeps its separate domain administrators (mailAdmin entries)."""
    return f"o=domainAdmins,{base}"


def domain_dn(base: str, domain: str) -> str:
    return f"domainName={domain},{domains_dn(base)}"


def container_dn(base: str, domain: str, ou: str) -> str:
    """ou=Users|Groups|Aliases|Externals of a domain."""
    return f"ou={ou},{domain_dn(base, domain)}"


def mailstate_dn(base: str, domain: str) -> str:
    """mailstate's own subtree in the domain: units, their heads and delegates (docs/iredmail.md)."""
    return f"ou=mailstate,{domain_dn(base, domain)}"


def service_dn(base: str) -> str:
    """iRedMail's write account (its admin panel binds as it); mailstate's service account in the lab."""
    return f"cn=vmailadmin,{base}"


def readonly_dn(base: str) -> str:
    """iRedMail's read-only account: Dovecot and Postfix look the directory up with it."""
    return f"cn=vmail,{base}"


def bootstrap_dns(base: str, domain: str) -> list[str]:
    """Every entry 05-entries.ldif makes (and a lab's reset keeps), the suffix included."""
    dom = domain_dn(base, domain)
    return [base, readonly_dn(base), service_dn(base), domains_dn(base), admins_dn(base), dom,
            *(container_dn(base, domain, ou) for ou in CONTAINERS), mailstate_dn(base, domain),
            *(f"ou={ou},{mailstate_dn(base, domain)}" for ou in MAILSTATE_OUS)]


# ----------------------------------------------------------------------------------------- slapd


def iredmail_schema() -> Path:
    """Path of our restatement of iRedMail's schema, shipped in this package."""
    return Path(str(files("mailstate.lab.iredmail") / "iredmail.schema"))


def schema_ldif(schema_text: str, name: str) -> str:
    """A slapd.conf-syntax schema as a cn=<name>,cn=schema,cn=config entry (ldapadd -Y EXTERNAL)."""
    text = "\n".join(line for line in schema_text.splitlines() if not line.lstrip().startswith("#"))
    blocks = re.split(r"\n(?=(?:objectIdentifier|attributetype|objectclass)\b)", "\n" + text, flags=re.I)
    out = [f"dn: cn={name},cn=schema,cn=config", "objectClass: olcSchemaConfig", f"cn: {name}"]
    kinds = {"objectidentifier": "olcObjectIdentifier", "attributetype": "olcAttributeTypes",
             "objectclass": "olcObjectClasses"}
    for block in blocks:
        block = " ".join(block.split())
        if block:
            keyword, _, rest = block.partition(" ")
            out.append(f"{kinds[keyword.lower()]}: {rest}")
    return f"# {name}.schema for cn=config (generated by `mailstate server-config --layout iredmail`)\n" + \
        "\n".join(out) + "\n"


def access_rules(base: str) -> list[str]:
    """iRedMail's access model (samples/openldap/slapd.conf), kept to what mailstate relies on: the write
    account writes, the read-only account reads everything but passwords (Dovecot binds as the user to
    check one), every entry reads itself and authenticated users read the address book."""
    svc, ro = service_dn(base), readonly_dn(base)
    return [
        'to dn.base="" by * read',
        'to dn.base="cn=Subschema" by * read',
        f'to attrs=userPassword,shadowLastChange by dn.exact="{svc}" write by self write by anonymous auth '
        "by * none",
        f'to dn.exact="{ro}" by self read by anonymous auth by * none',
        f'to dn.exact="{svc}" by self read by anonymous auth by * none',
        f'to dn.subtree="{admins_dn(base)}" by dn.exact="{svc}" write by dn.exact="{ro}" read by self read '
        "by * none",
        f'to dn.subtree="{domains_dn(base)}" by dn.exact="{svc}" write by dn.exact="{ro}" read by self read '
        "by users read by * none",
        f'to * by dn.exact="{svc}" write by dn.exact="{ro}" read by users read by * none',
    ]


def database_ldif(site: Site) -> str:
    """Access rules, limits and indexes of the suffix's database (replaces its olcAccess)."""
    base = site.base_dn
    access = "\n".join(f"olcAccess: {{{i}}}{r}" for i, r in enumerate(access_rules(base)))
    limits = [f'dn.exact="{service_dn(base)}" size=unlimited time=unlimited',
              f'dn.exact="{readonly_dn(base)}" size=unlimited time=unlimited']
    lim = "\n".join(f"olcLimits: {{{i}}}{v}" for i, v in enumerate(limits))
    idx = "\n".join(f"olcDbIndex: {v}" for v in INDEXES)
    return f"""# iRedMail layout: access rules (cn=vmailadmin writes, cn=vmail reads for Dovecot and Postfix),
# limits and indexes of {base}. Replaces the database's olcAccess: review it against yours first.
dn: {sc_ldap.DATABASE}
changetype: modify
replace: olcAccess
{access}
-
replace: olcLimits
{lim}
-
replace: olcDbIndex
{idx}

dn: {sc_ldap.FRONTEND}
changetype: modify
replace: olcPasswordHash
olcPasswordHash: {{SSHA}}
"""


def _ou(dn: str, name: str, description: str = "") -> str:
    desc = f"description: {description}\n" if description else ""
    return f"dn: {dn}\nobjectClass: top\nobjectClass: organizationalUnit\nou: {name}\n{desc}"


def entries_ldif(site: Site) -> str:
    """The two accounts, o=domains with the domain and its containers (as iRedMail's installer makes
    them), and mailstate's own ou=mailstate subtree in the domain."""
    base, domain = site.base_dn, site.domain
    blocks = [
        f"dn: {dn}\nobjectClass: top\nobjectClass: person\nobjectClass: shadowAccount\ncn: {cn}\nsn: {cn}\n"
        f"uid: {cn}\nuserPassword: {sc_ldap.PASSWORD_PLACEHOLDER}\n"
        for dn, cn in ((readonly_dn(base), "vmail"), (service_dn(base), "vmailadmin"))]
    blocks.append(f"dn: {domains_dn(base)}\nobjectClass: organization\no: domains\n")
    blocks.append(f"dn: {admins_dn(base)}\nobjectClass: organization\no: domainAdmins\n")
    settings = "".join(f"accountSetting: {s}\n" for s in DOMAIN_SETTINGS)
    blocks.append(f"dn: {domain_dn(base, domain)}\nobjectClass: mailDomain\ndomainName: {domain}\n"
                  f"mtaTransport: dovecot\naccountStatus: active\n{settings}enabledService: mail\n")
    blocks += [_ou(container_dn(base, domain, ou), ou) for ou in CONTAINERS]
    blocks.append(_ou(mailstate_dn(base, domain), "mailstate",
                      "mailstate: units, heads and delegates (iRedMail does not read this subtree)"))
    blocks += [_ou(f"ou={ou},{mailstate_dn(base, domain)}", ou) for ou in MAILSTATE_OUS]
    return (f"# iRedMail layout: entries under {base} (the suffix entry itself exists).\n"
            + "\n".join(blocks))


# ----------------------------------------------------------------------------------------- Dovecot

ACTIVE = "(accountStatus=active)(!(domainStatus=disabled))(enabledService=mail)"
"""iRedMail's condition for an account that works: active, its domain not disabled, mail service on."""
LOGIN_FILTER = (f"(&(objectClass=mailUser){ACTIVE}(enabledService=%Ls%Lc)"
                "(|(mail=%u)(&(enabledService=shadowaddress)(shadowAddress=%u))))")
"""passdb and userdb: the account by its address (or a shadow address when that service is on), with the
service asked for enabled — %Ls%Lc is the service and "secured" over TLS: imapsecured, lmtp, doveadm."""
ITERATE_FILTER = f"(&(objectClass=mailUser){ACTIVE})"
DISABLED_FILTER = "(&(objectClass=mailUser)(accountStatus=disabled)(enabledService=%Ls)(mail=%u))"
"""mailstate's one addition (a second userdb): a disabled account is still found by doveadm and the
master user, so that a leaver's mailbox can be archived and verified. Logins and delivery still refuse
it: the passdb and Postfix use iRedMail's filters."""


def ldap_conf(site: Site, user_filter: str = LOGIN_FILTER) -> str:
    """dovecot-ldap.conf.ext the iRedMail way: home and mail location from the entry, quota from
    mailQuota (bytes), auth_bind (slapd checks the password)."""
    return f"""# mailstate, iRedMail layout: Dovecot's lookups (generated; holds cn=vmail's password)
uris = {site.ldap}
tls_ca_cert_file = {site.ldap_ca_file}
tls_require_cert = demand
dn = {readonly_dn(site.base_dn)}
dnpass = {site.readonly_password}
auth_bind = yes
ldap_version = 3
base = {domains_dn(site.base_dn)}
scope = subtree
deref = never
pass_filter = {LOGIN_FILTER}
pass_attrs = mail=user
user_filter = {user_filter}
user_attrs = mail=master_user,mail=user,=home=%{{ldap:homeDirectory}},\
=mail=%{{ldap:mailboxFormat:maildir}}:~/%{{ldap:mailboxFolder:Maildir}}/,mailQuota=quota_rule=*:bytes=%$
iterate_filter = {ITERATE_FILTER}
iterate_attrs = mail=user
"""


_SNIPPET_CHANGES = (
    # (line of the default layout's snippet, its iRedMail-layout replacement)
    ("mail_home = {mail_root}/%n\n", ""),
    ("mail_location = mdbox:~/mdbox\n", "mail_location = maildir:~/Maildir\n"),
    ("  prefix = shared/%%n/\n", "  prefix = shared/%%u/\n"),
    ("  location = mdbox:%%h/mdbox:INDEXPVT=~/shared/%%n\n",
     "  location = maildir:%%h/Maildir:INDEXPVT=~/shared/%%u\n"),
    # the passdb refusing a password still to be changed (pwdReset): iRedMail keeps no pwdReset (the
    # iredmail provider sets none), and the file it reads is not generated for this layout
    ("# A person whose initial password must still be changed (pwdReset, MOST art.15.2) is refused with "
     "where\n# to change it; mail to them is still delivered (LMTP asks the userdb only).\n"
     "# Skipped for the master user (already authenticated: mailstate sets up a new person's mailbox); an\n"
     "# LDAP failure there refuses the login instead of falling through to the next passdb.\n"
     "passdb {{\n  driver = ldap\n  args = {dovecot_dir}/dovecot-ldap-reset.conf.ext\n"
     "  skip = authenticated\n  result_internalfail = return-fail\n}}\n", ""),
    ("userdb {{\n  driver = ldap\n  args = {dovecot_dir}/dovecot-ldap.conf.ext\n}}\n",
     "userdb {{\n  driver = ldap\n  args = {dovecot_dir}/dovecot-ldap.conf.ext\n}}\n"
     "# mailstate: a disabled account is still found by doveadm and the master user (archiving a leaver).\n"
     "userdb {{\n  driver = ldap\n  args = {dovecot_dir}/dovecot-ldap-disabled.conf.ext\n"
     "  skip = found\n}}\n"),
)


def conf_snippet(site: Site) -> str:
    """The default layout's 90-mailstate.conf (master user, ACL, quota, shared namespace, LMTP) with the
    home and mail location from the directory (iRedMail's Maildir under homeDirectory), shared mailboxes
    named by the owner's address, and the userdb for disabled accounts."""
    text = sc_dovecot.conf_snippet(site)
    for old, new in _SNIPPET_CHANGES:
        old = old.format(mail_root=site.mail_root, dovecot_dir=site.dovecot_dir)
        new = new.format(mail_root=site.mail_root, dovecot_dir=site.dovecot_dir)
        if old not in text:
            raise AssertionError(f"serverconfig.dovecot.conf_snippet no longer holds {old.strip()!r}: "
                                 "update serverconfig.iredmail._SNIPPET_CHANGES")
        text = text.replace(old, new, 1)
    return text.replace("# mailstate: ", "# mailstate (iRedMail layout): ", 1)


# ----------------------------------------------------------------------------------------- Postfix

TABLES = ("virtual_mailbox_domains", "virtual_mailbox_maps", "virtual_alias_maps", "virtual_group_maps",
          "virtual_group_members_maps", "sender_login_maps")
_DELIVERS = f"{ACTIVE}(enabledService=deliver)"


def table_path(site: Site, name: str) -> str:
    return f"{site.postfix_dir}/ldap/{name}.cf"


def main_cf(site: Site) -> str:
    """The main.cf lines of iRedMail's LDAP lookups, delivering over LMTP to Dovecot."""
    t = {name: f"proxy:ldap:{table_path(site, name)}" for name in TABLES}
    return f"""# mailstate, iRedMail layout: mail for {site.domain}, iRedMail's lookups (docs/iredmail.md)
myhostname = {site.hostname}
inet_interfaces = {site.smtp_interfaces}
virtual_mailbox_domains = {t["virtual_mailbox_domains"]}
virtual_mailbox_maps = {t["virtual_mailbox_maps"]}
# Aliases (mailAlias, a user's forwarding), then lists and shadow addresses (memberOfGroup), then each
# user's own address to itself (so that expansion stops there).
virtual_alias_maps =
    {t["virtual_alias_maps"]},
    {t["virtual_group_maps"]},
    {t["virtual_group_members_maps"]}
smtpd_sender_login_maps = {t["sender_login_maps"]}
virtual_transport = {site.lmtp}
smtpd_reject_unlisted_recipient = yes
unknown_virtual_mailbox_reject_code = 550
smtpd_recipient_restrictions = reject_unlisted_recipient
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
lmtp_destination_recipient_limit = 1000
duplicate_filter_limit = 10000
"""


def _table(site: Site, what: str, query: str, result: str, extra: str = "") -> str:
    head = (f"# mailstate, iRedMail layout: {what}\n"
            "# Generated; holds cn=vmail's password: mode 0640 root:postfix.")
    return sc_postfix.ldap_table(site, head, query, result, bind_dn=readonly_dn(site.base_dn),
                                 search_base=domains_dn(site.base_dn), extra=extra)


def tables(site: Site) -> dict[str, str]:
    """name → ldap_table text, with iRedMail's filters (Postfix escapes %s, RFC 4515)."""
    return {
        "virtual_mailbox_domains": _table(
            site, "the domains this server delivers for", "(&(objectClass=mailDomain)(accountStatus=active)"
            "(domainName=%s))", "domainName"),
        "virtual_mailbox_maps": _table(
            site, "mailboxes: an active user that accepts delivery, by address or shadow address",
            f"(&(objectClass=mailUser)(|(mail=%s)(shadowAddress=%s)){_DELIVERS})", "mail"),
        "virtual_alias_maps": _table(
            site, "aliases (mailAlias) and a user's forwarding, to mailForwardingAddress",
            f"(&{_DELIVERS}(|(&(objectClass=mailAlias)(|(mail=%s)(shadowAddress=%s)))"
            "(&(objectClass=mailUser)(enabledService=forward)(|(mail=%s)(shadowAddress=%s)))))",
            "mailForwardingAddress"),
        "virtual_group_maps": _table(
            site, "a list's (or alias's) address to the entries that carry it in memberOfGroup; a shadow "
            "address to its user",
            f"(&{_DELIVERS}(|(&(|(memberOfGroup=%s)(shadowAddress=%s))"
            "(|(objectClass=mailUser)(objectClass=mailExternalUser)))"
            "(&(memberOfGroup=%s)(!(shadowAddress=%s))(|(objectClass=mailAlias)(objectClass=mailList)))))",
            "mail"),
        "virtual_group_members_maps": _table(
            site, "a user's address to itself (ends alias expansion at a mailbox)",
            f"(&(objectClass=mailUser){_DELIVERS}(|(mail=%s)(shadowAddress=%s)))", "mail"),
        "sender_login_maps": _table(
            site, "who may send as an address (a logged-in user as its own addresses)",
            f"(&(objectClass=mailUser){ACTIVE}(enabledService=smtp)(|(mail=%s)(shadowAddress=%s)))", "mail"),
    }


# ----------------------------------------------------------------------------------------- all files


def generate(site: Site) -> dict[str, GeneratedFile]:
    """Relative path in the output directory → file, for an iRedMail-layout server."""
    from mailstate.lab.slapd import mailstate_schema
    from mailstate.serverconfig.generate import GeneratedFile

    ldapadd = "ldapadd -Y EXTERNAL -H ldapi:///"
    ldapmodify = "ldapmodify -Y EXTERNAL -H ldapi:///"
    out = {
        "ldap/01-iredmail-schema.ldif": GeneratedFile(
            schema_ldif(iredmail_schema().read_text(encoding="utf-8"), "iredmail"), 0o644,
            f"{ldapadd} -f … (an iRedMail server has it already: skip)"),
        "ldap/02-mailstate-schema.ldif": GeneratedFile(
            sc_ldap.schema_ldif(mailstate_schema().read_text(encoding="utf-8")), 0o644,
            f"{ldapadd} -f …"),
        "ldap/04-database.ldif": GeneratedFile(
            database_ldif(site), 0o644, f"{ldapmodify} -f … (an iRedMail server: compare, do not replace)"),
        "ldap/05-entries.ldif": GeneratedFile(
            entries_ldif(site), 0o644, "ldapadd -x -D <admin DN> -W -H ldapi:/// -f … (only ou=mailstate on "
            "an iRedMail server)"),
        "dovecot/conf.d/90-mailstate.conf": GeneratedFile(
            conf_snippet(site), 0o644, f"{site.dovecot_dir}/conf.d/90-mailstate.conf"),
        "dovecot/dovecot-ldap.conf.ext": GeneratedFile(
            ldap_conf(site), 0o600, f"{site.dovecot_dir}/dovecot-ldap.conf.ext (0600 root)"),
        "dovecot/dovecot-ldap-disabled.conf.ext": GeneratedFile(
            ldap_conf(site, DISABLED_FILTER), 0o600,
            f"{site.dovecot_dir}/dovecot-ldap-disabled.conf.ext (0600 root)"),
        "dovecot/master-users": GeneratedFile(
            sc_dovecot.master_users_template(), 0o640,
            f"{site.dovecot_dir}/master-users (0640 root:dovecot)"),
        "postfix/main.cf": GeneratedFile(main_cf(site), 0o644, f"merge into {site.postfix_dir}/main.cf"),
        "ssh/sshd_config.d/mailstate.conf": GeneratedFile(
            sc_sshd.sshd_snippet(site), 0o644, "/etc/ssh/sshd_config.d/mailstate.conf (0644 root)"),
        "ssh/authorized_keys": GeneratedFile(
            sc_sshd.authorized_keys_template(), 0o644, f"{site.ssh_authorized_keys} (0644 root)"),
    }
    for name, text in tables(site).items():
        out[f"postfix/ldap/{name}.cf"] = GeneratedFile(
            text, 0o640, f"{table_path(site, name)} (0640 root:postfix)")
    return out
