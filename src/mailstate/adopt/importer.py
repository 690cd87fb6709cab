"""`mailstate import`: write a state repository from the live directory, to adopt an existing system.

Reads the LDAP provider's snapshot (the same bulk read a plan does) and writes, with tomlkit:
``mailstate.toml`` (organisation, the LDAP connection settings without any secret), one
``units/<id>.toml`` per unit holding its people, and ``groups.toml``. People whose unit is unknown go to
``units/_unassigned.toml``. Addresses are written pinned, so a plan right after the import is empty
for what the directory holds.

The directory is input like any other: an entry whose id (``ou=``, ``uid=``, ``cn=`` of its DN) is not a
valid id — ``ou=../../x``, ``ou=/tmp/x`` — is not imported but reported (``Imported.skipped``), and every
file is checked to resolve inside ``out`` before anything is written. Text holding a control or bidi
character (a cn with ESC or a newline) is written escaped by tomlkit and reported: ``validate`` refuses it
until it is fixed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from mailstate.adopt.plain import PlainRead, id_help, read_plain
from mailstate.desired_state.loader import load_state
from mailstate.desired_state.schema import Organization, Providers, State
from mailstate.errors import MailstateError
from mailstate.model.i18n import N_, _
from mailstate.model.provider import Snapshot
from mailstate.model.records import Record
from mailstate.model.settings import ID_RE, format_size
from mailstate.providers.ldap.provider import LdapProvider
from mailstate.providers.registry import close_providers, directory_provider, open_providers
from mailstate.text import CONTROL_RE, control_message, visible


@dataclass
class Imported:
    """What ``import_state`` did: the files written, and each live entry left out or to fix, and why."""
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    written: Counter[str] = field(default_factory=Counter)
    """How many of each table were written (person, unit, group, shared_folder, access_grant)."""
    report: Path | None = None


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def _inside(root: Path, path: Path) -> Path:
    """``path`` if it resolves inside ``root`` (symbolic links followed), else a MailstateError: nothing
    read from the directory may make import write elsewhere."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise MailstateError(_("import: {path} is outside {root}: nothing was written").format(
            path=visible(str(path)), root=root))
    return path


LAYOUTS = {"default": "ldap", "iredmail": "iredmail", "plain": "ldap"}
"""``--layout``: the provider that reads the directory (docs/ldap.md's layout, docs/iredmail.md's); ``plain``
(a tree made by hand) is read by adopt.plain over the ldap provider's connection."""
REPORT = "import-report.txt"
"""The file in ``--out`` listing every live entry not written to the TOML (or written to fix), and why."""


def _state_for(domain: str | None, name: str | None, state_dir: Path | None, out: Path,
               layout: str = "default") -> Any:

    if domain is None:
        if state_dir is None or not (Path(state_dir) / "mailstate.toml").exists():
            raise MailstateError(_("import: give --domain (or --state with a mailstate.toml naming it)"))
        return load_state(Path(state_dir))
    try:
        org = Organization(name=name or domain, domain=domain)
    except Exception as exc:  # pydantic's error, made one line
        raise MailstateError(_("import: --domain {value} is not a valid domain").format(
            value=repr(visible(domain)))) from exc
    providers: dict[str, Any] = {}
    if LAYOUTS.get(layout) == "iredmail":
        providers["iredmail"] = {}
    elif layout not in LAYOUTS:
        raise MailstateError(_("import: --layout {value} is not one of {choices}").format(
            value=repr(visible(layout)), choices=", ".join(LAYOUTS)))
    if providers:
        return State(root=out, organization=org, providers=Providers.model_validate(providers))
    return State(root=out, organization=org)


def _clean(table: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: (list(v) if isinstance(v, tuple) else v) for k, v in table.items() if v not in (None, (), [], "")
    }


POLICY_TABLES = ("naming", "lifecycle", "regulation", "password", "safety")
"""Tables copied from --state's mailstate.toml (quota comes from the directory itself)."""

# A lock reason as the lifecycle writes it, in either language (mailstate.i18n; its citation or setting
# at the end), or as older versions wrote it ("<citation>: suspended: …", "left on YYYY-MM-DD").
_SUSPENDED = re.compile(
    r"^(?:[^:\n]*: )?(?:suspended|tạm khóa): (?P<reason>.+?)"
    r"(?:, (?:under|theo) `suspended`| \((?:Article|Điều) [^()]*\))?$", re.S)
