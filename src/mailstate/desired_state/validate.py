"""Validation of the desired state: every problem collected, each with file, line and field.

``build_state(root, documents)`` turns parsed documents (see loader.py) into a ``State`` and returns it
with the list of problems found; ``load_state`` raises ``ValidationError`` when that list is not empty.
The checks, in order:

1. literal secrets anywhere (password, secret, token, mật khẩu … keys; a private key or a URL holding a
   password under any key): refused without echoing the value;
2. each table against the pydantic model (unknown field → the closest valid name; wrong types, ranges,
   dates, durations, sizes, id syntax); the input value is never echoed for the providers tables or for
   a field whose name suggests a secret;
3. exactly one ``[organization]``; policy tables at most once across all files;
4. ids unique across files and across people, units and groups (they are LDAP uids / login names);
5. every reference resolves (with "did you mean …?"), the unit tree and group nesting have no cycle;
6. addresses: inside the organisation's domain, unique across people,
   unit mailboxes, groups and old addresses; backup_email a valid address outside the domain;
7. heads and delegates belong to their unit or a sub-unit, a dissolved unit has nobody
   left in it, lifecycle durations in a sensible order (lock before remove), shared folder paths are
   folder names and unique per mailbox, no grant to a mailbox's own owner, [naming] templates parse.

A problem inside an array written over several lines points at the element's own line. An object whose
table is invalid is left out of the state, and references to it are not reported a second time.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel

from mailstate.desired_state.documents import Document, KeyPath
from mailstate.desired_state.naming import FIELDS, TemplateError, parse_template, transliterate
from mailstate.desired_state.schema import (
    UNION_TAGS,
    AccessGrant,
    Duration,
    Group,
    Lifecycle,
    Naming,
    Organization,
    Person,
    Providers,
    Quota,
    Regulation,
    Safety,
    SharedFolder,
    State,
    StateFile,
    Unit,
)
from mailstate.errors import Problem
from mailstate.model.i18n import KIND_NAMES, N_, _, fmt_duration, kind_name, ngettext
from mailstate.model.records import inbox_canonical, parse_ref
from mailstate.model.regulation import RULES
from mailstate.model.settings import CONTROL_ERROR, Located, NotifySettings, PasswordPolicy

M = TypeVar("M", bound=Located)

SECRET_KEY_RE = re.compile(
    r"(?i)(password|passwd|passphrase|secret|token|private_key|api_key|credential|^pwd$|^pass$|^pin$"
    r"|mat[ _-]?khau|mật[ _-]?khẩu)"
)
"""Key names that suggest a secret value (``*_env`` and ``*_file`` keys only name where it is); "mật khẩu"
is Vietnamese for password."""
SECRET_MESSAGE = N_("secrets never in TOML: use password_env or password_file (the value is not shown)")
PEM_KEY_RE = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
URL_CREDENTIALS_RE = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@")
"""``ldaps://user:password@host``: a password inside a URL."""

RESERVED_LOGINS = {
    "anyone": N_("every user, even unauthenticated ones"),
    "authenticated": N_("every logged-in user"),
    "owner": N_("the owner of the mailbox"),
}
"""IMAP ACL identifiers with a special meaning: a person or unit with such an id would hand its rights to
everyone (a reader named ``anyone``) or be skipped as the owner."""

MISSING_PERSON_ID = N_(
    "missing required field 'id' (write id = \"…\", or run `mailstate assign` to derive it from the name)"
)
STANDIN_ID = "zzzz-no-id-{:05d}"
"""Stands in for the id of a person written without one while the rest of their table is checked."""

def secret_value_message(value: Any) -> str | None:
    """Why a value (whatever its key) is a secret itself: a private key, or a URL holding a password."""
    if not isinstance(value, str) or ("://" not in value and "-----BEGIN" not in value):
        return None  # neither pattern below can match (a name, a phone, a date: nearly every value)
    if PEM_KEY_RE.search(value):
        return _("a private key never in TOML: key_file names the file that holds it "
                 "(the value is not shown)")
    if URL_CREDENTIALS_RE.match(value):
        return _("a password never in a URL: write the URL without it and use password_env or password_file "
                 "(the value is not shown)")
    return None

SINGLETONS: dict[str, type[Located]] = {
    "organization": Organization,
    "naming": Naming,
    "lifecycle": Lifecycle,
    "regulation": Regulation,
    "password": PasswordPolicy,
    "quota": Quota,
    "safety": Safety,
    "providers": Providers,
    "notify": NotifySettings,
}
ARRAYS: dict[str, type[Located]] = {
    "unit": Unit,
    "person": Person,
    "group": Group,
    "shared_folder": SharedFolder,
    "access_grant": AccessGrant,
}
TABLES = sorted(StateFile.model_fields)

LOCAL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9])?$")
EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
FOLDER_NAME_MAX = 255
"""Dovecot 2.3 refuses a folder name (one level) longer than 255 bytes as stored: IMAP modified UTF-7
(RFC 3501 §5.1.3), where a Vietnamese letter takes about 2.7 bytes (94 × "ệ" fit, 95 do not)."""
FOLDER_PATH_MAX = 1024
"""mailstate's cap on a whole path (stored form): Dovecot keeps each folder as a directory under the user's
mail root, and Linux refuses a file path longer than 4,096 bytes (a 4,031-byte folder path already fails)."""

