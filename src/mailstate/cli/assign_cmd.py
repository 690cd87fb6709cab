"""`mailstate assign [--check]`: write derived addresses into the TOML (desired_state.assign)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mailstate.cli.common import choose_language, errors_to_exit, lang_option, resolve_state, state_option
from mailstate.cli.helptext import Command
from mailstate.errors import ValidationError
from mailstate.model.i18n import N_, _, ngettext


@click.command("assign", cls=Command, help=N_(
    "Write derived addresses into the TOML, keeping comments and layout (exit 2 with --check if any)."))
@state_option
@click.option("--check", is_flag=True,
              help=N_("Write nothing; exit 2 when something would be written (for CI)."))
@click.option(
    "--live", "read_live", is_flag=True,
    help=N_("Also read the live directory (LDAP, as for plan) so that addresses in use are never handed "
            "out."),
)
@lang_option
@errors_to_exit
def assign_command(state_dir: Path | None, check: bool, read_live: bool, lang: str | None) -> None:
    from mailstate.cli.state_cmds import shown_from
    from mailstate.desired_state.assign import assign
    from mailstate.reconciler.pipeline import read_live_addresses

    root = resolve_state(state_dir)
    choose_language(lang, root)
    try:
        result = assign(root, check=check, read_live=read_live_addresses if read_live else None)
    except ValidationError as exc:
        for problem in exc.problems:  # FILE as seen from here, as `validate` prints it
            click.echo(_("error: {message}").format(message=shown_from(problem, root)), err=True)
        n = len(exc.problems)
        click.echo(ngettext("{n} problem found; nothing was written",
                            "{n} problems found; nothing was written", n).format(n=n), err=True)
        sys.exit(1)
    click.echo(result.summary(check))
    for item in result.assignments:
        click.echo(f"  {item}")
    if check and result.changed:
        sys.exit(2)


COMMANDS = [assign_command]
