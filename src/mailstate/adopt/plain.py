"""`mailstate import --layout plain --people-base <dn>`: read a directory made by hand (no mailstate layout,
no iRedMail) into the same records import writes from a provider's snapshot.

- people: every ``inetOrgPerson`` with a ``mail`` under ``--people-base`` (the whole subtree); the id is
  ``uid``; the unit is the ``ou`` just under ``--people-base`` on the entry's path (``ou=Phòng Kế toán,
  ou=People`` → a unit named "Phòng Kế toán" with an id made from its name), else ``departmentNumber``;
  extra addresses from ``mailAlternateAddress``, ``mailLocalAddress``, ``shadowAddress`` become
  ``old_addresses`` (kept as aliases);
- groups: ``groupOfNames`` (members by DN) and ``nisMailAlias`` (``rfc822MailMember`` addresses) under the
  base DN; a ``mailList`` (iRedMail's) is reported: ``--layout iredmail`` reads those;
- the naming template that explains the most addresses (of a few the agencies use) is guessed and stated.

Every entry not taken (no ``mail``, an id mailstate refuses, a member found nowhere) is reported with why:
nothing is skipped silently. No value read here builds a path or a filter: ids are checked against the id
pattern by the importer, the filters are constants and DNs are compared parsed, never concatenated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ldap3 import SUBTREE
from ldap3.utils.dn import parse_dn

from mailstate.desired_state.naming import clean_local_part, person_local_part, split_unit_name
from mailstate.errors import MailstateError
from mailstate.model.records import Record
from mailstate.model.settings import ID_RE
from mailstate.text import visible

EXTRA_ADDRESSES = ("mailalternateaddress", "maillocaladdress", "shadowaddress")
TEMPLATES = ("{given}{initials}", "{initials}{given}", "{given}.{family}", "{family}.{given}", "{given}")
"""Person templates tried when guessing the naming rule (docs/naming.md's agencies' rules, without unit)."""


@dataclass
class PlainRead:
    records: list[Record] = field(default_factory=list)
    report: list[str] = field(default_factory=list)
    person_template: str | None = None


def _rdns(dn: str) -> list[tuple[str, str]]:
    return [(a.lower(), v) for a, v, _ in parse_dn(dn, escape=False)]


def _first(e: Mapping[str, Any], name: str) -> str | None:
    v = e.get(name)
    if isinstance(v, list | tuple):
        v = v[0] if v else None
    return str(v) if v not in (None, "") else None


def _all(e: Mapping[str, Any], name: str) -> list[str]:
    v = e.get(name)
    if v is None:
        return []
    return [str(x) for x in (v if isinstance(v, list | tuple) else [v]) if x not in (None, "")]


def unit_id_from_name(name: str) -> str | None:
    """An id for a unit known only by its name (an ``ou`` on the people's path): the initials of its kind
    of unit and its name's words (``Phòng Kế toán`` → ``pketoan``), as the naming rules read unit names."""
    kind, rest = split_unit_name(name)
    candidate = clean_local_part("".join(w[0] for w in kind) + "".join(rest))[:64]
    return candidate if ID_RE.fullmatch(candidate) else None


def guess_template(pairs: Iterable[tuple[str, str]]) -> tuple[str | None, int, int]:
    """The template that gives the most of the (name, local part) pairs: (template, matched, total)."""
    pairs = list(pairs)
    best: tuple[str | None, int] = (None, 0)
    for tpl in TEMPLATES:
        hits = sum(1 for name, local in pairs if person_local_part(name, tpl) == local)
        if hits > best[1]:
            best = (tpl, hits)
    return best[0], best[1], len(pairs)


def read_plain(conn: Any, base_dn: str, people_base: str, domain: str) -> PlainRead:
    """Every person, unit and group of a hand-made tree, as records; the rest reported (module doc)."""
    out = PlainRead()
    try:
        people_rdns = _rdns(people_base)
    except Exception as exc:
        raise MailstateError(f"import: --people-base {visible(people_base)!r} is not a DN") from exc

    def search(base: str, filt: str) -> list[tuple[str, dict[str, Any]]]:
        entries = conn.extend.standard.paged_search(
            base, filt, search_scope=SUBTREE, attributes=["*"], paged_size=500, generator=False
        )
        return [(e["dn"], {k.lower(): v for k, v in e["attributes"].items()})
                for e in entries or [] if e.get("type") == "searchResEntry"]

    units: dict[str, str] = {}  # id → name
    by_dn: dict[str, str] = {}  # normalised DN → person id
    by_mail: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    for dn, e in search(people_base, "(objectClass=inetOrgPerson)"):
        rdns = _rdns(dn)
        key, mail = _first(e, "uid"), _first(e, "mail")
        if not mail:
            out.report.append(f"person {visible(dn)}: not imported: no mail attribute (no mailbox)")
            continue
        if not key:
            out.report.append(f"person {visible(dn)}: not imported: no uid (the id mailstate needs)")
            continue
        unit = None
        path = rdns[1:len(rdns) - len(people_rdns)]  # the RDNs between the entry and --people-base
        ous = [v for a, v in path if a == "ou"]
        if ous:
            name = ous[-1]  # the ou right under --people-base
            unit = unit_id_from_name(name)
            if unit is None:
                out.report.append(f"unit {visible(name)!r} (the ou of {visible(dn)}): no id can be made from "
                                  "its name: its people go to units/_unassigned.toml")
            else:
                units.setdefault(unit, name)
        elif _first(e, "departmentnumber"):
            unit = _first(e, "departmentnumber")
            if unit and ID_RE.fullmatch(unit):
                units.setdefault(unit, unit)
        mail = mail.lower()
        extra = sorted({a.lower() for n in EXTRA_ADDRESSES for a in _all(e, n)} - {mail})
        name = _first(e, "cn") or key
        by_dn[dn.lower()] = key
        by_mail[mail] = key
        if mail.endswith(f"@{domain}"):
            pairs.append((name, mail.split("@", 1)[0]))
        out.records.append(Record("person", key, {
            "name": name, "unit": unit, "title": _first(e, "title"),
            "phone": _first(e, "telephonenumber"), "mobile": _first(e, "mobile"),
            "address": mail, "aliases": tuple(extra), "locked": False,
        }, provider="ldap", unit=unit))
    for uid, name in sorted(units.items()):
        out.records.append(Record("unit", uid, {"name": name, "_implicit": True}, provider="ldap", unit=uid))
        out.report.append(f"unit {uid}: made from the people's path or departmentNumber ({visible(name)!r}), "
                          "without a unit mailbox (mailbox = false): give it its parent and head")

    def group(dn: str, e: Mapping[str, Any], members: list[str], missing: list[str], address: str | None,
              what: str) -> None:
        key = _first(e, "cn")
        if not key or not ID_RE.fullmatch(key):
            out.report.append(f"group {visible(dn)} ({what}): not imported: its cn is no valid id")
            return
        for m in missing:
            out.report.append(f"group {key} ({what}): member {visible(m)} is no imported person: left out")
        out.records.append(Record("group", key, {"name": _first(e, "description") or key, "address": address,
                                                 "members": tuple(sorted(set(members)))}, provider="ldap"))

    for dn, e in search(base_dn, "(objectClass=groupOfNames)"):
        found = [by_dn[m.lower()] for m in _all(e, "member") if m.lower() in by_dn]
        missing = [m for m in _all(e, "member") if m.lower() not in by_dn]
        group(dn, e, found, missing, _first(e, "mail"), "groupOfNames")
    for dn, e in search(base_dn, "(objectClass=nisMailAlias)"):
        targets = [a.lower() for a in _all(e, "rfc822mailmember")]
        local = _first(e, "cn")
        address = f"{local}@{domain}" if local and "@" not in local else local
        group(dn, e, [by_mail[a] for a in targets if a in by_mail], [a for a in targets if a not in by_mail],
              address, "nisMailAlias")
    for dn, _e in search(base_dn, "(objectClass=mailList)"):
        out.report.append(f"group {visible(dn)} (mailList): not imported: iRedMail's lists keep their "
                          "members on the members' memberOfGroup: import with --layout iredmail")

    tpl, hits, total = guess_template(pairs)
    if tpl is not None:
        out.person_template = tpl
        out.report.append(f"naming: person = {tpl!r} guessed: it gives {hits} of the {total} addresses of "
                          "the domain (the others stay pinned as found)")
    else:
        out.report.append(f"naming: no template of {', '.join(TEMPLATES)} gives any of the {total} "
                          "addresses: write [naming] yourself (every address is pinned as found)")
    return out