_LEFT_ON = re.compile(r"\bleft on (?P<day>\d{4}-\d{2}-\d{2})\b")
_LEFT_ON_VI = re.compile(r"\bnghỉ việc từ (?P<d>\d{2})/(?P<m>\d{2})/(?P<y>\d{4})\b")


def _lock_fields(reason: str | None, refused: bool = False, disabled_by: str | None = None) -> dict[str, Any]:
    """The TOML fields that explain a live lock: the lifecycle's own reasons are turned back into
    ``left_on`` (the leaving rules) or ``suspended`` (a temporary lock); any other
    reason (set by hand) becomes ``suspended``."""
    if not reason:
        if refused:  # disabled by hand (iRedMail's accountStatus): kept as found, its mail still refused
            import tomlkit

            table = tomlkit.inline_table()
            why = f"{_(DISABLED_BEFORE)} ({disabled_by})" if disabled_by else _(DISABLED_BEFORE)
            table.update({"reason": why, "disabled": True})
            return {"suspended": table}
        return {"suspended": _("imported: locked in the directory")}
    m = _SUSPENDED.match(reason)
    if m:
        return {"suspended": m.group("reason")}
    m = _LEFT_ON.search(reason)
    if m:
        return {"left_on": date.fromisoformat(m.group("day"))}
    v = _LEFT_ON_VI.search(reason)
    if v:
        return {"left_on": date(int(v.group("y")), int(v.group("m")), int(v.group("d")))}
    return {"suspended": reason}


DISABLED_BEFORE = N_("disabled in the directory before mailstate")
"""The reason an account found disabled without a reason of mailstate's is imported with."""




def toml_text(doc: Any) -> str:
    """``doc`` as TOML where no control, separator or bidi character stays raw. tomlkit escapes C0 and DEL
    but writes C1 (U+009B is a one-byte CSI), U+2028/9 and the bidi overrides as they are, which would make
    the file display differently from what it holds; each becomes a ``\\uXXXX`` escape (every string we
    write is a basic string, where that escape means the same character). Line breaks stay."""
    import tomlkit

    return CONTROL_RE.sub(lambda m: m.group(0) if m.group(0) == "\n" else f"\\u{ord(m.group(0)):04x}",
                          tomlkit.dumps(doc))


def _check_text(result: Imported, what: str, attrs: Mapping[str, Any]) -> None:
    """Report each text attribute of a live entry that holds a control or bidi character."""
    for name, value in attrs.items():
        if name.startswith("_"):
            continue
        for v in value if isinstance(value, list | tuple) else [value]:
            msg = control_message(v) if isinstance(v, str) else None
            if msg is not None:
                result.skipped.append(_("{what}: {field} {message} (written escaped; fix it in the TOML or "
                                        "the directory: validate refuses it)").format(
                                            what=what, field=name, message=msg))
                break


