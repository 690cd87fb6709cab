r"""CODEOWNERS of the state repository: who must approve the file of each unit a plan touches. Pure.

GitHub and GitLab read the file from the repository root, ``.github/``, ``.gitlab/`` or ``docs/``; the
first found here (in that order) is used. Syntax: ``pattern owner…`` lines, ``#`` comments, the last
matching pattern wins. GitLab's sections (``[Name]``, ``[Name][2]``, ``[Name] @default-owners``) are read as
GitLab does: the last match wins within each section, every section that matches adds its owners (each must
approve), an entry without owners takes its section's default owners, and an optional section
(``^[Name]``) adds none (its approval is not needed). Patterns follow gitignore: a leading ``/`` anchors at
the root, a pattern without any other ``/`` matches at any depth, ``*`` stays inside one folder, ``**``
crosses folders, a trailing ``/`` means everything below, and a final ``/*`` only the files directly in
that folder. ``\ `` is a space inside a pattern, ``\#`` a ``#``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailstate.desired_state.loader import load_state

LOCATIONS = ("CODEOWNERS", ".github/CODEOWNERS", ".gitlab/CODEOWNERS", "docs/CODEOWNERS")
MAIN_FILE = "mailstate.toml"
_SOURCE = re.compile(r"^(?P<file>[^\s:]+\.toml):\d+: ")


def find(root: Path) -> Path | None:
    """The CODEOWNERS file of the state repository ``root`` (None when it has none)."""
    for rel in LOCATIONS:
        p = Path(root) / rel
        if p.is_file():
            return p
    return None


def _regex(pattern: str) -> re.Pattern[str]:
    anchored = pattern.startswith("/") or "/" in pattern.rstrip("/")
    body = pattern.strip("/")
    out = ""
    i = 0
    while i < len(body):
        if body.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif body.startswith("**", i):
            out += ".*"
            i += 2
        elif body[i] == "*":
            out += "[^/]*"
            i += 1
        elif body[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(body[i])
            i += 1
    prefix = "" if anchored else "(?:.*/)?"
    # `docs/*` owns the files directly in docs/, not deeper (GitHub and GitLab); anything else that names a
    # folder owns everything below it
    below = "" if pattern.endswith("/*") and not pattern.endswith("**/*") else "(?:/.*)?"
    return re.compile(f"^{prefix}{out}{below}$")


_TOKEN = re.compile(r"(?:\\.|[^\s\\])+\\?")
_SECTION = re.compile(r"^(?P<optional>\^?)\[(?P<name>[^\]]*)\](?:\[\d+\])?(?P<owners>.*)$")


def _words(line: str) -> list[str]:
    """The line's words up to a comment; ``\\ `` and ``\\#`` are a space and a ``#`` inside a word."""
    words = []
    for m in _TOKEN.finditer(line):
        word = m.group(0)
        if word.startswith("#"):  # a trailing comment
            break
        words.append(re.sub(r"\\(.)", r"\1", word))
    return words


@dataclass(frozen=True)
class CodeOwners:
    rules: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...]
    """(pattern, owners) of the entries outside any section (GitHub's whole file)."""
    sections: tuple[tuple[str, bool, tuple[tuple[re.Pattern[str], tuple[str, ...]], ...]], ...] = ()
    """(name, optional, rules) of GitLab's sections, in order."""
    @classmethod
    def parse(cls, text: str) -> CodeOwners:
        top: list[tuple[re.Pattern[str], tuple[str, ...]]] = []
        sections: dict[str, tuple[bool, list[tuple[re.Pattern[str], tuple[str, ...]]]]] = {}
        current = top
        defaults: tuple[str, ...] = ()
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if m := _SECTION.match(line):
                name = m.group("name").strip().lower()  # GitLab joins sections of one name, any case
                optional, current = sections.setdefault(name, (bool(m.group("optional")), []))
                defaults = tuple(_words(m.group("owners")))
                continue
            words = _words(line)
            if not words:
                continue
            owners = tuple(words[1:]) or (defaults if current is not top else ())
            current.append((_regex(words[0]), owners))
        return cls(tuple(top), tuple((n, opt, tuple(rules)) for n, (opt, rules) in sections.items()))

    def owners(self, path: str) -> tuple[str, ...]:
        """The owners of ``path`` (relative, ``/``-separated): the last matching entry's, and in each GitLab
        section that is not optional its last matching entry's, without repeats; () when none."""
        path = path.lstrip("/")
        found: dict[str, None] = {}
        for optional, rules in [(False, self.rules)] + [(opt, r) for _, opt, r in self.sections]:
            last: tuple[str, ...] = ()
            for rx, owners in rules:
                if rx.match(path):
                    last = owners
            if not optional:
                found.update(dict.fromkeys(last))
        return tuple(found)


def unit_files(state: Any) -> dict[str, str]:
    """unit id → the state file (relative) that defines it."""
    out: dict[str, str] = {}
    for uid, unit in getattr(state, "units", {}).items():
        src = getattr(unit, "source", None)
        if src is not None and getattr(src, "file", "<unknown>") != "<unknown>":
            out[uid] = str(src.file)
    return out


def approvals(
    codeowners: CodeOwners, changes: Iterable[Any], files_of_units: Mapping[str, str]
) -> list[tuple[str, str, tuple[str, ...]]]:
    """(unit id or "" for organisation-wide, file, owners) for each unit the changes touch, sorted.

    A change without a unit is owned by the files its reasons cite (``units/x.toml:12: …``), else by
    mailstate.toml. Units whose file has no owner are left out (nobody to ask)."""
    seen: dict[tuple[str, str], None] = {}
    for c in changes:
        unit = getattr(c, "unit", None) or ""
        if unit and unit in files_of_units:
            seen.setdefault((unit, files_of_units[unit]), None)
            continue
        cited = [m.group("file") for r in getattr(c, "reasons", ()) if (m := _SOURCE.match(str(r)))]
        for f in cited or [files_of_units.get(unit) or MAIN_FILE]:
            seen.setdefault((unit, f), None)
    out = []
    for unit, f in sorted(seen, key=lambda uf: (uf[0] == "", uf[0], uf[1])):
        owners = codeowners.owners(f)
        if owners:
            out.append((unit, f, owners))
    return out


def plan_approvals(root: Path, plan: Any, state: Any = None) -> list[tuple[str, str, tuple[str, ...]]]:
    """The approvals a plan needs, from ``root``'s CODEOWNERS ([] without one)."""
    path = find(root)
    if path is None:
        return []
    if state is None:

        state = load_state(root)
    co = CodeOwners.parse(path.read_text(encoding="utf-8", errors="replace"))
    return approvals(co, plan.changes, unit_files(state))
