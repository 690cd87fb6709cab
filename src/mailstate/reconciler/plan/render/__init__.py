"""Renderings of a Plan: small classes looked up by name in ``RENDERERS``. Pure (return a str).

- ``text``: for a terminal; summary first, then the changes grouped by unit (apply order kept inside a
  unit, each numbered with its place in the apply order); colour only when writing to a TTY (rich).
- ``markdown``: for a pull-request comment read by unit heads; summary counts first, then locks,
  removals and revoked rights called out, details folded per unit (``<details>``), unlisted live objects
  in their own section; never longer than ``MAX_MARKDOWN`` (65,536) characters: a larger plan is cut at a
  unit boundary with a note saying how much was left out and where the full plan is.
- ``json``: ``Plan.to_json()``.

No secret in any rendering: values of attributes named like a password or secret are redacted here as
well (they should never reach a Record in the first place).

Live values are hostile (a cn, title or folder name read back from LDAP/IMAP may hold a newline, an ESC
sequence or a bidi override): every text and Markdown rendering shows them through ``mailstate.text.visible``
(``\n``, ``\x1b``, ``\u202e``), so no value can forge a line of the plan or act on the terminal. The text
renderer hands rich plain ``Text`` (never markup), so ``[bold]`` in a value is printed as written.
"""

from __future__ import annotations

import html
import io
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from mailstate.errors import MailstateError
from mailstate.model.change import Action, Change
from mailstate.model.i18n import (
    N_,
    _,
    action_name,
    change_title,
    change_words,
    fmt_date,
    kind_name,
    ngettext,
    rights_text,
)
from mailstate.model.reason import Reason
from mailstate.model.records import MAILBOX_KINDS
from mailstate.model.settings import format_size
from mailstate.reconciler.plan.diff import REDACTED, is_secret
from mailstate.reconciler.plan.plan import Plan, plan_json
from mailstate.reconciler.plan.render.gitops import approvals_markdown, marker
from mailstate.text import code, md, visible

MAX_MARKDOWN = 65_536
"""GitHub refuses a comment body longer than this."""

NO_UNIT = ""
SYMBOLS = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.RENAME: "~",
    Action.GRANT: "+",
    Action.UNLOCK: "~",
    Action.LOCK: "!",
    Action.REVOKE: "-",
    Action.ARCHIVE: ">",
    Action.DELETE: "-",
}
STYLES = {
    Action.CREATE: "green",
    Action.GRANT: "green",
    Action.UPDATE: "yellow",
    Action.RENAME: "yellow",
    Action.UNLOCK: "yellow",
    Action.LOCK: "bold red",
    Action.REVOKE: "red",
    Action.ARCHIVE: "magenta",
    Action.DELETE: "bold red",
}
FIELD_NAMES = {
    "name": N_("name"), "given": N_("given name"), "family": N_("family name"), "unit": N_("unit"),
    "title": N_("title"), "phone": N_("phone"), "mobile": N_("mobile"), "backup_email": N_("backup mailbox"),
    "address": N_("address"), "aliases": N_("old addresses"), "quota": N_("quota"), "locked": N_("locked"),
    "lock_reason": N_("lock reason"), "parent": N_("parent unit"), "head": N_("head"),
    "delegates": N_("delegates"), "members": N_("members"), "delivers_to": N_("delivers to"),
    "rights": N_("rights"), "purpose": N_("purpose"), "expires": N_("expires"), "archived": N_("archived"),
    "mail": N_("mail"), "owner": N_("owner"), "target": N_("delivers to"),
    "refuse_mail": N_("mail refused with"),
}
UNIT_FIELDS = frozenset({"unit", "parent"})
DATE_FIELDS = frozenset({"expires", "left_on", "until", "dissolved_on"})


def field_name(name: str) -> str:
    return _(FIELD_NAMES[name]) if name in FIELD_NAMES else name
MAX_VALUE = 200


class Renderer(Protocol):
    name: ClassVar[str]

    def render(self, plan: Plan, state_or_labels: Any = None) -> str: ...


# --------------------------------------------------------------------------------------------------
# Shared helpers


def unit_labels(plan: Plan, state_or_labels: Any = None) -> dict[str, str]:
    """unit id → name, from a State (``.units``), a mapping, or the plan's own ``unit_names``."""
    labels = dict(plan.unit_names)
    if state_or_labels is None:
        return labels
    units = getattr(state_or_labels, "units", None)
    if isinstance(units, Mapping):
        labels.update({uid: str(getattr(u, "name", uid)) for uid, u in units.items()})
    elif isinstance(state_or_labels, Mapping):
        labels.update({str(k): str(v) for k, v in state_or_labels.items()})
    return labels


