"""Read the state repository: every ``*.toml`` under the state dir, with the line of every table and key.

Public functions:

- ``load_state(root) -> State``: read, merge and validate every file; raises ``ValidationError``
  (mailstate.errors) carrying every problem found, each with file, line and field.
- ``load_documents(root) -> list[Document]``: the files alone, parsed but not validated (raises
  ``ValidationError`` only for a missing dir, an unreadable file or a TOML syntax error). Meant for
  ``mailstate assign`` and other tools that rewrite files: each ``Document`` has

  - ``path`` (absolute) and ``rel`` (relative to the state dir, POSIX, what errors print),
  - ``text`` (the file as read, UTF-8) and ``data`` (what ``tomllib`` parsed),
  - ``positions``: ``{path: TablePos}`` where a path is a tuple of keys and array indices exactly as
    in ``data`` — ``()`` the root, ``("organization",)``, ``("person", 3)`` the fourth ``[[person]]``
    of the file, ``("providers", "ldap")`` — and ``TablePos(line, fields, items)`` gives the 1-based
    line of the table's header, of each key written in it (``fields["name"]``) and, for an array
    written over several lines, of each element (``items["members"][2]``).
    ``doc.line_of(("person", 3, "name"))`` returns the best line for any path (falls back to the
    closest enclosing table). ``doc.source(("person", 3))`` builds the model's ``Source``.

  Rewriting is the caller's job (tomlkit keeps comments and layout); parse ``doc.text`` with tomlkit.
- ``read_documents(root) -> (documents, problems)``: the same, returning the problems instead of raising,
  so a caller can go on with the files that parsed; ``validate.build_state(root, documents)`` then
  turns documents into ``(State | None, problems)`` — ``load_state`` is exactly these two steps.
- ``scan_positions(text) -> dict[path, TablePos]``: the line scanner on its own (text must be valid TOML).

``tomllib`` gives no positions and tomlkit is too slow for 10,000 people, so positions come from a line
scanner that understands table headers, arrays of tables, dotted and quoted keys, comments, multi-line
strings and multi-line arrays / inline tables (it runs only on text ``tomllib`` has accepted).
Hidden files and folders (name starting with ``.``) are skipped; files are read in sorted order.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailstate.errors import Problem, ValidationError
from mailstate.model.settings import Source

Key = str | int
KeyPath = tuple[Key, ...]


@dataclass
class TablePos:
    """Line of a table's header (or of the key that opened it) and the line of each key written in it."""

    line: int
    fields: dict[str, int] = field(default_factory=dict)
    items: dict[str, list[int]] = field(default_factory=dict)
    """For a key whose array spans several lines: the line of each element."""


@dataclass
class Document:
    """One TOML file of the state repository, parsed, with the position of every table and key."""

    path: Path
    rel: str
    text: str
    data: dict[str, Any]
    positions: dict[KeyPath, TablePos]
    bom: bool = False
    """The file starts with a byte order mark (not part of ``text``; a rewrite puts it back)."""

    def line_of(self, path: KeyPath) -> int:
        """Best line for ``path``: the key's own line, else the closest enclosing table's line."""
        return line_of(self.positions, path)

    def source(self, path: KeyPath) -> Source:
        """The ``Source`` (file, table line, key lines) of the table at ``path``."""
        tp = self.positions.get(path)
        if tp is None:
            return Source(self.rel, self.line_of(path))
        return Source(self.rel, tp.line, tp.fields, tp.items)


def line_of(positions: dict[KeyPath, TablePos], path: KeyPath) -> int:
    """Line of the key or table at ``path``, falling back to the nearest enclosing table (0 if none)."""
    for i in range(len(path), -1, -1):
        tp = positions.get(path[:i])
        if tp is None:
            continue
        if i < len(path):
            k = path[i]
            if isinstance(k, str) and k in tp.fields:
                if i + 1 < len(path) and isinstance(path[i + 1], int) and k in tp.items:
                    lines = tp.items[k]
                    j = path[i + 1]
                    assert isinstance(j, int)
                    if 0 <= j < len(lines):
                        return lines[j]
                return tp.fields[k]
        return tp.line
    return 0


# --------------------------------------------------------------------------------------------------
# The line scanner

_BARE_KEY_LINE = re.compile(r"([A-Za-z0-9_-]+)[ \t]*=[ \t]*")
_BARE_HEADER = re.compile(r"\[\[?[ \t]*([A-Za-z0-9_-]+(?:[ \t]*\.[ \t]*[A-Za-z0-9_-]+)*)[ \t]*\]")
_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _parse_key(s: str, i: int) -> tuple[list[str], int]:
    """Parse a (dotted, possibly quoted) key at ``s[i:]``; return its parts and the index after it."""
    parts: list[str] = []
    n = len(s)
    while True:
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] == '"':
            j = i + 1
            while j < n and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            parts.append(tomllib.loads("k = " + s[i : j + 1])["k"])
            i = j + 1
        elif i < n and s[i] == "'":
            j = s.index("'", i + 1)
            parts.append(s[i + 1 : j])
            i = j + 1
        else:
            m = _BARE.match(s, i)
            if not m:
                return parts, i
            parts.append(m.group(0))
            i = m.end()
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] == ".":
            i += 1
            continue
        return parts, i


