"""`mailstate assign`: write derived addresses into the TOML, so a reviewer sees the real address in the PR.

For every person, unit and group without ``address = …`` whose address can be derived (docs/naming.md,
desired_state.naming), one line ``address = "…"`` is inserted right after the table's ``name`` (or ``id``)
key, with the same indentation and ``=`` alignment. Nothing else in the file changes: comments, order,
blank lines and layout stay byte-for-byte. The inserted value is rendered by tomlkit; each rewritten file
is parsed again with ``tomllib`` and must hold exactly the old data plus the new addresses (where a table
is written in a form a line cannot be inserted into, e.g. an inline table, tomlkit edits the file instead).

Writing is all or nothing: every file is written to a temporary file beside it first, then all are moved
into place with ``os.replace``. A second run writes nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

from mailstate.desired_state.documents import Document, KeyPath, read_documents
from mailstate.desired_state.naming import Addresses, Kind, derive_addresses
from mailstate.desired_state.schema import State
from mailstate.desired_state.validate import build_state
from mailstate.errors import MailstateError, Problem, ValidationError
from mailstate.model.i18n import _, kind_name, ngettext
from mailstate.model.provider import Snapshot
from mailstate.model.settings import ID_RE

ANCHORS = ("name", "id")
"""The address goes right after the later of these keys in its table."""

_KEY_RE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<key>[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?P<pad>[ \t]*)=(?P<after>[ \t]*)"
)


@dataclass(frozen=True)
class Assignment:
    """One address written: which object, the address, and where it now stands (file, line)."""

    kind: Kind
    id: str
    address: str
    file: str
    line: int
    key: str = "address"
    """The key written: ``address``, or ``id`` for a person written without one (``address`` holds the id)."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {kind_name(self.kind)} {self.id}: {self.key} = {self.address}"


@dataclass
class AssignResult:
    """What ``assign`` wrote (or would write): each address, and the new text of each changed file."""

    assignments: list[Assignment] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    """Relative path → new file text, for the files that change."""

    @property
    def changed(self) -> bool:
        return bool(self.assignments)

    def summary(self, check: bool = False) -> str:
        ids = sum(1 for a in self.assignments if a.key == "id")
        n, f = len(self.assignments) - ids, len(self.texts)
        if not n and not ids:
            return _("nothing to assign: every person, unit and group has its id and address")
        what = ngettext("{n} address", "{n} addresses", n).format(n=n)
        if ids:
            what = _("{addresses} and {ids}").format(
                addresses=what, ids=ngettext("{n} id", "{n} ids", ids).format(n=ids))
        files = ngettext("{n} file", "{n} files", f).format(n=f)
        if check:
            return _("would assign {what} in {files}").format(what=what, files=files)
        return _("assigned {what} in {files}").format(what=what, files=files)


class AssignError(MailstateError):
    """A file could not be rewritten safely or written; nothing was changed."""


# --------------------------------------------------------------------------------------------------
# Planning the edits (no writes)


def _tables(doc: Document) -> dict[tuple[Kind, str], KeyPath]:
    """(kind, id) → key path of every [unit], [[person]] and [[group]] table of one file."""
    out: dict[tuple[Kind, str], KeyPath] = {}
    kinds: tuple[Kind, ...] = ("unit", "person", "group")
    for kind in kinds:
        value = doc.data.get(kind)
        items: list[tuple[KeyPath, Any]]
        if isinstance(value, dict):
            items = [((kind,), value)]
        elif isinstance(value, list):
            items = [((kind, i), v) for i, v in enumerate(value)]
        else:
            continue
        for path, table in items:
            if isinstance(table, dict) and isinstance(table.get("id"), str):
                out[(kind, table["id"])] = path
    return out


_SIMPLE_LINE_RE = re.compile(
    r"""^[ \t]*([A-Za-z0-9_-]+)[ \t]*=[ \t]*"(?:[^"\\\n]|\\.)*"[ \t]*(#[^\n]*)?\r?\n?$"""
)
"""``key = "basic string"  # comment`` on one line: the common case, checked without a TOML parse."""