def value_text(name: str, value: Any, labels: Mapping[str, str] | None = None) -> str:
    """A short, secret-free text of one attribute value, in the current language: rights in words, unit
    names beside unit ids, dates as the language writes them."""
    if is_secret(name):
        return REDACTED
    if value is None:
        return "∅"
    if name == "quota" and isinstance(value, int) and not isinstance(value, bool):
        return format_size(value)
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if name == "rights" and isinstance(value, str):
        text = rights_text(value)
    elif name in DATE_FIELDS and isinstance(value, str):
        text = fmt_date(value)
    elif name in UNIT_FIELDS and isinstance(value, str) and labels and value in labels:
        text = f"{labels[value]} ({value})"
    elif isinstance(value, (list, tuple, set, frozenset)):
        text = ", ".join(str(v) for v in value) if value else _("(none)")
    elif isinstance(value, Mapping):
        text = ", ".join(f"{k}={value_text(str(k), v)}" for k, v in value.items())
    else:
        text = str(value)
    text = visible(text)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def field_lines(change: Change, labels: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(field, before, after) for what the change touches; creates/removals show their attributes once."""
    before = dict(change.before or {})
    after = dict(change.after or {})
    listing = not change.fields
    names = list(change.fields) or list(dict.fromkeys([*before, *after]))
    out: list[tuple[str, str, str]] = []
    for f in names:
        if f.startswith("_") or f == "why":
            continue
        if listing and (after.get(f) if f in after else before.get(f)) in (None, "", (), []):
            continue  # a create or removal lists only the attributes that have a value
        bv, av = before.get(f), after.get(f)
        if not listing and _is_seq(bv) and _is_seq(av) and not is_secret(f):
            out.append((field_name(f), "", set_change_text(f, bv, av)))  # members: +x, −y
            continue
        b = value_text(f, bv, labels) if f in before else ""
        a = value_text(f, av, labels) if f in after else ""
        out.append((field_name(f), b, a))
    return out


def _is_seq(value: Any) -> bool:
    return isinstance(value, (list, tuple, set, frozenset))


def set_change_text(name: str, before: Any, after: Any) -> str:
    """What a multi-valued attribute gains and loses: "+a, +b, −c" (short, secret-free)."""
    b, a = {visible(str(v)) for v in before}, {visible(str(v)) for v in after}
    parts = [f"+{v}" for v in sorted(a - b)] + [f"−{v}" for v in sorted(b - a)]
    return value_text(name, parts) if parts else _("(same values, order or case only)")


def group_by_unit(plan: Plan) -> list[tuple[str, list[tuple[int, Change]]]]:
    """(unit id or "", [(position in apply order, change)]) sorted by unit id, organisation-wide last."""
    groups: dict[str, list[tuple[int, Change]]] = {}
    for i, c in enumerate(plan.changes, 1):
        groups.setdefault(c.unit or NO_UNIT, []).append((i, c))
    return sorted(groups.items(), key=lambda kv: (kv[0] == NO_UNIT, kv[0]))


def counts_text(changes: list[Change]) -> str:
    counts: dict[str, int] = {}
    for c in sorted(changes, key=lambda c: c.action.phase):
        counts[c.action.label] = counts.get(c.action.label, 0) + 1
    return ", ".join(f"{action_name(k)} {v}" for k, v in counts.items())


def locks_and_removals(plan: Plan) -> tuple[list[Change], list[Change], list[Change]]:
    """(locks of mailboxes, removals — one per object, the directory's delete —, revoked rights)."""
    locks = [c for c in plan.changes if c.action is Action.LOCK]
    removals = [c for c in plan.changes if c.action is Action.DELETE and not c.work]
    seen = {(c.kind, c.key) for c in removals}
    removals += [
        c for c in plan.changes
        if c.action is Action.DELETE and c.work and (c.kind, c.key) not in seen
    ]
    revokes = [c for c in plan.changes if c.action is Action.REVOKE]
    return locks, removals, revokes


def _header(plan: Plan) -> str:
    org = plan.organization or _("the organisation")
    when = _(" as of {date}").format(date=fmt_date(plan.as_of)) if plan.as_of else ""
    scope = _(" (scope: {units})").format(units=", ".join(plan.scope)) if plan.scope else ""
    return visible(f"{org}{when}{scope}")


# --------------------------------------------------------------------------------------------------
# Text


class TextRenderer:
    """For a terminal: summary first, grouped by unit; colour only when ``color`` (default: a TTY)."""

    name: ClassVar[str] = "text"

    def __init__(self, color: bool | None = None, width: int = 100) -> None:
        if color is None:  # https://no-color.org: NO_COLOR set (to anything) turns colour off
            color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.color = color
        self.width = width

    def render(self, plan: Plan, state_or_labels: Any = None) -> str:
        lines = list(self.lines(plan, state_or_labels))  # (text, rich style); styles only with colour
        if not self.color:
            return "".join(text + "\n" for text, _ in lines)
        return self._coloured(lines)

    def write(self, plan: Plan, out: Any, state_or_labels: Any = None) -> None:
        """``render`` written to ``out`` as it is made: without colour the lines of a province's plan are
        never all held at once (a first apply's 60,000 changes are some hundred thousand lines)."""
        if self.color:
            out.write(self.render(plan, state_or_labels))
            return
        chunk: list[str] = []
        for text, _style in self.lines(plan, state_or_labels):
            chunk.append(text)
            if len(chunk) >= 2000:
                out.write("\n".join(chunk) + "\n")
                chunk.clear()
        if chunk:
            out.write("\n".join(chunk) + "\n")

    def lines(self, plan: Plan, state_or_labels: Any = None) -> Iterator[tuple[str, str]]:
        """The plan's lines in order, each with its rich style."""
        pending: list[tuple[str, str]] = []

        def out(text: str = "", style: str = "") -> None:
            pending.append((text, style))

        labels = {visible(k): visible(v) for k, v in unit_labels(plan, state_or_labels).items()}
        n = len(plan.changes)
        head = _("Plan for {what}: ").format(what=_header(plan))
        if n == 0:
            out(head + _("no changes."), "bold green")
        else:
            out(head + ngettext("{n} change ({counts})", "{n} changes ({counts})", n).format(
                n=n, counts=counts_text(plan.changes)), "bold")
        if plan.unlisted:
            out(ngettext("{n} live object not in the TOML (listed at the end, not deleted)",
                         "{n} live objects not in the TOML (listed at the end, not deleted)",
                         len(plan.unlisted)).format(n=len(plan.unlisted)))
        boxes = plan.destructive_mailboxes()
        if boxes:
            out("⚠ " + ngettext("locks or removes {n} mailbox: ", "locks or removes {n} mailboxes: ",
                                len(boxes)).format(n=len(boxes))
                + ", ".join(f"{kind_name(k)} {visible(key)}" for k, key in boxes[:20])
                + (" …" if len(boxes) > 20 else ""), "bold red")
        for unit, items in group_by_unit(plan):
            out()
            unit = visible(unit)
            title = _("unit {id} — {name}").format(id=unit, name=labels[unit]) if unit in labels else (
                _("unit {id}").format(id=unit) if unit else _("organisation-wide"))
            out(f"{title} ({counts_text([c for _, c in items])})", "bold underline")
            yield from pending
            pending.clear()
            for i, c in items:
                prov = f"  [{c.provider}]" if c.provider else ""
                symbol = SYMBOLS.get(c.action, "?")
                out(f"  {i:>4}. {symbol} {change_title(c.action.label, c.kind, visible(c.key))}{prov}",
                    STYLES.get(c.action, ""))
                for f, b, a in field_lines(c, labels):
                    if c.action in (Action.UPDATE, Action.LOCK, Action.UNLOCK, Action.GRANT) and b:
                        out(f"          {f}: {b} → {a}")
                    else:
                        out(f"          {f}: {a or b}")
                for r in c.reasons:
                    out("          " + _("why: {reason}").format(reason=visible(r.text())), "dim")
                yield from pending
                pending.clear()
        if plan.unlisted:
            out()
            out(_("Not in the TOML (reported, not deleted):"), "bold")
            for rec in plan.unlisted:
                unit = " (" + _("unit {id}").format(id=visible(rec.unit)) + ")" if rec.unit else ""
                out(f"  ? {kind_name(rec.kind)} {visible(rec.key)}{unit}")
        yield from pending

    def _coloured(self, lines: list[tuple[str, str]]) -> str:
        """The lines with ANSI colours through rich (one Text, printed once: fast for 10,000 changes)."""
        from rich.console import Console
        from rich.text import Text

        buf = io.StringIO()
        console = Console(file=buf, force_terminal=True, color_system="standard", width=self.width,
                          highlight=False, emoji=False, soft_wrap=True)
        text = Text()
        for line, style in lines:
            text.append(line, style=style or None)
            text.append("\n")
        console.print(text, end="")
        return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Markdown


def _obj(c: Change) -> str:
    return f"{kind_name(c.kind)} {code(c.key)}"


class MarkdownRenderer:
    """For a PR comment: summary, locks/removals called out, details folded per unit, ≤ 65,536 chars."""

    name: ClassVar[str] = "markdown"
    CALLOUT_MAX = 50

    def __init__(self, max_length: int = MAX_MARKDOWN, full_plan: str | None = None,
                 approvals: Sequence[tuple[str, str, Sequence[str]]] = ()) -> None:
        self.max_length = max_length
        self.full_plan = full_plan
        self.approvals = list(approvals)
        """(unit, file, owners) from CODEOWNERS (reconciler.codeowners.plan_approvals)."""

    def render(self, plan: Plan, state_or_labels: Any = None) -> str:
        if self.full_plan is None:
            self.full_plan = _("the plan file written with `mailstate plan --out` (the CI artefact)")
        labels = unit_labels(plan, state_or_labels)
        head: list[str] = [marker(plan), _("## mailstate plan — {what}").format(what=md(_header(plan))), ""]
        n = len(plan.changes)
        if n == 0:
            head.append("**" + _("No changes.") + "**")
        else:
            head.append("**" + ngettext("{n} change", "{n} changes", n).format(n=n) + "**")
            head.append("")
            head.append("| " + _("action") + " | " + _("count") + " |")
            head.append("|---|---:|")
            for label, count in plan.summary.items():
                head.append(f"| {action_name(label)} | {count} |")
        if plan.unlisted:
            head.append("")
            head.append(ngettext("{n} live object is not in the TOML: reported, not deleted.",
                                 "{n} live objects are not in the TOML: reported, not deleted.",
                                 len(plan.unlisted)).format(n=len(plan.unlisted)))
        head.append("")

        locks, removals, revokes = locks_and_removals(plan)
        head += self._callout("⚠ " + _("Locks ({n})").format(n=len(locks)), locks, labels)
        head += self._callout(_("Removals ({n})").format(n=len(removals)), removals, labels, removal=True)
        head += self._callout(_("Rights revoked ({n})").format(n=len(revokes)), revokes, labels)
        head += approvals_markdown(self.approvals, labels)

        text = "\n".join(head)
        if n:
            text += "\n### " + _("Details per unit") + "\n\n"
        reserve = 600 + (3000 if plan.unlisted else 0)  # room for the cut note and some unlisted objects
        groups = group_by_unit(plan)
        cut_at: int | None = None
        for idx, (unit, items) in enumerate(groups):
            block = self._unit_block(unit, items, labels)  # built one by one: a cut stops building
            if len(text) + len(block) + reserve > self.max_length:
                cut_at = idx
                break
            text += block
        if cut_at is not None:
            left = groups[cut_at:]
            changes_left = sum(len(items) for _, items in left)
            text += "\n> ⚠ **" + _("Plan cut") + "**: " + _(
                "{changes} change(s) in {units} unit(s) not shown here (from unit {first} on) to keep this "
                "comment under {limit} characters. The full plan: {full}."
            ).format(changes=changes_left, units=len(left), first=md(left[0][0] or _("organisation-wide")),
                     limit=f"{self.max_length:,}", full=self.full_plan) + "\n"
        if plan.unlisted:
            text += self._unlisted_block(plan, self.max_length - len(text) - 100)
        if len(text) > self.max_length:  # a huge header (callouts are capped, so only by a pathological plan)
            note = "\n\n> ⚠ " + _("cut at {limit} characters; the full plan: {full}.").format(
                limit=f"{self.max_length:,}", full=self.full_plan) + "\n"
            text = text[: self.max_length - len(note)] + note
        return text

    def _callout(self, title: str, changes: list[Change], labels: Mapping[str, str],
                 removal: bool = False) -> list[str]:
        if not changes:
            return []
        out = [f"### {title}", ""]
        for c in changes[: self.CALLOUT_MAX]:
            unit = f" — {md(labels.get(c.unit, c.unit))}" if c.unit else ""
            extra = " (" + _("archived first") + ")" if removal and c.kind in MAILBOX_KINDS else ""
            why = f": {md(_rule_reason(c.reasons))}" if c.reasons else ""
            out.append(f"- {_obj(c)}{unit}{extra}{why}")
        if len(changes) > self.CALLOUT_MAX:
            more = len(changes) - self.CALLOUT_MAX
            out.append("- … " + _("and {n} more").format(n=more))
        out.append("")
        return out

    def _unit_block(self, unit: str, items: list[tuple[int, Change]], labels: Mapping[str, str]) -> str:
        name = labels.get(unit)
        title = (f"<b>{md(unit)}</b> — {md(name)}" if unit and name
                 else f"<b>{md(unit)}</b>" if unit else "<b>" + _("Organisation-wide") + "</b>")
        lines = [
            "<details>",
            f"<summary>{title}: "
            + ngettext("{n} change", "{n} changes", len(items)).format(n=len(items))
            + f" ({html.escape(counts_text([c for _i, c in items]))})</summary>",
            "",
        ]
        for i, c in items:
            prov = f" · {c.provider}" if c.provider else ""
            what, kind = change_words(c.action.label, c.kind)
            lines.append(f"- **#{i} {what}** {(kind + ' ') if kind else ''}{code(c.key)}{prov}")
            for f, b, a in field_lines(c, labels):
                if c.action in (Action.UPDATE, Action.LOCK, Action.UNLOCK, Action.GRANT) and b:
                    lines.append(f"   - `{f}`: {md(b)} → {md(a)}")
                else:
                    lines.append(f"   - `{f}`: {md(a or b)}")
            for r in c.reasons:
                lines.append("   - _" + _("why") + f"_: {md(r.text())}")
        lines += ["", "</details>", ""]
        return "\n".join(lines) + "\n"

    def _unlisted_block(self, plan: Plan, budget: int) -> str:
        """The unlisted section, listing as many objects as ``budget`` characters allow."""
        lines = [
            "\n### " + _("Not in the TOML ({n})").format(n=len(plan.unlisted)),
            "",
            _("Live objects the TOML does not mention: reported, not deleted."),
            "",
            "<details>",
            "<summary>" + ngettext("{n} object", "{n} objects", len(plan.unlisted)).format(
                n=len(plan.unlisted)) + "</summary>",
            "",
        ]
        used = sum(len(line) + 1 for line in lines) + 400
        for i, r in enumerate(plan.unlisted):
            unit = " (" + _("unit {id}").format(id=md(labels_text(r.unit, plan))) + ")" if r.unit else ""
            line = f"- {kind_name(r.kind)} {code(r.key)}{unit}"
            if used + len(line) + 1 > budget:
                rest = len(plan.unlisted) - i
                lines.append("- … " + _("{n} more not shown (comment size); see {full}").format(
                    n=rest, full=self.full_plan))
                break
            lines.append(line)
            used += len(line) + 1
        lines += ["", "</details>", ""]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# JSON


class JsonRenderer:
    """``Plan.to_json()`` as indented UTF-8 JSON (docs/plan-json.md)."""

    name: ClassVar[str] = "json"

    def render(self, plan: Plan, state_or_labels: Any = None) -> str:
        # a made plan prints its one JSON form, the one ``load_plan`` reads back
        data = plan_json(plan) if plan.meta is not None else plan.to_json()
        return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


RENDERERS: dict[str, type[Any]] = {
    "text": TextRenderer,
    "markdown": MarkdownRenderer,
    "json": JsonRenderer,
}


def render(plan: Plan, fmt: str = "text", state_or_labels: Any = None, **options: Any) -> str:
    """Render ``plan`` in format ``fmt`` (text, markdown, json); options go to the renderer's constructor."""
    try:
        cls = RENDERERS[fmt]
    except KeyError:
        raise MailstateError(f"unknown format {fmt!r}; choose one of {', '.join(RENDERERS)}") from None
    return str(cls(**options).render(plan, state_or_labels))


def _rule_reason(reasons: Sequence[Reason]) -> str:
    """The reason to call out: the first that names a rule (``left on …``), not merely the TOML line
    that defines the object (``units/vp.toml:12: person x``); that line when it is all there is."""
    return next((r for r in reasons if not r.code.startswith("source.")), reasons[0]).text()


def labels_text(unit: str, plan: Plan) -> str:
    """"Phòng Kế hoạch (khtc)": a unit's name beside its id, when the plan knows it."""
    name = plan.unit_names.get(unit)
    return f"{name} ({unit})" if name else unit


def render_plan(plan: Plan, fmt: str, out: Any, *, color: bool = False, **options: Any) -> None:
    """Render with the core renderers; JSON is the saved-plan JSON (same schema, plus fingerprints)."""
    if fmt == "text":
        options["color"] = color
        TextRenderer(**options).write(plan, out)
        return
    text = render(plan, fmt, **options)
    out.write(text if text.endswith("\n") else text + "\n")