def _keep_references_and_addresses_whole(result: Imported, by_kind: dict[str, list[Record]]) -> None:
    """What is written refers only to what is written, and holds each address once: a group member, a
    unit's head or delegate that was left out (an id mailstate refuses, a kind not read) is left out of the
    reference too, and an old address another entry holds already (its own address first, else the first
    by id) is left out of the later one; each reported. Otherwise validate refuses the whole state."""
    people = {r.key for r in by_kind.get("person", [])}
    units = {r.key for r in by_kind.get("unit", [])} | {r.key for r in by_kind.get("unit_mailbox", [])}
    groups = {r.key for r in by_kind.get("group", [])}

    def known(ref: str) -> bool:
        kind, _sep, key = ref.rpartition(":")
        return key in {"": people, "unit": units, "group": groups}.get(kind, set())

    for kind, fields in (("group", ("members",)), ("unit", ("head", "delegates"))):
        for i, rec in enumerate(by_kind.get(kind, [])):
            attrs = dict(rec.attrs)
            for name in fields:
                value = rec.attrs.get(name)
                refs = [value] if isinstance(value, str) else list(value or ())
                gone = [ref for ref in refs if not known(str(ref))]
                for ref in gone:
                    result.skipped.append(_("{kind} {id}: {field} {ref} is not imported: left out").format(
                        kind=kind, id=rec.key, field=name.rstrip("s"), ref=visible(str(ref))))
                if gone:
                    kept = [ref for ref in refs if known(str(ref))]
                    attrs[name] = (kept[0] if kept else None) if isinstance(value, str) else tuple(kept)
            by_kind[kind][i] = replace(rec, attrs=attrs)
    owner: dict[str, str] = {}
    ordered = [r for k in ("unit", "unit_mailbox", "person", "group") for r in sorted(by_kind.get(k, []),
                                                                                      key=lambda r: r.key)]
    for rec in ordered:
        address = rec.attrs.get("address")
        if isinstance(address, str):
            if address in owner and owner[address] != rec.key:
                result.skipped.append(_("{kind} {id}: its address {address} is also {other}'s: validate "
                                        "refuses it until one of them changes").format(
                                            kind=rec.kind, id=rec.key, address=address, other=owner[address]))
            owner.setdefault(address, rec.key)
    by_kind.get("person", []).sort(key=lambda r: r.key)
    for i, rec in enumerate(by_kind.get("person", [])):
        aliases = [a for a in (rec.attrs.get("aliases") or ()) if a != rec.attrs.get("address")]
        kept = []
        for a in aliases:
            if owner.setdefault(a, rec.key) == rec.key:
                kept.append(a)
            else:
                result.skipped.append(_("person {id}: the address {address} is already {other}'s: left out "
                                        "of old_addresses").format(id=rec.key, address=a, other=owner[a]))
        by_kind["person"][i] = replace(rec, attrs={**rec.attrs, "aliases": tuple(kept)})


RIGHTS_FILE = "shared_folders.toml"
"""The file of ``--out`` holding the shared folders and access grants found on the IMAP server."""


def _import_imap_rights(out: Path, result: Imported, with_directory: bool = True) -> Path | None:
    """The IMAP rights the directory does not explain, written as TOML: with the state just written, a plan
    of the providers that keep rights (IMAP) is made; each right it would revoke becomes what gives it —
    a right on a folder a ``[[shared_folder]]`` (its purpose from the folder's METADATA), a right on a
    whole mailbox an ``[[access_grant]]`` ending today (its end date and decision are for the reviewer:
    the report says so). Rights that no named set (read, write, full) gives, identifiers that are no
    mailbox of the state, and any other change of that plan are reported. Nothing to read (no IMAP
    provider configured): None."""
    import tomlkit

    from mailstate.errors import ValidationError
    from mailstate.model.records import INBOX, parse_acl_key
    from mailstate.model.rights import RIGHTS
    from mailstate.providers.registry import configured_providers, provider_class
    from mailstate.reconciler.pipeline import make_plan
    from mailstate.reconciler.plan.plan import plan_changes, plan_unlisted

    try:
        state = load_state(out)
    except ValidationError:
        result.skipped.append(_("IMAP rights: not read: the state written does not pass validate yet (the "
                                "report says why); fix it, then compare with `mailstate plan`"))
        return None
    names = configured_providers(state)
    if not any("acl" in provider_class(n).kinds for n in names):
        return None
    today = date.today()
    try:
        plan = make_plan(out, providers=names, as_of=today)  # all: IMAP tells unit mailboxes by the directory
    except MailstateError as exc:  # (ProviderError is one) the TOML is written: say what was not read
        result.skipped.append(_("IMAP rights: not read: {error}; the TOML holds no shared folder or access "
                                "grant: import again when the server answers").format(
                                    error=visible(str(exc))))
        return None
    purposes = {r.key: r.attrs.get("purpose") for r in plan_unlisted(plan) if r.kind == "shared_folder"}
    named = {v: k for k, v in RIGHTS.items() if k in ("read", "write", "full")}

    def ref_of(login: str) -> str | None:
        if login in state.people:
            return login
        if login in state.units:
            return f"unit:{login}"
        return None

    folders: dict[tuple[str, str], dict[str, list[str]]] = {}
    grants: list[dict[str, Any]] = []
    for c in plan_changes(plan):
        rights = str((c.before or {}).get("rights") or "")
        if c.kind == "acl" and c.action.label == "revoke" and rights:
            key = parse_acl_key(c.key)
            who, level = ref_of(key.identifier), named.get(rights)
            if who is None or level is None or (key.folder != INBOX and level == "full"):
                result.skipped.append(_("acl {key}: cannot be adopted as is: {rights} for {who}, which no "
                                        "shared folder or access grant of the state gives: the first plan "
                                        "revokes it").format(key=visible(c.key), rights=rights,
                                                             who=visible(key.identifier)))
                continue
            if key.folder == INBOX:
                grants.append({"mailbox": key.ref, "to": who, "rights": level, "until": today,
                               "reason": _("imported: found on the mailbox")})
                result.skipped.append(_("access_grant {mailbox} → {to} ({rights}): imported from the IMAP "
                                        "server ending today ({until}): write its end date and the decision "
                                        "that allows it").format(mailbox=key.ref, to=who, rights=level,
                                                                 until=today.isoformat()))
            else:
                folders.setdefault((key.ref, key.folder), {}).setdefault(level, []).append(who)
            continue
        if not with_directory and c.kind not in ("acl", "shared_folder"):
            continue  # (a tree made by hand: each entry is named already, with where mailstate keeps it)
        result.skipped.append(_("{kind} {key}: cannot be adopted as is: the first plan would {action} it "
                                "({fields})").format(kind=c.kind, key=visible(c.key), action=c.action.label,
                                                     fields=", ".join(c.fields) or "-"))
    if not folders and not grants:
        return None
    doc = tomlkit.document()
    doc.add(tomlkit.comment("Shared folders and access grants found on the IMAP server by mailstate import"))
    if folders:
        aot = tomlkit.aot()
        for (ref, folder), levels in sorted(folders.items()):
            purpose = purposes.get(f"{ref}/{folder}")
            if not purpose:
                purpose = _("imported: write what this folder holds")
                result.skipped.append(_("shared_folder {key}: no purpose on the server: the first plan "
                                        "writes the one in the TOML; write what it holds").format(
                                            key=visible(f"{ref}/{folder}")))
            aot.append(_clean({"mailbox": ref, "path": folder, "purpose": purpose,
                               **_by_groups(ref, levels, state)}))
        doc["shared_folder"] = aot
    if grants:
        gaot = tomlkit.aot()
        for g in sorted(grants, key=lambda g: (g["mailbox"], g["to"])):
            gaot.append(g)
        doc["access_grant"] = gaot
    path = _inside(out, out / RIGHTS_FILE)
    path.write_text(toml_text(doc), encoding="utf-8")
    return path