def _single_line_key(line: str, key: str) -> bool:
    """Whether ``line`` holds the whole ``key = value`` (not the start of a multi-line string or array)."""
    m = _SIMPLE_LINE_RE.match(line)
    if m and m.group(1) == key and '"""' not in line:
        return True
    try:
        parsed = tomllib.loads(line.strip())
    except tomllib.TOMLDecodeError:
        return False
    return list(parsed) == [key]


def _insertion_line(doc: Document, lines: list[str], path: KeyPath) -> int | None:
    """0-based index of the line after which ``address`` goes, or None when a line cannot be inserted."""
    pos = doc.positions.get(path)
    if pos is None:
        return None
    candidates = sorted(
        ((pos.fields[k], k) for k in ANCHORS if k in pos.fields), reverse=True
    )
    for line_no, key in candidates:
        idx = line_no - 1
        if 0 <= idx < len(lines) and _single_line_key(lines[idx], key) and _KEY_RE.match(lines[idx]):
            return idx
    return None


def _key_line(anchor: str | None, key: str, value: str, eol: str) -> str:
    """``key = "…"`` indented and aligned like the anchor line (``name   = …`` → ``address = …``)."""
    m = _KEY_RE.match(anchor) if anchor is not None else None
    if m is None:
        return f"{key} = {tomlkit.string(value).as_string()}{eol}"
    width = len(m["key"]) + len(m["pad"])
    padded = key.ljust(width) if width > len(key) else key + " "
    return f"{m['indent']}{padded}={m['after'] or ' '}{tomlkit.string(value).as_string()}{eol}"


Edit = tuple[KeyPath, str, str]
"""(table path, key, value): one ``key = "value"`` line to add to a table."""


def _expected(data: dict[str, Any], edits: list[Edit]) -> dict[str, Any]:
    expected = copy.deepcopy(data)
    for path, key, value in edits:
        table: Any = expected
        for part in path:
            table = table[part]
        table[key] = value
    return expected


def _header_line(doc: Document, lines: list[str], path: KeyPath) -> int | None:
    """0-based index of the ``[[person]]`` (or ``[unit]``) header line of the table at ``path``, if any."""
    pos = doc.positions.get(path)
    if pos is None:
        return None
    idx = pos.line - 1
    if 0 <= idx < len(lines) and lines[idx].strip().startswith("["):
        return idx
    return None


