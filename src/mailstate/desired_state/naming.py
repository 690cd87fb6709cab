"""Naming policy: addresses derived from Vietnamese names by per-organisation templates (docs/naming.md).

Pure and fast: no I/O. The template language, the agencies' rules written in it and the collision
policy are documented in docs/naming.md. In short:

- ``transliterate("Nguyễn Văn Bằng") == "nguyen van bang"``: tone and vowel marks stripped, đ/Đ → d
  (NFD alone does not map đ), lower case.
- A template is literal text with placeholders: ``{given}{initials}`` gives ``bangnv`` (BĐ art.4.2),
  ``{initials}{given}.{unit}`` gives ``nvtien.stc`` and ``{unit_name}`` gives ``staichinh`` (VL art.4).
  The result is restricted to ``[a-z0-9.-]``: anything else is dropped, dots collapse, no dot at either end.
- Collisions are numbered (``bangnv``, ``bangnv2`` …, BĐ art.4.2) in a stable order — by id — and an
  address that already exists (pinned in the TOML, an old address kept as an alias, or taken in the live
  directory) is never given to anyone else nor renumbered.

Entry point: :func:`derive_addresses`.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from mailstate.desired_state.schema import Group, Naming, Person, State, Unit
from mailstate.errors import Problem, ValidationError
from mailstate.model.i18n import _, kind_name
from mailstate.model.records import parse_ref

Kind = Literal["person", "unit", "group"]
Origin = Literal["pinned", "live", "derived"]

# --------------------------------------------------------------------------------------------------
# Transliteration

_EXTRA = str.maketrans({"đ": "d", "Đ": "d", "ð": "d", "Ð": "d", "ı": "i"})
"""Letters NFD does not decompose: đ/Đ (and ð/Ð, which legacy TCVN3 → Unicode conversions produce for đ)."""


def transliterate(text: str) -> str:
    """Strip tone and vowel marks, map đ/Đ → d, lower-case: "Đặng Thị Ưng" → "dang thi ung".

    Everything else (spaces, punctuation) is kept; :func:`clean_local_part` restricts to address characters.
    """
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFC", text).translate(_EXTRA))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return stripped.translate(_EXTRA).lower()


_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_NOT_LOCAL = re.compile(r"[^a-z0-9.-]+")
_DOTS = re.compile(r"\.{2,}")


@functools.lru_cache(maxsize=65536)
def word_key(text: str) -> str:
    """One transliterated word (or phrase) reduced to ``[a-z0-9]``: "Bằng" → "bang", "H'Hen" → "hhen"."""
    return _NOT_ALNUM.sub("", transliterate(text))


def clean_local_part(text: str) -> str:
    """Restrict to ``[a-z0-9.-]``: drop anything else, collapse dots, no leading or trailing dot."""
    return _DOTS.sub(".", _NOT_LOCAL.sub("", transliterate(text))).strip(".")


# --------------------------------------------------------------------------------------------------
# Names


@dataclass(frozen=True)
class NameParts:
    """A Vietnamese full name split the Vietnamese way: family name first, given name last."""

    family: str
    middle: tuple[str, ...]
    given: str

    @classmethod
    def of(cls, name: str) -> NameParts:
        """Split "Nguyễn  Thị Minh Khai" into family "nguyen", middle ("thi", "minh"), given "khai".

        Words are transliterated and reduced to ``[a-z0-9]``; words that reduce to nothing are dropped.
        A one-word name has only a given name.
        """
        words = [w for w in (word_key(part) for part in name.split()) if w]
        if not words:
            return cls("", (), "")
        if len(words) == 1:
            return cls("", (), words[0])
        return cls(words[0], tuple(words[1:-1]), words[-1])


UNIT_TYPE_WORDS: tuple[tuple[str, ...], ...] = tuple(
    tuple(phrase.split())
    for phrase in (
        "uy ban nhan dan", "hoi dong nhan dan", "van phong", "tong cuc", "chi cuc", "trung tam",
        "benh vien", "thi xa", "thanh pho", "thi tran", "so", "ban", "phong", "cuc", "vu", "vien",
        "bo", "huyen", "quan", "xa", "phuong", "dai", "truong", "tinh",
    )
)
"""Leading words naming the kind of unit (Sở, Phòng, Ủy ban nhân dân …), longest first; ``{unit_name}``
shortens them to their initials, as VL art.4 does: "Sở Tài chính" → "s" + "taichinh"."""

_UNIT_TYPE_SPELLING: dict[str, frozenset[str]] = {
    "uy": frozenset({"ủy", "uỷ"}), "ban": frozenset({"ban"}), "nhan": frozenset({"nhân"}),
    "dan": frozenset({"dân"}), "hoi": frozenset({"hội"}), "dong": frozenset({"đồng"}),
    "van": frozenset({"văn"}), "phong": frozenset({"phòng"}), "tong": frozenset({"tổng"}),
    "cuc": frozenset({"cục"}), "chi": frozenset({"chi"}), "trung": frozenset({"trung"}),
    "tam": frozenset({"tâm"}), "benh": frozenset({"bệnh"}), "vien": frozenset({"viện"}),
    "thi": frozenset({"thị"}), "xa": frozenset({"xã"}), "thanh": frozenset({"thành"}),
    "pho": frozenset({"phố"}), "tran": frozenset({"trấn"}), "so": frozenset({"sở"}),
    "vu": frozenset({"vụ"}), "bo": frozenset({"bộ"}), "huyen": frozenset({"huyện"}),
    "quan": frozenset({"quận"}), "phuong": frozenset({"phường"}), "dai": frozenset({"đài"}),
    "truong": frozenset({"trường"}), "tinh": frozenset({"tỉnh"}),
}
"""How each kind-of-unit word is spelt with its marks: "Quận" is a kind of unit, "Quản" (lý) is not,
"Đài" is and "Đại" (học) is not, though all transliterate alike. A word written without any mark
(unaccented input) matches by its transliteration."""


def _is_kind_word(original: str, key: str, kind_word: str) -> bool:
    if key != kind_word:
        return False
    low = unicodedata.normalize("NFC", original).lower()
    return low == key or low in _UNIT_TYPE_SPELLING.get(kind_word, frozenset({kind_word}))


def split_unit_name(name: str) -> tuple[list[str], list[str]]:
    """(kind-of-unit words, the rest), transliterated: "Phòng Kỹ thuật hạ tầng" → (["phong"], ["ky", …]).

    A kind word counts only as written with its own marks ("Ban Quản lý dự án" → (["ban"], ["quan", …]))."""
    pairs = [(part, key) for part, key in ((part, word_key(part)) for part in name.split()) if key]
    kind: list[str] = []
    while pairs:
        for phrase in UNIT_TYPE_WORDS:
            n = len(phrase)
            head = pairs[:n]
            if len(pairs) > n and all(_is_kind_word(o, k, w) for (o, k), w in zip(head, phrase, strict=True)):
                kind += phrase
                pairs = pairs[n:]
                break
        else:
            break
    return kind, [key for _, key in pairs]


def unit_name_key(name: str) -> str:
    """VL art.4: the kind-of-unit words as initials, the rest concatenated ("Sở Tài chính" → "staichinh")."""
    kind, rest = split_unit_name(name)
    return "".join(w[0] for w in kind) + "".join(rest)


# --------------------------------------------------------------------------------------------------
# Templates

UNIT_FIELDS = (
    "unit", "unit_name", "unit_name_full", "unit_initials", "unit_kind", "unit_kind_initials", "unit_rest",
    "unit_rest_initials", "id",
)
PERSON_FIELDS = (
    "given", "family", "middle", "initials", "family_initial", "middle_initials", "given_initial",
    *UNIT_FIELDS,
)
GROUP_FIELDS = ("group", "group_name", "id")
SEQUENCE_FIELD = "n"
"""Where the collision number goes (``{initials}{given}{n}.{unit}`` → nvtien2.stc); at the end when absent."""

FIELDS: dict[Kind, tuple[str, ...]] = {"person": PERSON_FIELDS, "unit": UNIT_FIELDS, "group": GROUP_FIELDS}


class TemplateError(ValueError):
    """A template that cannot be used: unbalanced braces, unknown placeholder, nothing to produce."""


@dataclass(frozen=True)
class Template:
    """A parsed address template: literal text and placeholders, in order."""

    text: str
    parts: tuple[tuple[str, str | None], ...]
    """(literal text, placeholder name or None) pairs, as string.Formatter().parse gives them."""

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f for _, f in self.parts if f is not None)

    @property
    def has_sequence(self) -> bool:
        return SEQUENCE_FIELD in self.fields


def parse_template(text: str, allowed: Iterable[str] = PERSON_FIELDS) -> Template:
    """Parse ``text``; raise :class:`TemplateError` naming the problem (``{{`` ``}}`` are literal braces)."""
    allowed = tuple(allowed)
    try:
        raw = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(
            _("{template} is not a valid template: {error} (use {{{{ and }}}} for literal braces)").format(
                template=repr(text), error=exc)
        ) from None
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in raw:
        if name is not None:
            if name == "":
                raise TemplateError(_("{template}: empty placeholder {{}}; known: {known}").format(
                    template=repr(text), known=_known(allowed)))
            if spec or conversion:
                raise TemplateError(_("{template}: {{{name}}} takes no format or conversion").format(
                    template=repr(text), name=name))
            if name != SEQUENCE_FIELD and name not in allowed:
                raise TemplateError(_("{template}: unknown placeholder {{{name}}}; known: {known}").format(
                    template=repr(text), name=name, known=_known(allowed)))
        parts.append((literal, name))
    tpl = Template(text, tuple(parts))
    if tpl.fields.count(SEQUENCE_FIELD) > 1:
        raise TemplateError(_("{template}: {{{name}}} may appear only once").format(
            template=repr(text), name=SEQUENCE_FIELD))
    if not [f for f in tpl.fields if f != SEQUENCE_FIELD] and not clean_local_part(
        "".join(literal for literal, _ in parts)
    ):
        raise TemplateError(_("{template} yields an empty local part").format(template=repr(text)))
    return tpl


def _known(allowed: Iterable[str]) -> str:
    return ", ".join("{" + f + "}" for f in (*allowed, SEQUENCE_FIELD))


def render(template: str | Template, values: Mapping[str, str], n: str = "") -> str:
    """Fill ``template`` with ``values`` and the sequence text ``n``; return the cleaned local part.

    Missing values render empty. When the template has no ``{n}``, ``n`` is appended at the end
    (BĐ art.4.2: the sequence number right after the name).
    """
    tpl = template if isinstance(template, Template) else parse_template(template, values.keys())
    out: list[str] = []
    for literal, name in tpl.parts:
        out.append(literal)
        if name == SEQUENCE_FIELD:
            out.append(n)
        elif name is not None:
            out.append(values.get(name, ""))
    if not tpl.has_sequence:
        out.append(n)
    return clean_local_part("".join(out))


def unit_values(unit: Unit) -> dict[str, str]:
    """Template values of a unit: ``{unit}`` is its abbreviation or id; ``{unit_name}`` per VL art.4."""
    return dict(_unit_values(unit.id, unit.name, unit.abbreviation))


@functools.lru_cache(maxsize=4096)
def _unit_values(unit_id: str, name: str, abbreviation: str | None) -> tuple[tuple[str, str], ...]:
    kind, rest = split_unit_name(name)
    words = kind + rest
    return tuple({
        "unit": clean_local_part(abbreviation or unit_id),
        "unit_name": "".join(w[0] for w in kind) + "".join(rest),
        "unit_name_full": "".join(words),
        "unit_initials": "".join(w[0] for w in words),
        "unit_kind": "".join(kind),
        "unit_kind_initials": "".join(w[0] for w in kind),
        "unit_rest": "".join(rest),
        "unit_rest_initials": "".join(w[0] for w in rest),
        "id": unit_id,
    }.items())


def person_values(name: str, unit: Unit | None = None, person_id: str = "") -> dict[str, str]:
    """Template values of a person (and of their unit, when given)."""
    p = NameParts.of(name)
    values = {
        "given": p.given,
        "family": p.family,
        "middle": "".join(p.middle),
        "initials": (p.family[:1] + "".join(w[0] for w in p.middle)),
        "family_initial": p.family[:1],
        "middle_initials": "".join(w[0] for w in p.middle),
        "given_initial": p.given[:1],
        "id": person_id,
    }
    if unit is not None:
        values.update({k: v for k, v in unit_values(unit).items() if k != "id"})
    return values


def group_values(group: Group) -> dict[str, str]:
    return {"group": group.id, "group_name": word_key(group.name), "id": group.id}


def person_local_part(
    name: str, template: str = "{given}{initials}", unit: Unit | None = None, n: str = ""
) -> str:
    """The local part for a person: ``person_local_part("Nguyễn Văn Bằng") == "bangnv"``."""
    return render(parse_template(template, PERSON_FIELDS), person_values(name, unit), n)


# --------------------------------------------------------------------------------------------------
# Deriving every address of the organisation


@dataclass
class Addresses:
    """Every address of the organisation: full ``local@domain``, by id, with where each came from."""

    people: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    origin: dict[tuple[Kind, str], Origin] = field(default_factory=dict)
    """("person", id) → "pinned" (written in the TOML), "live" (kept from the directory) or "derived"."""

    def of(self, kind: Kind, id_: str) -> str | None:
        return {"person": self.people, "unit": self.units, "group": self.groups}[kind].get(id_)

    def by_ref(self, ref: str) -> str | None:
        """The address of a reference: "bangnv", "unit:qlcn", "group:lanhdao"."""
        kind, id_ = parse_ref(ref)
        return self.of(kind, id_)

    def unpinned(self) -> list[tuple[Kind, str, str]]:
        """(kind, id, address) of every address not written in the TOML — what ``mailstate assign`` writes."""
        out: list[tuple[Kind, str, str]] = []
        for kind, table in (("unit", self.units), ("group", self.groups), ("person", self.people)):
            for id_, address in table.items():
                if self.origin.get((kind, id_)) != "pinned":  # type: ignore[arg-type]
                    out.append((kind, id_, address))  # type: ignore[arg-type]
        return out


def _full(address: str, domain: str) -> str:
    address = address.strip()
    return address if "@" in address else f"{address}@{domain}"


def _owner_ref(kind: Kind, id_: str) -> str:
    return id_ if kind == "person" else f"{kind}:{id_}"


def _templates(naming: Naming) -> tuple[dict[Kind, Template | None], list[Problem]]:
    problems: list[Problem] = []
    out: dict[Kind, Template | None] = {}
    for kind in ("person", "unit", "group"):
        text = getattr(naming, kind)
        if kind == "group" and not text.strip():
            out[kind] = None  # groups are then addressed only where the TOML says so
            continue
        try:
            out[kind] = parse_template(text, FIELDS[kind])
        except TemplateError as exc:
            src = naming.source
            problems.append(Problem(src.file, src.line_of(kind), f"naming.{kind}", str(exc)))
            out[kind] = None
    return out, problems


def derive_addresses(
    state: State, live: Mapping[str, str] | None = None, taken: Iterable[str] = ()
) -> Addresses:
    """Every person's, unit's and group's address: pinned ones as written, the others derived.

    ``live`` maps addresses in use in the live directory (full, or a local part of the organisation's
    domain) to their owner as a reference (``bangnv``, ``unit:qlcn``, ``group:x``; anything else for an
    owner unknown to the TOML). A live address is never given to anyone but its owner; an owner without a
    pinned address keeps its live address while that is still one its template produces (the base or a
    numbered form of it), so nobody is renumbered. Old addresses kept as aliases are taken too, and so
    is every address in ``taken`` (in use elsewhere, owner unknown: never handed out).

    Collisions are resolved in a stable order: units, then groups, then people, each by id; an object
    whose id is itself a free form of its address (id ``bangnv2``) gets that form first. Raises
    :class:`ValidationError` with every problem found (bad template, duplicate pinned address, a template
    that gives nothing for an object, unknown unit).
    """
    domain = state.domain
    naming = state.naming
    sep = naming.separator
    start = naming.collision_start
    templates, problems = _templates(naming)
    result = Addresses()
    tables: dict[Kind, dict[str, str]] = {
        "person": result.people, "unit": result.units, "group": result.groups,
    }
    objects: dict[Kind, Mapping[str, Unit | Person | Group]] = {
        "unit": state.units, "group": state.groups, "person": state.people,
    }

    in_use: dict[str, str] = {}  # lower-case full address -> owner reference

    def claim(address: str, owner: str, where: Unit | Person | Group, fieldname: str) -> bool:
        key = address.lower()
        other = in_use.get(key)
        if other is not None and other != owner:
            src = where.source
            problems.append(
                Problem(
                    src.file, src.line_of(fieldname), fieldname,
                    _("address {address} is already used by {owner}").format(address=address, owner=other),
                )
            )
            return False
        in_use[key] = owner
        return True

    # 1. Pinned addresses and old addresses (aliases) are owned as written.
    for kind, objs in objects.items():
        for id_ in sorted(objs):
            obj = objs[id_]
            owner = _owner_ref(kind, id_)
            if obj.address:
                address = _full(obj.address, domain)
                if claim(address, owner, obj, "address"):
                    tables[kind][id_] = address
                    result.origin[(kind, id_)] = "pinned"
            if isinstance(obj, Person):
                for old in obj.old_addresses:
                    claim(_full(old, domain), owner, obj, "old_addresses")

    # 2. Live addresses: owned by whoever has them; nobody else may get them.
    live_by_owner: dict[str, list[str]] = {}
    for address, owner in (live or {}).items():
        full = _full(address, domain).lower()
        in_use.setdefault(full, owner)
        live_by_owner.setdefault(owner, []).append(full)
    for address in taken:
        in_use.setdefault(_full(address, domain).lower(), "(in use)")

    # 3. Derive the rest, in passes so that the order of ids cannot take anyone's address away:
    #    3a. a live address of its own that is still a form of its template is kept (never renumber);
    #    3b. an id that is itself a free form of its address (id "bangnv2") claims that form;
    #    3c. everyone else gets the first free form: base, base2, base3 … (by kind, then id).
    todo: list[tuple[Kind, str, Template, dict[str, str]]] = []
    for kind, objs in objects.items():
        tpl = templates[kind]
        for id_ in sorted(objs):
            if id_ in tables[kind]:
                continue
            if tpl is None:  # a bad template (already reported), or groups not derived ([naming].group = "")
                continue
            obj = objs[id_]
            if isinstance(obj, Unit) and not obj.mailbox:
                continue  # no unit mailbox (mailbox = false): no address derived for it
            values = _values(obj, state, tpl, problems)
            if values is None:
                continue
            if not render(tpl, values):
                src = naming.source
                where = f"{src.file}:{src.line_of(kind)}" if src.line else _("the default: no [naming] table")
                problems.append(
                    Problem(
                        obj.source.file, obj.source.line, f"{kind}.name",
                        _("the template {template} ([naming].{kind}, {where}) gives an empty address for "
                          "{what} {id}; write its address = \"…\"").format(
                            template=repr(tpl.text), kind=kind, where=where, what=kind_name(kind),
                            id=repr(id_)),
                    )
                )
                continue
            todo.append((kind, id_, tpl, values))

    def give(kind: Kind, id_: str, address: str, origin: Origin) -> None:
        in_use[address] = _owner_ref(kind, id_)
        tables[kind][id_] = address
        result.origin[(kind, id_)] = origin

    for kind, id_, tpl, values in todo:
        owner = _owner_ref(kind, id_)
        for address in sorted(live_by_owner.get(owner, ())):
            # (not when the TOML pins that address to someone else: the pin wins, this one moves)
            if in_use.get(address) == owner and _is_numbered_form(address, tpl, values, sep, start, domain):
                give(kind, id_, address, "live")
                break
    for kind, id_, tpl, values in todo:
        own = f"{id_}@{domain}"
        if id_ in tables[kind] or own in in_use:
            continue
        if _is_numbered_form(own, tpl, values, sep, start, domain):
            give(kind, id_, own, "derived")
    next_k: dict[tuple[str, str], int] = {}  # (base, second form) -> next sequence number worth trying
    for kind, id_, tpl, values in todo:
        if id_ in tables[kind]:
            continue
        key = (render(tpl, values), render(tpl, values, _seq(sep, start)))
        k = next_k.get(key, 0)
        while True:
            candidate = f"{render(tpl, values, _seq(sep, k) if k else '')}@{domain}"
            if candidate not in in_use:
                break
            k = start if k == 0 else k + 1
        next_k[key] = start if k == 0 else k + 1
        give(kind, id_, candidate, "derived")

    if problems:
        raise ValidationError(problems)
    for table in tables.values():
        ordered = sorted(table.items())
        table.clear()
        table.update(ordered)
    return result


def _seq(sep: str, k: int) -> str:
    return f"{sep}{k}"


_DIGITS = re.compile(r"\d+")


def _is_numbered_form(
    address: str, tpl: Template, values: Mapping[str, str], sep: str, start: int, domain: str
) -> bool:
    """Whether ``address`` is the template's base or one of its numbered forms (base2, base3 …)."""
    local, _, dom = address.partition("@")
    if dom != domain:
        return False
    if local == render(tpl, values):
        return True
    for m in _DIGITS.finditer(local):
        k = int(m.group())
        if k >= start and not m.group().startswith("0") and render(tpl, values, _seq(sep, k)) == local:
            return True
    return False


def _values(
    obj: Unit | Person | Group, state: State, tpl: Template, problems: list[Problem]
) -> dict[str, str] | None:
    if isinstance(obj, Unit):
        return unit_values(obj)
    if isinstance(obj, Group):
        return group_values(obj)
    unit: Unit | None = None
    needs_unit = any(f.startswith("unit") for f in tpl.fields)
    if obj.unit is not None:
        unit = state.units.get(obj.unit)
        if unit is None and needs_unit:
            src = obj.source
            problems.append(Problem(src.file, src.line_of("unit"), "unit",
                                    _("unknown unit {unit}").format(unit=repr(obj.unit))))
            return None
    elif needs_unit:
        src = obj.source
        problems.append(
            Problem(
                src.file, src.line, "unit",
                _("the naming template {template} uses the unit, but this person has none").format(
                    template=repr(tpl.text)),
            )
        )
        return None
    return person_values(obj.name, unit, obj.id)
