"""Credentials in URLs: refused where a setting is read, stripped from any text that is shown or written.

- ``url_userinfo_problem(url)``: why a connection URL (``ldaps://admin:secret@host``) or an SSH host
  (``admin@host``) cannot be used — it names the user or password inside it, which mailstate would
  silently ignore (the bind DN, master user and passwords have their own settings) — or None.
- ``strip_userinfo(text)``: ``scheme://user:pass@host`` → ``scheme://host`` for every URL in ``text``
  (error messages, journal lines), so a credential written into a URL never reaches a terminal or a file.
"""

from __future__ import annotations

import re

from mailstate.errors import ProviderError

_URL_USERINFO_RE = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s'\"<>]*@)")
"""``scheme://`` and everything up to the last '@' before a space or quote: a password may hold '/' or '@'
unencoded, so the match is greedy (a path holding '@' is cut too: more hidden, never less)."""


def strip_userinfo(text: str) -> str:
    """``text`` with the user and password removed from every URL in it."""
    if "@" not in text or "://" not in text:
        return text
    return _URL_USERINFO_RE.sub(lambda m: m.group("scheme"), text)


def url_userinfo_problem(url: str) -> str | None:
    """What is wrong with a connection URL that carries a user or password (None when it carries none)."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or not scheme or "@" not in rest:
        return None
    userinfo = rest.rpartition("@")[0]
    what = "a password" if ":" in userinfo else "a user name"
    return (
        f"the URL holds {what} before '@', which would be ignored: write the URL without it; who logs in "
        "is the bind DN or admin user setting, with password_env / password_file (the value is not shown)"
    )


def host_userinfo_problem(host: str) -> str | None:
    """What is wrong with an SSH host setting that carries a user, a password or a URL (None if fine)."""
    if "://" in host:
        return "expects a host name, not a URL (the value is not shown)"
    if "@" in host:
        return (
            "holds a user (user@host), which would be ignored: give the user in MAILSTATE_SSH_USER or "
            "[providers.ssh] user, the host alone here (the value is not shown)"
        )
    return None


def refuse_userinfo(where: str, value: str, *, host: bool = False) -> None:
    """Raise ``ProviderError`` naming ``where`` (a variable or a TOML field) when ``value`` carries a user,
    a password or (for a host) a URL. The value itself is never repeated."""
    problem = host_userinfo_problem(value) if host else url_userinfo_problem(value)
    if problem:
        raise ProviderError(f"{where}: {problem}")
