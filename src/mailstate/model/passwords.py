"""Initial passwords: the policy check ([password]), the generator, the operator's 0600 file.

A generated password leaves this process in exactly two ways: the LDAP Password Modify extended
operation (slapd hashes it) and one line ``id<TAB>address<TAB>password`` appended to the operator's file,
created with mode 0600. It is never logged, put in an exception, a Change, a plan or on a terminal, and
no message of this module contains it.
"""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Callable, Iterable
from pathlib import Path

from mailstate.errors import ProviderError
from mailstate.model.settings import PasswordPolicy
from mailstate.private_files import open_private

CLASSES: tuple[tuple[str, str], ...] = (
    ("upper", string.ascii_uppercase),
    ("lower", string.ascii_lowercase),
    ("digit", string.digits),
    ("special", string.punctuation + " "),
)
"""The four character classes of the password rule: upper case, lower case, digit, special."""

# What the generator draws from: no look-alikes (O 0 l 1 I), no quote, backslash or space, so a password
# can be read off the operator's file and typed, and passes through IMAP LOGIN and shells unquoted.
_GEN_CLASSES: tuple[str, ...] = (
    "ABCDEFGHJKLMNPQRSTUVWXYZ",
    "abcdefghijkmnopqrstuvwxyz",
    "23456789",
    "!#%+-=?@_*",
)
GENERATED_LENGTH = 16


def character_classes(password: str) -> set[str]:
    """The names of the classes (upper, lower, digit, special) that ``password`` uses."""
    found: set[str] = set()
    for ch in password:
        if ch.isupper():
            found.add("upper")
        elif ch.islower():
            found.add("lower")
        elif ch.isdigit():
            found.add("digit")
        else:
            found.add("special")
    return found


def check_password(password: str, policy: PasswordPolicy, account: str | Iterable[str] = ()) -> list[str]:
    """Every way ``password`` breaks ``policy`` (empty when it complies); messages never contain the password.

    ``account`` is the account name (or several: the id, the local part of the address) that the password
    must not contain, case-insensitively (``forbid_account_name``).
    """
    problems: list[str] = []
    if len(password) < policy.min_length:
        problems.append(
            f"shorter than {policy.min_length} characters ({len(password)}) ([password] min_length)"
        )
    used = character_classes(password)
    if len(used) < policy.min_classes:
        problems.append(
            f"uses {len(used)} of the 4 character classes (upper, lower, digit, special); "
            f"the policy needs {policy.min_classes} ([password] min_classes)"
        )
    if policy.forbid_account_name:
        names = [account] if isinstance(account, str) else list(account)
        lowered = password.casefold()
        for name in names:
            if name and name.casefold() in lowered:
                problems.append(f"contains the account name {name!r} ([password] forbid_account_name)")
    return problems


class RandomDraws:
    """Uniform random choices (``secrets`` quality) drawn from one buffer of random bytes, refilled when used
    up: a password takes one call to the system's generator instead of one per character — each such call
    lets the other threads of a parallel apply take over, and waits for them to give way again. A byte is
    used only below the largest multiple of the range it must fall in (never biased); ranges above 256 ask
    ``secrets`` itself."""

    def __init__(self, source: Callable[[int], bytes] | None = None, size: int = 256) -> None:
        self._source = source or secrets.token_bytes
        self._size = size
        self._buf = b""
        self._at = 0

    def below(self, n: int) -> int:
        """A random integer in [0, n)."""
        if n > 256:
            return secrets.randbelow(n)
        limit = 256 - 256 % n
        while True:
            if self._at >= len(self._buf):
                self._buf, self._at = self._source(self._size), 0
            byte = self._buf[self._at]
            self._at += 1
            if byte < limit:
                return byte % n

    def choice(self, seq: str) -> str:
        return seq[self.below(len(seq))]

    def shuffle(self, items: list[str]) -> None:
        """Fisher–Yates, in place."""
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def generate_password(
    policy: PasswordPolicy, account: str | Iterable[str] = (), length: int | None = None
) -> str:
    """A random password (``secrets``) that passes ``check_password``: every class, ≥ 16 characters."""
    size = max(policy.min_length, length or GENERATED_LENGTH, len(_GEN_CLASSES))
    alphabet = "".join(_GEN_CLASSES)
    draws = RandomDraws()
    for _ in range(100):
        chars = [draws.choice(cls) for cls in _GEN_CLASSES]
        chars += [draws.choice(alphabet) for _ in range(size - len(chars))]
        draws.shuffle(chars)
        candidate = "".join(chars)
        if not check_password(candidate, policy, account):
            return candidate
    raise ProviderError("could not generate a password that meets the [password] policy")  # pragma: no cover


def append_password(path: Path, account: str, address: str | None, password: str) -> None:
    """Append ``account<TAB>address<TAB>password`` to the operator's file, kept at mode 0600."""
    try:
        fd = open_private(path, os.O_WRONLY | os.O_APPEND)  # 0600; never through a link, never another's
    except OSError as exc:
        raise ProviderError(f"cannot open the initial-password file {path}: {exc.strerror}") from None
    try:
        os.write(fd, f"{account}\t{address or ''}\t{password}\n".encode())
    except OSError as exc:
        raise ProviderError(f"cannot write the initial-password file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