class _Items:
    """The line of each element of the array being scanned (top level of that array only)."""

    __slots__ = ("lines", "expect")

    def __init__(self) -> None:
        self.lines: list[int] = []
        self.expect = True


def _scan_value(
    s: str, i: int, depth: int, mode: str | None, items: _Items | None = None, lineno: int = 0
) -> tuple[int, str | None]:
    """Scan a value from ``s[i]``; return the bracket depth and open multi-line string mode at line end.

    With ``items``, the line of each element of the outermost array is recorded.
    """
    n = len(s)
    while i < n:
        if mode == '"""':
            while i < n:
                if s[i] == "\\":
                    i += 2
                elif s.startswith('"""', i):
                    break
                else:
                    i += 1
            if i >= n:
                return depth, mode
            while i < n and s[i] == '"':
                i += 1
            mode = None
            continue
        if mode == "'''":
            j = s.find("'''", i)
            if j < 0:
                return depth, mode
            i = j
            while i < n and s[i] == "'":
                i += 1
            mode = None
            continue
        c = s[i]
        if c == "#":
            break
        if items is not None and depth == 1:
            if c in " \t":
                i += 1
                continue
            if c == ",":
                items.expect = True
                i += 1
                continue
            if c != "]" and items.expect:
                items.lines.append(lineno)
                items.expect = False
        if c == '"':
            if s.startswith('"""', i):
                mode, i = '"""', i + 3
                continue
            i += 1
            while i < n and s[i] != '"':
                i += 2 if s[i] == "\\" else 1
            i += 1
            continue
        if c == "'":
            if s.startswith("'''", i):
                mode, i = "'''", i + 3
                continue
            j = s.find("'", i + 1)
            i = n if j < 0 else j + 1
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        i += 1
    return depth, mode


def _inline_table(positions: dict[KeyPath, TablePos], path: KeyPath, value: str, lineno: int) -> None:
    """An inline table (one line in TOML 1.0): every key of it, at any depth, is on ``lineno``."""
    tp = positions.setdefault(path, TablePos(lineno))
    try:
        data = tomllib.loads("v = " + value).get("v")
    except tomllib.TOMLDecodeError:
        return
    stack: list[tuple[KeyPath, TablePos, Any]] = [(path, tp, data)]
    while stack:
        where, pos, table = stack.pop()
        if not isinstance(table, dict):
            continue
        for key, sub in table.items():
            pos.fields.setdefault(key, lineno)
            if isinstance(sub, dict):
                stack.append((where + (key,), positions.setdefault(where + (key,), TablePos(lineno)), sub))


def scan_positions(text: str) -> dict[KeyPath, TablePos]:
    """Line of every table header and key of a valid TOML text, keyed by the path used in tomllib's data."""
    root = TablePos(1)
    positions: dict[KeyPath, TablePos] = {(): root}
    aot_count: dict[KeyPath, int] = {}  # indexed path of an array of tables -> occurrences so far
    current: KeyPath = ()
    cur_pos = root
    depth = 0
    mode: str | None = None
    items: _Items | None = None  # elements of the array value being scanned
    items_of: tuple[TablePos, str] | None = None

    def resolve(parts: list[str], lineno: int) -> KeyPath:
        """Indexed path of a header's prefix: an array of tables means its latest element."""
        path: KeyPath = ()
        for part in parts:
            parent = positions.get(path)
            path = path + (part,)
            if parent is not None:
                parent.fields.setdefault(part, lineno)
            if path in aot_count:
                path = path + (aot_count[path] - 1,)
            elif path not in positions:
                positions[path] = TablePos(lineno)
        return path

    # TOML ends lines only at LF (or CRLF): str.splitlines() would also split at U+2028, U+0085 …
    # inside strings and shift every later line number.
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if depth > 0 or mode is not None:
            depth, mode = _scan_value(line, 0, depth, mode, items, lineno)
            if depth == 0 and mode is None and items is not None and items_of is not None:
                items_of[0].items[items_of[1]] = items.lines
                items = items_of = None
            continue
        s = line.lstrip(" \t")
        if not s or s[0] == "#":
            continue
        if s[0] == "[":
            is_aot = s.startswith("[[")
            m = _BARE_HEADER.match(s)
            if m:
                parts = [p.strip() for p in m.group(1).split(".")]
            else:
                parts, _ = _parse_key(s, 2 if is_aot else 1)
            if is_aot:
                prefix = resolve(parts[:-1], lineno)
                parent = positions.get(prefix)
                if parent is not None:
                    parent.fields.setdefault(parts[-1], lineno)
                arr = prefix + (parts[-1],)
                idx = aot_count.get(arr, 0)
                aot_count[arr] = idx + 1
                positions.setdefault(arr, TablePos(lineno))
                current = arr + (idx,)
                cur_pos = TablePos(lineno)
                positions[current] = cur_pos
            else:
                current = resolve(parts, lineno)
                cur_pos = positions[current]
                # an implicit table (made by a deeper header first) takes the line of its own header
                cur_pos.line = lineno
            continue
        m = _BARE_KEY_LINE.match(s)
        if m:
            parts = [m.group(1)]
            vstart = m.end()
        else:
            parts, i = _parse_key(s, 0)
            vstart = s.index("=", i) + 1
            while s[vstart : vstart + 1] in (" ", "\t"):
                vstart += 1
        table, tp = current, cur_pos
        for part in parts[:-1]:
            tp.fields.setdefault(part, lineno)
            table = table + (part,)
            nxt = positions.get(table)
            if nxt is None:
                nxt = positions[table] = TablePos(lineno)
            tp = nxt
        tp.fields[parts[-1]] = lineno
        c = s[vstart : vstart + 1]
        if c == "{":
            _inline_table(positions, table + (parts[-1],), s[vstart:], lineno)
        if c == "[":
            items = _Items()
            depth, mode = _scan_value(s, vstart, 0, None, items, lineno)
            if depth > 0 or mode is not None:  # a multi-line array: keep the line of each element
                items_of = (tp, parts[-1])
            else:
                items = None
        elif c == "{" or s.startswith('"""', vstart) or s.startswith("'''", vstart):
            depth, mode = _scan_value(s, vstart, 0, None)
    return positions


