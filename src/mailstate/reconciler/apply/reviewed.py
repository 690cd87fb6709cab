"""``apply --reviewed PLANFILE``: apply what a merge request's reviewers saw, after main may have moved.

``apply PLANFILE`` needs the whole repository and every live object byte-identical to when the plan was
made: after another merge request was applied first, or on the next day, it is refused. Here the plan is
made afresh (today, the reviewed plan's scope) and applied only when it holds exactly the reviewed changes:
same action, kind, key, provider and after-values. Fingerprints, creation time, order, ids, reasons (their
line numbers move when another merge request edits a file) and ``as_of`` are not compared. Anything else
— a change added (another edit, a hand change on the live side), missing, or different — refuses the whole
apply, naming each one. A reviewed plan whose changes are all live already (an earlier apply did them):
nothing to do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mailstate.errors import StalePlan
from mailstate.model.change import jsonable as _jsonable
from mailstate.model.i18n import _, change_title
from mailstate.reconciler.plan.render import field_name

Ident = tuple[str, str, str, str]


def ident(change: Any) -> Ident:
    return (change.action.label, change.kind, change.key, change.provider)


def _after(change: Any) -> str:

    return json.dumps(_jsonable(change.after), sort_keys=True, ensure_ascii=False, default=str)


@dataclass
class Comparison:
    added: list[Any] = field(default_factory=list)
    """In the fresh plan, not reviewed."""
    missing: list[Any] = field(default_factory=list)
    """Reviewed, not in the fresh plan."""
    different: list[tuple[Any, Any]] = field(default_factory=list)
    """(reviewed, fresh) with other after-values."""
    @property
    def same(self) -> bool:
        return not (self.added or self.missing or self.different)

    def lines(self) -> list[str]:
        def name(c: Any) -> str:
            prov = f" [{c.provider}]" if c.provider else ""
            return f"{change_title(c.action.label, c.kind, c.key)}{prov}"

        out = [_("added (not reviewed): {change}").format(change=name(c)) for c in self.added]
        out += [_("missing (reviewed, no longer planned): {change}").format(change=name(c))
                for c in self.missing]
        for old, new in self.different:
            keys = sorted(set(old.after or {}) | set(new.after or {}))
            diff = [field_name(k) for k in keys if _after_value(old, k) != _after_value(new, k)]
            what = ", ".join(diff) or _("values")
            out.append(_("different: {change} ({fields} differ from the reviewed plan)").format(
                change=name(new), fields=what))
        return out


def _after_value(change: Any, key: str) -> str:

    return json.dumps(_jsonable((change.after or {}).get(key)), sort_keys=True, default=str)


def compare(reviewed: Iterable[Any], fresh: Iterable[Any]) -> Comparison:
    """What separates the fresh changes from the reviewed ones (by action, kind, key, provider; after)."""
    old: dict[Ident, list[Any]] = {}
    for c in reviewed:
        old.setdefault(ident(c), []).append(c)
    result = Comparison()
    for c in fresh:
        mates = old.get(ident(c))
        if not mates:  # not reviewed, or reviewed fewer times than planned now (a hand-edited plan file)
            result.added.append(c)
            continue
        was = mates.pop(0)
        if _after(was) != _after(c):
            result.different.append((was, c))
    result.missing = [c for mates in old.values() for c in mates]
    return result


def check_reviewed(reviewed: Any, fresh: Any) -> bool:
    """True when ``fresh`` holds exactly the reviewed changes; False when it is empty (all live already);
    raises StalePlan naming every change added, missing or different otherwise."""
    fresh_changes = list(fresh.changes)
    if not fresh_changes:
        return False
    cmp = compare(reviewed.changes, fresh_changes)
    if cmp.same:
        return True
    lines = cmp.lines()
    shown = lines[:50] + ([_("… and {n} more").format(n=len(lines) - 50)] if len(lines) > 50 else [])
    raise StalePlan(
        _("the plan made now is not the reviewed plan; nothing was applied:") + "\n  "
        + "\n  ".join(shown)
        + "\n" + _("review a new plan (push to the merge request again, or run `mailstate plan`)")
    )
