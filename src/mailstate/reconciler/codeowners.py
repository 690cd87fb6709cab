"""CODEOWNERS of the state repository: who must approve the file of each unit a plan touches. Pure.

GitHub and GitLab read the file from the repository root, ``.github/``, ``.gitlab/`` or ``docs/``; the
first found here (in that order) is used. Syntax: ``pattern owner…`` lines, ``#`` comments, the last
matching pattern wins; GitLab's ``[Section]`` headers are accepted (the last match across sections wins
here too: a reviewer list, not an enforcement). Patterns follow gitignore: a leading ``/`` anchors at the
root, a pattern without any other ``/`` matches at any depth, ``*`` stays inside one folder, ``**`` crosses
folders, a trailing ``/`` means everything below.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    return re.compile(f"^{prefix}{out}(?:/.*)?$")


@dataclass(frozen=True)
class CodeOwners:
    rules: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...]

    @classmethod
    def parse(cls, text: str) -> CodeOwners:
        rules = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or line.startswith("[") or line.startswith("^["):
                continue
            parts = line.split()
            owners: list[str] = []
            for p in parts[1:]:
                if p.startswith("#"):  # a trailing comment
                    break
                owners.append(p)
            rules.append((_regex(parts[0].replace("\\#", "#")), tuple(owners)))
        return cls(tuple(rules))

    def owners(self, path: str) -> tuple[str, ...]:
        """The owners of ``path`` (relative, ``/``-separated): the last matching line's; () when none."""
        path = path.lstrip("/")
        found: tuple[str, ...] = ()
        for rx, owners in self.rules:
            if rx.match(path):
                found = owners
        return found


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
        cited = [m.group("file") for r in getattr(c, "reasons", ()) if (m := _SOURCE.match(r))]
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
        from mailstate.desired_state.loader import load_state

        state = load_state(root)
    co = CodeOwners.parse(path.read_text(encoding="utf-8", errors="replace"))
    return approvals(co, plan.changes, unit_files(state))
