"""Pure translation between an iRedMail directory (docs/iredmail.md, "What maps where") and Records.

Reading takes every entry of one domain at once (``parse_domain``): a list's members are written on the
members (``memberOfGroup``), an old address on its owner (``shadowAddress``), so a group or an alias is
only known once the users are. Writing gives the attributes of one entry (``user_attrs``,
``list_attrs``, ``unit_attrs``) and the lock's ``accountStatus``/``enabledService`` (``lock_attrs``).

The lock (docs/iredmail.md): a person who left (``refuse_mail``) is ``accountStatus: disabled`` — iRedMail's
own meaning: no login, mail refused at RCPT (550), left out of every list. A suspension that keeps mail
flowing stays ``active`` without the login services (``imap``, ``pop3``, ``smtp``, ``managesieve``,
``sieve`` and their secured/tls variants): Dovecot's passdb needs ``enabledService=<service><secured>``,
so no login succeeds, while ``mail``, ``deliver`` and ``lmtp`` keep delivery. The reason is kept in
``mailstateLockReason`` (auxiliary class ``mailstateAccount``) either way.

No I/O here: tests/unit/test_iredmail_parse.py checks it as data.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from mailstate.ldapconn import entry_value as _one
from mailstate.ldapconn import single_value as _single
from mailstate.model.records import Record

PROVIDER = "iredmail"
KINDS = frozenset({"person", "unit_mailbox", "unit", "group", "alias"})

USER_SERVICES = (
    "internal",
    "doveadm",
    "lib-storage",
    "quota-status",
    "indexer-worker",
    "dsync",
    "mail",
    "pop3",
    "pop3secured",
    "pop3tls",
    "imap",
    "imapsecured",
    "imaptls",
    "smtp",
    "smtpsecured",
    "smtptls",
    "managesieve",
    "managesievesecured",
    "sieve",
    "sievesecured",
    "deliver",
    "lda",
    "lmtp",
    "forward",
    "senderbcc",
    "recipientbcc",
    "shadowaddress",
    "displayedInGlobalAddressBook",
)
"""The services iRedMail enables for a new user (tools/create_mail_user_OpenLDAP.sh, iRedAdmin)."""
LOGIN_SERVICES = frozenset(
    {
        "pop3",
        "pop3secured",
        "pop3tls",
        "imap",
        "imapsecured",
        "imaptls",
        "smtp",
        "smtpsecured",
        "smtptls",
        "managesieve",
        "managesievesecured",
        "sieve",
        "sievesecured",
    }
)
"""What a suspension removes: every service a person logs in to (delivery and doveadm stay)."""
UNIT_MAILBOX_MARK = "kind=unit_mailbox"
"""``mailstateState`` value telling a unit's mailbox from a person's (both are ``mailUser``s)."""

USER_CLASSES = ("inetOrgPerson", "shadowAccount", "mailUser", "mailstateAccount")
LIST_CLASSES = ("mailList",)
UNIT_CLASSES = ("organizationalUnit", "mailstateUnit")
EXPIRY_CLASSES = ("applicationProcess", "mailstateAlias")

USER_ATTRS = sorted(
    {
        "objectClass",
        "storageBaseDirectory",
        "uid",
        "mail",
        "cn",
        "sn",
        "givenName",
        "title",
        "telephoneNumber",
        "mobile",
        "departmentNumber",
        "mailQuota",
        "shadowAddress",
        "backupMailAddress",
        "enabledService",
        "accountStatus",
        "memberOfGroup",
        "mailstateLockReason",
        "mailstateRefuseMail",
        "mailstateState",
    }
)
LIST_ATTRS = [
    "objectClass", "mail", "cn", "accountStatus", "memberOfGroup", "shadowAddress", "mailstateMember",
]
ALIAS_ATTRS = ["objectClass", "mail", "cn", "accountStatus", "mailForwardingAddress", "memberOfGroup"]
UNIT_ATTRS = [
    "objectClass",
    "ou",
    "description",
    "mailstateParent",
    "mailstateHead",
    "mailstateDelegate",
    "mail",
]
EXPIRY_ATTRS = ["objectClass", "cn", "mailstateExpires"]


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    return nfc(str(value))


def normalize(attrs: Mapping[str, Any]) -> dict[str, list[str]]:
    """Lower-case names, every value a list of NFC str; userPassword dropped."""
    out: dict[str, list[str]] = {}
    for name, value in attrs.items():
        if name.lower() == "userpassword":
            continue
        values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
        texts = [_text(v) for v in values if v is not None and v not in (b"", "")]
        if texts:
            out.setdefault(name.lower(), []).extend(texts)
    return out


def digest(e: Mapping[str, list[str]]) -> str:
    canonical = json.dumps({k: sorted(v) for k, v in sorted(e.items())}, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def addr(value: str | None) -> str | None:
    return value.strip().lower() if value and value.strip() else None


def addrs(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({v.strip().lower() for v in values if v and v.strip()}))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def local_part(address: str) -> str:
    return address.split("@", 1)[0]


def generalized_to_iso(value: str | None) -> str | None:
    if not value or len(value) < 8 or not value[:8].isdigit():
        return None
    return f"{value[0:4]}-{value[4:6]}-{value[6:8]}"


def iso_to_generalized(value: str | date | None) -> str | None:
    if value is None or value == "":
        return None
    day = value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
    return day.strftime("%Y%m%d") + "000000Z"


def split_name(name: str) -> tuple[str, str]:
    """(family, given) of a Vietnamese full name: the first and the last word."""
    words = nfc(name).split()
    return (words[0], words[-1]) if words else (name, name)


# --------------------------------------------------------------------------------------------------
# Reading


def is_active(e: Mapping[str, list[str]]) -> bool:
    return (_one(e, "accountStatus") or "").lower() == "active"


def lock_state(e: Mapping[str, list[str]]) -> tuple[bool, bool]:
    """(locked, mail refused): disabled = both; active without any login service = locked, mail kept."""
    if not is_active(e):
        return True, True
    services = {s.lower() for s in e.get("enabledservice", [])}
    return not (services & LOGIN_SERVICES), False


def is_unit_mailbox(e: Mapping[str, list[str]]) -> bool:
    return UNIT_MAILBOX_MARK in e.get("mailstatestate", [])


@dataclass
class DomainEntries:
    """What one read of a domain found, by DN: normalised entries of each container."""

    users: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    lists: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    aliases: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    units: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    expiries: dict[str, dict[str, list[str]]] = field(default_factory=dict)


@dataclass
class Parsed:
    records: list[Record] = field(default_factory=list)
    unmanaged: list[Record] = field(default_factory=list)
    """Entries that map to no record (a mailAlias with several targets, a user with no uid …): reported."""


def _rec(
    kind: str, key: str, attrs: dict[str, Any], e: Mapping[str, list[str]], unit: str | None, dn: str
) -> Record:
    attrs["_digest"] = digest(e)
    attrs["_dn"] = dn
    return Record(kind=kind, key=key, attrs=attrs, provider=PROVIDER, unit=unit)


def _unmanaged(kind: str, dn: str, e: Mapping[str, list[str]], why: str) -> Record:
    return Record(kind=kind, key=dn, attrs={"dn": dn, "why": why, "_digest": digest(e)}, provider=PROVIDER)


def parse_domain(found: DomainEntries) -> Parsed:
    """Every record of a domain: people and unit mailboxes (``ou=Users``), groups (``ou=Groups`` with the
    members' ``memberOfGroup``), aliases (each ``shadowAddress`` of a user, each single-target
    ``mailAlias``; expiry from ``ou=aliases,ou=mailstate``), units (``ou=units,ou=mailstate``)."""
    out = Parsed()
    expiry = {
        addr(_one(e, "cn")): generalized_to_iso(_one(e, "mailstateExpires")) for e in found.expiries.values()
    }
    list_addr = {addr(_one(e, "mail")): dn for dn, e in found.lists.items()}
    # a member: a person id, unit:<id>, group:<id>, from its entry's memberOfGroup
    members: dict[str, set[str]] = {a: set() for a in list_addr if a}
    delivers: dict[str, set[str]] = {a: set() for a in list_addr if a}
    nested: dict[str, set[str]] = {a: set() for a in list_addr if a}
    alias_entries: dict[str, str] = {}  # mailAlias address → its one target
    for dn, e in found.aliases.items():
        a = addr(_one(e, "mail"))
        targets = addrs(e.get("mailforwardingaddress", []))
        if a and len(targets) == 1 and is_active(e):
            alias_entries[a] = targets[0]
        else:
            out.unmanaged.append(
                _unmanaged(
                    "alias", dn, e, f"a mailAlias forwarding to {len(targets)} addresses or not active"
                )
            )
    users_by_mail: dict[str, str] = {}
    for dn, e in sorted(found.users.items()):
        key = _one(e, "uid")
        address = addr(_one(e, "mail"))
        if not key or not address:
            out.unmanaged.append(_unmanaged("person", dn, e, "a mail user without uid or mail"))
            continue
        users_by_mail[address] = key
        unit_mb = is_unit_mailbox(e)
        ref = f"unit:{key}" if unit_mb else key
        locked, refused = lock_state(e)
        shadows = addrs(e.get("shadowaddress", []))
        kept = tuple(sorted({*shadows, *(a for a, t in alias_entries.items() if t == address)}))
        common = {
            "address": address,
            "aliases": kept,
            "quota": _int(_one(e, "mailQuota")),
            "locked": locked,
            "lock_reason": _one(e, "mailstateLockReason") if locked else None,
        }
        if unit_mb:
            out.records.append(_rec("unit_mailbox", key, {"name": _single(e, "cn"), **common}, e, key, dn))
        else:
            attrs = {
                "name": _single(e, "cn"),
                "given": _single(e, "givenName"),
                "family": _single(e, "sn"),
                "unit": _single(e, "departmentNumber"),
                "title": _single(e, "title"),
                "phone": _single(e, "telephoneNumber"),
                "mobile": _single(e, "mobile"),
                "backup_email": addr(_one(e, "backupMailAddress")),
                **common,
                "refuse_mail": _one(e, "mailstateRefuseMail") if refused else None,
                "_refused": refused,
            }
            attrs["_storage"] = _one(e, "storageBaseDirectory")
            out.records.append(_rec("person", key, attrs, e, _one(e, "departmentNumber"), dn))
        for group in addrs(e.get("memberofgroup", [])):
            if group in members:
                members[group].add(ref)
                if is_active(e):
                    delivers[group].add(address)
        for shadow in shadows:
            out.records.append(
                _rec(
                    "alias",
                    shadow,
                    {"target": address, "expires": expiry.get(shadow), "_owner": ref},
                    e,
                    None,
                    dn,
                )
            )
    for a, target in alias_entries.items():
        dn = next(d for d, e in found.aliases.items() if addr(_one(e, "mail")) == a)
        owner = users_by_mail.get(target)
        out.records.append(
            _rec(
                "alias",
                a,
                {
                    "target": target,
                    "expires": expiry.get(a),
                    **({"_owner": owner} if owner else {}),
                    "_entry": True,
                },
                found.aliases[dn],
                None,
                dn,
            )
        )
    for e in found.lists.values():
        a = addr(_one(e, "mail"))
        if not a:
            continue
        for outer in addrs(e.get("memberofgroup", [])):
            if outer in members:
                members[outer].add(f"group:{local_part(a)}")
                nested[outer].add(a)
    for dn, e in sorted(found.lists.items()):
        a = addr(_one(e, "mail"))
        if not a:
            out.unmanaged.append(_unmanaged("group", dn, e, "a mailList without mail"))
            continue
        attrs = {
            "name": _single(e, "cn"),
            "address": a,
            # members the TOML lists that have no entry to carry memberOfGroup (a person removed while
            # still listed), kept on the list itself as on the default layout (mailstateMember)
            "members": tuple(sorted(members[a] | set(e.get("mailstatemember", [])))),
            "delivers_to": tuple(sorted(_expand(a, delivers, nested, set()))),
        }
        out.records.append(_rec("group", local_part(a), attrs, e, None, dn))
    for dn, e in sorted(found.units.items()):
        key = _one(e, "ou") or ""
        attrs = {
            "name": _single(e, "description"),
            "parent": _one(e, "mailstateParent"),
            "head": _one(e, "mailstateHead"),
            "delegates": tuple(sorted(set(e.get("mailstatedelegate", [])))),
            "address": addr(_one(e, "mail")),
        }
        out.records.append(_rec("unit", key, attrs, e, key, dn))
    # iRedMail keeps no unit tree: a departmentNumber naming no unit entry is a unit without an entry yet
    # (no name, parent or head, and no unit mailbox); the first change to it writes its entry
    have = {_one(e, "ou") for e in found.units.values()}
    implicit = sorted({r.attrs["unit"] for r in out.records if r.kind == "person"
                       and isinstance(r.attrs.get("unit"), str)} - have)
    for key in implicit:
        out.records.append(Record(kind="unit", key=key, provider=PROVIDER, unit=key, attrs={
            "name": key, "parent": None, "head": None, "delegates": (), "address": None, "_implicit": True}))
    return out


def _expand(
    group: str, delivers: Mapping[str, set[str]], nested: Mapping[str, set[str]], seen: set[str]
) -> set[str]:
    """The addresses Postfix delivers a list's mail to: its active members, and its nested lists'."""
    if group in seen:
        return set()
    seen.add(group)
    out = set(delivers.get(group, ()))
    for inner in nested.get(group, ()):
        out |= _expand(inner, delivers, nested, seen)
    return out


# --------------------------------------------------------------------------------------------------
# Writing


def _v(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return sorted({_text(v) for v in value if v is not None and v != ""})
    return [_text(value)]


def user_attrs(kind: str, key: str, a: Mapping[str, Any]) -> dict[str, list[str]]:
    """The managed attributes of a person's or unit mailbox's ``mailUser`` entry (lock apart)."""
    address = addr(a.get("address"))
    if kind == "unit_mailbox":
        name = _text(a.get("name") or key)
        return {
            "uid": [key],
            "mail": _v(address),
            "cn": [name],
            "sn": [name],
            "mailQuota": _v(a.get("quota")),
            "mailstateState": [UNIT_MAILBOX_MARK],
        }
    name = _text(a.get("name") or key)
    family, given = split_name(name)
    return {
        "uid": [key],
        "mail": _v(address),
        "cn": [name],
        "sn": _v(a.get("family") or family),
        "givenName": _v(a.get("given") or given),
        "title": _v(a.get("title")),
        "telephoneNumber": _v(a.get("phone")),
        "mobile": _v(a.get("mobile")),
        "departmentNumber": _v(a.get("unit")),
        "backupMailAddress": _v(addr(a.get("backup_email"))),
        "mailQuota": _v(a.get("quota")),
    }


def lock_attrs(
    locked: bool,
    refuse_mail: str | None,
    reason: str | None,
    services: Iterable[str],
    was_active: bool = True,
) -> dict[str, list[str]]:
    """``accountStatus``, ``enabledService``, the lock's reason and the refusal text (module doc): a
    leaver (``refuse_mail``) disabled, a suspension active without the login services, an unlocked
    account active with them (given back only when a suspension had taken them all)."""
    have = set(services)
    if not locked:
        wanted = have if have & LOGIN_SERVICES else have | LOGIN_SERVICES
        return {
            "accountStatus": ["active"],
            "enabledService": sorted(wanted),
            "mailstateLockReason": [],
            "mailstateRefuseMail": [],
        }
    if refuse_mail:
        return {
            "accountStatus": ["disabled"],
            "enabledService": sorted(have),
            "mailstateLockReason": _v(reason),
            "mailstateRefuseMail": _v(refuse_mail),
        }
    if not was_active:  # disabled by hand in iRedMail: a suspension never turns its mail back on unseen
        return {"mailstateLockReason": _v(reason), "mailstateRefuseMail": []}
    return {
        "accountStatus": ["active"],
        "enabledService": sorted(have - LOGIN_SERVICES),
        "mailstateLockReason": _v(reason),
        "mailstateRefuseMail": [],
    }


def list_attrs(key: str, a: Mapping[str, Any]) -> dict[str, list[str]]:
    return {"mail": _v(addr(a.get("address"))), "cn": _v(a.get("name") or key)}


def unit_attrs(key: str, a: Mapping[str, Any]) -> dict[str, list[str]]:
    return {
        "ou": [key],
        "description": _v(a.get("name")),
        "mailstateParent": _v(a.get("parent")),
        "mailstateHead": _v(a.get("head")),
        "mailstateDelegate": _v(a.get("delegates")),
        "mail": _v(addr(a.get("address"))),
    }


def maildir_path(domain: str, local: str, stamp: str) -> str:
    """iRedMail's hashed mailbox path: <domain>/<1st>/<2nd>/<3rd letter>/<local>-<timestamp>/."""
    letters = (local + local[-1] * 2)[:3]
    return f"{domain}/{letters[0]}/{letters[1]}/{letters[2]}/{local}-{stamp}/"


_CASE_IGNORE = {
    "mail",
    "shadowaddress",
    "memberofgroup",
    "backupmailaddress",
    "objectclass",
    "uid",
    "enabledservice",
    "accountstatus",
}


def changed(current: Mapping[str, list[str]], wanted: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The attributes of ``wanted`` whose values differ from ``current`` (empty list: remove)."""
    out: dict[str, list[str]] = {}
    for name, values in wanted.items():
        have = current.get(name.lower(), [])
        fold = (lambda v: v.lower()) if name.lower() in _CASE_IGNORE else (lambda v: v)
        if {fold(v) for v in have} != {fold(v) for v in values}:
            out[name] = list(values)
    return out