# --------------------------------------------------------------------------------------------------
# Files


def iter_toml_files(root: Path) -> Iterator[Path]:
    """Every ``*.toml`` under ``root``, recursively, sorted; hidden files and folders skipped."""
    for path in sorted(root.rglob("*.toml")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file():
            yield path


_LINE_RE = re.compile(r"\(at line (\d+), column (\d+)\)|\(at end of document\)")


_KEY_ON_LINE_RE = re.compile(r"[ \t]*([A-Za-z0-9_-]+(?:[ \t]*\.[ \t]*[A-Za-z0-9_-]+)*)[ \t]*=")


def _key_on_line(text: str, line: int) -> str:
    """The (bare, possibly dotted) key at the start of ``line``, if any: the field of a syntax error."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return ""
    m = _KEY_ON_LINE_RE.match(lines[line - 1])
    return re.sub(r"[ \t]", "", m.group(1)) if m else ""


def read_documents(root: Path) -> tuple[list[Document], list[Problem]]:
    """Parse every file; problems (missing dir, unreadable file, TOML syntax) are returned, not raised."""
    problems: list[Problem] = []
    docs: list[Document] = []
    if not root.exists():
        return docs, [Problem(str(root), 0, "", "state directory not found")]
    if not root.is_dir():
        return docs, [Problem(str(root), 0, "", "not a directory (--state takes the state repository)")]
    files = list(iter_toml_files(root))
    if not files:
        return docs, [Problem(str(root), 0, "", "no *.toml file here (want mailstate.toml)")]
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            raw = path.read_bytes().decode("utf-8")
            text = raw.removeprefix("\ufeff")  # an editor's BOM is not TOML
        except UnicodeDecodeError as exc:
            before = exc.object[: exc.start]
            line = before.count(b"\n") + 1
            column = exc.start - (before.rfind(b"\n") + 1) + 1
            problems.append(Problem(
                rel, line, "", f"not UTF-8 text (byte {exc.start}, column {column}): save the file as UTF-8 "
                "(Unicode, TCVN 6909:2001), not TCVN3 or VNI"
            ))
            continue
        except OSError as exc:
            problems.append(Problem(rel, 0, "", f"cannot read: {exc.strerror or exc}"))
            continue
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            msg = str(exc)
            m = _LINE_RE.search(msg)
            line = int(m.group(1)) if m and m.group(1) else (text.count("\n") + 1 if m else 0)
            msg = _LINE_RE.sub("", msg).strip()
            col = f" (column {m.group(2)})" if m and m.group(2) else ""
            problems.append(Problem(rel, line, _key_on_line(text, line), f"TOML syntax error: {msg}{col}"))
            continue
        try:
            positions = scan_positions(text)
        except (ValueError, IndexError):  # positions are best effort: a valid file is never refused for them
            positions = {(): TablePos(1)}
        docs.append(Document(path, rel, text, data, positions, bom=len(text) != len(raw)))
    return docs, problems


def load_documents(root: Path) -> list[Document]:
    """Every TOML file of the state dir, parsed with positions, not validated; raises on syntax errors."""
    docs, problems = read_documents(Path(root))
    if problems:
        raise ValidationError(problems)
    return docs
