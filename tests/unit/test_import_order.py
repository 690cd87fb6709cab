"""Every module of mailstate imports on its own, first, in a fresh interpreter: a circular import only shows
when a command's module is the first one loaded (`mailstate server-config` imported serverconfig.generate
first, which imported the lab, which imported serverconfig.generate half-initialised: ImportError), while
the test suite, having imported the lab before, never saw it."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import mailstate

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "binhdinh-sct"

CHECK = """
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "mailstate" or m.startswith("mailstate.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def test_every_module_imports_first_on_its_own() -> None:
    names = sorted(m.name for m in pkgutil.walk_packages(mailstate.__path__, "mailstate."))
    assert "mailstate.serverconfig.generate" in names and "mailstate.cli.serverconfig_cmds" in names
    res = subprocess.run([sys.executable, "-c", CHECK, *names], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {}


def test_server_config_command_runs_in_a_fresh_process(tmp_path: Path) -> None:
    """The command itself, as an IT centre runs it: its own process, server-config's module loaded first."""
    out = tmp_path / "out"
    cli = str(Path(sys.executable).with_name("mailstate"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSTATE_")}
    res = subprocess.run([cli, "server-config", "--state", str(EXAMPLE), "--out", str(out)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "README.txt").is_file() and (out / "ldap" / "01-mailstate-schema.ldif").is_file()
