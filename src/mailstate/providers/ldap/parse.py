"""Pure translation between LDAP entries and Records (docs/ldap.md ⇄ docs/records.md).

Reading: ``parse_person``/``parse_unit_mailbox``/``parse_unit``/``parse_group``/``parse_alias`` take the
attribute dict of one entry as ldap3 returns it (names in any case, values a list or a scalar, str or
bytes) and return a normalised ``Record``: text NFC, addresses lower case, multi-valued as sorted
tuples, absent values ``None``, the raw entry's digest in ``attrs["_digest"]`` (never diffed).

Writing: ``build_entry(kind, key, attrs, base)`` gives the DN, object classes and LDAP attributes that a
record maps to; ``modifications(current, wanted)`` the ldap3 modify list that turns one into the other
(single-valued and multi-valued attributes alike are set exactly with MODIFY_REPLACE).

No I/O here: everything is unit-tested on recorded entries (tests/unit/test_ldap_parse.py).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from ldap3 import MODIFY_ADD, MODIFY_REPLACE
from ldap3.utils.dn import escape_rdn, safe_dn

from mailstate.ldapconn import entry_value as _one
from mailstate.ldapconn import single_value as _single
from mailstate.model.records import Record, split_name

PROVIDER = "ldap"
LOCKED_TIME = "000001010000Z"
"""ppolicy's "locked until an administrator unlocks" value of pwdAccountLockedTime."""

# kind → (container ou, RDN attribute)
CONTAINERS: dict[str, tuple[str, str]] = {
    "person": ("people", "uid"),
    "unit_mailbox": ("mailboxes", "uid"),
    "unit": ("units", "ou"),
    "group": ("groups", "cn"),
    "alias": ("aliases", "cn"),
}
KINDS = frozenset(CONTAINERS)

OBJECT_CLASSES: dict[str, tuple[str, ...]] = {
    "person": ("top", "inetOrgPerson", "inetLocalMailRecipient", "mailstateAccount"),
    "unit_mailbox": ("top", "account", "simpleSecurityObject", "inetLocalMailRecipient", "mailstateAccount"),
    "unit": ("top", "organizationalUnit", "mailstateUnit"),
    "group": ("top", "nisMailAlias", "inetLocalMailRecipient", "mailstateGroup"),
    "alias": ("top", "nisMailAlias", "mailstateAlias"),
}
# The auxiliary class that marks an entry of a managed subtree as mailstate's own.
MARKER: dict[str, str] = {
    "person": "mailstateaccount",
    "unit_mailbox": "mailstateaccount",
    "unit": "mailstateunit",
    "group": "mailstategroup",
    "alias": "mailstatealias",
}

# The attributes mailstate reads and writes, per kind (userPassword is never read).
MANAGED_ATTRS: dict[str, tuple[str, ...]] = {
    "person": (
        "uid",
        "cn",
        "sn",
        "givenName",
        "displayName",
        "mail",
        "mailLocalAddress",
        "departmentNumber",
        "title",
        "telephoneNumber",
        "mobile",
        "mailstateBackupMail",
        "mailstateQuota",
        "mailstateLockReason",
        "mailstateRefuseMail",
    ),
    "unit_mailbox": (
        "uid",
        "description",
        "mail",
        "mailLocalAddress",
        "mailstateQuota",
        "mailstateLockReason",
        "mailstateRefuseMail",
    ),
    "unit": ("ou", "description", "mailstateParent", "mailstateHead", "mailstateDelegate", "mail"),
    "group": ("cn", "displayName", "mail", "mailLocalAddress", "mailstateMember", "rfc822MailMember"),
    "alias": ("cn", "rfc822MailMember", "mailstateExpires"),
}
READ_ATTRS: dict[str, list[str]] = {
    kind: sorted(
        {"objectClass", *names, *(("pwdAccountLockedTime",) if kind in ("person", "unit_mailbox") else ())}
    )
    for kind, names in MANAGED_ATTRS.items()
}
"""What a read asks for, per kind: the managed attributes, objectClass and the lock (operational)."""


