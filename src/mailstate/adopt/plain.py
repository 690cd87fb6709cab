"""`mailstate import --layout plain --people-base <dn>`: read a directory made by hand (no mailstate layout,
no iRedMail) into the same records import writes from a provider's snapshot.

- people: every ``inetOrgPerson`` under ``--people-base`` (the whole subtree); the id is ``uid``; the
  name is ``cn`` in NFC, family name first (a ``cn`` written given name first, "Hoa Trần Thị", is turned
  round when a later word is a common Vietnamese family name, and reported); the unit is the ``ou`` path
  between the entry and ``--people-base`` (``ou=Tổ Thuế,ou=Phòng Kế toán,ou=People`` → the unit "Tổ Thuế"
  whose parent is "Phòng Kế toán", ids made from their names, a clash made distinct and reported), else
  ``departmentNumber``; extra addresses from ``mailAlternateAddress``, ``mailLocalAddress``,
  ``shadowAddress`` become ``old_addresses``; an account disabled the usual ways (``pwdAccountLockedTime``,
  an expired ``shadowExpire``, a ``loginShell`` that refuses logins, an ``accountStatus`` other than
  ``active``) comes back suspended, disabled as found, with what disabled it;
- groups: ``groupOfNames`` with a ``mail`` (members by DN: people, or other groups as ``group:<id>``) and
  ``nisMailAlias`` (``rfc822MailMember`` addresses) under the base DN; a ``mailList`` (iRedMail's) is
  reported: ``--layout iredmail`` reads those;
- the naming template that explains the most addresses (of a few the agencies use) is guessed and stated,
  with the addresses it does not give (pinned as found, as every address is).

Every entry not taken (no ``mail``, an id mailstate refuses, an address already someone else's, a member
found nowhere, an outside recipient) is reported with its DN and why: nothing is skipped silently. No value
read here builds a path or a filter: ids are checked against the id pattern before anything refers to
them, the filters are constants and DNs are compared parsed (attribute names and values folded), never as
text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from ldap3 import SUBTREE
from ldap3.utils.dn import parse_dn

from mailstate.desired_state.naming import clean_local_part, person_local_part, split_unit_name, word_key
from mailstate.errors import MailstateError
from mailstate.model.i18n import _
from mailstate.model.records import Record
from mailstate.model.settings import ID_RE
from mailstate.text import control_message, visible

EXTRA_ADDRESSES = ("mailalternateaddress", "maillocaladdress", "shadowaddress")
TEMPLATES = ("{given}{initials}", "{initials}{given}", "{given}.{family}", "{family}.{given}", "{given}")
"""Person templates tried when guessing the naming rule (docs/naming.md's agencies' rules, without unit)."""

FAMILY_NAMES = frozenset(word_key(n) for n in (
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô",
    "Dương", "Lý", "Đinh", "Trương", "Lâm", "Đoàn", "Trịnh", "Lương", "Tô", "Hà", "Tạ", "Châu", "Cao", "Lưu",
    "Chu", "Thái", "Kiều", "Quách", "Mạc", "Triệu", "Tăng", "Lại", "Tôn", "Mai", "Đào", "Hứa", "Phùng",
    "La", "Thân", "Vương", "Giang", "Khổng", "Âu", "Diệp", "Đàm", "Đồng", "Kim", "Lạc", "Lục", "Từ",
))
"""The common Vietnamese family names (by their transliterated key): a cn that starts with none of them and
has one further on was written given name first ("Hoa Trần Thị"). "Văn" is left out: it is a middle name
far more often than a family name."""

NOLOGIN_SHELLS = frozenset({"/sbin/nologin", "/usr/sbin/nologin", "/bin/false", "/usr/bin/false"})


@dataclass
class PlainRead:
    records: list[Record] = field(default_factory=list)
    report: list[str] = field(default_factory=list)
    person_template: str | None = None


def _rdns(dn: str) -> list[tuple[str, str]]:
    return [(a.lower(), v) for a, v, _sep in parse_dn(dn, escape=False)]


def dn_key(dn: str) -> tuple[tuple[str, str], ...] | None:
    """A DN as compared by the directory (attribute names and values case-folded, text NFC, spaces after
    the commas ignored), or None when it is no DN."""
    try:
        return tuple((a.strip().lower(), unicodedata.normalize("NFC", _unescape(v)).strip().casefold())
                     for a, v, _sep in parse_dn(_SPACED.sub(",", dn.strip()), escape=False))
    except Exception:
        return None


def _unescape(value: str) -> str:
    """An RDN value as written (RFC 4514: ``\\,`` and ``\\c3\\b2`` hex pairs, UTF-8) back to its text."""
    out, i = bytearray(), 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and re.fullmatch(r"[0-9a-fA-F]{2}", value[i + 1:i + 3]):
            out.append(int(value[i + 1:i + 3], 16))
            i += 3
        elif ch == "\\" and i + 1 < len(value):
            out += value[i + 1].encode()
            i += 2
        else:
            out += ch.encode()
            i += 1
    return out.decode("utf-8", errors="replace")


_SPACED = re.compile(r"(?<!\\),\s+")
"""A comma between RDNs followed by spaces ("uid=a, ou=b", as people type member DNs): the spaces go."""


def _first(e: Mapping[str, Any], name: str) -> str | None:
    v = e.get(name)
    if isinstance(v, list | tuple):
        v = v[0] if v else None
    return unicodedata.normalize("NFC", str(v)) if v not in (None, "") else None


def _all(e: Mapping[str, Any], name: str) -> list[str]:
    v = e.get(name)
    if v is None:
        return []
    return [unicodedata.normalize("NFC", str(x))
            for x in (v if isinstance(v, list | tuple) else [v]) if x not in (None, "")]


def unit_id_from_name(name: str) -> str | None:
    """An id for a unit known only by its name (an ``ou`` on the people's path): the initials of its kind
    of unit and its name's words (``Phòng Kế toán`` → ``pketoan``), as the naming rules read unit names.
    A name holding a control or bidi character gives none (its people are reported, never guessed)."""
    if control_message(name) is not None:
        return None
    kind, rest = split_unit_name(unicodedata.normalize("NFC", name))
    candidate = clean_local_part("".join(w[0] for w in kind) + "".join(rest))[:64]
    return candidate if ID_RE.fullmatch(candidate) else None


def family_first(cn: str, sn: str | None = None) -> str:
    """``cn`` with the family name first, as the naming rules read names: "Hoa Trần Thị" → "Trần Thị Hoa".

    Turned round only when the first word is no common family name and a later one is (the ``sn`` when it
    is one of the cn's later words, else the first such word); otherwise kept as written."""
    words = unicodedata.normalize("NFC", cn).split()
    keys = [word_key(w) for w in words]
    if len(words) < 2 or keys[0] in FAMILY_NAMES:
        return " ".join(words)
    sn_key = word_key(sn) if sn else None
    candidates = [i for i in range(1, len(words)) if keys[i] in FAMILY_NAMES]
    if sn_key and sn_key in keys[1:] and (sn_key in FAMILY_NAMES or not candidates):
        at = keys.index(sn_key, 1)
    elif candidates:
        at = candidates[0]
    else:
        return " ".join(words)
    return " ".join(words[at:] + words[:at])


def disabled_by(e: Mapping[str, Any], today: date | None = None) -> str | None:
    """What disabled an entry the ways a directory made by hand does, as ``attribute: value``; None if
    nothing did. ``e`` has its attribute names in lower case."""
    locked = _first(e, "pwdaccountlockedtime")
    if locked:
        return f"pwdAccountLockedTime: {locked}"
    expire = _first(e, "shadowexpire")
    if expire and expire.lstrip("-").isdigit() and int(expire) >= 0:
        day = date(1970, 1, 1).toordinal() + int(expire)
        if day <= (today or datetime.now(UTC).date()).toordinal():
            return f"shadowExpire: {expire} ({date.fromordinal(day).isoformat()})"
    shell = _first(e, "loginshell")
    if shell and shell.strip() in NOLOGIN_SHELLS:
        return f"loginShell: {shell}"
    status = _first(e, "accountstatus")
    if status and status.strip().lower() != "active":
        return f"accountStatus: {status}"
    return None


def guess_template(pairs: Iterable[tuple[str, str]]) -> tuple[str | None, int, int]:
    """The template that gives the most of the (name, local part) pairs: (template, matched, total)."""
    pairs = list(pairs)
    best: tuple[str | None, int] = (None, 0)
    for tpl in TEMPLATES:
        hits = sum(1 for name, local in pairs if person_local_part(name, tpl) == local)
        if hits > best[1]:
            best = (tpl, hits)
    return best[0], best[1], len(pairs)


PERSON_ATTRS = ["*", "pwdAccountLockedTime"]
"""What a person is read with: every user attribute and the one operational attribute a lock lives in
(``*`` alone leaves operational attributes out, so a ppolicy lock would read as no lock)."""


def read_plain(conn: Any, base_dn: str, people_base: str, domain: str,
               today: date | None = None) -> PlainRead:
    """Every person, unit and group of a hand-made tree, as records; the rest reported (module doc)."""
    out = PlainRead()
    try:
        people_rdns = _rdns(people_base)
    except Exception as exc:
        raise MailstateError(_("import: --people-base {value} is not a DN").format(
            value=repr(visible(people_base)))) from exc
    domain = domain.lower()

    def search(base: str, filt: str, attributes: list[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
        entries = conn.extend.standard.paged_search(
            base, filt, search_scope=SUBTREE, attributes=attributes or ["*"], paged_size=500, generator=False
        )
        return sorted(((e["dn"], {k.lower(): v for k, v in e["attributes"].items()})
                       for e in entries or [] if e.get("type") == "searchResEntry"),
                      key=lambda de: (len(de[0]), de[0]))

    def report(what: str, dn: str, why: str) -> None:
        out.report.append(f"{what} {visible(dn)}: {why}")

    ids: dict[str, str] = {}  # every id taken (people, units, groups) → what took it, for uniqueness
    unit_of_path: dict[tuple[str, ...], str | None] = {}  # ou names from the top → unit id
    units: dict[str, tuple[str, str | None]] = {}  # id → (name, parent id)
    ou_dns: dict[tuple[str, ...], str] = {}  # ou names from the top → the OU's DN
    unit_dns: dict[str, str] = {}

    def unit_for(path: tuple[str, ...], dn: str) -> str | None:
        if path in unit_of_path:
            return unit_of_path[path]
        parent = unit_for(path[:-1], dn) if len(path) > 1 else None
        name = path[-1]
        base = unit_id_from_name(name)
        uid: str | None = None
        if base is None:
            report(_("unit"), ou_dns.get(path, name),
                   _("no id can be made from its name (the ou of {dn}): its people go to "
                     "units/_unassigned.toml").format(dn=visible(dn)))
        else:
            uid, n = base, 2
            while uid in ids:
                uid = f"{base[:60]}-{n}"
                n += 1
            if uid != base:
                report(_("unit"), ou_dns.get(path, name),
                       _("its name gives the id {base}, already {other}: written as {id}").format(
                           base=base, other=ids[base], id=uid))
            ids[uid] = _("the unit {name}").format(name=repr(visible(name)))
            units[uid] = (name, parent)
            unit_dns[uid] = ou_dns.get(path, "")
        unit_of_path[path] = uid
        return uid

    people: list[tuple[str, dict[str, Any]]] = []
    for dn, e in search(people_base, "(objectClass=inetOrgPerson)", PERSON_ATTRS):
        key, mail = _first(e, "uid"), _first(e, "mail")
        if not mail:
            report(_("person"), dn, _("not imported: no mail attribute (no mailbox)"))
            continue
        if not key:
            report(_("person"), dn, _("not imported: no uid (the id mailstate needs)"))
            continue
        if not ID_RE.fullmatch(key):
            report(_("person"), dn, _("not imported: its uid {value} is not a valid id ({help})").format(
                value=repr(visible(key)), help=id_help()))
            continue
        if len(_all(e, "uid")) > 1 or len(_all(e, "mail")) > 1:
            report(_("person"), dn, _("holds several uid or mail values: the first is imported ({id}, "
                                      "{address})").format(id=key, address=visible(mail.lower())))
        people.append((dn, e))
    # who keeps an address two entries hold: the one whose uid is its local part, else the first by DN
    people.sort(key=lambda de: (str(_first(de[1], "mail")).lower().split("@")[0] != _first(de[1], "uid"),
                                de[0].lower()))
    # units first (from the people's paths), so a person's id never takes a unit's first
    paths: dict[str, tuple[str, ...]] = {}
    for dn, _e in people:
        raw = parse_dn(dn, escape=False)
        ous = [(_unescape(raw[i][1]), ",".join(f"{a}={v}" for a, v, _sep in raw[i:]))
               for i in range(1, len(raw) - len(people_rdns))  # the RDNs between the entry and --people-base
               if raw[i][0].strip().lower() == "ou"][::-1]  # from the top down
        for k in range(len(ous)):
            ou_dns.setdefault(tuple(name for name, _d in ous[:k + 1]), ous[k][1])
        paths[dn] = tuple(name for name, _d in ous)
        if paths[dn]:
            unit_for(paths[dn], dn)
    by_dn: dict[tuple[tuple[str, str], ...], str] = {}  # parsed DN → person id
    by_mail: dict[str, str] = {}  # every address → owner id
    pairs: list[tuple[str, str, str]] = []
    for dn, e in people:
        key = str(_first(e, "uid"))
        mail = str(_first(e, "mail")).lower()
        if key in ids:
            report(_("person"), dn, _("not imported: the id {id} is already {other}").format(
                id=key, other=ids[key]))
            continue
        if mail in by_mail:
            report(_("person"), dn, _("not imported: its address {address} is already {other}'s").format(
                address=visible(mail), other=by_mail[mail]))
            continue
        unit = unit_for(paths[dn], dn) if paths[dn] else None
        dept = _first(e, "departmentnumber")
        if not paths[dn] and dept:
            if ID_RE.fullmatch(dept) and (dept in units or dept not in ids):
                if dept not in units:
                    ids[dept] = _("the unit {name}").format(name=repr(dept))
                    units[dept] = (dept, None)
                unit = dept
            else:
                report(_("person"), dn, _("departmentNumber {value} is no usable unit id: the person goes "
                                          "to units/_unassigned.toml").format(value=repr(visible(dept))))
        extra: list[str] = []
        for a in sorted({a.lower() for n in EXTRA_ADDRESSES for a in _all(e, n)} - {mail}):
            if a in by_mail:
                report(_("person"), dn, _("the address {address} is already {other}'s: left out of "
                                          "old_addresses").format(address=visible(a), other=by_mail[a]))
            else:
                extra.append(a)
        cn = _first(e, "cn") or key
        name = family_first(cn, _first(e, "sn"))
        if name != " ".join(cn.split()):
            report(_("person"), dn, _("name written family name first: {name} (cn {cn})").format(
                name=repr(visible(name)), cn=repr(visible(cn))))
        ids[key] = _("the person {id}").format(id=key)
        by_dn[dn_key(dn) or ()] = key
        for a in (mail, *extra):
            by_mail[a] = key
        if mail.endswith(f"@{domain}"):
            pairs.append((name, mail.split("@", 1)[0], key))
        why = disabled_by(e, today)
        attrs: dict[str, Any] = {
            "_dn": dn, "name": name, "unit": unit, "title": _first(e, "title"),
            "phone": _first(e, "telephonenumber"), "mobile": _first(e, "mobile"),
            "address": mail, "aliases": tuple(extra), "locked": why is not None,
        }
        if why is not None:
            attrs["_refused"] = True
            attrs["_disabled_by"] = why
        out.records.append(Record("person", key, attrs, provider="ldap", unit=unit))
    for uid, (name, parent) in sorted(units.items()):
        out.records.append(Record("unit", uid, {"_dn": unit_dns.get(uid), "name": name, "parent": parent,
                                                "_implicit": True},
                                  provider="ldap", unit=uid))
        out.report.append(_("unit {id}: made from the people's path or departmentNumber ({name}), without a "
                            "unit mailbox (mailbox = false): give it its head").format(
                                id=uid, name=repr(visible(name))))

    groups: list[tuple[str, str, dict[str, Any], str]] = []  # (kind, dn, entry, id)
    group_dns: dict[tuple[tuple[str, str], ...], str] = {}
    found = [("groupOfNames", dn, e) for dn, e in search(base_dn, "(objectClass=groupOfNames)")]
    found += [("nisMailAlias", dn, e) for dn, e in search(base_dn, "(objectClass=nisMailAlias)")]
    for what, dn, e in found:
        key = _first(e, "cn")
        if what == "groupOfNames" and not (_first(e, "mail") or _first(e, "maillocaladdress")):
            report(_("group"), dn, _("not imported: a groupOfNames without an address (mail or "
                                     "mailLocalAddress) is no mail group: give it one and import again if "
                                     "mail reaches it another way"))
            continue
        if not key or not ID_RE.fullmatch(key):
            report(_("group"), dn, _("not imported ({what}): its cn {value} is not a valid id "
                                     "({help})").format(what=what, value=repr(visible(key or "")),
                                                        help=id_help()))
            continue
        if key in ids:
            report(_("group"), dn, _("not imported: the id {id} is already {other}").format(
                id=key, other=ids[key]))
            continue
        address = _group_address(e, what, key, domain)
        if address in by_mail:
            report(_("group"), dn, _("not imported: its address {address} is already {other}'s").format(
                address=visible(address), other=by_mail[address]))
            continue
        by_mail[address] = f"group:{key}"
        ids[key] = _("the group {id}").format(id=key)
        group_dns[dn_key(dn) or ()] = key
        groups.append((what, dn, e, key))
    for what, dn, e, key in groups:
        members: set[str] = set()
        address = _group_address(e, what, key, domain)
        if what == "groupOfNames":
            for m in _all(e, "member"):
                mk = dn_key(m)
                if mk in by_dn:
                    members.add(by_dn[mk])
                elif mk in group_dns and group_dns[mk] != key:
                    members.add(f"group:{group_dns[mk]}")
                else:
                    report(_("group"), dn, _("member {member} is no imported person or group: left out "
                                             "(it received nothing from the list)").format(member=visible(m)))
        else:
            for t in (a.lower() for a in _all(e, "rfc822mailmember")):
                if t in by_mail:
                    members.add(by_mail[t])
                else:
                    report(_("group"), dn, _("cannot be adopted as is: the recipient {address} is no address "
                                             "of an imported person: a mailstate group delivers to its "
                                             "members only, so {address} would stop receiving its "
                                             "mail").format(address=visible(t)))
        out.records.append(Record("group", key, {"_dn": dn, "name": _first(e, "description") or key,
                                                 "address": address,
                                                 "members": tuple(sorted(members))}, provider="ldap"))
    for dn, _e in search(base_dn, "(objectClass=mailList)"):
        report(_("group"), dn, _("not imported: iRedMail's lists (mailList) keep their members on the "
                                 "members' memberOfGroup: import with --layout iredmail"))

    tpl, hits, total = guess_template((n, local) for n, local, _k in pairs)
    if tpl is not None:
        out.person_template = tpl
        misses = sorted(f"{k} ({local})" for n, local, k in pairs if person_local_part(n, tpl) != local)
        out.report.append(_("naming: person = {template} guessed: it gives {hits} of the {total} addresses "
                            "of the domain; the others stay pinned as found: {misses}").format(
                                template=repr(tpl), hits=hits, total=total, misses=", ".join(misses) or "-"))
    else:
        out.report.append(_("naming: no template of {templates} gives any of the {total} addresses: write "
                            "[naming] yourself (every address is pinned as found)").format(
                                templates=", ".join(TEMPLATES), total=total))
    return out


def _group_address(e: Mapping[str, Any], what: str, key: str, domain: str) -> str:
    if what == "groupOfNames":
        return str(_first(e, "mail") or _first(e, "maillocaladdress")).lower()
    return f"{key}@{domain}"


def id_help() -> str:
    """What an id may hold, in the language of the run."""
    return _("a lower-case ASCII letter, then letters, digits, '.', '_' or '-' (at most 64)")
