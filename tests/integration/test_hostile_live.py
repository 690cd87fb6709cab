"""Hostile values on the live side (real slapd): `import` with unit ids that are paths writes nothing outside
--out and reports them; a live cn/title with ESC and a newline is shown escaped in the text and Markdown
plans (no forged change line, no escape sequence reaching the terminal)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import tomlkit
from click.testing import CliRunner
from ldap3 import MODIFY_REPLACE
from ldap3.utils.dn import escape_rdn

from mailstate.cli import LANG_ENV, cli
from mailstate.lab import Lab
from mailstate.lab.testing import make_person, person_dn
from mailstate.reconciler.pipeline import make_plan
from mailstate.reconciler.plan.render import render
from mailstate.text import CONTROL_RE

pytestmark = pytest.mark.integration

DOMAIN = "lab.example.gov.vn"
FORGED = "Chuyên viên\n     99. - delete person tuanpm  [ldap]\n          why: MIC art.5.3"


@pytest.fixture
def ldap_env(lab_env: dict[str, str], clean_lab: Lab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Lab:
    """The clean default lab with only its LDAP variables set (the plan reads LDAP alone)."""
    for key in list(os.environ):
        if key.startswith("MAILSTATE_") and not key.startswith("MAILSTATE_LDAP_") and key != LANG_ENV:
            monkeypatch.delenv(key)
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    return clean_lab


def _add_unit(lab: Lab, ou: str, name: str) -> None:
    conn = lab.ldap(as_="root")
    try:
        ok = conn.add(f"ou={escape_rdn(ou)},ou=units,{lab.base_dn}", ["organizationalUnit", "mailstateUnit"],
                      {"ou": ou, "description": name})
        assert ok, conn.result
    finally:
        conn.unbind()


def test_import_writes_nothing_outside_out_and_reports_hostile_ids(ldap_env: Lab, tmp_path: Path) -> None:
    """Units `ou=../../../pwned-by-ldap` and `ou=<abs>/abs-pwned` are skipped and reported; a person in
    such a unit lands in units/_unassigned.toml; a cn with ESC/newline is written escaped and reported."""
    lab = ldap_env
    out = tmp_path / "a" / "b" / "out"
    absolute = tmp_path / "x" / "abs-pwned"
    _add_unit(lab, "../../../pwned-by-ldap", "Pwned")
    _add_unit(lab, str(absolute), "Abs")
    _add_unit(lab, "qlcn", "Phòng Quản lý Công nghiệp")
    make_person(lab, "bangnv", "Passw0rd!x", cn="Nguyễn\x1b[2J Văn Bằng", unit="qlcn")
    make_person(lab, "evil", "Passw0rd!x", cn="Kẻ Xấu", unit="../../../pwned-by-ldap")

    r = CliRunner().invoke(cli, ["import", "--out", str(out), "--domain", DOMAIN])
    assert r.exit_code == 0, r.output
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert written and all(p.is_relative_to(out) for p in written), sorted(written)
    assert not (tmp_path / "a" / "pwned-by-ldap.toml").exists() and not absolute.with_suffix(".toml").exists()
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "import-report.txt", "mailstate.toml", "units/_unassigned.toml", "units/qlcn.toml"]
    report = (out / "import-report.txt").read_text(encoding="utf-8")  # every entry left out, and why
    assert "unit '../../../pwned-by-ldap': not imported" in report and "U+001B ESCAPE" in report
    assert not CONTROL_RE.search(report.replace("\n", ""))
    stderr = r.stderr
    assert "unit '../../../pwned-by-ldap': not imported" in stderr
    assert f"unit '{absolute}': not imported" in stderr
    assert "person bangnv: name holds a control or bidirectional character: U+001B ESCAPE" in stderr
    assert not CONTROL_RE.search(stderr.replace("\n", ""))
    unassigned = tomlkit.parse((out / "units" / "_unassigned.toml").read_text(encoding="utf-8"))
    assert [p["id"] for p in unassigned["person"]] == ["evil"]
    assert "unit" not in unassigned["person"][0]
    qlcn = (out / "units" / "qlcn.toml").read_text(encoding="utf-8")
    assert "\x1b" not in qlcn and "\\u001b" in qlcn  # escaped in the TOML; validate refuses it
    r = CliRunner().invoke(cli, ["validate", "--state", str(out)])
    assert r.exit_code == 1 and "units/qlcn.toml:" in r.output and "U+001B" in r.output


def test_a_hostile_live_title_is_shown_escaped_in_the_plan(ldap_env: Lab, tmp_path: Path) -> None:
    """A live title holding a newline and a forged change line, and a cn with ESC and rich markup, show in
    the text plan (plain and coloured) and the Markdown plan as escapes: no extra line, no live escape."""
    lab = ldap_env
    state = tmp_path / "state"
    (state / "units").mkdir(parents=True)
    (state / "mailstate.toml").write_text(tomlkit.dumps({
        "organization": {"name": "Lab", "domain": DOMAIN},
        "providers": {"ldap": {"password_env": "MAILSTATE_LDAP_PASSWORD"}},
    }), encoding="utf-8")
    (state / "units" / "qlcn.toml").write_text(tomlkit.dumps({
        "unit": {"id": "qlcn", "name": "Phòng Quản lý Công nghiệp"},
        "person": [{"id": "bangnv", "name": "Nguyễn Văn Bằng", "title": "Chuyên viên"}],
    }), encoding="utf-8")
    _add_unit(lab, "qlcn", "Phòng Quản lý Công nghiệp")
    make_person(lab, "bangnv", "Passw0rd!x", cn="Nguyễn Văn Bằng", unit="qlcn")
    conn = lab.ldap(as_="root")
    try:
        ok = conn.modify(person_dn(lab, "bangnv"), {
            "title": [(MODIFY_REPLACE, [FORGED])],
            "cn": [(MODIFY_REPLACE, ["[bold red]Bằng[/]\x1b]0;pwned\x07 \u202eX"])],
        })
        assert ok, conn.result
    finally:
        conn.unbind()

    plan = make_plan(state, providers=["ldap"])
    titles = [c for c in plan.changes if c.key == "bangnv" and "title" in c.fields]
    assert titles and (titles[0].before or {}).get("title") == FORGED  # the live value reached the plan
    for fmt, opts in (("text", {"color": False}), ("text", {"color": True}), ("markdown", {})):
        text = render(plan, fmt, **opts)
        shown = re.sub(r"\x1b\[[0-9;]*m", "", text)  # rich's own colours, when asked for
        assert not CONTROL_RE.search(shown.replace("\n", "")), (fmt, opts)
        assert not re.search(r"^\s*(99\.|why: MIC)", shown, re.M), shown
        assert "\\n     99. - delete person tuanpm" in shown
        # Markdown escapes the escape's backslash and the ']' again (shown as \x1b]0;pwned\x07 when read)
        esc = "\\\\x1b\\]0;pwned\\\\x07" if fmt == "markdown" else "\\x1b]0;pwned\\x07"
        assert esc in shown and "\\u202e" in shown
