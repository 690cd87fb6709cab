"""The nightly drift report: what differs between the TOML and the live system, in three sections. Pure.

- ``by_hand``: live objects whose attributes differ from the TOML (updates, renames), with the live value
  and the TOML's, and TOML objects missing live (creates: removed by hand, or never applied);
- ``lifecycle``: lock, unlock, archive, removal and revocation actions now due (dates in the TOML);
- ``unlisted``: live objects the TOML does not mention: name, unit and address, not only an id.

``report(plan)`` is the JSON form (``{"report": "drift", …}``); ``markdown(report)`` the body of a nightly
issue (first line a hidden marker ``<!-- mailstate-drift org=… -->``); ``text(report)`` the terminal's.
"""

from __future__ import annotations

from typing import Any

from mailstate.model.change import jsonable as _jsonable
from mailstate.model.i18n import N_, _, action_name, kind_name, use
from mailstate.reconciler.plan.diff import REDACTED, is_secret
from mailstate.reconciler.plan.render import field_name
from mailstate.reconciler.plan.render.gitops import marker
from mailstate.text import md, visible

LIFECYCLE = frozenset({"lock", "unlock", "archive", "delete", "revoke"})


def _value(v: Any) -> Any:

    return _jsonable(v)


def report(plan: Any) -> dict[str, Any]:

    by_hand: list[dict[str, Any]] = []
    lifecycle: list[dict[str, Any]] = []
    for c in plan.changes:
        entry: dict[str, Any] = {
            "action": c.action.label, "kind": c.kind, "key": c.key, "unit": c.unit, "provider": c.provider,
            "reasons": [str(r) for r in c.reasons],
            "rules": [r.rule for r in c.reasons],
        }
        if c.action.label in LIFECYCLE:
            lifecycle.append(entry)
            continue
        fields = list(c.fields) or sorted(set(c.before or {}) | set(c.after or {}))
        entry["fields"] = [
            {
                "field": f,
                "live": REDACTED if is_secret(f) else _value((c.before or {}).get(f)),
                "toml": REDACTED if is_secret(f) else _value((c.after or {}).get(f)),
            }
            for f in fields
            if not f.startswith("_") and f != "why"
        ]
        by_hand.append(entry)
    unlisted = []
    for r in plan.unlisted:
        attrs = r.attrs or {}
        unlisted.append({
            "kind": r.kind, "key": r.key, "provider": r.provider,
            "name": _value(attrs.get("name")), "unit": r.unit or _value(attrs.get("unit")),
            "address": _value(attrs.get("address")),
        })
    return {
        "report": "drift",
        "organization": plan.organization,
        "as_of": plan.as_of.isoformat() if plan.as_of else None,
        "scope": list(plan.scope) if plan.scope else None,
        "created_at": plan.created_at,
        "drift": bool(by_hand or lifecycle or unlisted),
        "counts": {"by_hand": len(by_hand), "lifecycle": len(lifecycle), "unlisted": len(unlisted)},
        "by_hand": by_hand,
        "lifecycle": lifecycle,
        "unlisted": unlisted,
    }


SECTIONS = {
    "by_hand": N_("Changed by hand or missing live"),
    "lifecycle": N_("Lifecycle actions now due"),
    "unlisted": N_("Not in the TOML (reported, not deleted)"),
}


def _fmt(v: Any) -> str:
    if v is None:
        return "∅"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v) or _("(none)")
    return str(v)


def _lines(rep: dict[str, Any], esc: Any, code: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in rep["by_hand"]:
        unit = " (" + _("unit {id}").format(id=esc(c["unit"])) + ")" if c["unit"] else ""
        lines = [f"{esc(action_name(c['action']))} {esc(kind_name(c['kind']))} {code(c['key'])}{unit}"]
        for f in c["fields"]:
            lines.append("  " + _("{field}: live {live} → TOML {toml}").format(
                field=esc(field_name(f["field"])), live=esc(_fmt(f["live"])), toml=esc(_fmt(f["toml"]))))
        out.setdefault("by_hand", []).extend(lines)
    for c in rep["lifecycle"]:
        why = f": {esc(c['reasons'][0])}" if c["reasons"] else ""
        out.setdefault("lifecycle", []).append(
            f"{esc(action_name(c['action']))} {esc(kind_name(c['kind']))} {code(c['key'])}{why}")
    for r in rep["unlisted"]:
        bits = [esc(_fmt(r["name"])) if r["name"] else "",
                _("unit {id}").format(id=esc(r["unit"])) if r["unit"] else "",
                esc(_fmt(r["address"])) if r["address"] else ""]
        extra = "; ".join(b for b in bits if b)
        item = f"{esc(kind_name(r['kind']))} {code(r['key'])}" + (f" — {extra}" if extra else "")
        out.setdefault("unlisted", []).append(item)
    return out


def markdown(rep: dict[str, Any], lang: str | None = None) -> str:
    """The issue body, in ``lang`` (None: the language of the run)."""
    with use(lang):
        return _markdown(rep)


def _markdown(rep: dict[str, Any]) -> str:

    class _P:
        organization = rep["organization"]
        scope = rep["scope"]

    head = marker(_P).replace("mailstate-plan", "mailstate-drift")
    title = "## " + _("Drift report") + f" — {md(str(rep['organization'] or ''))}"
    if rep["as_of"]:
        title += f" ({md(rep['as_of'])})"
    lines = [head, title, ""]
    body = _lines(rep, md, lambda k: f"`{visible(str(k)).replace('`', '')}`")
    if not rep["drift"]:
        lines.append("**" + _("No drift.") + "**")
    for key, title_id in SECTIONS.items():
        items = body.get(key)
        if not items:
            continue
        lines += [f"### {_(title_id)} ({rep['counts'][key]})", ""]
        for item in items:
            lines.append(("   - " + item[2:]) if item.startswith("  ") else f"- {item}")
        lines.append("")
    return "\n".join(lines) + "\n"


def term(value: Any) -> str:
    """Text safe on a terminal: a control character (escape sequences, carriage return, bell, newline), a
    line separator or a bidi override from the TOML or the live side is shown as an escape (``\\x1b``,
    ``\\n``, ``\\u202e``), never sent to the terminal."""
    return visible(str(value))


def text(rep: dict[str, Any], lang: str | None = None) -> str:
    """The terminal's report, in ``lang`` (None: the language of the run)."""
    with use(lang):
        return _text(rep)


def _text(rep: dict[str, Any]) -> str:
    title = _("Drift report") + f": {term(rep['organization'] or '')}"
    lines = [title + (f" ({term(rep['as_of'])})" if rep["as_of"] else "")]
    body = _lines(rep, term, term)
    if not rep["drift"]:
        lines.append(_("No drift."))
    for key, title_id in SECTIONS.items():
        items = body.get(key)
        if not items:
            continue
        lines += ["", f"{_(title_id)} ({rep['counts'][key]}):"]
        lines += [("      " + item[2:]) if item.startswith("  ") else f"  {item}" for item in items]
    return "\n".join(lines) + "\n"