def folder_path_problem(path: str) -> str | None:
    """Why Dovecot 2.3 (hierarchy separator '/', fs layout) would refuse ``path`` as a folder to create, or
    why mailstate does (IMAP wildcards, a blank name), else None. Control characters are refused earlier,
    for every text field (model.Text)."""
    from imapclient.imap_utf7 import encode

    if not path:
        return _("is empty: write the folder path, names separated by '/'")
    if path.startswith("/"):
        return _("begins with '/' (the hierarchy separator): write Văn bản đến/2026, not /Văn bản đến/2026")
    if path.startswith("~"):
        return _("begins with '~': Dovecot refuses it (it would name a home directory)")
    parts = path.split("/")
    if any(not part.strip() for part in parts):
        return _("has an empty folder name ('//', a '/' at the end, or a name of spaces only)")
    if any(part in (".", "..") for part in parts):
        return _("has a '.' or '..' folder name: Dovecot refuses them (they would point outside the folder)")
    wild = sorted({c for c in path if c in "*%"})
    if wild:
        chars = _(" and ").join(repr(c) for c in wild)
        return _("holds {chars}: IMAP LIST wildcards, not allowed in a folder name").format(chars=chars)
    for part in parts:
        size = len(encode(part))
        if size > FOLDER_NAME_MAX:
            return _("the folder name {name}… is {size} bytes as the server stores it (IMAP modified "
                     "UTF-7); Dovecot allows {most}: shorten it").format(
                name=repr(part[:20]), size=size, most=FOLDER_NAME_MAX)
    size = len(encode(path))
    if size > FOLDER_PATH_MAX:
        return _("is {size} bytes as the server stores it; at most {most}: use fewer or shorter "
                 "levels").format(size=size, most=FOLDER_PATH_MAX)
    return None


@functools.lru_cache(maxsize=4096)  # a few dozen key names, asked for every table of every file
def is_secret_key(name: str) -> bool:
    """True for a key that would hold a secret itself (``password``, ``bind_password``, ``token`` …)."""
    low = name.lower()
    if low.endswith("_env") or low.endswith("_file"):
        return False
    return bool(SECRET_KEY_RE.search(low))


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to ``word`` (difflib), else one a single typo away (a letter added, dropped,
    changed, or two swapped: ``pv`` → ``vp``, which difflib misses in short ids), or None."""
    pool = list(candidates)
    found = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if found:
        return found[0]
    return next((c for c in sorted(pool) if abs(len(c) - len(word)) <= 1 and _one_typo(word, c)), None)


def _one_typo(a: str, b: str) -> bool:
    """True when ``b`` differs from ``a`` by one inserted, deleted or changed character, or one swap."""
    if a == b:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (
            len(diff) == 2 and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = next((k for k in range(len(short)) if short[k] != long_[k]), len(short))
    return short[i:] == long_[i + 1:]


def _mean(word: str | None) -> str:
    return _("; did you mean '{word}'?").format(word=word) if word else ""


def _label(parts: Iterable[Key]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


Key = str | int


# --------------------------------------------------------------------------------------------------
# Secrets


def find_secrets(data: Any, path: KeyPath = ()) -> list[KeyPath]:
    """Paths of every key, at any depth, named like a secret and holding a value (not a table)."""
    found: list[KeyPath] = []
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, dict):
                found.extend(find_secrets(v, path + (k,)))
            elif is_secret_key(k) or secret_value_message(v):
                found.append(path + (k,))
            elif isinstance(v, list) and any(secret_value_message(x) for x in v):
                found.append(path + (k,))
            elif isinstance(v, list):
                found.extend(find_secrets(v, path + (k,)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            if isinstance(v, dict | list):
                found.extend(find_secrets(v, path + (i,)))
    return found


def _without(data: Any, drop: set[KeyPath], path: KeyPath = ()) -> Any:
    if isinstance(data, dict):
        return {k: _without(v, drop, path + (k,)) for k, v in data.items() if path + (k,) not in drop}
    if isinstance(data, list):
        return [_without(v, drop, path + (i,)) for i, v in enumerate(data)]
    return data


# --------------------------------------------------------------------------------------------------
# pydantic errors → problems


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``X | None`` or ``list[X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap_model(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, dict):
        for arg in typing.get_args(annotation):
            found = _unwrap_model(arg)
            if found is not None:
                return found
    return None


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the field at ``loc`` (loc without its last element)."""
    cls: type[BaseModel] | None = model
    for seg in loc:
        if cls is None:
            return None
        if isinstance(seg, int):
            continue
        info = cls.model_fields.get(seg)
        if info is None:
            return None
        cls = _unwrap_model(info.annotation)
    return cls


_ID_HELP = N_("an id is lower-case ASCII: a letter first, then letters, digits, '.', '_' or '-' (at most 64)")
_REF_HELP = N_("a reference is a person id, unit:<id> or group:<id>")


def _respelt(value: Any, pattern: str, show: bool) -> str:
    """"; did you mean 'unit:ktv'?" for "Unit: KTV" (or 'mai' for "Maì"): the value transliterated, in lower
    case and without spaces around its ':', if that fits."""
    if not show or not isinstance(value, str):
        return ""
    fixed = re.sub(r"\s*:\s*", ":", transliterate(value).strip())
    return _mean(fixed) if fixed != value and re.match(pattern, fixed) else ""