def _by_groups(ref: str, levels: Mapping[str, list[str]], state: Any) -> dict[str, list[str]]:
    """A shared folder's readers and writers (person ids, ``unit:<id>``) as the state's groups where a
    group reaches only people who hold at least that right there (a unit reached brings its head and
    delegates, as the projection does; the mailbox's owner and its unit's head and delegates hold more
    already): "group:toanso" rather than its 18 members. The rights each login
    gets stay exactly the same."""
    from mailstate.model.rights import expand_refs

    def login(ref: str) -> str:
        return ref.removeprefix("unit:")

    owner = state.units.get(login(ref)) if ref.startswith("unit:") else None
    above = {login(ref)} | ({owner.head} if owner and owner.head else set()) | set(owner.delegates if owner
                                                                                     else ())
    allowed = {"write": above | {login(r) for r in levels.get("write", [])}}
    allowed["read"] = allowed["write"] | {login(r) for r in levels.get("read", [])}
    reach: dict[str, set[str]] = {}
    for gid in sorted(state.groups):
        logins = expand_refs([f"group:{gid}"], state.groups)
        for uid in sorted(logins & state.units.keys()):
            unit = state.units[uid]
            logins |= ({unit.head} if unit.head else set()) | set(unit.delegates)
        reach[gid] = logins
    out: dict[str, list[str]] = {}
    for level in ("read", "write"):
        wanted = {login(r): r for r in levels.get(level, [])}
        covered: set[str] = set()
        chosen: list[str] = []
        for gid, logins in sorted(reach.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            if logins <= allowed[level] and len((logins & wanted.keys()) - covered) >= 2:
                chosen.append(f"group:{gid}")
                covered |= logins
        out[level] = sorted(chosen) + sorted(r for lg, r in wanted.items() if lg not in covered)
    return out


def _not_adoptable(files: Mapping[Path, Any], by_kind: Mapping[str, list[Record]], base_dn: str) -> list[str]:
    """What the first plan does to a tree made by hand, entry by entry: mailstate's ldap provider keeps each
    kind in its own container (docs/ldap.md), so every person, unit and group written, and every old
    address (an alias entry there), is created there beside the entry it came from."""
    from mailstate.providers.ldap.parse import dn_of

    found = {(r.kind, r.key): str(r.attrs.get("_dn") or "") for recs in by_kind.values() for r in recs}
    lines: list[str] = []
    for path, doc in sorted(files.items()):
        if path.name == "mailstate.toml":
            continue
        entries = [("unit", doc["unit"])] if "unit" in doc else []
        entries += [("person", p) for p in doc.get("person", [])]
        entries += [("group", g) for g in doc.get("group", [])]
        for kind, table in entries:
            key = str(table["id"])
            where = found.get((kind, key)) or _("departmentNumber")
            lines.append(_("{kind} {id} ({found}): cannot be adopted as is: mailstate keeps it at {dn}: the "
                           "first plan creates it there, beside the entry it came from (moving a tree made "
                           "by hand is a migration: docs/adopting.md)").format(
                               kind=kind, id=key, found=visible(where),
                               dn=visible(dn_of(kind, key, base_dn))))
            for old in table.get("old_addresses", ()):
                lines.append(_("alias {id} (an old address of {owner}): cannot be adopted as is: mailstate "
                               "keeps it at {dn}: the first plan creates it there").format(
                                   id=old, owner=key, dn=visible(dn_of("alias", str(old), base_dn))))
    return lines


def import_state(
    out: Path, *, domain: str | None = None, name: str | None = None, state_dir: Path | None = None,
    layout: str = "default", people_base: str | None = None,
) -> Imported:
    """Write the repository into ``out`` (absent or empty); return the files written and what was skipped."""
    import tomlkit


    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise MailstateError(_("import: {dir} is not empty").format(dir=out))
    state = _state_for(domain, name, state_dir, out, layout)
    if (layout == "plain") != (people_base is not None):
        raise MailstateError(_("import: --people-base goes with --layout plain (and --layout plain needs "
                               "it)"))
    reader = directory_provider(state)
    provs = open_providers(state, [reader])
    result = Imported()
    plain: PlainRead | None = None
    try:
        if people_base is not None:
            ldap_prov = provs[reader]
            if not isinstance(ldap_prov, LdapProvider):  # pragma: no cover - LAYOUTS maps plain to ldap
                raise MailstateError("import: --layout plain reads through the ldap provider")
            plain = read_plain(ldap_prov.conn, state.base_dn, people_base, state.domain)
            snap = Snapshot(reader)
            for rec in plain.records:
                snap.add(rec)
            result.skipped.extend(plain.report)
        else:
            snap = provs[reader].read(None)
    finally:
        close_providers(provs)
    records = list(snap.records.values())
    for rec in snap.unmanaged:  # entries that are no record of mailstate's: listed, never dropped silently
        why = rec.attrs.get("why") or _("not an entry mailstate manages (no mailstate class)")
        result.skipped.append(_("{kind} {dn}: not imported: {why}").format(
            kind=rec.kind, dn=visible(str(rec.attrs.get("dn") or rec.key)), why=visible(str(why))))
    by_kind: dict[str, list[Record]] = {}
    for rec in records:
        if not _valid_id(rec.key) and rec.kind in ("unit", "person", "group", "unit_mailbox"):
            where = f" ({visible(str(rec.attrs['dn']))})" if rec.attrs.get("dn") else ""
            result.skipped.append(
                _("{kind} {id}: not imported: its id is not {help}").format(
                    kind=rec.kind, id=repr(visible(rec.key)) + where, help=id_help())
                + (_(" (its people go to units/_unassigned.toml)") if rec.kind == "unit" else "")
            )
            continue
        _check_text(result, f"{rec.kind} {rec.key}", rec.attrs)
        by_kind.setdefault(rec.kind, []).append(rec)
    _keep_references_and_addresses_whole(result, by_kind)

    files: dict[Path, tomlkit.TOMLDocument] = {}
    top = tomlkit.document()
    top.add(
        tomlkit.comment("Imported from the live directory by `mailstate import`; review before committing.")
    )
    org = tomlkit.table()
    org["name"] = state.organization.name
    org["domain"] = state.domain
    if state.organization.base_dn:
        org["base_dn"] = state.organization.base_dn
    top["organization"] = org
    ldap = getattr(state.providers, reader)
    prov = tomlkit.table(is_super_table=True)
    lt = tomlkit.table()
    lt["url"] = ldap.url
    if ldap.bind_dn:
        lt["bind_dn"] = ldap.bind_dn
    if ldap.password_env:
        lt["password_env"] = ldap.password_env
    stores = Counter(r.attrs["_storage"] for r in records if r.attrs.get("_storage"))
    if reader == "iredmail" and stores:  # where iRedMail keeps mailboxes: new ones go there too
        lt["storage_base"] = stores.most_common(1)[0][0]
    prov[reader] = lt
    top["providers"] = prov
    if state_dir is not None and domain is None:
        # the policies of the state given with --state (lifecycle, naming …) explain the live locks
        source = tomlkit.parse((Path(state_dir) / "mailstate.toml").read_text(encoding="utf-8"))
        for table in POLICY_TABLES:
            if table in source:
                top[table] = source[table]
    if plain is not None and plain.person_template and "naming" not in top:
        naming = tomlkit.table()
        naming["person"] = plain.person_template  # guessed from the addresses found (reported)
        top["naming"] = naming
    files[out / "mailstate.toml"] = top

    unit_docs: dict[str, tomlkit.TOMLDocument] = {}
    mailboxes = {r.key: r for r in by_kind.get("unit_mailbox", [])}
    for rec in sorted(by_kind.get("unit", []), key=lambda r: r.key):
        doc = tomlkit.document()
        a = rec.attrs
        doc["unit"] = _clean(
            {
                "id": rec.key,
                "name": a.get("name") or rec.key,
                "parent": a.get("parent"),
                "head": a.get("head"),
                "delegates": a.get("delegates"),
                "address": a.get("address")
                or (mailboxes[rec.key].attrs.get("address") if rec.key in mailboxes else None),
            }
        )
        if rec.key not in mailboxes:  # a unit without a unit mailbox live: none is invented
            doc["unit"]["mailbox"] = False
        if a.get("_implicit") and plain is None:  # (plain reports its own units, with where they came from)
            result.skipped.append(_("unit {id}: made from departmentNumber (no unit entry), without a "
                                    "unit mailbox (mailbox = false): give it its name, parent and head, and "
                                    "remove mailbox = false to create its unit mailbox").format(id=rec.key))
        unit_docs[rec.key] = doc
    quota_overrides: dict[str, int] = {}
    for rec in by_kind.get("person", []):  # no unit tree (iRedMail): units from departmentNumber
        unit = rec.attrs.get("unit")
        if isinstance(unit, str) and _valid_id(unit) and unit not in unit_docs:
            made = tomlkit.document()
            made["unit"] = {"id": unit, "name": unit, "mailbox": False}
            unit_docs[unit] = made
            result.skipped.append(_("unit {id}: made from departmentNumber (no unit entry), without a unit "
                                    "mailbox (mailbox = false): give it its name, parent and head; the first "
                                    "plan creates the unit's entry, not a mailbox").format(id=unit))
    for rec in sorted(by_kind.get("person", []), key=lambda r: r.key):
        a = rec.attrs
        unit = a.get("unit")
        if unit is not None and not _valid_id(unit):
            result.skipped.append(_("person {id}: unit {unit} is not a valid id: left out (the person is in "
                                    "units/_unassigned.toml)").format(
                                        id=rec.key, unit=repr(visible(str(unit)))))
            unit = None
        target = unit if unit in unit_docs else "_unassigned"
        if target == "_unassigned":
            result.skipped.append(_("person {id}: no unit: written to units/_unassigned.toml; write its "
                                    "unit = \"<unit id>\" (validate refuses it until then)").format(
                                        id=rec.key))
        if target not in unit_docs:
            unit_docs[target] = tomlkit.document()
        doc = unit_docs[target]
        if "person" not in doc:
            doc["person"] = tomlkit.aot()
        person = _clean(
            {
                "id": rec.key,
                "name": a.get("name") or rec.key,
                "unit": unit,
                "title": a.get("title"),
                "phone": a.get("phone"),
                "mobile": a.get("mobile"),
                "backup_email": a.get("backup_email"),
                "address": a.get("address"),
                "old_addresses": [x for x in (a.get("aliases") or ()) if x != a.get("address")],
                **(_lock_fields(a.get("lock_reason"), bool(a.get("_refused")), a.get("_disabled_by"))
                   if a.get("locked") else {}),
            }
        )
        if a.get("locked") and not a.get("lock_reason"):
            if a.get("_refused"):
                table = f"{{ reason = {visible(str(person['suspended']['reason']))!r}, disabled = true }}"
                result.skipped.append(_(
                    "person {id}: locked in the directory without a reason mailstate wrote: imported as "
                    "suspended = {table}: it stays disabled as found (no login, mail refused); replace it "
                    "with what explains it (left_on = <the day>, or suspended = \"<why>\" to lock it the way "
                    "mailstate does, mail delivered)").format(id=rec.key, table=table))
            else:
                result.skipped.append(_(
                    "person {id}: locked in the directory without a reason mailstate wrote: imported as "
                    "suspended = {reason}; replace it with what explains it (left_on, suspended)").format(
                        id=rec.key, reason=repr(visible(str(person["suspended"])))))
        doc["person"].append(person)
        if isinstance(a.get("quota"), int):
            quota_overrides[rec.key] = int(a["quota"])
    for key, mb in mailboxes.items():
        if isinstance(mb.attrs.get("quota"), int):
            quota_overrides[f"unit:{key}"] = int(mb.attrs["quota"])
    if quota_overrides:
        # the most common value becomes the default, the rest are overrides
        q = tomlkit.table()
        people_q = Counter(v for k, v in quota_overrides.items() if not k.startswith("unit:"))
        unit_q = Counter(v for k, v in quota_overrides.items() if k.startswith("unit:"))
        default_p = people_q.most_common(1)[0][0] if people_q else None
        default_u = unit_q.most_common(1)[0][0] if unit_q else None
        if default_p is not None:
            q["person"] = format_size(default_p)
        if default_u is not None:
            q["unit"] = format_size(default_u)
        over = {
            k: format_size(v)
            for k, v in sorted(quota_overrides.items())
            if v != (default_u if k.startswith("unit:") else default_p)
        }
        if over:
            q["overrides"] = over
        top["quota"] = q
    for uid, doc in unit_docs.items():
        files[out / "units" / f"{uid}.toml"] = doc

    groups = sorted(by_kind.get("group", []), key=lambda r: r.key)
    if groups:
        gdoc = tomlkit.document()
        aot = tomlkit.aot()
        for rec in groups:
            a = rec.attrs
            aot.append(
                _clean(
                    {
                        "id": rec.key,
                        "name": a.get("name") or rec.key,
                        "address": a.get("address"),
                        "members": a.get("members"),
                    }
                )
            )
        gdoc["group"] = aot
        files[out / "groups.toml"] = gdoc

    if plain is not None:
        result.skipped.extend(_not_adoptable(files, by_kind, state.base_dn))
    for path in files:
        _inside(out, path)  # every path checked before the first is written
    for path, doc in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(toml_text(doc), encoding="utf-8")
    result.files = sorted(files)
    rights = _import_imap_rights(out, result, with_directory=plain is None)
    if rights is not None:
        result.files.append(rights)
    for path in result.files:
        if path.suffix == ".toml":
            doc = tomlkit.parse(path.read_text(encoding="utf-8"))
            for table in ("person", "group", "shared_folder", "access_grant"):
                result.written[table] += len(doc.get(table, ()))
            result.written["unit"] += "unit" in doc
    if result.skipped:
        report = _inside(out, out / REPORT)
        head = _("Import report of {domain}, {day}: every entry of the directory not written to the TOML, or "
                 "written but to be reviewed, with why. Written: {people} people, {units} units, {groups} "
                 "groups, {rights} shared folders and access grants.").format(
                     domain=state.domain, day=date.today().isoformat(), people=result.written["person"],
                     units=result.written["unit"], groups=result.written["group"],
                     rights=result.written["shared_folder"] + result.written["access_grant"])
        report.write_text("".join(f"{visible(line)}\n" for line in [head, "", *result.skipped]),
                          encoding="utf-8")
        result.files.append(report)
        result.report = report
    return result
