"""Credentials in URLs: refused where a setting is read, stripped from any text that is shown or written.

- ``url_userinfo_problem(url)``: why a connection URL (``ldaps://admin:secret@host``) or an SSH host
  (``admin@host``) cannot be used — it names the user or password inside it, which mailstate would
  silently ignore (the bind DN, master user and passwords have their own settings) — or None.
- ``strip_userinfo(text)``: ``scheme://user:pass@host`` → ``scheme://host`` for every URL in ``text``
  (error messages, journal lines), so a credential written into a URL never reaches a terminal or a file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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


SECRET_ENV = (
    "MAILSTATE_LDAP_PASSWORD", "MAILSTATE_IMAP_PASSWORD", "MAILSTATE_SMTP_PASSWORD", "MAILSTATE_FORGE_TOKEN"
)
"""The variables that hold a secret by their name (a TOML's ``password_env`` names another: remembered when
it is read)."""
_SECRETS: set[str] = set()
MIN_SECRET = 4
"""Shorter values are not hidden (every "a" of a message would go)."""


def remember_secret(value: str | None) -> None:
    """Note a secret read from a variable or a file, so that ``hide_secrets`` removes it from any message."""
    if value and len(value) >= MIN_SECRET:
        _SECRETS.add(value)


def hide_secrets(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` without any secret value (remembered, ``extra``, or held in a variable of ``SECRET_ENV``) and
    without the user and password of any URL. An operator who puts a password where a URL, a user or a host
    belongs (variables shifted in a CI job) gets an error naming the setting, never the password."""
    return hide_known(text, known_secrets(extra))


def known_secrets(extra: Iterable[str] = ()) -> list[str]:
    """The secret values ``hide_secrets`` removes (remembered, ``extra``, in a ``SECRET_ENV`` variable),
    longest first — for ``hide_known``, when many texts are hidden at once (a journal line's every field)."""
    import os

    found = set(_SECRETS) | {s for s in extra if s and len(s) >= MIN_SECRET}
    found |= {v for n in SECRET_ENV if len(v := os.environ.get(n) or "") >= MIN_SECRET}
    return sorted(found, key=len, reverse=True)  # a longer secret holding a shorter one goes whole


def secrets_key() -> tuple[object, ...]:
    """What ``known_secrets()`` (without ``extra``) is made of, cheap to compare: while it stays equal, so do
    the secrets (a writer of many lines looks them up again only when it changes)."""
    import os

    return (len(_SECRETS), *(os.environ.get(n) for n in SECRET_ENV))


def hide_known(text: str, secrets: Iterable[str]) -> str:
    """``hide_secrets`` with the secrets given (``known_secrets()``, longest first)."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "<redacted>")
    return strip_userinfo(text)
