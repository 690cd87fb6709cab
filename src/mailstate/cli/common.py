"""Shared pieces of the thin CLI: the --state option and the error boundary (MailstateError → exit 1)."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mailstate.errors import MailstateError, ValidationError
from mailstate.model.i18n import LANGUAGES, N_, _, ngettext, set_language
from mailstate.redact import hide_secrets
from mailstate.text import visible

F = TypeVar("F", bound=Callable[..., Any])


def default_state_dir() -> Path:
    return Path(os.environ.get("MAILSTATE_STATE") or ".")


state_option = click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=N_("State repository (default: $MAILSTATE_STATE or the current directory)."),
)


def resolve_state(state_dir: Path | None) -> Path:
    return state_dir if state_dir is not None else default_state_dir()


lang_option = click.option(
    "--lang",
    "lang",
    type=click.Choice(list(LANGUAGES)),
    default=None,
    envvar="MAILSTATE_LANG",
    help=N_("Language of what is printed (default: $MAILSTATE_LANG, else [organization] language, else vi)."),
)


def state_language(root: Path) -> str | None:
    """``[organization] language`` of the state in ``root``, read before the state is validated (so that its
    errors are already in that language); None when there is none to read."""
    import tomllib

    try:
        with (root / "mailstate.toml").open("rb") as fh:
            value = tomllib.load(fh).get("organization", {}).get("language")
    except (OSError, ValueError, AttributeError):
        return None
    return value if value in LANGUAGES else None


class Leaving:
    """Whether the process may end without tearing the interpreter down (``main``): a command that built
    a large structure (a plan of 10,000 people) sets ``fast``; freeing it object by object at exit takes
    a tenth of a second and serves nothing once everything is written."""

    fast = False


def choose_language(lang: str | None, state_dir: Path | None = None) -> str:
    """The language of this run, set before anything can fail: --lang, else the state's, else vi."""
    chosen = lang or state_language(resolve_state(state_dir)) or "vi"
    set_language(chosen)
    return chosen


def _error_text(exc: MailstateError) -> str:
    """What an error says; the problems of an invalid state under a heading in the language of the run
    (errors.py, below the catalogues, cannot say it)."""
    if isinstance(exc, ValidationError):
        n = len(exc.problems)
        head = ngettext("{n} problem in the desired state", "{n} problems in the desired state",
                        n).format(n=n)
        return head + ":\n" + "\n".join(str(p) for p in exc.problems)
    return str(exc)


def errors_to_exit(fn: F) -> F:
    """Turn a MailstateError into one clear message on stderr and its exit code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MailstateError as exc:
            # a message may quote the live side (a cn, a folder name): controls shown escaped, line by line;
            # a URL in it loses its userinfo, a secret value (a password set as a URL or a user) is hidden
            message = hide_secrets(_error_text(exc))
            with contextlib.suppress(OSError):  # stderr gone (a closed pipe): the exit code still tells
                click.echo(_("error: {message}").format(
                    message="\n".join(visible(line) for line in message.split("\n"))), err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo(_("interrupted"), err=True)
            sys.exit(130)
        except BrokenPipeError:
            # The reader went away (`mailstate lab status | head -1`): stop quietly, like any Unix tool,
            # and keep Python from complaining again when it flushes stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)
        except click.ClickException:
            raise
        except click.exceptions.Abort:
            raise
        except Exception as exc:  # a bug: one clear line, never a traceback (which could carry values)
            if os.environ.get("MAILSTATE_DEBUG"):
                raise
            click.echo(
                _("internal error: {error} in {function} (nothing more is shown; rerun with "
                  "MAILSTATE_DEBUG=1 for the traceback)").format(
                    error=type(exc).__name__, function=fn.__name__),
                err=True,
            )
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def warn_of(state: Any) -> None:
    """The state's warnings (not errors: a duration longer than its article allows …), one line each on
    stderr — validate and plan alike."""
    for warning in state.warnings:
        click.echo(_("warning: {message}").format(message=visible(str(warning))), err=True)
