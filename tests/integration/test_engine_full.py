"""The whole loop with every provider (LDAP, IMAP, SSH) on the example agency, as `make demo` runs it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailstate.cli import cli
from mailstate.lab import Lab
from mailstate.reconciler.pipeline import apply_plan, make_plan
from mailstate.reconciler.plan.plan import plan_changes, plan_meta

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "binhdinh-sct"



def test_example_converges_with_every_provider(sct_all: Lab, tmp_path: Path) -> None:
    """The example plans LDAP and IMAP changes, applies them all, and a second plan is empty."""
    state = tmp_path / "state"
    shutil.copytree(EXAMPLE, state)
    plan = make_plan(state)
    assert set(plan_meta(plan).providers) == {"ldap", "imap", "ssh"}
    providers = {c.provider for c in plan_changes(plan)}
    assert {"ldap", "imap"} <= providers
    home = tmp_path / "home"
    apply_plan(plan, state, journal_dir=home, passwords_out=home / "pw.tsv")
    again = make_plan(state)
    assert [(c.action.label, c.kind, c.key, c.fields) for c in plan_changes(again)] == []


def test_demo_commands(sct_all: Lab, tmp_path: Path) -> None:
    """plan exits 2 with --detailed-exitcode, apply --yes, plan again exits 0: scripts/demo-loop.sh."""
    state = tmp_path / "state"
    shutil.copytree(EXAMPLE, state)
    runner = CliRunner()
    r = runner.invoke(cli, ["plan", "--state", str(state), "--detailed-exitcode"])
    assert r.exit_code == 2, r.output
    r = runner.invoke(cli, ["apply", "--state", str(state), "--yes"])
    assert r.exit_code == 0, r.output
    assert "initial passwords written to" in r.output
    outputs = [r.output]
    r = runner.invoke(cli, ["plan", "--state", str(state), "--detailed-exitcode"])
    assert r.exit_code == 0, r.output
    outputs.append(r.output)
    # no secret of any provider, and no initial password, in the output, journal or audit log
    home = Path(os.environ["MAILSTATE_HOME"]) / "sct.binhdinh.gov.vn"
    [pw_file] = list(home.glob("initial-passwords-*.tsv"))
    secrets = [line.split("\t")[2] for line in pw_file.read_text().splitlines()]
    secrets += [sct_all.secret(n) for n in ("ldap_root", "ldap_service", "ldap_dovecot", "imap_master")]
    assert len(secrets) > 20
    texts = outputs + [(home / "journal.jsonl").read_text(), (home / "audit.jsonl").read_text()]
    for text in texts:
        for secret in secrets:
            assert secret not in text
