"""`mailstate validate` and `mailstate schema`: check the TOML, export its JSON Schema for editors."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from mailstate.cli.common import (
    choose_language,
    errors_to_exit,
    lang_option,
    resolve_state,
    state_option,
    warn_of,
)
from mailstate.cli.helptext import Command
from mailstate.errors import MailstateError, Problem, ValidationError
from mailstate.model.i18n import N_, _, ngettext

SCHEMA_ID = "https://mailstate.invalid/schema/state-file.json"
"""``$id`` of the exported schema (a stable name, not a URL that is fetched)."""


def state_file_schema() -> dict[str, Any]:
    """JSON Schema of one TOML file of the state repository, for Taplo / Even Better TOML.

    Draft-07 with ``definitions`` (not ``$defs``): Taplo implements draft 4 features and resolves
    ``#/definitions/…`` pointers, as do the other editors' validators.
    """
    from mailstate.desired_state.schema import StateFile

    raw = StateFile.model_json_schema(mode="validation", ref_template="#/definitions/{model}")
    schema = _without_null(raw)
    definitions = schema.pop("$defs", {})
    return {"$schema": "http://json-schema.org/draft-07/schema#", "$id": SCHEMA_ID, **schema,
            "definitions": definitions}


def _without_null(node: Any) -> Any:
    """TOML has no null: drop pydantic's ``{"type": "null"}`` alternatives and ``"default": null``."""
    if isinstance(node, list):
        return [_without_null(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _without_null(v) for k, v in node.items() if not (k == "default" and v is None)}
    alts = out.get("anyOf")
    if isinstance(alts, list) and {"type": "null"} in alts:
        alts = [a for a in alts if a != {"type": "null"}]
        del out["anyOf"]
        if len(alts) == 1:
            out = {**alts[0], **out}
        else:
            out["anyOf"] = alts
    return out


def shown_from(problem: Problem, root: Path | None) -> Problem:
    """The problem with its file as seen from where the command runs (``--state DIR`` joined in front)."""
    if root is None or root == Path(".") or problem.file == str(root) or Path(problem.file).is_absolute():
        return problem
    return dataclasses.replace(problem, file=(root / problem.file).as_posix())


def print_problems(exc: ValidationError, root: Path | None = None) -> None:
    """Every problem on stderr, one per line (FILE:LINE: field: message), then how many.

    FILE is relative to the current directory when ``root`` (the state dir) is given, so a terminal or
    an editor can open it; a problem's own ``file`` stays relative to the state dir.
    """
    for problem in exc.problems:
        click.echo(str(shown_from(problem, root)), err=True)
    n = len(exc.problems)
    click.echo(ngettext("{n} problem found; nothing was changed", "{n} problems found; nothing was changed",
                        n).format(n=n), err=True)


def _gh_escape(text: str, prop: bool = False) -> str:
    """Escape a GitHub Actions workflow-command value (``%``, CR, LF; also ``:`` and ``,`` in properties)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def github_annotations(exc: ValidationError, root: Path) -> list[str]:
    """One ``::error file=…,line=…,title=…::message`` line per problem (paths as seen from the checkout)."""
    lines = []
    for p in exc.problems:
        props = f"file={_gh_escape(shown_from(p, root).file, True)}"
        if p.line:
            props += f",line={p.line}"
        if p.field:
            props += f",title={_gh_escape(p.field, True)}"
        lines.append(f"::error {props}::{_gh_escape(p.message)}")
    return lines


@click.command(cls=Command, help=N_(
    "Load and check every TOML file; print a one-line summary when all is well (exit 1 otherwise).\n"
    "\n"
    "The messages are in --lang, else the state's [organization] language (read from mailstate.toml "
    "when it parses, so a broken state is still reported in its language), else Vietnamese."))
@state_option
@click.option("--format", "fmt", type=click.Choice(["text", "github"]), default="text", show_default=True,
              help=N_("github: also print each problem as a GitHub Actions annotation on stdout."))
@lang_option
@errors_to_exit
def validate(state_dir: Path | None, fmt: str, lang: str | None) -> None:
    from mailstate.desired_state.loader import load_state

    root = resolve_state(state_dir)
    choose_language(lang, root)
    try:
        state = load_state(root)
    except ValidationError as exc:
        print_problems(exc, root)
        if fmt == "github":
            for line in github_annotations(exc, root):
                click.echo(line)
        sys.exit(1)
    warn_of(state)  # e.g. a duration longer than its article allows: not an error
    click.echo(_("ok: {summary} ({domain})").format(summary=state.summary(), domain=state.domain))


@click.command(cls=Command, help=N_(
    "Print the JSON Schema of a state TOML file, for editors (Taplo, Even Better TOML)."))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=N_("Write the schema to FILE instead of stdout (e.g. mailstate.schema.json)."))
@errors_to_exit
def schema(out: Path | None) -> None:
    text = json.dumps(state_file_schema(), indent=2, ensure_ascii=False) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise MailstateError(_("cannot write {file}: {error}").format(
                file=out, error=exc.strerror or exc)) from None


COMMANDS = [validate, schema]
