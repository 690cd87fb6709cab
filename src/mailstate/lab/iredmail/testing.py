"""Entries written into an iRedMail-layout lab the way iRedMail's admin panel and its
tools/create_mail_user_OpenLDAP.sh write them: a mail user, a mailing list whose members carry its
address in `memberOfGroup`, a mail alias. For setting up a situation in tests, never for checking a
provider with itself.

One difference from a real iRedMail: the `amavisAccount` object class (from amavisd-new's schema, which
the lab does not load) is left out of a user; nothing in Postfix's or Dovecot's lookups reads it.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterable
from typing import Any

from ldap3.utils.dn import escape_rdn

from mailstate.errors import LabError
from mailstate.lab.lab import Lab
from mailstate.lab.slapd import ssha
from mailstate.serverconfig import iredmail as irm

USER_SERVICES = (
    "internal", "doveadm", "lib-storage", "quota-status", "indexer-worker", "dsync", "mail", "pop3",
    "pop3secured", "pop3tls", "imap", "imapsecured", "imaptls", "smtp", "smtpsecured", "smtptls",
    "managesieve", "managesievesecured", "sieve", "sievesecured", "deliver", "lda", "lmtp", "forward",
    "senderbcc", "recipientbcc", "shadowaddress", "displayedInGlobalAddressBook")
"""The services iRedMail enables for a new user."""
STORAGE_NODE = "vmail1"


def address(lab: Lab, local: str) -> str:
    return f"{local}@{lab.info['domain']}"


def entry_dn(lab: Lab, local: str, container: str) -> str:
    """mail=<address>,ou=<Users|Groups|Aliases>,domainName=<domain>,o=domains,<suffix>."""
    return (f"mail={escape_rdn(address(lab, local))},"
            f"{irm.container_dn(lab.base_dn, lab.info['domain'], container)}")


def maildir_path(domain: str, local: str, stamp: str) -> str:
    """iRedMail's hashed mailbox path: <domain>/<1st>/<2nd>/<3rd letter>/<local>-<timestamp>/."""
    letters = (local + local[-1] * 2)[:3]
    return f"{domain}/{letters[0]}/{letters[1]}/{letters[2]}/{local}-{stamp}/"


def _add(lab: Lab, dn: str, classes: list[str], attrs: dict[str, Any]) -> str:
    conn = lab.ldap("service")
    try:
        if not conn.add(dn, classes, attrs):
            raise LabError(f"could not add {dn}: {conn.result}")
    finally:
        conn.unbind()
    return dn


def add_user(lab: Lab, local: str, password: str, *, cn: str | None = None, quota: int = 1073741824,
             status: str = "active", member_of: Iterable[str] = (), shadow: Iterable[str] = (),
             extra: dict[str, Any] | None = None) -> str:
    """A mail user under ou=Users (quota in bytes; `member_of`: list addresses); returns its DN."""
    domain = lab.info["domain"]
    name = unicodedata.normalize("NFC", cn or local)
    store = f"{STORAGE_NODE}/{maildir_path(domain, local, time.strftime('%Y.%m.%d.%H.%M.%S'))}"
    base = lab.info["paths"]["mail"]
    attrs: dict[str, Any] = {
        "mail": address(lab, local), "uid": local, "cn": name, "sn": name.split()[-1], "givenName": name,
        "accountStatus": status, "storageBaseDirectory": base, "mailMessageStore": store,
        "homeDirectory": f"{base}/{store}", "mailQuota": str(quota), "userPassword": ssha(password),
        "shadowLastChange": str(int(time.time()) // 86400), "enabledService": list(USER_SERVICES),
    }
    if member_of:
        attrs["memberOfGroup"] = list(member_of)
    if shadow:
        attrs["shadowAddress"] = list(shadow)
    attrs.update(extra or {})
    return _add(lab, entry_dn(lab, local, "Users"), ["inetOrgPerson", "shadowAccount", "mailUser"], attrs)


def add_list(lab: Lab, local: str, *, cn: str | None = None) -> str:
    """A mailing list under ou=Groups (its members name it in their memberOfGroup); returns its DN."""
    attrs = {"mail": address(lab, local), "cn": cn or local, "accountStatus": "active",
             "enabledService": ["mail", "deliver"], "accessPolicy": "public"}
    return _add(lab, entry_dn(lab, local, "Groups"), ["mailList"], attrs)


def add_alias(lab: Lab, local: str, targets: Iterable[str], *, cn: str | None = None) -> str:
    """A mail alias under ou=Aliases forwarding to `targets`; returns its DN."""
    attrs = {"mail": address(lab, local), "cn": cn or local, "accountStatus": "active",
             "enabledService": ["mail", "deliver"], "mailForwardingAddress": list(targets)}
    return _add(lab, entry_dn(lab, local, "Aliases"), ["mailAlias"], attrs)