def toml_repr(value: Any) -> str:
    """A value as it would be written in TOML (strings in double quotes), or the kind of a table / array."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, date | datetime | time):
        return value.isoformat()
    if isinstance(value, dict):
        return _("a table")
    if isinstance(value, list):
        return _("an array")
    return str(value)


_TYPE_MESSAGES = {
    "string_type": N_("must be a string (in double quotes)"),
    "int_type": N_("must be a whole number"),
    "int_parsing": N_("must be a whole number"),
    "int_from_float": N_("must be a whole number"),
    "float_type": N_("must be a number"),
    "float_parsing": N_("must be a number"),
    "bool_type": N_("must be true or false"),
    "bool_parsing": N_("must be true or false"),
    "list_type": N_("must be an array, e.g. [\"a\", \"b\"]"),
    "dict_type": N_("must be a table"),
    "model_type": N_("must be a table"),
    "model_attributes_type": N_("must be a table"),
}
_LIMIT_MESSAGES = {
    "greater_than_equal": N_("must be at least {limit}"),
    "greater_than": N_("must be more than {limit}"),
    "less_than_equal": N_("must be at most {limit}"),
    "less_than": N_("must be less than {limit}"),
}


def pydantic_problems(
    exc: pydantic.ValidationError,
    doc: Document,
    path: KeyPath,
    model: type[BaseModel],
    table: str,
) -> list[Problem]:
    """Map a pydantic error to problems at file:line:field, never echoing a value that may be secret."""
    problems: list[Problem] = []
    quiet = table.startswith("providers")
    for err in exc.errors(include_url=False):
        loc = tuple(x for x in err["loc"] if x not in UNION_TAGS)  # a text-or-table field's branch
        typ = err["type"]
        name = next((str(x) for x in reversed(loc) if isinstance(x, str)), table)
        field = _label((table,) + loc)
        line = doc.line_of(path + loc)
        value = err.get("input")
        secret = quiet or is_secret_key(name)
        show = not secret and isinstance(value, str | int | float | date | time)
        got = (_(" (got {value})").format(value=toml_repr(value))
               if show or isinstance(value, dict | list) else "")
        ctx = err.get("ctx") or {}
        if typ == "extra_forbidden":
            holder = _model_at(model, loc[:-1])
            valid = list(holder.model_fields) if holder else []
            msg = _("unknown field '{name}'").format(name=name) + _mean(closest(name, valid))
            if valid:
                msg += _(" (valid fields: {fields})").format(fields=", ".join(valid))
        elif typ == "missing":
            msg = _("missing required field '{name}'").format(name=name)
            if name == "id" and table == "person":
                msg = _(MISSING_PERSON_ID)
        elif typ == "string_pattern_mismatch":
            pattern = str(ctx.get("pattern", ""))
            shown = f"'{value}' " if show else ""
            if pattern.startswith("^((unit|group)"):
                msg = (_("{shown}is not a valid reference: {help}").format(shown=shown, help=_(_REF_HELP))
                       + _respelt(value, pattern, show)).strip()
            elif pattern.startswith("^[a-z][a-z0-9._-]"):
                msg = (_("{shown}is not a valid id: {help}").format(shown=shown, help=_(_ID_HELP))
                       + _respelt(value, pattern, show)).strip()
            elif name == "separator":
                msg = _("{shown}must be \"\", \".\" or \"-\" (an address holds it between name and "
                        "number)").format(shown=shown)
            elif name.endswith("_env"):
                msg = _("is not the name of an environment variable (letters, digits and '_'): write the "
                        "variable's name here and the secret in the environment (the value is not shown)")
            elif name == "domain":
                msg = _("{shown}is not a domain name such as sct.binhdinh.gov.vn (lower "
                        "case)").format(shown=shown).strip()
            else:
                msg = _("{shown}does not match {pattern}").format(shown=shown, pattern=pattern).strip()
        elif typ == "literal_error":
            msg = _("must be one of {expected}").format(expected=ctx.get("expected", "")) + got
        elif typ in _LIMIT_MESSAGES:
            limit = next(iter(ctx.values()), "")
            msg = _(_LIMIT_MESSAGES[typ]).format(limit=limit) + got
            if table == "password":
                msg += " (password.policy)"
        elif typ == CONTROL_ERROR:  # never echoes the value, so shown for secret fields too
            msg = str(ctx.get("message", err["msg"]))
        elif typ == "value_error":
            msg = str(err["msg"]).removeprefix("Value error, ")
            if secret:
                msg = _("invalid value")
        elif typ in ("string_too_short", "too_short") and ctx.get("min_length") == 1:
            msg = _("must not be empty")
        elif typ in ("string_too_long", "too_long") and "max_length" in ctx:
            msg = _("is too long: at most {n}").format(n=ctx["max_length"])
        elif typ.startswith("date"):
            msg = _("not a valid date: write a TOML date such as 2026-12-31") + got
        elif typ in _TYPE_MESSAGES:
            msg = _(_TYPE_MESSAGES[typ]) + got
        else:
            msg = f"{err['msg']}{got}"
        problems.append(Problem(doc.rel, line, field, msg))
    return problems


# --------------------------------------------------------------------------------------------------
# Building the state


class _Builder:
    """Validates each file's tables into model objects, then merges them into a ``State``."""
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[Problem] = []
        self.singletons: dict[str, Located] = {}
        self.units: list[Unit] = []
        self.people: list[Person] = []
        self.groups: list[Group] = []
        self.folders: list[SharedFolder] = []
        self.broken: dict[str, set[str]] = {"unit": set(), "person": set(), "group": set()}
        """Ids of units, people and groups whose table is invalid: references to them are not reported."""
        self.partial = False
        self.standins: dict[str, str] = {}
        """Stand-in id → name of each person written without an id (checked under the stand-in)."""
        """Some file did not parse: a reference may point into it, so unresolved ones are not reported."""
        self.grants: list[AccessGrant] = []

    def add(self, file: str, line: int, field: str, message: str) -> None:
        self.problems.append(Problem(file, line, field, message))

    def at(self, obj: Located, field: str, label: str, message: str, index: int | None = None) -> None:
        """A problem at ``obj``'s key ``field`` (at its ``index``-th element when the array spans lines)."""
        src = obj.source
        self.problems.append(Problem(src.file, src.line_of(field, index), label, message))

    # -- per file ---------------------------------------------------------------------------------

    def model(self, cls: type[M], value: Any, doc: Document, path: KeyPath, table: str) -> M | None:
        if not isinstance(value, dict):
            message = (_("each [[{table}]] entry must be a table") if isinstance(path[-1], int)
                       else _("[{table}] must be a table"))
            self.add(doc.rel, doc.line_of(path), table, message.format(table=table))
            return None
        if table == "person" and "id" not in value and isinstance(value.get("name"), str):
            # `mailstate assign` derives the id; meanwhile the rest of the table is checked under a stand-in
            self.add(doc.rel, doc.line_of(path + ("id",)), "person.id", _(MISSING_PERSON_ID))
            standin = STANDIN_ID.format(len(self.standins) + 1)
            self.standins[standin] = value["name"]
            value = {**value, "id": standin}
        try:
            obj = cls.model_validate(value)
        except pydantic.ValidationError as exc:
            self.problems.extend(pydantic_problems(exc, doc, path, cls, table))
            if table in self.broken and isinstance(value.get("id"), str):
                self.broken[table].add(value["id"])
            return None
        obj.located(doc.source(path))
        return obj

    def document(self, doc: Document) -> None:
        data = doc.data
        secrets = find_secrets(data)
        if secrets:
            for p in secrets:
                value: Any = data
                for part in p:
                    value = value[part]
                values = value if isinstance(value, list) else [value]
                why = next((m for m in map(secret_value_message, values) if m), None) or _(SECRET_MESSAGE)
                self.add(doc.rel, doc.line_of(p), _label(p), why)
            data = _without(data, set(secrets))
        raw_units = data.get("unit")
        targets: dict[str, list[Any]] = {"unit": self.units, "person": self.people, "group": self.groups,
                                         "shared_folder": self.folders, "access_grant": self.grants}
        for key, value in data.items():
            path: KeyPath = (key,)
            if key in SINGLETONS:
                obj = self.model(SINGLETONS[key], value, doc, path, key)
                if obj is None:
                    continue
                if isinstance(obj, Providers):
                    for sub in type(obj).model_fields:
                        part = getattr(obj, sub)
                        if part is not None:
                            part.located(doc.source(path + (sub,)))
                first = self.singletons.get(key)
                if first is not None:
                    self.add(doc.rel, doc.line_of(path), key,
                             _("[{key}] is defined twice: also at {where} (write it once)").format(
                                 key=key, where=first.source))
                    continue
                self.singletons[key] = obj
            elif key in ARRAYS:
                items: list[Any]
                if key == "unit" and isinstance(value, dict):
                    items, paths = [value], [path]
                elif isinstance(value, list):
                    items, paths = value, [path + (i,) for i in range(len(value))]
                else:
                    self.add(doc.rel, doc.line_of(path), key,
                             _("write [[{key}]] (an array of tables), one per {what}").format(
                                 key=key,
                                 what=kind_name(key) if key in KIND_NAMES else key.replace("_", " ")))
                    continue
                default_unit = None
                if key == "person" and isinstance(raw_units, dict) and isinstance(raw_units.get("id"), str):
                    default_unit = raw_units["id"]
                elif key == "person" and isinstance(raw_units, list) and len(raw_units) == 1:
                    only = raw_units[0]
                    if isinstance(only, dict) and isinstance(only.get("id"), str):
                        default_unit = only["id"]
                for item, ipath in zip(items, paths, strict=True):
                    if default_unit is not None and isinstance(item, dict) and "unit" not in item:
                        item = {**item, "unit": default_unit}
                    obj = self.model(ARRAYS[key], item, doc, ipath, key)
                    if obj is not None:
                        targets[key].append(obj)
            else:
                self.add(doc.rel, doc.line_of(path), key,
                         _("unknown table '{key}'").format(key=key) + _mean(closest(key, TABLES))
                         + _(" (tables: {tables})").format(tables=", ".join(TABLES)))

    # -- the whole state --------------------------------------------------------------------------

    def build(self, docs: list[Document], complete: bool) -> State | None:
        self.partial = not complete
        for doc in docs:
            self.document(doc)
        org = self.singletons.get("organization")
        if org is None:
            if complete and not any(p.field.startswith("organization") for p in self.problems):
                self.add("mailstate.toml", 0, "organization",
                         _("no [organization] table in any file: add one to mailstate.toml (name, domain)"))
            return None
        assert isinstance(org, Organization)
        state = State(root=self.root, organization=org, files=[d.path for d in docs])
        for key in ("naming", "lifecycle", "regulation", "password", "quota", "safety", "providers",
                    "notify"):
            if key in self.singletons:
                setattr(state, key, self.singletons[key])
        self.index(state)
        Checker(state, self).run()
        return state

    def index(self, state: State) -> None:
        """Fill the id maps; duplicate ids (within and across kinds) are problems."""
        seen: dict[str, tuple[str, Located]] = {}

        def claim(kind: str, oid: str, obj: Located) -> bool:
            if kind != "group" and oid in RESERVED_LOGINS:
                self.at(obj, "id", f"{kind}.id",
                        _("id '{id}' is reserved: it is the mailbox's login and IMAP ACL identifier, and "
                          "'{id}' there means {meaning} (RFC 4314, Dovecot); choose another id").format(
                            id=oid, meaning=_(RESERVED_LOGINS[oid])))
            prior = seen.get(oid)
            if prior is None:
                seen[oid] = (kind, obj)
                return True
            if prior[0] == kind:
                self.at(obj, "id", f"{kind}.id", _("duplicate {kind} id '{id}': also at {where}").format(
                    kind=kind_name(kind), id=oid, where=prior[1].source))
            else:
                self.at(obj, "id", f"{kind}.id",
                        _("id '{id}' is already used by the {kind} at {where}: ids are unique "
                          "across people, units and groups (LDAP uids and login names, docs/ldap.md)").format(
                            id=oid, kind=kind_name(prior[0]), where=prior[1].source))
            return False

        for u in self.units:
            if claim("unit", u.id, u):
                state.units[u.id] = u
        for p in self.people:
            if claim("person", p.id, p):
                state.people[p.id] = p
        for g in self.groups:
            if claim("group", g.id, g):
                state.groups[g.id] = g
        state.shared_folders = list(self.folders)
        state.access_grants = list(self.grants)


