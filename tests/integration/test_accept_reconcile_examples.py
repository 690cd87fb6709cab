"""Acceptance: each example agency, on a fresh lab of its own through `mailstate lab env`, with every provider
(LDAP, IMAP, SSH): plan, apply, a second plan and a second apply do nothing; the lifecycle plan of a later
date cites an article for every lock and removal; no secret in any output, journal, audit log or plan."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailstate.cli import LANG_ENV
from mailstate.lab import Lab

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAILSTATE = Path(sys.executable).with_name("mailstate")
NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "mailstate.toml").is_file())


@pytest.fixture(params=NAMES)
def example(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], Lab]]:
    """A copy of one example, a fresh lab started for it (stopped afterwards), and its `lab env`."""
    state = tmp_path / "state"
    shutil.copytree(EXAMPLES / request.param, state)
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="mailstate-lab-", dir=shm if os.access(shm, os.W_OK) else None))
    root.chmod(0o711)
    org = tomllib.loads((state / "mailstate.toml").read_text(encoding="utf-8"))["organization"]
    lab = Lab(root / "lab", die_with_parent=True)  # its servers die with pytest if it is killed
    try:
        lab.up(domain=org["domain"], org_name=org["name"])
        env_text = subprocess.run([str(MAILSTATE), "lab", "env", "--dir", str(lab.dir)],
                                  capture_output=True, text=True, check=True).stdout
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSTATE_") or k == LANG_ENV}
        for line in env_text.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'\"")
        env["MAILSTATE_HOME"] = str(tmp_path / "home")
        yield state, env, lab
    finally:
        lab.down()
        shutil.rmtree(root, ignore_errors=True)


def test_example_applies_and_converges_with_every_provider(
    example: tuple[Path, dict[str, str], Lab], tmp_path: Path
) -> None:
    """plan exits 2, apply --yes 0, then plan exits 0 and apply has nothing to do; a later date's locks and
    removals each cite an article; no lab password or initial password is written anywhere but its file."""
    state, env, lab = example

    def ms(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(MAILSTATE), *args, "--state", str(state)], env=env,
                              capture_output=True, text=True, timeout=300)

    first = ms("plan", "--detailed-exitcode", "--out", str(tmp_path / "plan.json"))
    assert first.returncode == 2, first.stdout + first.stderr
    assert_filtered(scoped_plans(state, env, "")[""])
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert {c["provider"] for c in plan["changes"]} >= {"ldap", "imap"}
    applied = ms("apply", str(tmp_path / "plan.json"))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    second = ms("plan", "--detailed-exitcode", "--format", "json")
    assert second.returncode == 0, second.stdout + second.stderr
    assert json.loads(second.stdout)["changes"] == []
    again = ms("apply", "--yes")
    assert again.returncode == 0 and "nothing to apply" in again.stdout, again.stdout + again.stderr
    # converged: every unit's nightly drift check is quiet; a later date's plans are filtered too
    now = scoped_plans(state, env, "", read_each=True)[""]
    assert {uid: plan for uid, plan in now.items() if plan["changes"] or plan["unlisted"]} == {}
    drift = ms("drift", "--scope", f"unit:{sorted(now)[1]}")  # sorted(now)[0] is "", the full plan
    assert drift.returncode == 0, drift.stdout[-2000:] + drift.stderr
    assert_filtered(scoped_plans(state, env, "2028-01-01")["2028-01-01"])

    later = ms("plan", "--as-of", "2028-01-01", "--format", "json")
    assert later.returncode == 0, later.stderr
    removals = [c for c in json.loads(later.stdout)["changes"]
                if c["action"] in ("lock", "archive", "delete", "revoke")]
    assert removals
    for c in removals:
        # every removal names its rule (a stable code) and, in the text, its article or its setting
        assert any(not w["rule"].startswith(("source.", "text")) for w in c["why"]), c
        assert any(re.search(r"\(Điều \d+[^)]*Quyết định|theo `\w+`", r) for r in c["reasons"]), c
    md = ms("plan", "--as-of", "2028-01-01", "--format", "markdown")
    assert md.returncode == 0 and len(md.stdout) <= 65536, md.stderr

    home = Path(env["MAILSTATE_HOME"])
    [pw_file] = list(home.rglob("initial-passwords-*.tsv"))
    assert pw_file.stat().st_mode & 0o077 == 0
    secrets = [line.split("\t")[2] for line in pw_file.read_text().splitlines()]
    secrets += [lab.secret(n) for n in ("ldap_root", "ldap_service", "ldap_dovecot", "imap_master")]
    texts = [first.stdout, first.stderr, applied.stdout, applied.stderr, second.stdout, later.stdout]
    texts += [md.stdout, (tmp_path / "plan.json").read_text()]
    texts += [p.read_text() for p in home.rglob("*.jsonl")]
    for text in texts:
        for secret in secrets:
            assert secret not in text


SCOPED_PLANS = """
import json, sys
from pathlib import Path
from mailstate.desired_state.loader import load_state
from mailstate.reconciler.plan.plan import as_of_date as _as_of, plan_changes, plan_unlisted
from mailstate.providers.registry import close_providers, open_providers
from mailstate.reconciler.pipeline import make_plan, plan_from, read_all
root, read_each = Path(sys.argv[1]), sys.argv[2] == "read-each"
state = load_state(root)
provs = open_providers(state, for_plan=True)
out = {}
try:
    snapshots = read_all(provs, None)
    for as_of in sys.argv[3:]:
        out[as_of] = {}
        for scope in [None, *([u] for u in sorted(state.units))]:
            if read_each:  # make_plan reads the servers for each scope, as `plan --scope` does
                plan = make_plan(root, scope=scope, as_of=as_of or None, providers=provs, state=state)
            else:
                plan = plan_from(state, root, snapshots, scope_units=scope, as_of=_as_of(as_of or None))
            out[as_of][scope[0] if scope else ""] = {
                "changes": [json.dumps(c.to_json(), sort_keys=True) for c in plan_changes(plan)],
                "units": [c.unit for c in plan_changes(plan)],
                "unlisted": sorted(f"{r.kind}:{r.key}" for r in plan_unlisted(plan)),
            }
finally:
    close_providers(provs)
print(json.dumps(out))
"""


def scoped_plans(state: Path, env: dict[str, str], *as_of: str, read_each: bool = False
                 ) -> dict[str, dict[str, dict[str, list[str]]]]:
    """By date ("" today): the full plan (key "") and every unit's scoped plan, from one read of the servers
    or (``read_each``) one read per plan."""
    each = "read-each" if read_each else "read-once"
    res = subprocess.run([sys.executable, "-c", SCOPED_PLANS, str(state), each, *as_of],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return dict(json.loads(res.stdout))


def assert_filtered(plans: dict[str, dict[str, list[str]]]) -> None:
    """Every unit's plan is the full plan filtered: changes identical and in the full plan's order, every
    change of the unit's own records in it, and no change of the full plan left out of all of them."""
    full = plans[""]
    position = {c: i for i, c in enumerate(full["changes"])}
    seen: set[str] = set()
    for uid, plan in plans.items():
        assert [c for c in plan["changes"] if c not in position] == [], uid
        assert [position[c] for c in plan["changes"]] == sorted(position[c] for c in plan["changes"]), uid
        own = {c for c, u in zip(full["changes"], full["units"], strict=True) if u == uid}
        assert own <= set(plan["changes"]), uid
        assert set(plan["unlisted"]) <= set(full["unlisted"]), uid
        seen.update(plan["changes"])
    assert [c for c in full["changes"] if c not in seen] == []
