"""The live read done in a child process while the TOML loads (reconciler.read_ahead), against the real lab:
it reads what an in-process read reads, a plan made with it is the plan made without, a failed read fails
the plan with the same message, and settings it cannot be sure of make the caller read itself. No mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailstate.cli import LANG_ENV, cli
from mailstate.lab import Lab
from mailstate.reconciler.read_ahead import DISABLE_ENV

pytestmark = pytest.mark.integration

MAILSTATE = Path(sys.executable).with_name("mailstate")

MAILSTATE_TOML = """\
[organization]
name = "Lab"
domain = "{domain}"

[providers.ldap]
url = "ldaps://ldap.invalid"
password_env = "MAILSTATE_LDAP_PASSWORD"
"""

UNIT_TOML = """\
[unit]
id = "vp"
name = "Văn phòng Sở"
head = "tuanpm"

[[person]]
id = "tuanpm"
name = "Phạm Minh Tuấn"
title = "Chánh Văn phòng"

[[person]]
id = "maiht"
name = "Huỳnh Thị Mai"
"""


@pytest.fixture
def env(lab_env: dict[str, str], clean_lab: Lab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Lab:
    """The clean default lab, its LDAP variables only (journal and audit under tmp_path)."""
    for key in list(os.environ):
        if key.startswith("MAILSTATE_") and key != LANG_ENV and not key.startswith("MAILSTATE_LDAP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    return clean_lab


def state_dir(root: Path, lab: Lab, providers_apart: bool = False) -> Path:
    root.mkdir(parents=True)
    text = MAILSTATE_TOML.format(domain="lab.example.gov.vn")
    if providers_apart:  # [providers] in a file of its own: not what the child opens with
        top, _, providers = text.partition("[providers.ldap]")
        text = top
        (root / "providers.toml").write_text("[providers.ldap]" + providers, encoding="utf-8")
    (root / "mailstate.toml").write_text(text, encoding="utf-8")
    (root / "units").mkdir()
    (root / "units" / "vp.toml").write_text(UNIT_TOML, encoding="utf-8")
    return root


def apply_cli(root: Path) -> int:
    return CliRunner().invoke(cli, ["apply", "--state", str(root), "--provider", "ldap", "--yes"]).exit_code


def fresh(code: str, **values: str) -> Any:
    """The JSON ``result`` of ``code`` run in a new Python process (``values`` given to it as variables).
    The read-ahead forks only from a process without threads, which a long test run is not."""
    head = "".join(f"{k} = {v!r}\n" for k, v in values.items())
    script = "import json\n" + head + code + "\nprint(json.dumps(result))"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ})
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def test_the_child_reads_what_an_in_process_read_reads(env: Lab, tmp_path: Path) -> None:
    root = state_dir(tmp_path / "state", env)
    assert apply_cli(root) == 0
    result = fresh(READ_BOTH_WAYS, root=str(root))
    assert result == {"forked": True, "reaped": True, "timed": True, "records": True, "unmanaged": True,
                      "facts": True, "count": 4}  # the unit, its mailbox, two people


REAPED = """
import os
def reaped(pid):
    \"\"\"Whether the child ``pid`` was already waited for (os.waitpid finds no such child).\"\"\"
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False
"""
"""Prepended to the scripts below: ``reaped(pid)``."""


READ_BOTH_WAYS = REAPED + """
from pathlib import Path
from mailstate.desired_state.loader import load_state
from mailstate.providers.registry import close_providers, open_providers
from mailstate.reconciler.pipeline import read_all
from mailstate.reconciler.read_ahead import read_ahead
timings = {}
with read_ahead(Path(root), ["ldap"]) as ahead:
    pid = ahead.pid
    state = load_state(Path(root))
    got = ahead.snapshots(state, ["ldap"], timings)
was_reaped = reaped(pid)
providers = open_providers(state, ["ldap"], for_plan=True)
try:
    want = read_all(providers, None)
finally:
    close_providers(providers)
result = {"forked": got is not None, "reaped": was_reaped, "timed": "read:ldap" in timings,
          "records": got["ldap"].records == want["ldap"].records,
          "unmanaged": got["ldap"].unmanaged == want["ldap"].unmanaged,
          "facts": got["ldap"].facts == want["ldap"].facts, "count": len(want["ldap"].records)}
"""


def _plan_json(args: list[str], ahead: bool, taken: bool | None = None) -> tuple[int, dict]:
    """The exit code and JSON plan of ``mailstate ARGS`` (a process of its own) with the read-ahead on or
    off; ``taken``: whether the child's read is expected to be used (default: whenever it is on)."""
    # MAILSTATE_TIMINGS names the phases: "fork" when the child read
    env = {**os.environ, DISABLE_ENV: "1" if ahead else "0", "MAILSTATE_TIMINGS": "1"}
    run = subprocess.run([str(MAILSTATE), *args], capture_output=True, text=True, timeout=120, env=env)
    phases = [line for line in run.stderr.splitlines() if line.startswith("timings: ")]
    assert len(phases) == 1 and ("read:ldap" in phases[0]), run.stderr
    assert (" fork " in phases[0]) == (ahead if taken is None else taken)
    data = json.loads(run.stdout)
    data.pop("created_at")
    data["engine"].pop("created_at")
    return run.returncode, data


def test_a_plan_made_with_the_read_ahead_is_the_plan_made_without(env: Lab, tmp_path: Path) -> None:
    root = state_dir(tmp_path / "state", env)
    args = ["plan", "--state", str(root), "--provider", "ldap", "--format", "json", "--detailed-exitcode"]
    code, without = _plan_json(args, ahead=False)
    assert code == 2 and without["changes"]
    assert _plan_json(args, ahead=True) == (code, without)
    # and the same after an apply (live records read back, nothing to change)
    assert apply_cli(root) == 0
    code, without = _plan_json(args, ahead=False)
    assert code == 0
    assert _plan_json(args, ahead=True) == (code, without)


