"""One error root for everything mailstate raises on purpose; the CLI maps each to a message and exit code."""

from __future__ import annotations

from dataclasses import dataclass

from mailstate.text import visible


class MailstateError(Exception):
    """Root of every error mailstate raises deliberately (the CLI prints it without a traceback)."""

    exit_code = 1


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in the desired state: where it is (file, line), which field, and what is wrong."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        """``FILE:LINE: field: message`` on one line: a control character a message quotes from the input
        (an id, a table key) is shown escaped, never sent to the terminal."""
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        return visible(text)


class ValidationError(MailstateError):
    """The desired state is invalid; carries every problem found (all reported at once)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems))
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in the desired state"
        super().__init__(head + ":\n" + "\n".join(str(p) for p in self.problems))


class ProviderError(MailstateError):
    """A back-end (LDAP, IMAP, SSH) failed: a read that failed aborts the plan, a write stops apply."""


class ChangeRefused(ProviderError):
    """The server answered and refused this one change (a name it does not accept, a schema or access rule):
    the connection is fine, so an apply goes on with the changes that do not depend on it."""


class UnsafePlan(MailstateError):
    """The plan removes or locks more than the safety threshold; the message names the flag that allows it."""


class StalePlan(MailstateError):
    """A saved plan no longer matches the desired state or the live objects it was made from."""


class LabError(MailstateError):
    """The local lab (slapd, Dovecot, sshd) could not be started, reached or stopped."""
