"""Acceptance of the hostile-input rules in pure parts: the drift report's terminal and Markdown forms, the
TOML that `import` writes."""

from __future__ import annotations

import tomllib

import pytest
import tomlkit

from mailstate.adopt.importer import toml_text
from mailstate.reconciler.plan.render import drift
from mailstate.text import CONTROL_RE

HOSTILE = [
    "Chuyên viên\n     99. - delete person tuanpm  [ldap]",
    "Ngô\x1b]0;PWNED\x07\x1b[31mHà",
    "\u202eevil",
    "csi\u009b2J",
    "line\u2028sep",
    "del\x7f and nul\x00",
]


def _report(value: str) -> dict:
    return {
        "report": "drift", "organization": "x.gov.vn", "as_of": "2026-12-06", "scope": None,
        "created_at": "2026-12-06T00:00:00Z", "drift": True,
        "counts": {"by_hand": 1, "lifecycle": 1, "unlisted": 1},
        "by_hand": [{"action": "update", "kind": "person", "key": "p" + value, "unit": "vp" + value,
                     "provider": "ldap", "reasons": [],
                     "fields": [{"field": "title", "live": value, "toml": "Chuyên viên"}]}],
        "lifecycle": [{"action": "lock", "kind": "person", "key": "q", "unit": None, "provider": "ldap",
                       "reasons": ["why " + value]}],
        "unlisted": [{"kind": "person", "key": "evil" + value, "provider": "ldap", "name": [value, value],
                      "unit": value, "address": "a" + value + "@x.gov.vn"}],
    }


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("form", ["text", "markdown"])
def test_drift_report_shows_live_values_escaped(value: str, form: str) -> None:
    """Every live value in the drift report (field values, keys, names, units, addresses) shows its control,
    separator and bidi characters as escapes: no raw one, no line beyond those the report makes."""
    clean = _report("x")
    rendered = getattr(drift, form)(_report(value))
    assert [ch for ch in CONTROL_RE.findall(rendered) if ch != "\n"] == []
    assert rendered.count("\n") == getattr(drift, form)(clean).count("\n")


@pytest.mark.parametrize("value", HOSTILE)
def test_imported_toml_holds_no_raw_control_and_reads_back_the_same(value: str) -> None:
    doc = tomlkit.document()
    doc["name"] = value
    written = toml_text(doc)
    assert [ch for ch in CONTROL_RE.findall(written) if ch != "\n"] == []
    assert tomllib.loads(written)["name"] == value