class Entry(dict[str, list[str]]):
    """A normalised entry: lower-case attribute names → list of NFC str values (normalize() returns it
    unchanged, so one entry is normalised once however many parsers look at it)."""


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    text = str(value)
    return text if text.isascii() else nfc(text)


def normalize(attrs: Mapping[str, Any]) -> Entry:
    """Lower-case names, every value a list of NFC str (bytes decoded as UTF-8); userPassword dropped."""
    if isinstance(attrs, Entry):
        return attrs
    out = Entry()
    for name, value in attrs.items():
        key = name.lower()
        if key == "userpassword":
            continue
        values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
        texts = []
        for v in values:
            if type(v) is str:  # what a read gives: NFC already unless it holds more than ASCII
                if v:
                    texts.append(v if v.isascii() else nfc(v))
            elif v is not None and v != b"":
                texts.append(_text(v))
        if texts:
            if key in out:
                out[key].extend(texts)
            else:
                out[key] = texts
    return out


def digest(entry: Mapping[str, Any]) -> str:
    """A stable digest of an entry's attributes (names and values compared case-sensitively, order-free)."""
    norm = normalize(entry)
    # names sorted here, values sorted when there are several: the text json.dumps(sort_keys=True) gives
    canonical = _CANONICAL.encode({k: v if len(v) < 2 else sorted(v) for k, v in sorted(norm.items())})
    return hashlib.sha256(canonical.encode()).hexdigest()


_CANONICAL = json.JSONEncoder(ensure_ascii=False)


def _address(e: Entry, name: str) -> str | tuple[str, ...] | None:
    """An address field (``mail``): lower case; every distinct value (sorted) when there are several."""
    values = _addrs(e.get(name.lower(), []))
    if len(values) > 1:
        return values
    return values[0] if values else None


def _person_name(e: Entry) -> str | tuple[str, ...] | None:
    """A person's name: ``cn``, which ``displayName`` (what mail clients show) repeats; every distinct
    value (sorted) when they differ or either holds another, so a hand edit of either is repaired."""
    values = sorted({*e.get("cn", []), *e.get("displayname", [])})
    if len(values) > 1:
        return tuple(values)
    return values[0] if values else None


def _group_address(e: Entry) -> str | tuple[str, ...] | None:
    """A group's address: ``mail``, which its ``mailLocalAddress`` repeats; every distinct address (sorted)
    when either holds another one (added by hand: it would deliver to the group unseen)."""
    values = _addrs([*e.get("mail", []), *e.get("maillocaladdress", [])])
    if len(values) > 1:
        return values
    return values[0] if values else None


def _addr(value: str | None) -> str | None:
    return value.strip().lower() if value else None


def _addrs(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({v.strip().lower() for v in values if v.strip()}))


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def generalized_to_iso(value: str | None) -> str | None:
    """``20270101000000Z`` → ``2027-01-01`` (the date part of an LDAP GeneralizedTime)."""
    if not value or len(value) < 8 or not value[:8].isdigit():
        return None
    return f"{value[0:4]}-{value[4:6]}-{value[6:8]}"