def _split_lines(text: str) -> list[str]:
    """Lines with their ends, split at LF only: TOML ends lines there (``str.splitlines`` would also split
    at U+2028, U+0085 … inside a comment or string, and every later line would be off by one)."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _edit_lines(doc: Document, edits: list[Edit]) -> tuple[str, dict[tuple[KeyPath, str], int]] | None:
    """Insert one line per edit; return the new text and each edit's new 1-based line, or None if unsafe.

    ``address`` goes right after the table's ``name`` (or ``id``), else (a multi-line ``name`` and no ``id``
    line yet) right after its header; ``id`` right after its ``[[…]]`` header, aligned like the ``name``
    line."""
    lines = _split_lines(doc.text)
    eol = "\r\n" if "\r\n" in doc.text else "\n"
    inserts: list[tuple[int, int, KeyPath, str, str, str | None]] = []
    for path, key, value in edits:
        anchor_idx = _insertion_line(doc, lines, path)
        if key == "id":
            idx = _header_line(doc, lines, path)
            order = 0
        else:
            idx, order = anchor_idx, 1
            if idx is None and any(p == path and k == "id" for p, k, _ in edits):
                idx = _header_line(doc, lines, path)  # after the id inserted there
        if idx is None:
            return None
        inserts.append((idx, order, path, key, value, lines[anchor_idx] if anchor_idx is not None else None))
    inserts.sort(key=lambda t: (t[0], t[1]))
    new_lines = list(lines)
    where: dict[tuple[KeyPath, str], int] = {}
    for shift, (idx, _order, path, key, value, anchor) in enumerate(inserts):
        line = lines[idx]
        if not line.endswith(("\n", "\r")):  # the last line of a file without a final newline
            new_lines[idx + shift] = line + eol
        new_lines.insert(idx + shift + 1, _key_line(anchor, key, value, eol))
        # inserts go in ascending order, each after the ones above it: none moves a line already placed
        where[(path, key)] = idx + shift + 2
    return "".join(new_lines), where


def _edit_tomlkit(doc: Document, edits: list[Edit]) -> tuple[str, dict[tuple[KeyPath, str], int]]:
    """Fallback for tables a line cannot be inserted into (inline tables …): tomlkit adds the key."""
    tk = tomlkit.parse(doc.text)
    for path, key, value in edits:
        table: Any = tk
        for part in path:
            table = table[part]
        table[key] = value
    text = tomlkit.dumps(tk)
    if "\r\n" in doc.text:  # tomlkit ends the lines it adds with LF: keep the file's CRLF
        crlf = re.sub(r"(?<!\r)\n", "\r\n", text)
        if tomllib.loads(crlf) == tomllib.loads(text):
            text = crlf
    where = {(path, key): _find_line(text, value) for path, key, value in edits}
    return text, where


def _find_line(text: str, address: str) -> int:
    needle = tomlkit.string(address).as_string()
    for i, line in enumerate(text.split("\n"), 1):
        if needle in line:
            return i
    return 0


def _rewrite(doc: Document, edits: list[Edit]) -> tuple[str, dict[tuple[KeyPath, str], int]]:
    expected = _expected(doc.data, edits)
    for editor in (_edit_lines, _edit_tomlkit):
        got = editor(doc, edits)
        if got is None:
            continue
        try:
            if tomllib.loads(got[0]) == expected:
                return got
        except tomllib.TOMLDecodeError:
            pass
    raise AssignError(_("{file}: cannot insert the addresses safely; write them by hand").format(
        file=doc.rel))


def live_addresses_of(snapshots: Iterable[Snapshot]) -> dict[str, str]:
    """address → owner reference (as ``derive_addresses`` takes it) from what the providers read.

    People, unit mailboxes and groups own their address and aliases; an alias entry belongs to the
    owner of its target; objects mailstate does not manage still hold their addresses (owner unknown).
    """
    out: dict[str, str] = {}
    aliases: list[tuple[str, str]] = []
    unknown: list[tuple[str, str]] = []
    for snap in snapshots:
        for rec in snap.records.values():
            if rec.kind == "alias":
                aliases.append((str(rec.key), str(rec.attrs.get("target") or "")))
                continue
            owner = _LIVE_OWNER.get(rec.kind, "") + str(rec.key) if rec.kind in _LIVE_OWNER else None
            primary = rec.attrs.get("address")  # a tuple when the entry holds several `mail` values
            primaries = primary if isinstance(primary, tuple) else (primary,)
            for address in (*primaries, *(rec.attrs.get("aliases") or ())):
                if address:
                    if owner is None:
                        unknown.append((str(address), f"{rec.kind}/{rec.key}"))
                    else:
                        out.setdefault(str(address).lower(), owner)
        for rec in snap.unmanaged:
            for address in (rec.attrs.get("address"), *(rec.attrs.get("aliases") or ())):
                if address:
                    unknown.append((str(address), f"unmanaged {rec.kind}/{rec.key}"))
    for old, target in aliases:
        out.setdefault(old.lower(), out.get(target.lower(), f"alias of {target}"))
    for address, owner in unknown:
        out.setdefault(address.lower(), owner)
    return out


_LIVE_OWNER = {"person": "", "unit_mailbox": "unit:", "group": "group:"}


LiveReader = Callable[[State], Mapping[str, str]]
"""Reads the addresses in use live (address → owner) for a state."""


PROVISIONAL_ID = "zzzz-new-{:05d}"
"""Stands in, while addresses are derived, for a person written without an id (sorts after real ids, so
people who already have an id are numbered first)."""


def _provisional_ids(docs: list[Document]) -> dict[str, tuple[Document, KeyPath]]:
    """Give every ``[[person]]`` written without ``id`` a provisional id (in place, in the parsed data)."""
    out: dict[str, tuple[Document, KeyPath]] = {}
    for doc in docs:
        people = doc.data.get("person")
        if not isinstance(people, list):
            continue
        for i, table in enumerate(people):
            if isinstance(table, dict) and "id" not in table and isinstance(table.get("name"), str):
                pid = PROVISIONAL_ID.format(len(out) + 1)
                table["id"] = pid
                out[pid] = (doc, ("person", i))
    return out


def _live_ids(live: Mapping[str, str] | None) -> set[str]:
    """Ids (LDAP uids) of the people that own addresses in the live directory, in the TOML or not."""
    out: set[str] = set()
    for owner in (live or {}).values():
        owner = owner.removeprefix("unmanaged person/")
        if ID_RE.match(owner):
            out.add(owner)
    return out


def _without_provisional(
    problems: list[Problem], provisional: Mapping[str, tuple[Document, KeyPath]]
) -> list[Problem]:
    """The problems with each provisional id replaced by the person's name: it is no id the user wrote."""
    if not provisional:
        return problems
    names: dict[str, str] = {}
    for pid, (doc, path) in provisional.items():
        table: Any = doc.data
        for part in path:
            table = table[part]
        names[pid] = _("{name} (written without an id)").format(name=repr(table.get("name")))
    pattern = re.compile("'?(" + "|".join(map(re.escape, names)) + ")'?")
    return [
        dataclasses.replace(p, message=pattern.sub(lambda m: names[m.group(1)], p.message))
        for p in problems
    ]


