"""Acceptance: `--scope unit:<id>` on an agency nobody wrote a test for — a scoped plan sees the objects of
its units on both sides (live and TOML): the old-address aliases of its people and the groups naming them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import tomlkit
from ldap3 import LEVEL, MODIFY_ADD, MODIFY_REPLACE

from mailstate.lab import Lab

pytestmark = pytest.mark.integration

DOMAIN = "stttt.quangngai.gov.vn"
AGENCY = Path(__file__).parent / "data" / "accept_reconcile_quangngai"
MAILSTATE = Path(sys.executable).with_name("mailstate")


@pytest.fixture
def applied(lab_for: Callable[..., Lab], tmp_path: Path) -> tuple[Lab, Path, dict[str, str]]:
    """The agency applied to a reset lab of its own, with Hồ Tuấn's address changed (an old-address alias)."""
    lab = lab_for(DOMAIN)
    lab.reset()
    state = tmp_path / "state"
    shutil.copytree(AGENCY, state)
    env = {**os.environ, **lab.env(), "MAILSTATE_HOME": str(tmp_path / "home")}
    out = ms(env, "apply", "--state", str(state), "--provider", "ldap", "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    ktht = state / "units" / "ktht.toml"
    doc = tomlkit.parse(ktht.read_text(encoding="utf-8"))
    for person in doc["person"]:
        if person["id"] == "tuanh":
            person["address"] = "tuan.ho@" + DOMAIN
    ktht.write_text(tomlkit.dumps(doc), encoding="utf-8")
    out = ms(env, "apply", "--state", str(state), "--provider", "ldap", "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    return lab, state, env


def ms(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MAILSTATE), *args], env=env, capture_output=True, text=True, timeout=120)


def scoped(env: dict[str, str], state: Path, unit: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return ms(env, "plan", "--state", str(state), "--provider", "ldap", "--scope", f"unit:{unit}", *extra)


def test_scoped_plan_keeps_the_old_address_alias_of_its_people(
    applied: tuple[Lab, Path, dict[str, str]],
) -> None:
    """A scoped plan right after apply is empty: the live alias of a scoped person's old address is in
    scope."""
    lab, state, env = applied
    c = lab.ldap(as_="root")
    c.search(f"ou=aliases,{lab.base_dn}", "(objectClass=*)", search_scope=LEVEL, attributes=["cn"])
    assert [str(e.cn) for e in c.entries] == ["tuanh@" + DOMAIN]
    for unit in ("ktht", "cntt", "gd", "vp"):
        out = scoped(env, state, unit, "--format", "json")
        assert out.returncode == 0, out.stderr
        plan = json.loads(out.stdout)
        assert plan["changes"] == [] and plan["unlisted"] == [], (unit, plan)


def test_scoped_plan_repairs_a_group_given_one_of_its_people(
    applied: tuple[Lab, Path, dict[str, str]],
) -> None:
    """A person of the scope added by hand to a group that does not list them is an update of that group,
    not a group "not in the TOML"; a scoped saved plan goes stale when the alias of its person changes."""
    lab, state, env = applied
    c = lab.ldap(as_="root")
    assert c.modify(f"cn=cntt3,ou=groups,{lab.base_dn}", {"mailstateMember": [(MODIFY_ADD, ["hoatt"])]})
    plan = json.loads(scoped(env, state, "vp", "--format", "json").stdout)
    assert [(ch["action"], ch["kind"], ch["key"], ch["fields"]) for ch in plan["changes"]] == [
        ("update", "group", "cntt3", ["members"])
    ]
    assert plan["unlisted"] == []

    saved = state.parent / "ktht.json"
    assert scoped(env, state, "ktht", "--out", str(saved)).returncode == 0
    alias = f"cn=tuanh@{DOMAIN},ou=aliases,{lab.base_dn}"
    assert c.modify(alias, {"mailstateExpires": [(MODIFY_REPLACE, ["20300101000000Z"])]})
    out = ms(env, "apply", str(saved), "--state", str(state), "--provider", "ldap")
    assert out.returncode == 1
    assert f"live old address tuanh@{DOMAIN} changed" in out.stdout + out.stderr
