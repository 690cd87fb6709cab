"""Hostile text: characters refused in the TOML, and shown escaped when they come from the live side.

Anything a user writes (names, titles, purposes, reasons …) and anything read back from LDAP or IMAP (cn,
title, folder names, ACL identifiers) may carry characters that act instead of being shown:

- C0 controls U+0000–U+001F (a newline forges a line of the plan; ESC starts a terminal escape sequence;
  NUL cuts a C string), DEL U+007F and the C1 controls U+0080–U+009F (U+009B is a one-byte CSI);
- U+2028 / U+2029 (line and paragraph separators: editors and some terminals break the line there);
- bidirectional formatting characters (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069): they
  reorder what is displayed ("Trojan Source", CVE-2021-42574), so text can read differently from what it is.

``bad_characters(text)`` lists them (validation refuses them, ``FILE:LINE: field:``); ``visible(text)`` shows
them as escapes (``\\x1b``, ``\\n``, ``\\u202e``) for every rendering of live data; ``csv_cell(text)``
neutralises a spreadsheet formula (OWASP "CSV injection").

No dependency on the rest of mailstate: errors, the model and every renderer use it.
"""

from __future__ import annotations

import html
import re
import unicodedata

_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
CONTROL_CLASS = "\x00-\x1f\x7f-\x9f\u2028\u2029" + _BIDI
"""The characters of a regex character class (between ``[`` and ``]``) that text must not hold."""
CONTROL_RE = re.compile(f"[{CONTROL_CLASS}]")

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with every control, separator and bidi character written as an escape (``\\x1b``,
    ``\\n``, ``\\u202e``); a backslash already there stays (the escapes are for reading, not parsing)."""
    if not CONTROL_RE.search(text):
        return text
    return CONTROL_RE.sub(lambda m: _escape(m.group(0)), text)


def char_name(ch: str) -> str:
    """``U+000A LINE FEED``: the code point and its Unicode name (control characters have none: their
    common name is used)."""
    code = ord(ch)
    name = unicodedata.name(ch, "") or _CONTROL_NAMES.get(code, "control character")
    return f"U+{code:04X} {name}"


_CONTROL_NAMES = {
    0x00: "NULL", 0x07: "BELL", 0x08: "BACKSPACE", 0x09: "TAB", 0x0A: "LINE FEED", 0x0B: "VERTICAL TAB",
    0x0C: "FORM FEED", 0x0D: "CARRIAGE RETURN", 0x1B: "ESCAPE", 0x7F: "DELETE", 0x85: "NEXT LINE",
    0x9B: "CONTROL SEQUENCE INTRODUCER",
}


def bad_characters(text: str) -> list[tuple[int, str]]:
    """(1-based position, character) of each character ``text`` must not hold."""
    return [(m.start() + 1, m.group(0)) for m in CONTROL_RE.finditer(text)]


def control_message(text: str) -> str | None:
    """Why ``text`` is refused (the first bad character, its position, how many), or None when it is clean.
    The text itself is never echoed (it would act on the terminal that shows the message)."""
    bad = bad_characters(text)
    if not bad:
        return None
    pos, ch = bad[0]
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return (
        f"holds a control or bidirectional character: {char_name(ch)} at character {pos}{more}; "
        "write one line of printable text (no line breaks, tabs, escape sequences or direction overrides)"
    )


CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets (OWASP)."""


def csv_cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: one starting like a formula gets a leading ``'`` (OWASP CSV
    injection advice); control characters are shown escaped."""
    prefix = "'" if text.startswith(CSV_FORMULA_START) else ""
    return prefix + visible(text)


# --------------------------------------------------------------------------------------------------
# Markdown


def md(text: str) -> str:
    """Text made safe inside Markdown/HTML: HTML-escaped, Markdown's active characters neutralised, control
    and bidi characters shown as escapes (a newline cannot start a list item or a heading)."""
    out = html.escape(text, quote=False)
    for ch in ("\\", "`", "*", "_", "[", "]", "|", "#", "~", "!"):
        out = out.replace(ch, "\\" + ch)
    return visible(out)


def code(text: str) -> str:
    """``text`` as a Markdown code span: controls escaped, no backtick (it would close the span)."""
    return "`" + visible(text).replace("`", "'") + "`"