def _new_ids(
    provisional: Mapping[str, object], addresses: Addresses, state: State, live_ids: Iterable[str] = ()
) -> dict[str, str]:
    """provisional id → the person's id: the local part of the derived address (docs/naming.md), made unique
    among the ids of the TOML and the people of the live directory (``live_ids``): a newcomer never takes
    over the entry of someone who left the TOML but is still in the directory."""
    used = set(state.units) | set(state.groups) | (set(state.people) - set(provisional)) | set(live_ids)
    out: dict[str, str] = {}
    for pid in sorted(provisional):
        address = addresses.people.get(pid)
        if address is None:
            continue
        base = address.split("@", 1)[0]
        if not ID_RE.match(base):
            base = re.sub(r"[^a-z0-9._-]", "", base.lower()).lstrip("0123456789._-") or "person"
        new, k = base, 2
        while new in used:
            new, k = f"{base}-{k}", k + 1
        used.add(new)
        out[pid] = new
    return out


def plan_assign(
    root: Path, live: Mapping[str, str] | None = None, *, read_live: LiveReader | None = None
) -> AssignResult:
    """Load and validate the state under ``root``, derive addresses (and the ids of people written
    without one), and compute the new file texts.

    ``live`` (address → owner) or ``read_live`` (given the state, reads them from the directory: the
    pipeline's ``read_live_addresses``; this module never talks to a server) keeps every address in use
    live from being handed to anyone else. Writes nothing. Raises ``ValidationError`` (bad state, bad
    template), ``AssignError`` or, with ``read_live``, ``ProviderError``.
    """
    root = Path(root)
    docs, problems = read_documents(root)  # read once: the same texts are validated and rewritten
    if problems or not docs:
        raise ValidationError(problems)
    provisional = _provisional_ids(docs)
    state, problems = build_state(root, docs)
    if problems or state is None:
        raise ValidationError(_without_provisional(problems, provisional))
    if read_live is not None:
        live = {**read_live(state), **(live or {})}
    try:
        addresses = derive_addresses(state, live)
    except ValidationError as exc:
        raise ValidationError(_without_provisional(exc.problems, provisional)) from None
    new_ids = _new_ids(provisional, addresses, state, _live_ids(live))
    return plan_edits(docs, addresses, _pinned(state), new_ids)