def created_of(value: Any) -> str | None:
    """An entry's ``createTimestamp`` (a GeneralizedTime, alone or in a list) as an ISO date, or None: the
    day in the local zone (the one ``date.today()`` gives the plan), the stamp being UTC — an entry made at
    06:00 in Hà Nội (``…230000Z`` the day before) was made that day."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    text = _text(value) if value is not None else None
    if text and len(text) >= 15 and text.endswith("Z") and text[:14].isdigit():
        try:
            when = datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]),
                            int(text[10:12]), int(text[12:14]), tzinfo=UTC)
        except ValueError:
            return None
        return date.fromtimestamp(when.timestamp()).isoformat()  # the local day (as astimezone(), faster)
    return generalized_to_iso(text)


def iso_to_generalized(value: str | date | None) -> str | None:
    """``2027-01-01`` → ``20270101000000Z``."""
    if value is None or value == "":
        return None
    day = value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
    return day.strftime("%Y%m%d") + "000000Z"


def unescape_rdn(value: str) -> str:
    """Undo RFC 4514 escaping (``\\,``, ``\\2C``, UTF-8 as ``\\C3\\A0``) of an RDN value."""
    out = bytearray()
    i = 0
    hexdigits = "0123456789abcdefABCDEF"
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            pair = value[i + 1 : i + 3]
            if len(pair) == 2 and all(c in hexdigits for c in pair):
                out.append(int(pair, 16))
                i += 3
                continue
            out += value[i + 1].encode()
            i += 2
            continue
        out += ch.encode()
        i += 1
    return out.decode("utf-8", errors="replace")


def rdn_value(dn: str) -> str:
    """The value of the first RDN of ``dn``, unescaped.

    (ldap3's parse_dn rejects a ``#`` inside a value, which RFC 4514 allows and slapd returns.)
    """
    if "\\" not in dn:  # nothing escaped (a uid, an ou): the first RDN's value as it stands
        return dn.split(",", 1)[0].split("+", 1)[0].partition("=")[2].strip(" ")
    end, escaped = len(dn), False
    for i, ch in enumerate(dn):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",+":
            end = i
            break
    _, _, value = dn[:end].partition("=")
    return unescape_rdn(value.strip(" ") if not value.endswith("\\ ") else value.lstrip(" "))


def _aliases(e: Entry, address: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """``mailLocalAddress`` minus the address(es) in ``mail``."""
    mail = set(address) if isinstance(address, tuple) else {address}
    return tuple(a for a in _addrs(e.get("maillocaladdress", [])) if a not in mail)


def _lock(e: Entry) -> tuple[bool, str | None]:
    locked = _one(e, "pwdAccountLockedTime") == LOCKED_TIME
    return locked, _one(e, "mailstateLockReason") if locked else None


def _record(kind: str, key: str, attrs: dict[str, Any], e: Entry, unit: str | None) -> Record:
    if kind in ("person", "unit_mailbox"):
        others = sorted({u for u in e.get("uid", []) if u.lower() != key.lower()})
        if others:
            attrs["_other_uids"] = tuple(others)  # other login names: drift (reconciler/diff.py)
    attrs["_digest"] = digest(e)
    return Record(kind=kind, key=key, attrs=attrs, provider=PROVIDER, unit=unit)


# --------------------------------------------------------------------------------------------------
# Reading: entry → Record


def parse_person(raw: Mapping[str, Any], dn: str | None = None) -> Record:
    """A person entry (``uid=<id>,ou=people``) as a ``person`` Record."""
    e = normalize(raw)
    key = (rdn_value(dn) if dn else None) or _one(e, "uid") or ""
    address = _address(e, "mail")
    unit = _one(e, "departmentNumber")
    attrs: dict[str, Any] = {
        "name": _person_name(e),
        "given": _single(e, "givenName"),
        "family": _single(e, "sn"),
        "unit": _single(e, "departmentNumber"),
        "title": _single(e, "title"),
        "phone": _single(e, "telephoneNumber"),
        "mobile": _single(e, "mobile"),
        "backup_email": _addr(_one(e, "mailstateBackupMail")),
        **_mailbox_attrs(e, address),
        "refuse_mail": _single(e, "mailstateRefuseMail"),
    }
    return _record("person", key, attrs, e, unit)


def _mailbox_attrs(e: Entry, address: str | tuple[str, ...] | None) -> dict[str, Any]:
    """What every mailbox entry (a person's or a unit's) carries: address, aliases, quota, lock."""
    locked, reason = _lock(e)
    return {
        "address": address,
        "aliases": _aliases(e, address),
        "quota": _int(_one(e, "mailstateQuota")),
        "locked": locked,
        "lock_reason": reason,
    }


def parse_unit_mailbox(raw: Mapping[str, Any], dn: str | None = None) -> Record:
    """A unit mailbox entry (``uid=<unit>,ou=mailboxes``) as a ``unit_mailbox`` Record."""
    e = normalize(raw)
    key = (rdn_value(dn) if dn else None) or _one(e, "uid") or ""
    attrs: dict[str, Any] = {
        "name": _single(e, "description"),
        **_mailbox_attrs(e, _address(e, "mail")),
        "refuse_mail": _single(e, "mailstateRefuseMail"),
    }
    return _record("unit_mailbox", key, attrs, e, key)


def parse_unit(raw: Mapping[str, Any], dn: str | None = None) -> Record:
    """A unit entry (``ou=<unit>,ou=units``) as a ``unit`` Record."""
    e = normalize(raw)
    key = rdn_value(dn) if dn else (_one(e, "ou") or "")
    attrs: dict[str, Any] = {
        "name": _single(e, "description"),
        "parent": _one(e, "mailstateParent"),
        "head": _one(e, "mailstateHead"),
        "delegates": tuple(sorted(set(e.get("mailstatedelegate", [])))),
        "address": _address(e, "mail"),
    }
    return _record("unit", key, attrs, e, key)


def parse_group(raw: Mapping[str, Any], dn: str | None = None) -> Record:
    """A group entry (``cn=<id>,ou=groups``) as a ``group`` Record (members as written, delivery expanded)."""
    e = normalize(raw)
    key = rdn_value(dn) if dn else (_one(e, "cn") or "")
    attrs: dict[str, Any] = {
        "name": _single(e, "displayName"),
        "address": _group_address(e),
        "members": tuple(sorted(set(e.get("mailstatemember", [])))),
        "delivers_to": _addrs(e.get("rfc822mailmember", [])),
    }
    return _record("group", key, attrs, e, None)


def parse_alias(raw: Mapping[str, Any], dn: str | None = None) -> Record:
    """An alias entry (``cn=<old address>,ou=aliases``) as an ``alias`` Record."""
    e = normalize(raw)
    key = (_addr(rdn_value(dn)) if dn else _addr(_one(e, "cn"))) or ""
    targets = _addrs(e.get("rfc822mailmember", []))
    attrs: dict[str, Any] = {
        "target": targets[0] if len(targets) == 1 else (", ".join(targets) or None),
        "expires": generalized_to_iso(_one(e, "mailstateExpires")),
    }
    return _record("alias", key, attrs, e, None)


PARSERS = {
    "person": parse_person,
    "unit_mailbox": parse_unit_mailbox,
    "unit": parse_unit,
    "group": parse_group,
    "alias": parse_alias,
}


def is_managed(kind: str, raw: Mapping[str, Any]) -> bool:
    """Whether an entry found in ``kind``'s subtree carries mailstate's marker class (else: unmanaged)."""
    classes = {c.lower() for c in normalize(raw).get("objectclass", [])}
    return MARKER[kind] in classes


def parse_entry(kind: str, dn: str, raw: Mapping[str, Any]) -> tuple[Record, bool]:
    """(record, managed): a managed entry parsed by its kind's parser, or an unmanaged one named by its DN."""
    e = normalize(raw)
    if is_managed(kind, e):
        return PARSERS[kind](e, dn), True
    attrs = {"dn": dn, "object_classes": tuple(sorted(e.get("objectclass", []))), "_digest": digest(e)}
    return Record(kind=kind, key=rdn_value(dn) or dn, attrs=attrs, provider=PROVIDER), False


def owner_ref(record: Record) -> str:
    """An address owner as the naming policy names it: ``bangnv``, ``unit:qlcn``, ``group:x``."""
    return {"person": "", "unit_mailbox": "unit:", "unit": "unit:", "group": "group:", "alias": "alias:"}[
        record.kind
    ] + record.key


def addresses_of(record: Record) -> list[str]:
    """Every address a record takes (its address, its aliases; an alias entry its own old address)."""
    if record.kind == "alias":
        return [record.key]
    address = record.attrs.get("address")
    out = [*(address if isinstance(address, tuple) else [address]), *(record.attrs.get("aliases") or ())]
    return [a for a in out if a]


# --------------------------------------------------------------------------------------------------
# Writing: Record attrs → entry


@dataclass(frozen=True)
class EntrySpec:
    """What one record looks like in the directory."""

    dn: str
    object_classes: tuple[str, ...]
    attrs: dict[str, list[str]]
    """Managed attributes (original case names) → exact values; an empty list means "absent"."""


def dn_of(kind: str, key: str, base: str) -> str:
    """The DN of a record: flat, ``uid=<id>,ou=people,<base>`` etc., RDN value escaped."""
    container, rdn_attr = CONTAINERS[kind]
    return safe_dn(f"{rdn_attr}={escape_rdn(key)},ou={container},{base}")


def _v(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, bool):
        return ["TRUE" if value else "FALSE"]
    if isinstance(value, (list, tuple, set, frozenset)):
        return sorted({_text(v) for v in value if v is not None and v != ""})
    return [_text(value)]


def build_entry(kind: str, key: str, attrs: Mapping[str, Any], base: str) -> EntrySpec:
    """The entry a record of ``kind`` maps to (docs/ldap.md); lock attributes are set apart (lock_values)."""
    a = dict(attrs)
    dn = dn_of(kind, key, base)
    out: dict[str, list[str]]
    if kind == "person":
        name = _text(a.get("name") or key)
        family, given = split_name(name)
        if len(name.split()) == 1:
            family = name
        address = _addr(a.get("address"))
        local = _addrs([x for x in [address, *(a.get("aliases") or ())] if x])
        out = {
            "uid": [key],
            "cn": [name],
            "sn": _v(a.get("family") or family),
            "givenName": _v(a.get("given") or given),
            "displayName": [name],
            "mail": _v(address),
            "mailLocalAddress": list(local),
            "departmentNumber": _v(a.get("unit")),
            "title": _v(a.get("title")),
            "telephoneNumber": _v(a.get("phone")),
            "mobile": _v(a.get("mobile")),
            "mailstateBackupMail": _v(_addr(a.get("backup_email"))),
            "mailstateQuota": _v(a.get("quota")),
            "mailstateRefuseMail": _v(a.get("refuse_mail")),
        }
    elif kind == "unit_mailbox":
        address = _addr(a.get("address"))
        out = {
            "uid": [key],
            "description": _v(a.get("name")),
            "mail": _v(address),
            "mailLocalAddress": list(_addrs([x for x in [address, *(a.get("aliases") or ())] if x])),
            "mailstateQuota": _v(a.get("quota")),
            "mailstateRefuseMail": _v(a.get("refuse_mail")),
        }
    elif kind == "unit":
        out = {
            "ou": [key],
            "description": _v(a.get("name")),
            "mailstateParent": _v(a.get("parent")),
            "mailstateHead": _v(a.get("head")),
            "mailstateDelegate": _v(a.get("delegates")),
            "mail": _v(_addr(a.get("address"))),
        }
    elif kind == "group":
        address = _addr(a.get("address"))
        out = {
            "cn": [key],
            "displayName": _v(a.get("name")),
            "mail": _v(address),
            "mailLocalAddress": _v(address),
            "mailstateMember": _v(a.get("members")),
            "rfc822MailMember": list(_addrs(a.get("delivers_to") or ())),
        }
    elif kind == "alias":
        out = {
            "cn": [key.lower()],
            "rfc822MailMember": _v(_addr(a.get("target"))),
            "mailstateExpires": _v(iso_to_generalized(a.get("expires"))),
        }
    else:
        raise ValueError(f"the ldap provider does not manage {kind!r}")
    return EntrySpec(dn=dn, object_classes=OBJECT_CLASSES[kind], attrs=out)


# Record fields that map to their own LDAP attribute(s) alone: an update of only these needs no read.
# (A person's name, address and aliases, a mailbox's address and aliases, a group's address feed
# several attributes together: such an update reads the entry first.)
_DIRECT: dict[str, dict[str, str]] = {
    "person": {
        "unit": "departmentNumber",
        "title": "title",
        "phone": "telephoneNumber",
        "mobile": "mobile",
        "backup_email": "mailstateBackupMail",
        "quota": "mailstateQuota",
        "given": "givenName",
        "family": "sn",
        "refuse_mail": "mailstateRefuseMail",
    },
    "unit_mailbox": {"name": "description", "quota": "mailstateQuota", "refuse_mail": "mailstateRefuseMail"},
    "unit": {
        "name": "description",
        "parent": "mailstateParent",
        "head": "mailstateHead",
        "delegates": "mailstateDelegate",
        "address": "mail",
    },
    "group": {"name": "displayName", "members": "mailstateMember", "delivers_to": "rfc822MailMember"},
    "alias": {"target": "rfc822MailMember", "expires": "mailstateExpires"},
}
_ADDRESS_FIELDS = {"backup_email", "address", "delivers_to", "target"}


def direct_values(kind: str, after: Mapping[str, Any]) -> dict[str, list[str]] | None:
    """The LDAP attributes an update of ``after`` sets, when each field maps to one attribute alone;
    None when a field needs the rest of the entry (then read, merge and rebuild). Lock fields and
    private (``_``) fields are left out: locks are set apart."""
    table = _DIRECT.get(kind, {})
    out: dict[str, list[str]] = {}
    for name, value in after.items():
        if name.startswith("_") or name in ("locked", "lock_reason"):
            continue
        attr = table.get(name)
        if attr is None:
            return None
        if name == "expires":
            out[attr] = _v(iso_to_generalized(value))
        elif name in _ADDRESS_FIELDS:
            values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
            out[attr] = list(_addrs(v for v in values if v))
        else:
            out[attr] = _v(value)
    return out


def lock_values(locked: bool, reason: str | None) -> dict[str, list[str]]:
    """The lock attributes: ``pwdAccountLockedTime: 000001010000Z`` + the reason (if any), or both absent."""
    if not locked:
        return {"pwdAccountLockedTime": [], "mailstateLockReason": []}
    return {"pwdAccountLockedTime": [LOCKED_TIME], "mailstateLockReason": _v(reason)}


# Attributes compared without regard to case (their LDAP equality rule ignores case).
_CASE_IGNORE = {"mail", "maillocaladdress", "rfc822mailmember", "mailstatebackupmail", "objectclass", "uid"}


def _same(name: str, have: list[str], want: list[str]) -> bool:
    if name.lower() in _CASE_IGNORE:
        return {v.lower() for v in have} == {v.lower() for v in want}
    return set(have) == set(want)


def modifications(
    current: Mapping[str, Any], wanted: Mapping[str, list[str]]
) -> dict[str, list[tuple[Any, list[str]]]]:
    """The ldap3 modify changes that make ``current`` hold exactly ``wanted`` (empty list = remove)."""
    cur = normalize(current)
    changes: dict[str, list[tuple[Any, list[str]]]] = {}
    for name, values in wanted.items():
        have = cur.get(name.lower(), [])
        if _same(name, have, values):
            continue
        changes[name] = [(MODIFY_REPLACE, list(values))]
    return changes


def missing_classes(current: Mapping[str, Any], wanted: Iterable[str]) -> list[str]:
    """Object classes of ``wanted`` that ``current`` lacks (added to an existing entry taken over)."""
    have = {c.lower() for c in normalize(current).get("objectclass", [])}
    return [c for c in wanted if c.lower() not in have]


def add_classes_change(classes: list[str]) -> dict[str, list[tuple[Any, list[str]]]]:
    return {"objectClass": [(MODIFY_ADD, classes)]} if classes else {}
