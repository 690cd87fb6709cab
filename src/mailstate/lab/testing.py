"""Helpers for tests against a running `Lab`: people with passwords, IMAP and SSH clients, doveadm.

They write to the lab's directory directly (as the service account), bypassing mailstate's providers —
for setting up a situation, never for checking a provider with itself.
"""

from __future__ import annotations

import hashlib
import subprocess
import unicodedata
from collections import Counter
from typing import Any

import ldap3
from imapclient import IMAPClient
from ldap3.utils.dn import escape_rdn

from mailstate.errors import LabError
from mailstate.lab.lab import Lab

LOCKED = "000001010000Z"


def person_dn(lab: Lab, uid: str, container: str = "people") -> str:
    """DN of a person (container "people") or unit mailbox (container "mailboxes")."""
    return f"uid={escape_rdn(uid)},ou={container},{lab.base_dn}"


def make_person(
    lab: Lab,
    uid: str,
    password: str | None = None,
    *,
    cn: str | None = None,
    mail: str | None = None,
    quota: int | None = None,
    unit: str | None = None,
    locked: bool = False,
    container: str = "people",
    extra: dict[str, Any] | None = None,
    must_change: bool = False,
) -> str:
    """Add a person (ou=people) or unit mailbox (container="mailboxes") straight into the lab directory,
    set its password with the Password Modify extended operation (as the service account, so slapd hashes
    it and ppolicy sets pwdReset), optionally lock it; return its DN.

    Without ``must_change`` the person is one who has already changed that password: pwdReset is removed
    (with it, Dovecot refuses the login until the person changes the password, docs/ldap.md)."""
    dn = person_dn(lab, uid, container)
    mail = mail or f"{uid}@{lab.info['domain']}"
    attrs: dict[str, Any] = {"uid": uid, "mail": mail, "mailLocalAddress": [mail]}
    if container == "people":
        name = unicodedata.normalize("NFC", cn or uid)
        classes = ["inetOrgPerson", "inetLocalMailRecipient", "mailstateAccount"]
        attrs.update({"cn": name, "sn": name.split()[-1] if name.split() else uid, "displayName": name})
        if unit:
            attrs["departmentNumber"] = unit
    else:
        classes = ["account", "simpleSecurityObject", "inetLocalMailRecipient", "mailstateAccount"]
        # simpleSecurityObject requires userPassword: a placeholder no one can bind with, replaced below.
        attrs["userPassword"] = "{SSHA}!"
        if cn:
            attrs["description"] = unicodedata.normalize("NFC", cn)
    if quota is not None:
        attrs["mailstateQuota"] = str(quota)
    attrs.update(extra or {})
    conn = lab.ldap("service")
    try:
        if not conn.add(dn, classes, attrs):
            raise LabError(f"could not add {dn}: {conn.result}")
        if password is not None:
            conn.extend.standard.modify_password(dn, new_password=password)
            if not must_change:
                conn.modify(dn, {"pwdReset": [(ldap3.MODIFY_DELETE, [])]})
        if locked:  # after the password: ppolicy removes pwdAccountLockedTime when a password is set
            conn.modify(dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, [LOCKED])]})
    finally:
        conn.unbind()
    return dn


def set_password(lab: Lab, dn: str, password: str) -> None:
    """Set a password with Password Modify as the service account (slapd hashes it)."""
    conn = lab.ldap("service")
    try:
        conn.extend.standard.modify_password(dn, new_password=password)
    finally:
        conn.unbind()


def change_own_password(lab: Lab, uid: str, old: str, new: str, container: str = "people") -> dict[str, Any]:
    """What a person does at first login: bind as themselves and change the password with Password Modify
    (giving the current one). Returns slapd's result (``result`` 0 on success, else e.g. 19
    constraintViolation with ppolicy's message) — the change is made by slapd under its password policy."""
    server = ldap3.Server("127.0.0.1", port=lab.info["ports"]["ldaps"], use_ssl=True, tls=lab.ldap_tls(),
                          connect_timeout=10)
    conn = ldap3.Connection(server, person_dn(lab, uid, container), old, receive_timeout=10)
    try:
        if not conn.bind():
            return dict(conn.result or {})
        conn.extend.standard.modify_password(person_dn(lab, uid, container), old_password=old,
                                             new_password=new)
        return dict(conn.result or {})
    finally:
        conn.unbind()


def lock(lab: Lab, dn: str, locked: bool = True) -> None:
    """Lock (pwdAccountLockedTime = 000001010000Z) or unlock an entry as the service account."""
    conn = lab.ldap("service")
    try:
        if locked:
            conn.modify(dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, [LOCKED])]})
        else:
            conn.modify(dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_DELETE, [])]})
    finally:
        conn.unbind()


def imap_connect(lab: Lab) -> IMAPClient:
    """An IMAPS connection to the lab's Dovecot, verified against the lab CA (not logged in)."""
    return IMAPClient("127.0.0.1", port=lab.info["ports"]["imaps"], ssl=True, ssl_context=lab.ssl_context(),
                      timeout=10)


def imap_login(lab: Lab, user: str, password: str) -> IMAPClient:
    """Log in over IMAPS as a user with their own password."""
    client = imap_connect(lab)
    client.login(user, password)
    return client


def imap_master_login(lab: Lab, user: str) -> IMAPClient:
    """Log in over IMAPS as `user` through the master user (`user*mailstate`); ACLs apply as `user`."""
    return imap_login(lab, f"{user}*mailstate", lab.secret("imap_master"))


def own_mail(client: IMAPClient) -> Counter[tuple[str, str]]:
    """(folder, SHA-256 of the full text with LF line ends) of every message in the logged-in mailbox's own
    folders (not ``shared/``), read over IMAP — never with the code under test. Logs the client out."""
    out: Counter[tuple[str, str]] = Counter()
    try:
        for flags, _d, name in client.list_folders():
            if b"\\Noselect" in flags or name.startswith("shared/"):
                continue
            client.select_folder(name, readonly=True)
            ids = client.search()
            for data in client.fetch(ids, ["BODY.PEEK[]"]).values() if ids else []:
                text = data[b"BODY[]"].replace(b"\r\n", b"\n")
                out[(unicodedata.normalize("NFC", name), hashlib.sha256(text).hexdigest())] += 1
    finally:
        client.logout()
    return out


def doveadm(lab: Lab, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `doveadm -c <lab conf> ARGS` locally as the lab user."""
    res = lab.run_as_lab_user(["doveadm", "-c", lab.info["paths"]["dovecot_conf"], *args])
    if check and res.returncode != 0:
        raise LabError(f"doveadm {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def ssh_client(lab: Lab) -> Any:
    """A paramiko SSHClient connected to the lab's sshd with its key, checking the host key (RejectPolicy)."""
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(lab.info["paths"]["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect("127.0.0.1", port=lab.info["ports"]["ssh"], username=lab.info["user"],
                   key_filename=lab.info["paths"]["ssh_key"], allow_agent=False, look_for_keys=False,
                   timeout=10)
    return client


def views_in_round(prov: Any, users: list[str], expected: dict[str, list[str]]) -> Any:
    """The views (``mailbox_views``: folders, GETACL's answers, purposes) of ``users`` through an ssh provider
    in one round of reads, the owners' walk first as the IMAP provider's read does: what a plan would see."""
    prov.begin_round()
    try:
        prov.shared_owners()
        return prov.mailbox_views(users, "/shared/comment", expected)
    finally:
        prov.end_round()