def _pinned(state: State) -> set[tuple[Kind, str]]:
    out: set[tuple[Kind, str]] = set()
    out.update(("unit", id_) for id_, u in state.units.items() if u.address)
    out.update(("person", id_) for id_, p in state.people.items() if p.address)
    out.update(("group", id_) for id_, g in state.groups.items() if g.address)
    return out


def plan_edits(
    docs: list[Document],
    addresses: Addresses,
    pinned: set[tuple[Kind, str]] | None = None,
    new_ids: Mapping[str, str] | None = None,
) -> AssignResult:
    """The edits that write every unpinned address of ``addresses`` (and each new person's id, from
    ``new_ids``: provisional id → id) into ``docs`` (pure: no I/O)."""
    pinned = pinned or set()
    new_ids = new_ids or {}
    wanted = {(k, i): a for k, i, a in addresses.unpinned() if (k, i) not in pinned}
    result = AssignResult()
    problems: list[Problem] = []
    found: set[tuple[Kind, str]] = set()
    for doc in docs:
        edits: list[Edit] = []
        who: dict[KeyPath, tuple[Kind, str]] = {}
        for obj_key, path in _tables(doc).items():
            kind, id_ = obj_key
            address = wanted.get(obj_key)
            new_id = new_ids.get(id_) if kind == "person" else None
            if obj_key in found or (address is None and new_id is None):
                continue
            table: Any = doc.data
            for key in path:
                table = table[key]
            if "address" in table:
                address = None  # pinned: a person written without an id still gets one
            if address is None and new_id is None:
                continue
            found.add(obj_key)
            if new_id is not None:
                edits.append((path, "id", new_id))
                id_ = new_id
            if address is not None:
                edits.append((path, "address", address))
            who[path] = (kind, id_)
        if not edits:
            continue
        text, where = _rewrite(doc, edits)
        result.texts[doc.rel] = "\ufeff" + text if doc.bom else text
        for path, key, value in edits:
            kind, id_ = who[path]
            result.assignments.append(Assignment(kind, id_, value, doc.rel, where[(path, key)], key))
    for kind, id_ in sorted(set(wanted) - found):
        problems.append(Problem("<state>", 0, kind,
                                _("{what} {id}: no table to write its address into").format(
                                    what=kind_name(kind), id=repr(id_))))
    if problems:
        raise ValidationError(problems)
    result.assignments.sort(key=lambda a: (a.file, a.line))
    return result


# --------------------------------------------------------------------------------------------------
# Writing


def write_texts(root: Path, texts: Mapping[str, str]) -> None:
    """Write every file or none: temporary files beside each first, then ``os.replace`` them all."""
    root = Path(root)
    staged: list[tuple[str, Path]] = []
    try:
        for rel, text in texts.items():
            target = (root / rel).resolve()  # a symlinked file stays a symlink
            mode = target.stat().st_mode & 0o7777 if target.exists() else 0o644
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            staged.append((tmp, target))
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
    except OSError as exc:
        for tmp, _target in staged:
            Path(tmp).unlink(missing_ok=True)
        raise AssignError(
            _("cannot write {file}: {error}; nothing was changed").format(
                file=exc.filename or "", error=exc.strerror or exc)
        ) from None
    for done, (tmp, target) in enumerate(staged):
        try:
            os.replace(tmp, target)
        except OSError as exc:  # very unlikely after the writes succeeded; say exactly what happened
            for left, _target in staged[done:]:
                Path(left).unlink(missing_ok=True)
            moved = ", ".join(str(t.relative_to(root)) for _tmp, t in staged[:done]) or _("none")
            raise AssignError(
                _("cannot replace {file}: {error}; already written: {moved}").format(
                    file=target, error=exc.strerror or exc, moved=moved)
            ) from None


def assign(
    root: Path, *, check: bool = False, live: Mapping[str, str] | None = None,
    read_live: LiveReader | None = None,
) -> AssignResult:
    """Derive and write the missing addresses (``check``: compute only, write nothing)."""
    result = plan_assign(root, live, read_live=read_live)
    if result.changed and not check:
        write_texts(root, result.texts)
    return result