def test_a_failed_read_in_the_child_fails_the_plan_with_the_same_message(
    env: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server certificate the CA file does not vouch for: the same error, exit 1, no traceback, no
    secret, whether the read was done by the child or in-process."""
    from mailstate.lab.tls import make_tls

    other = tmp_path / "other"
    other.mkdir()
    make_tls(other / "ca.pem", other / "ca.key", other / "s.pem", other / "s.key", label="other")
    monkeypatch.setenv("MAILSTATE_LDAP_CA_FILE", str(other / "ca.pem"))
    root = state_dir(tmp_path / "state", env)
    outputs = []
    for ahead in ("1", "0"):
        env_vars = {**os.environ, DISABLE_ENV: ahead, "MAILSTATE_TIMINGS": "1"}
        run = subprocess.run([str(MAILSTATE), "plan", "--state", str(root), "--provider", "ldap"],
                             capture_output=True, text=True, timeout=120, env=env_vars)
        assert run.returncode == 1 and "Traceback" not in run.stderr
        outputs.append(run.stderr)
    assert outputs[0] == outputs[1] and "certificate" in outputs[0].lower()
    assert env.secret("ldap_service") not in outputs[0]
    # the API raises the child's error as its own type (the child did fork)
    result = fresh(RAISES, root=str(root))
    assert result["forked"] and result["error"] == "ProviderError" and "LDAP" in result["message"]


RAISES = """
from pathlib import Path
from mailstate.desired_state.loader import load_state
from mailstate.reconciler.read_ahead import read_ahead
with read_ahead(Path(root), ["ldap"]) as ahead:
    result = {"forked": ahead is not None}
    try:
        ahead.snapshots(load_state(Path(root)), ["ldap"], {})
    except Exception as exc:
        result.update(error=type(exc).__name__, message=str(exc))
"""


def test_settings_elsewhere_than_mailstate_toml_make_the_caller_read(env: Lab, tmp_path: Path) -> None:
    """The child opened with mailstate.toml's settings alone ([providers] is in another file here): its
    answer is not taken, the child is stopped and reaped, and the plan (read in-process) is still right."""
    root = state_dir(tmp_path / "state", env, providers_apart=True)
    result = fresh(NOT_TAKEN, root=str(root))
    assert result == {"forked": True, "taken": False, "reaped": True}
    args = ["plan", "--state", str(root), "--provider", "ldap", "--format", "json", "--detailed-exitcode"]
    code, with_ahead = _plan_json(args, ahead=True, taken=False)
    assert code == 2 and _plan_json(args, ahead=False) == (code, with_ahead)


NOT_TAKEN = REAPED + """
from pathlib import Path
from mailstate.desired_state.loader import load_state
from mailstate.reconciler.read_ahead import read_ahead
with read_ahead(Path(root), ["ldap"]) as ahead:
    pid = ahead.pid
    result = {"forked": pid is not None,
              "taken": ahead.snapshots(load_state(Path(root)), ["ldap"], {}) is not None}
result["reaped"] = reaped(pid)
"""


def test_an_invalid_toml_is_reported_and_the_child_stopped(env: Lab, tmp_path: Path) -> None:
    root = state_dir(tmp_path / "state", env)
    bad = '[[person]]\nid = "x"\nname = "X Y"\nunit = "nowhere"\n'
    (root / "units" / "bad.toml").write_text(bad, encoding="utf-8")
    result = fresh(INVALID, root=str(root))
    assert result["forked"] and result["error"] == "ValidationError" and "nowhere" in result["message"]
    assert result["reaped"]
    run = subprocess.run([str(MAILSTATE), "plan", "--state", str(root), "--provider", "ldap"],
                         capture_output=True, text=True, timeout=120, env={**os.environ})
    assert run.returncode != 0 and "nowhere" in run.stderr and "Traceback" not in run.stderr


INVALID = REAPED + """
from pathlib import Path
from mailstate.desired_state.loader import load_state
from mailstate.reconciler.read_ahead import read_ahead
result = {}
try:
    with read_ahead(Path(root), ["ldap"]) as ahead:
        result["forked"] = ahead is not None
        pid = ahead.pid
        load_state(Path(root))
except Exception as exc:
    result.update(error=type(exc).__name__, message=str(exc))
result["reaped"] = reaped(pid)
"""


def test_the_plan_process_ends_with_everything_written(env: Lab, tmp_path: Path) -> None:
    """The console script as an operator runs it (fork, read-ahead, and the exit without the interpreter's
    teardown): the exit code, the whole JSON on stdout, the saved plan file, the notice on stderr."""
    from mailstate.reconciler.plan.plan import load_plan, plan_changes

    root = state_dir(tmp_path / "state", env)
    out = tmp_path / "plan.json"
    args = [str(MAILSTATE), "plan", "--state", str(root), "--provider", "ldap", "--format", "json",
            "--detailed-exitcode", "--out", str(out), "--lang", "en"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=120, env={**os.environ})
    assert run.returncode == 2, run.stderr
    shown = json.loads(run.stdout)
    assert len(shown["changes"]) == len(plan_changes(load_plan(out))) > 0
    assert f"plan saved to {out}" in run.stderr and "Traceback" not in run.stderr
    assert apply_cli(root) == 0
    run = subprocess.run(args[:-2], capture_output=True, text=True, timeout=120, env={**os.environ})
    assert run.returncode == 0 and json.loads(run.stdout)["changes"] == [], run.stderr