class Checker:
    """Cross-object checks on a merged state; problems go to the builder."""
    def __init__(self, state: State, builder: _Builder) -> None:
        self.s = state
        self.b = builder
        self.domain = state.organization.domain
        self._near: dict[tuple[str, str], str | None] = {}

    def _cite(self, rule: str) -> str:
        """" (Article 6, Quyết định 1862/QĐ-BTTTT)" when the organisation's regulation has the rule."""
        try:
            citation = self.s.rules.citation(rule)
        except KeyError:
            return ""
        return f" ({citation.text()})" if citation else ""

    def run(self) -> None:
        self.references()
        self.unit_tree()
        self.group_cycles()
        self.addresses()
        self.membership()
        self.dissolved()
        self.folders()
        self.lifecycle()
        self.templates()

    # -- references --------------------------------------------------------------------------------

    def _ids(self, kind: str) -> Mapping[str, Any]:
        if kind == "person":
            return self.s.people
        return self.s.units if kind == "unit" else self.s.groups

    def _known(self, kind: str, oid: str) -> bool:
        """True if ``oid`` is an object of ``kind``, or one whose table already has a problem (or may be in
        a file that could not be parsed)."""
        return oid in self._ids(kind) or oid in self.b.broken[kind] or self.b.partial

    def near(self, word: str, kind: str) -> str | None:
        """The closest id of ``kind`` (memoised: difflib over 10,000 ids takes tens of ms)."""
        key = (word, kind)
        if key not in self._near:
            self._near[key] = closest(word, self._ids(kind))
        return self._near[key]

    def _all_refs(self) -> list[str]:
        s = self.s
        return list(s.people) + [f"unit:{u}" for u in s.units] + [f"group:{g}" for g in s.groups]

    def ref_problem(self, ref: str, allowed: tuple[str, ...]) -> str | None:
        """None if ``ref`` resolves to an object of an allowed kind, else the message (with a suggestion)."""
        kind, oid = parse_ref(ref)
        if kind in allowed and self._known(kind, oid):
            return None
        if kind not in allowed:
            what = {"person": N_("a person"), "unit": N_("a unit mailbox"), "group": N_("a group")}[kind]
            spelt = {"person": N_("a person id"), "unit": "unit:<id>", "group": "group:<id>"}
            names = _(" or ").join(_(spelt[k]) for k in allowed)
            return _("'{ref}' is {what}, which is not allowed here: use {names}").format(
                ref=ref, what=_(what), names=names)
        label = kind_name(kind)
        # the kind prefix is likely wrong: the same id exists as another kind
        for other in allowed:
            if other != kind and oid in self._ids(other):
                fixed = oid if other == "person" else f"{other}:{oid}"
                return _("no {kind} '{id}' ('{id}' is a {other}); did you mean '{fixed}'?").format(
                    kind=label, id=oid, other=kind_name(other), fixed=fixed)
        near = self.near(oid, kind)
        if near is not None:
            fixed = near if kind == "person" else f"{kind}:{near}"
            return _("no {kind} '{id}'; did you mean '{fixed}'?").format(kind=label, id=oid, fixed=fixed)
        candidates = [r for r in self._all_refs() if parse_ref(r)[0] in allowed]
        return _("no {kind} '{id}'").format(kind=label, id=oid) + _mean(closest(ref, candidates))

    def check_ref(
        self, obj: Located, field: str, label: str, ref: str, allowed: tuple[str, ...],
        index: int | None = None,
    ) -> bool:
        msg = self.ref_problem(ref, allowed)
        if msg is not None:
            self.b.at(obj, field, label, msg, index)
            return False
        return True

    def check_id(
        self, obj: Located, field: str, label: str, oid: str, kind: str, index: int | None = None
    ) -> bool:
        """A field holding a bare id of one kind (unit.parent, person.unit, unit.head …)."""
        if self._known(kind, oid):
            return True
        for other in ("person", "unit", "group"):
            if other != kind and oid in self._ids(other):
                self.b.at(obj, field, label, _("'{id}' is a {other}, not a {kind}").format(
                    id=oid, other=kind_name(other), kind=kind_name(kind))
                          + _mean(self.near(oid, kind)), index)
                return False
        self.b.at(obj, field, label, _("no {kind} '{id}'").format(kind=kind_name(kind), id=oid)
                  + _mean(self.near(oid, kind)), index)
        return False

    def references(self) -> None:
        s = self.s
        for u in s.units.values():
            if u.parent is not None:
                if u.parent == u.id:
                    self.b.at(u, "parent", "unit.parent",
                              _("unit '{id}' cannot be its own parent").format(id=u.id))
                else:
                    self.check_id(u, "parent", "unit.parent", u.parent, "unit")
            if u.head is not None:
                self.check_id(u, "head", "unit.head", u.head, "person")
            for i, d in enumerate(u.delegates):
                self.check_id(u, "delegates", "unit.delegates", d, "person", i)
        for p in s.people.values():
            if p.unit is None:
                self.b.at(p, "id", "person.unit",
                          _("person '{id}' has no unit: set unit = \"<unit id>\" (it defaults to the file's "
                            "[unit] only when the file has exactly one)").format(id=p.id))
            else:
                self.check_id(p, "unit", "person.unit", p.unit, "unit")
        for g in s.groups.values():
            seen: set[str] = set()
            for i, m in enumerate(g.members):
                if m in seen:
                    self.b.at(g, "members", "group.members",
                              _("'{member}' is listed twice").format(member=m), i)
                seen.add(m)
                if m == f"group:{g.id}":
                    self.b.at(g, "members", "group.members",
                              _("group '{id}' cannot contain itself").format(id=g.id), i)
                    continue
                self.check_ref(g, "members", "group.members", m, ("person", "unit", "group"), i)
        for f in s.shared_folders:
            self.check_ref(f, "mailbox", "shared_folder.mailbox", f.mailbox, ("person", "unit"))
            for fld in ("read", "write"):
                for i, r in enumerate(getattr(f, fld)):
                    self.check_ref(f, fld, f"shared_folder.{fld}", r, ("person", "unit", "group"), i)
        for a in s.access_grants:
            self.check_ref(a, "mailbox", "access_grant.mailbox", a.mailbox, ("person", "unit"))
            self.check_ref(a, "to", "access_grant.to", a.to, ("person", "unit", "group"))
            if a.to == a.mailbox:
                self.b.at(a, "to", "access_grant.to",
                          _("'{to}' already owns the mailbox: a grant is to someone else").format(to=a.to))
        q = s.quota
        for ref in q.overrides:
            msg = self.ref_problem(ref, ("person", "unit"))
            if msg is not None:
                self.b.at(q, "overrides", f"quota.overrides.{ref}", msg)

    # -- cycles ------------------------------------------------------------------------------------

    def unit_tree(self) -> None:
        state: dict[str, int] = {}  # 1 on the current walk, 2 done
        for start in sorted(self.s.units):
            chain: list[str] = []
            uid: str | None = start
            while uid is not None and uid in self.s.units and state.get(uid) is None:
                state[uid] = 1
                chain.append(uid)
                uid = self.s.units[uid].parent
            if uid is not None and state.get(uid) == 1 and uid in chain and chain[-1] != uid:
                cycle = chain[chain.index(uid):] + [uid]
                first = self.s.units[min(cycle)]
                self.b.at(first, "parent", "unit.parent",
                          _("the unit tree has a cycle: {cycle}").format(cycle=" → ".join(cycle)))
            for c in chain:
                state[c] = 2

    def group_cycles(self) -> None:
        groups = self.s.groups
        color: dict[str, int] = {}
        reported: set[frozenset[str]] = set()

        def visit(gid: str, stack: list[str]) -> None:
            color[gid] = 1
            stack.append(gid)
            for m in groups[gid].members:
                kind, mid = parse_ref(m)
                if kind != "group" or mid not in groups or mid == gid:
                    continue
                if color.get(mid) == 1:
                    cycle = stack[stack.index(mid):] + [mid]
                    key = frozenset(cycle)
                    if key not in reported:
                        reported.add(key)
                        self.b.at(groups[mid], "members", "group.members",
                                  _("groups nest in a cycle: {cycle}").format(cycle=" → ".join(cycle)))
                elif color.get(mid) is None:
                    visit(mid, stack)
            stack.pop()
            color[gid] = 2

        for gid in sorted(groups):
            if gid not in color:
                visit(gid, [])

    # -- addresses ---------------------------------------------------------------------------------

    def own_address(
        self, obj: Located, field: str, label: str, address: str, index: int | None = None
    ) -> bool:
        local, at, domain = address.rpartition("@")
        if not at or not local:
            self.b.at(obj, field, label, _("'{address}' is not an e-mail address (local@{domain})").format(
                address=address, domain=self.domain), index)
            return False
        if address != address.lower():
            self.b.at(obj, field, label,
                      _("'{address}': write addresses in lower case").format(address=address), index)
            return False
        if domain != self.domain:
            self.b.at(obj, field, label,
                      _("'{address}' is outside the organisation's domain {domain}").format(
                          address=address, domain=self.domain) + self._cite("naming.domain"), index)
            return False
        if not LOCAL_RE.match(local) or ".." in local:
            self.b.at(obj, field, label,
                      _("'{address}': before the @ only lower-case letters, digits, '.', '_', '+', "
                        "'-'").format(address=address), index)
            return False
        return True

    def addresses(self) -> None:
        owners: dict[str, tuple[str, Located]] = {}
        owner_names = {"unit": N_("unit '{id}'"), "person": N_("person '{id}'"), "group": N_("group '{id}'"),
                       "old": N_("person '{id}' (old address)")}

        def claim(
            obj: Located, field: str, label: str, address: str, who: str, index: int | None = None
        ) -> None:
            if not self.own_address(obj, field, label, address, index):
                return
            prior = owners.get(address)
            if prior is not None:  # who is "kind" only: said in words when there is a problem
                kind = prior[0]
                owner = _(owner_names[kind]).format(id=getattr(prior[1], "id", ""))
                self.b.at(obj, field, label,
                          _("address '{address}' is already used by {owner} at {where}").format(
                              address=address, owner=owner, where=prior[1].source), index)
            else:
                owners[address] = (who, obj)

        for u in self.s.units.values():
            if u.address is not None:
                claim(u, "address", "unit.address", u.address, "unit")
        for p in self.s.people.values():
            if p.address is not None:
                claim(p, "address", "person.address", p.address, "person")
        for g in self.s.groups.values():
            if g.address is not None:
                claim(g, "address", "group.address", g.address, "group")
        for p in self.s.people.values():
            for i, old in enumerate(p.old_addresses):
                if old == p.address:
                    self.b.at(p, "old_addresses", "person.old_addresses",
                              _("'{address}' is the current address, not an old one").format(address=old), i)
                    continue
                claim(p, "old_addresses", "person.old_addresses", old, "old", i)
            if p.backup_email is not None:
                if not EMAIL_RE.match(p.backup_email):
                    self.b.at(p, "backup_email", "person.backup_email",
                              _("'{address}' is not a valid e-mail address").format(address=p.backup_email))
                elif p.backup_email.rpartition("@")[2].lower() == self.domain:
                    self.b.at(p, "backup_email", "person.backup_email",
                              _("the backup mailbox is outside the agency, not in {domain}").format(
                                  domain=self.domain) + self._cite("registration.backup_mailbox"))

    # -- membership, dissolution -------------------------------------------------------------------

    def _within(self, unit_id: str | None, ancestor: str) -> bool:
        """True when ``unit_id`` is ``ancestor`` or one of its sub-units."""
        seen: set[str] = set()
        while unit_id is not None and unit_id not in seen:
            if unit_id == ancestor:
                return True
            seen.add(unit_id)
            parent = self.s.units.get(unit_id)
            unit_id = parent.parent if parent else None
        return False

    def membership(self) -> None:
        people = self.s.people
        for u in self.s.units.values():
            for field, ids in (("head", [u.head] if u.head else []), ("delegates", u.delegates)):
                for pid in ids:
                    p = people.get(pid)
                    if p is None or p.unit is None or p.unit not in self.s.units:
                        continue
                    if not self._within(p.unit, u.id):
                        message = (
                            _("'{person}' is in unit '{unit}', so cannot be the head of '{id}': the unit "
                              "mailbox is managed by its head and delegated to people of the unit")
                            if field == "head" else
                            _("'{person}' is in unit '{unit}', so cannot be a delegate of '{id}': the unit "
                              "mailbox is managed by its head and delegated to people of the unit"))
                        self.b.at(u, field, f"unit.{field}",
                                  message.format(person=pid, unit=p.unit, id=u.id)
                                  + self._cite("delegation.delegate"))

    def dissolved(self) -> None:
        for u in self.s.units.values():
            if u.dissolved_on is None:
                continue
            d = u.dissolved_on
            staying = sorted(p.id for p in self.s.people.values()
                             if p.unit == u.id and (p.left_on is None or p.left_on > d))
            if staying:
                shown = ", ".join(staying[:5])
                if len(staying) > 5:
                    shown += _(" and {n} more").format(n=len(staying) - 5)
                self.b.at(u, "dissolved_on", "unit.dissolved_on",
                          ngettext("unit '{id}' is dissolved on {date} but {n} person is still in it: "
                                   "{people} (move them to another unit or set left_on)",
                                   "unit '{id}' is dissolved on {date} but {n} people are still in it: "
                                   "{people} (move them to another unit or set left_on)",
                                   len(staying)).format(id=u.id, date=d, n=len(staying), people=shown))
            subs = sorted(c.id for c in self.s.units.values()
                          if c.parent == u.id and (c.dissolved_on is None or c.dissolved_on > d))
            if subs:
                self.b.at(u, "dissolved_on", "unit.dissolved_on",
                          _("unit '{id}' is dissolved on {date} but its sub-units are not: {units}").format(
                              id=u.id, date=d, units=", ".join(subs)))
        for p in self.s.people.values():
            if p.joined_on and p.left_on and p.left_on < p.joined_on:
                self.b.at(p, "left_on", "person.left_on",
                          _("left_on {left} is before joined_on {joined}").format(
                              left=p.left_on, joined=p.joined_on))

    def folders(self) -> None:
        seen: dict[tuple[str, str], SharedFolder] = {}
        for f in self.s.shared_folders:
            why = folder_path_problem(f.path)
            if why is not None:
                self.b.at(f, "path", "shared_folder.path", f"'{f.path}' {why}")
                continue
            path = inbox_canonical(f.path)
            if path == "INBOX":
                self.b.at(f, "path", "shared_folder.path", _("INBOX cannot be a shared folder"))
            key = (f.mailbox, path)  # compared as the server does: inbox/X and INBOX/X are one folder
            prior = seen.get(key)
            if prior is not None:
                same = ("" if prior.path == f.path
                        else _(" (as '{path}': INBOX is one folder in any letter case)").format(
                            path=prior.path))
                self.b.at(f, "path", "shared_folder.path",
                          _("shared folder '{path}' of '{mailbox}' is already defined at {where}").format(
                              path=f.path, mailbox=f.mailbox, where=prior.source) + same)
            else:
                seen[key] = f

    def templates(self) -> None:
        """The [naming] address templates parse, with known placeholders only (desired_state.naming)."""
        naming = self.s.naming
        for kind in ("person", "unit", "group"):
            text = getattr(naming, kind)
            if kind == "group" and not text.strip():
                continue
            try:
                parse_template(text, FIELDS[kind])
            except TemplateError as exc:
                self.b.at(naming, kind, f"naming.{kind}", str(exc))

    def lifecycle(self) -> None:
        lc = self.s.lifecycle
        ref = date(2000, 1, 31)
        for lock, remove in (("lock_after_leaving", "remove_after_leaving"),
                             ("lock_after_inactivity", "remove_after_inactivity")):
            if getattr(lc, lock).after(ref) > getattr(lc, remove).after(ref):
                self.b.at(lc, remove, f"lifecycle.{remove}",
                          _("{remove} ({remove_after}) is shorter than {lock} ({lock_after}): "
                            "a mailbox is locked before it is removed").format(
                              remove=remove, remove_after=getattr(lc, remove), lock=lock,
                              lock_after=getattr(lc, lock)))
        self.maxima()
        self.leavers()

    def maxima(self) -> None:
        """A [lifecycle] duration longer than the maximum its article allows: a warning naming both (the
        plan then cites the setting, not the article)."""
        lc = self.s.lifecycle
        try:
            rules = self.s.rules
        except KeyError:
            return
        for rule in sorted(rules.maximum):
            setting = RULES.get(rule)
            if not setting:
                continue
            configured = getattr(lc, setting, None)
            most = rules.max_duration(rule)
            if not isinstance(configured, Duration) or most is None or not configured.exceeds(most):
                continue
            citation = rules.citation(rule)
            where = citation.text() if citation else rule
            src = lc.source
            self.s.warnings.append(Problem(
                src.file, src.line_of(setting), f"lifecycle.{setting}",
                _("configured {configured} exceeds the maximum {most} of {where}; plans cite "
                  "`{setting}` for it, not the article").format(
                    configured=fmt_duration(configured.amount, configured.unit),
                    most=fmt_duration(most.amount, most.unit), where=where, setting=setting)))

    def leavers(self) -> None:
        """``notice_on`` belongs to a leaver; ``keep_after_leaving`` only for the posts the agency's rule
        allows (where it names them)."""
        try:
            rules = self.s.rules
        except KeyError:
            return
        for p in self.s.people.values():
            if p.notice_on is not None and p.left_on is None:
                self.b.at(p, "notice_on", "person.notice_on",
                          _("notice_on is the notice of a leaving: set left_on too"))
            keep = p.keep_after_leaving
            if keep is None or not rules.keep_posts:
                continue
            post = keep.post or p.title or ""
            if not rules.post_allows_keeping(post):
                self.b.at(p, "keep_after_leaving", "person.keep_after_leaving",
                          _("a mailbox is kept after leaving only for the posts {posts}{cite}; "
                            "{post} is none of them: write the post held in keep_after_leaving.post "
                            "(or remove keep_after_leaving)").format(
                              posts=", ".join(rules.keep_posts),
                              cite=self._cite("lifecycle.keep_after_leaving"), post=repr(post)))


def build_state(
    root: Path, docs: list[Document], complete: bool = True
) -> tuple[State | None, list[Problem]]:
    """Validate parsed documents and merge them into a ``State``; returns it with every problem found.

    ``complete=False`` says some files could not be parsed: a missing ``[organization]`` and references
    that do not resolve are then not reported (they may be in the broken file).
    """
    builder = _Builder(root)
    state = builder.build(docs, complete)
    problems = builder.problems
    if builder.standins:  # never show a stand-in id: name the person
        names = {s: _("{name} (written without an id)").format(name=repr(name))
                 for s, name in builder.standins.items()}
        pattern = re.compile("'?(" + "|".join(map(re.escape, names)) + ")'?")
        problems = [dataclasses.replace(p, message=pattern.sub(lambda m: names[m.group(1)], p.message))
                    for p in problems]
    return state, problems
