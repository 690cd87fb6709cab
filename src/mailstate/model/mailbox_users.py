"""Which name the mail server knows each mailbox by (docs/iredmail.md, "Dovecot's user").

On the default layout Dovecot's user is the login id (``bangnv``); on an iRedMail server it is the mail
address (``bangnv@so.gov.vn``). The mail providers (``ssh``: doveadm, ``imap``) address a mailbox by what
the server knows — ``-u``, the master-user login ``<user>*<admin>``, ACL identifiers, the shared namespace
``shared/<user>/`` — and read their facts back keyed by login, which is what the rest of mailstate speaks.

The mapping is never guessed: it is the directory's records (``users_of``: each mailbox record's
``address``), handed over by the pipeline before a read or an apply (``TakesMailboxUsers``), plus the
mailboxes an apply creates (their address is in the change). A login it does not hold is an error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from mailstate.errors import ProviderError
from mailstate.model.i18n import _
from mailstate.model.records import MAILBOX_KINDS

UserKey = Literal["login", "address"]
USER_KEYS: tuple[str, ...] = ("login", "address")


def users_of(records: Iterable[Any]) -> dict[str, str]:
    """{login: address} of the mailbox records (people, unit mailboxes) that have an address."""
    out: dict[str, str] = {}
    for rec in records:
        address = (getattr(rec, "attrs", None) or {}).get("address")
        if getattr(rec, "kind", None) in MAILBOX_KINDS and isinstance(address, str) and address:
            out[rec.key] = address.lower()
    return out


def layout_user_key(state: Any, configured: str | None) -> UserKey:
    """The user key a mail provider uses: its own setting when given, else the layout's (the address when
    the directory is iRedMail's, ``[providers.iredmail]``), else the login."""
    if configured in USER_KEYS:
        return configured  # type: ignore[return-value]
    providers = getattr(state, "providers", None)
    return "address" if getattr(providers, "iredmail", None) is not None else "login"


class MailboxUsers:
    """login ↔ Dovecot user for one provider; with ``key == "login"`` both are the identity."""

    def __init__(self, key: UserKey = "login", who: str = "mail") -> None:
        self.key: UserKey = key
        self.who = who
        self._source: Callable[[], Mapping[str, str]] | None = None
        self._extra: dict[str, str] = {}
        self._users: dict[str, str] | None = None
        self._logins: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def by_address(self) -> bool:
        return self.key == "address"

    def take(self, source: Callable[[], Mapping[str, str]]) -> None:
        """The directory's {login: address}, asked for when first needed (it may wait for a read)."""
        with self._lock:
            self._source, self._users = source, None

    def add(self, users: Mapping[str, str]) -> None:
        """Mailboxes made by this apply (not in the directory when it was read)."""
        with self._lock:
            self._extra.update({k: v.lower() for k, v in users.items() if v})
            self._users = None

    def _table(self) -> dict[str, str]:
        with self._lock:
            if self._users is None:
                users = dict(self._source() if self._source is not None else {})
                users.update(self._extra)
                self._users = users
                self._logins = {v: k for k, v in users.items()}
            return self._users

    def user(self, login: str) -> str:
        """The Dovecot user of a login; ProviderError when the directory names no address for it."""
        if not self.by_address:
            return login
        table = self._table()
        if login in table:
            return table[login]
        if "@" in login:  # already a Dovecot user (found live, owner of no mailbox the directory holds)
            return login
        raise ProviderError(
            _("{provider}: no address known for the mailbox {login}: on this layout the mail server knows "
              "mailboxes by their address, and the directory holds none for it").format(
                provider=self.who, login=login)
        )

    def identifier(self, ident: str) -> str:
        """An ACL identifier as the server knows it: a login becomes its user; ``anyone``, ``group=…``,
        an identifier the directory does not know stay as they are."""
        if not self.by_address:
            return ident
        return self._table().get(ident, ident)

    def login(self, user: str) -> str:
        """The login of a Dovecot user (the user itself when no mailbox of the directory has it)."""
        if not self.by_address:
            return user
        self._table()
        return self._logins.get(user.lower(), user)
