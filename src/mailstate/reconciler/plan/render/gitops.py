"""What a CI pipeline reads from a plan: the merge-request comment's marker and approvals, GitLab's report.

- ``marker(plan)``: the hidden first line of the Markdown plan, ``<!-- mailstate-plan org=D scope=S -->``,
  by which a pipeline finds (and updates) its one comment on a merge request.
- ``approvals_markdown(rows)``: the "Cần duyệt" section (owners per unit file, from CODEOWNERS).
- ``gitlab_report(plan)``: ``{"create": N, "update": N, "delete": N}`` for GitLab's merge-request widget
  (``artifacts:reports:terraform``). Which action counts where is ``GITLAB_COUNTS`` (docs/gitops.md).

Its sentences are in the message catalogues (``_``), in the language of the run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mailstate.model.i18n import _, use
from mailstate.text import md

_UNSAFE = re.compile(r"[^A-Za-z0-9._:,@+-]")


def marker(plan: Any) -> str:
    """``<!-- mailstate-plan org=<domain> scope=<scopes joined by , or all> -->`` (nothing that could end
    the comment or break the line: any other character becomes ``_``)."""
    org = _UNSAFE.sub("_", str(getattr(plan, "organization", None) or "unknown"))
    scopes = getattr(plan, "scope", None)
    scope = _UNSAFE.sub("_", ",".join(scopes)) if scopes else "all"
    return f"<!-- mailstate-plan org={org} scope={scope} -->"


def approvals_markdown(
    rows: Sequence[tuple[str, str, Sequence[str]]], labels: dict[str, str], lang: str | None = None
) -> list[str]:
    """Markdown lines of the approvals section ([] when there is nothing to approve)."""
    if not rows:
        return []
    with use(lang):
        return _approvals(rows, labels)


def _approvals(rows: Sequence[tuple[str, str, Sequence[str]]], labels: dict[str, str]) -> list[str]:
    title = _("Approvals needed")
    out = [f"### {title}", "",
           _("From CODEOWNERS, the owners of each changed unit's file must approve:"), ""]
    for unit, file, owners in rows:
        name = labels.get(unit, "") if unit else _("Organisation-wide")
        who = ", ".join(md(o) for o in owners)
        head = f"**{md(unit)}** — {md(name)}" if unit and name else f"**{md(unit or name)}**"
        out.append(f"- {head} (`{file.replace('`', '')}`): {who}")
    out.append("")
    return out


GITLAB_COUNTS: dict[str, str] = {
    "create": "create",
    "grant": "create",
    "update": "update",
    "rename": "update",
    "unlock": "update",
    "lock": "update",
    "archive": "update",
    "revoke": "delete",
    "delete": "delete",
}
"""Action label → the GitLab widget's count: what appears (an object, a right) is a create; what stays but
changes (attributes, name, lock state, a verified archive copy) an update; what goes (a right, an object)
a delete."""

def gitlab_report(plan: Any) -> dict[str, int]:
    counts = {"create": 0, "update": 0, "delete": 0}
    for c in plan.changes:
        counts[GITLAB_COUNTS[c.action.label]] += 1
    return counts
