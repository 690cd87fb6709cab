"""`mailstate assign --live` against the real lab (slapd over LDAPS): live addresses are never handed out."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailstate.cli import LANG_ENV, cli
from mailstate.desired_state.assign import assign
from mailstate.lab import Lab
from mailstate.reconciler.pipeline import apply_plan, make_plan

pytestmark = pytest.mark.integration

DOMAIN = "lab.example.gov.vn"

TOP = f"""\
[organization]
name = "Lab"
domain = "{DOMAIN}"

[naming]
person = "{{given}}{{initials}}"

[providers.ldap]
url = "ldaps://ldap.invalid"
"""

UNIT = """\
# Phòng Quản lý Công nghiệp
[unit]
id = "qlcn"
name = "Phòng Quản lý Công nghiệp"

[[person]]
id = "m1"
name = "Nguyễn Văn Bằng"
"""

NAMESAKE = """
[[person]]   # joined later; a smaller id than m1
id = "a0"
name = "Nguyễn Vân Bằng"
"""


@pytest.fixture
def ldap_env(clean_lab: Lab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Lab:
    """The clean default lab with only the MAILSTATE_LDAP_* variables set."""
    for key in list(os.environ):
        if key.startswith("MAILSTATE_") and key != LANG_ENV:
            monkeypatch.delenv(key)
    for key, value in clean_lab.env().items():
        if key.startswith("MAILSTATE_LDAP_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    return clean_lab


def test_assign_live_never_renumbers(ldap_env: Lab, tmp_path: Path) -> None:
    """m1 got bangnv live while unpinned; a namesake with a smaller id then gets bangnv2; m1 keeps bangnv."""
    state = tmp_path / "state"
    (state / "units").mkdir(parents=True)
    (state / "mailstate.toml").write_text(TOP, encoding="utf-8")
    unit_file = state / "units" / "qlcn.toml"
    unit_file.write_text(UNIT, encoding="utf-8")
    home = tmp_path / "home"
    apply_plan(make_plan(state, providers=["ldap"]), state, journal_dir=home, audit_log=home / "audit.jsonl",
               passwords_out=home / "passwords.tsv", providers=["ldap"])

    unit_file.write_text(UNIT + NAMESAKE, encoding="utf-8")
    offline = {(a.kind, a.id): a.address for a in assign(state, check=True).assignments}
    assert offline[("person", "a0")] == f"bangnv@{DOMAIN}"  # offline, by id: why --live exists

    res = CliRunner().invoke(cli, ["assign", "--state", str(state), "--live"])
    assert res.exit_code == 0, res.output
    people = {p["id"]: p["address"] for p in tomllib.loads(unit_file.read_text(encoding="utf-8"))["person"]}
    assert people == {"m1": f"bangnv@{DOMAIN}", "a0": f"bangnv2@{DOMAIN}"}
    assert unit_file.read_text(encoding="utf-8").startswith(UNIT.splitlines(keepends=True)[0])

    res = CliRunner().invoke(cli, ["assign", "--state", str(state), "--live", "--check"])
    assert res.exit_code == 0, res.output


def test_newcomer_without_id_never_gets_a_live_uid(ldap_env: Lab, tmp_path: Path) -> None:
    """A person still in the directory but gone from the TOML keeps their uid: a namesake written without
    an id gets another one (else the plan would hand the newcomer the old person's entry and mailbox)."""
    state = tmp_path / "state"
    (state / "units").mkdir(parents=True)
    (state / "mailstate.toml").write_text(TOP, encoding="utf-8")
    unit_file = state / "units" / "qlcn.toml"
    unit_file.write_text(UNIT.replace('id = "m1"', f'id = "bangnv"\naddress = "bang.old@{DOMAIN}"'),
                         encoding="utf-8")
    home = tmp_path / "home"
    apply_plan(make_plan(state, providers=["ldap"]), state, journal_dir=home, audit_log=home / "audit.jsonl",
               passwords_out=home / "passwords.tsv", providers=["ldap"])

    # bangnv left the TOML, not the directory; a namesake joins, written without an id
    unit_file.write_text(UNIT.replace('id = "m1"\n', "", 1), encoding="utf-8")
    res = CliRunner().invoke(cli, ["assign", "--state", str(state), "--live"])
    assert res.exit_code == 0, res.output
    person = tomllib.loads(unit_file.read_text(encoding="utf-8"))["person"][0]
    assert person["id"] != "bangnv" and person["address"] == f"bangnv@{DOMAIN}"
