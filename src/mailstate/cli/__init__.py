"""The `mailstate` console script: a thin click group; each command's work is a library call.

Command modules (each owned by its area, registered here):
- state_cmds: validate, assign, schema
- lab_cmds:   lab up|down|status|env
- plan_cmds:  plan, apply, drift, import, directory
- gitops_cmds: forge comment|fetch-plan|issue (CI pipelines)
- serverconfig_cmds: server-config
"""

from __future__ import annotations

import contextlib
import importlib
import os

import click

from mailstate import __version__
from mailstate.cli.helptext import LANG_ENV, VERSION_OPTION_HELP, Group
from mailstate.model.i18n import LANGUAGES, N_, set_language

__all__ = ["LANG_ENV", "cli", "main"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]},
             help=N_("Keep an agency's official e-mail system as TOML in git and make OpenLDAP + Dovecot "
                     "match it."))
@click.version_option(__version__, prog_name="mailstate", help=VERSION_OPTION_HELP)
def cli() -> None:
    """The `mailstate` group (its help is the message above, shown in the language of the run)."""


for _module in ("state_cmds", "assign_cmd", "lab_cmds", "plan_cmds", "gitops_cmds", "serverconfig_cmds"):
    for _cmd in importlib.import_module(f"mailstate.cli.{_module}").COMMANDS:
        cli.add_command(_cmd)


def main() -> None:
    if os.environ.get(LANG_ENV) in LANGUAGES:  # commands without --lang (lab, forge …) print in it too
        set_language(os.environ[LANG_ENV])
    try:
        cli(prog_name="mailstate")
    except SystemExit as exc:
        if isinstance(exc.code, int | None):
            _leave_now(exc.code or 0)
        raise


def _leave_now(code: int) -> None:
    """End a command that asked for it (``Leaving.fast``) without the interpreter's teardown: the output
    flushed, the exit handlers run, then ``os._exit``. Returns (the usual exit follows) when the command
    did not ask, a thread still runs, or the output cannot be flushed (a closed pipe: handled as always)."""
    import atexit
    import sys
    import threading

    from mailstate.cli.common import Leaving

    if not Leaving.fast or threading.active_count() > 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    atexit._run_exitfuncs()
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
