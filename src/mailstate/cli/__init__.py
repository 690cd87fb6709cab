"""The `mailstate` console script: a thin click group; each command's work is a library call.

Command modules (each owned by its area, registered here):
- state_cmds: validate, assign, schema
- lab_cmds:   lab up|down|status|env
- plan_cmds:  plan, apply, drift, import, directory
- gitops_cmds: forge comment|fetch-plan|issue (CI pipelines)
- serverconfig_cmds: server-config
"""

from __future__ import annotations

import importlib
import os

import click

from mailstate import __version__
from mailstate.model.i18n import LANGUAGES, set_language

LANG_ENV = "MAILSTATE_LANG"
"""The environment form of --lang (a runner's or a test's setting): what --lang does not say, it does."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mailstate")
def cli() -> None:
    """Keep an agency's official e-mail system as TOML in git and make OpenLDAP + Dovecot match it."""


for _module in ("state_cmds", "assign_cmd", "lab_cmds", "plan_cmds", "gitops_cmds", "serverconfig_cmds"):
    for _cmd in importlib.import_module(f"mailstate.cli.{_module}").COMMANDS:
        cli.add_command(_cmd)


def main() -> None:
    if os.environ.get(LANG_ENV) in LANGUAGES:  # commands without --lang (lab, forge …) print in it too
        set_language(os.environ[LANG_ENV])
    cli(prog_name="mailstate")
