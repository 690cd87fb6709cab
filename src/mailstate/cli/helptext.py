"""Help texts in the language of the run: click's ``--help`` pages, translated when they are shown.

Help texts are written at import (``help=N_("…")`` in the decorators), before the language is known; the
commands are of the classes below (``cls=Command``; a ``Group``'s subcommands are ``Command`` by default),
which pass the command's help, its short help and each option's help through ``_()`` when the page is
formatted, and say click's own words (Usage, Options, Commands, default, required) in the same language.
Option names, metavars and choices stay as written.

The language of a help page: ``--lang`` when the command has it and it is on the command line (before or
after ``--help``), else ``$MAILSTATE_LANG``, else Vietnamese.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import click

from mailstate.model.i18n import LANGUAGES, N_, _, set_language

LANG_ENV = "MAILSTATE_LANG"
"""The environment form of --lang (a runner's or a test's setting): what --lang does not say, it does."""

HELP_OPTION_HELP = N_("Show this message and exit.")
VERSION_OPTION_HELP = N_("Show the version and exit.")


def message_id(text: str | None) -> str:
    """The message id of a help text as click holds it (a docstring's indentation removed)."""
    return inspect.cleandoc(text) if text else ""


def translated(text: str | None) -> str:
    """A help text in the language of the run (an empty or missing text stays empty)."""
    return _(message_id(text)) if text else ""


def _lang_on_command_line(args: Sequence[str]) -> str | None:
    """The value of ``--lang X`` / ``--lang=X`` among ``args`` (the last one, as click takes it)."""
    found = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--lang" and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith("--lang="):
            found = arg.split("=", 1)[1]
    return found


class _Translated(click.Command):
    """The help-page half shared by ``Command`` and ``Group``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # --help is eager: it prints before --lang (or its environment form) has been processed. The
        # language is set first, so that `plan --help --lang en` and MAILSTATE_LANG=en `plan --help` agree.
        wanted = _lang_on_command_line(args) if any(p.name == "lang" for p in self.params) else None
        wanted = wanted or os.environ.get(LANG_ENV)
        if wanted in LANGUAGES:
            set_language(wanted)
        return super().parse_args(ctx, args)

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        option = super().get_help_option(ctx)
        if option is not None:
            option.help = HELP_OPTION_HELP
        return option

    def get_short_help_str(self, limit: int = 45) -> str:
        if self.short_help:
            return translated(self.short_help).strip()
        text = translated(self.help).partition("\f")[0]
        first = text.split("\n\n", 1)[0].replace("\n", " ").strip()
        if len(first) <= limit:
            return first
        return first[: max(limit - 3, 1)].rsplit(" ", 1)[0] + "..."

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        pieces = self.collect_usage_pieces(ctx)
        formatter.write_usage(ctx.command_path, " ".join(pieces), prefix=_("Usage:") + " ")

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        text = translated(self.help).partition("\f")[0]
        if text:
            formatter.write_paragraph()
            with formatter.indentation():
                formatter.write_text(text)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [row for p in self.get_params(ctx) if (row := option_row(p, ctx)) is not None]
        if rows:
            with formatter.section(_("Options")):
                formatter.write_dl(rows)


def option_row(param: click.Parameter, ctx: click.Context) -> tuple[str, str] | None:
    """An option's line on the help page: its names and metavar as written, its help translated, the
    default / required / environment note in the language of the run."""
    if not isinstance(param, click.Option) or param.hidden:
        return None
    text = translated(param.help)
    extra: Any = param.get_help_extra(ctx)
    notes = []
    if "envvars" in extra:
        notes.append(_("env var: {var}").format(var=", ".join(extra["envvars"])))
    if "default" in extra:
        notes.append(_("default: {default}").format(default=extra["default"]))
    if "range" in extra:
        notes.append(extra["range"])
    if "required" in extra:
        notes.append(_("required"))
    if notes:
        text = f"{text}  [{'; '.join(notes)}]" if text else f"[{'; '.join(notes)}]"
    record = param.get_help_record(ctx)
    return (record[0] if record else ""), text


class Command(_Translated):
    """A command whose help texts are message ids, shown in the language of the run."""


class Group(_Translated, click.Group):
    """A group of commands whose help texts are message ids; its subcommands are ``Command``s."""

    command_class = Command

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _Translated.format_options(self, ctx, formatter)
        self.format_commands(ctx, formatter)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = [(name, cmd) for name in self.list_commands(ctx)
                    if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden]
        if not commands:
            return
        limit = formatter.width - 6 - max(len(name) for name, _cmd in commands)
        with formatter.section(_("Commands")):
            formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in commands])


Group.group_class = Group
