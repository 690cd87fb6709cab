"""The public e-mail directory (BĐ art.6, MIC art.2.3, VL art.5.1): units and people, from the desired state.

Listed: every unit not dissolved (name, address, parent) and every person who has not left and is not
locked (name, unit, title, office phone, address). Mobile numbers and backup mailboxes are personal
data and are not published. Output as HTML (escaped), CSV or vCard 4.0 (RFC 6350).

Every value is shown with control characters escaped (validation refuses them already; this is the second
line of defence), and a CSV cell that starts like a spreadsheet formula (``= + - @``, tab, carriage return)
gets a leading ``'`` (OWASP "CSV injection"): ``=HYPERLINK(…)`` is shown, never run.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from mailstate.desired_state.loader import load_state
from mailstate.desired_state.naming import derive_addresses
from mailstate.desired_state.schema import State
from mailstate.errors import MailstateError
from mailstate.model.i18n import N_, _, current, use
from mailstate.text import csv_cell, visible


@dataclass(frozen=True)
class Entry:
    kind: str  # "unit" or "person"
    id: str
    name: str
    unit: str | None
    unit_name: str | None
    title: str | None
    phone: str | None
    email: str | None


def directory_entries(state_dir: Path | State, as_of: date | None = None) -> list[Entry]:
    """The entries to publish on ``as_of`` (default today): units, then people by unit and name."""
    day = as_of or date.today()
    state = state_dir if isinstance(state_dir, State) else load_state(Path(state_dir))
    addresses = derive_addresses(state)
    units = {uid: u for uid, u in state.units.items() if u.dissolved_on is None or u.dissolved_on > day}
    out: list[Entry] = []
    for uid, u in sorted(units.items(), key=lambda kv: kv[0]):
        parent = state.units.get(u.parent) if u.parent else None
        out.append(
            Entry(
                "unit",
                uid,
                u.name,
                u.parent,
                parent.name if parent else None,
                None,
                None,
                addresses.of("unit", uid),
            )
        )
    people = []
    for pid, p in state.people.items():
        if p.left_on is not None and p.left_on <= day:
            continue
        if p.suspended:
            continue
        unit = state.units.get(p.unit or "")
        people.append(
            Entry(
                "person",
                pid,
                p.name,
                p.unit,
                unit.name if unit else None,
                p.title,
                p.phone,
                addresses.of("person", pid),
            )
        )
    people.sort(key=lambda e: (e.unit or "", e.name, e.id))
    return out + people


def render_directory(state_dir: Path, fmt: str, as_of: str | None = None, lang: str | None = None) -> str:
    """The directory as ``fmt``, its headings and labels in ``lang`` (default: the organisation's)."""
    day = None
    if as_of:
        try:
            day = date.fromisoformat(as_of)
        except ValueError as exc:
            raise MailstateError(
                _("--as-of {value}: expected a date YYYY-MM-DD").format(value=repr(as_of))) from exc
    if fmt not in ("html", "csv", "vcard"):
        raise MailstateError(_("unknown directory format {fmt}: html, csv or vcard").format(fmt=repr(fmt)))
    state = load_state(Path(state_dir))
    entries = directory_entries(state, day)
    with use(lang or state.language):
        if fmt == "html":
            return to_html(entries)
        if fmt == "csv":
            return to_csv(entries)
        return to_vcard(entries)


CSV_COLUMNS = (N_("kind"), N_("id"), N_("name"), N_("unit"), N_("unit name"), N_("title"), N_("phone"),
               N_("e-mail"))
ENTRY_KINDS = {"unit": N_("unit"), "person": N_("person")}


def to_csv(entries: list[Entry]) -> str:
    """One row per entry under a header row in the language of the run; the kind in words, ids as written."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([_(c) for c in CSV_COLUMNS])
    for e in entries:
        w.writerow(
            [
                csv_cell(v or "")
                for v in (_(ENTRY_KINDS[e.kind]), e.id, e.name, e.unit, e.unit_name, e.title, e.phone,
                          e.email)
            ]
        )
    return buf.getvalue()


def _h(value: str | None) -> str:
    return html.escape(visible(value or ""), quote=True)


def to_html(entries: list[Entry]) -> str:
    units = [e for e in entries if e.kind == "unit"]
    people = [e for e in entries if e.kind == "person"]
    title = _h(_("E-mail directory"))
    rows = [
        "<!DOCTYPE html>",
        f'<html lang="{current()}">',
        f'<head><meta charset="utf-8"><title>{title}</title></head>',
        "<body>",
        f"<h1>{title}</h1>",
        "<h2>" + _h(_("Units")) + "</h2>",
        "<table>",
        "<tr>" + "".join(f"<th>{_h(_(c))}</th>" for c in (N_("Unit"), N_("Part of"), N_("E-mail"))) + "</tr>",
    ]
    for e in units:
        mail = f'<a href="mailto:{_h(e.email)}">{_h(e.email)}</a>' if e.email else ""
        rows.append(f"<tr><td>{_h(e.name)}</td><td>{_h(e.unit_name)}</td><td>{mail}</td></tr>")
    rows += [
        "</table>",
        "<h2>" + _h(_("Staff")) + "</h2>",
        "<table>",
        "<tr>" + "".join(f"<th>{_h(_(c))}</th>" for c in (N_("Full name"), N_("Unit"), N_("Title"),
                                                           N_("Phone"), N_("E-mail"))) + "</tr>",
    ]
    for e in people:
        mail = f'<a href="mailto:{_h(e.email)}">{_h(e.email)}</a>' if e.email else ""
        rows.append(
            f"<tr><td>{_h(e.name)}</td><td>{_h(e.unit_name)}</td><td>{_h(e.title)}</td>"
            f"<td>{_h(e.phone)}</td><td>{mail}</td></tr>"
        )
    rows += ["</table>", "</body>", "</html>", ""]
    return "\n".join(rows)


def _v(value: str) -> str:
    """RFC 6350 §3.4 text escaping: backslash, comma, semicolon, newline; other controls shown escaped."""
    value = value.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;").replace("\n", "\\n")
    return visible(value)


def to_vcard(entries: list[Entry]) -> str:
    cards: list[str] = []
    for e in entries:
        lines = [
            "BEGIN:VCARD",
            "VERSION:4.0",
            f"KIND:{'org' if e.kind == 'unit' else 'individual'}",
            f"FN:{_v(e.name)}",
            f"UID:{_v(e.kind + ':' + e.id)}",
        ]
        if e.kind == "unit":
            lines.append(f"ORG:{_v(e.name)}")
        elif e.unit_name:
            lines.append(f"ORG:{_v(e.unit_name)}")
        if e.title:
            lines.append(f"TITLE:{_v(e.title)}")
        if e.phone:
            lines.append(f"TEL;TYPE=work:{_v(e.phone)}")
        if e.email:
            lines.append(f"EMAIL;TYPE=work:{_v(e.email)}")
        lines.append("END:VCARD")
        cards.append("\r\n".join(lines) + "\r\n")
    return "".join(cards)
