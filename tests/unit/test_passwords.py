"""Unit tests of the initial-password policy check, generator and operator file (providers.passwords)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mailstate.model import passwords
from mailstate.model.passwords import RandomDraws
from mailstate.model.settings import PasswordPolicy
from mailstate.providers.ldap.passwords import (
    append_password,
    character_classes,
    check_password,
    generate_password,
)

MOST = PasswordPolicy(min_length=8, min_classes=3)
BD = PasswordPolicy(min_length=8, min_classes=4)


def test_classes_are_counted() -> None:
    """Upper, lower, digit and special characters are each recognised as their class."""
    assert character_classes("aB3!") == {"upper", "lower", "digit", "special"}
    assert character_classes("abc") == {"lower"}


def test_compliant_password_passes() -> None:
    """A long password with three classes and without the account name passes the policy."""
    assert check_password("Tr0ngHoaSen", MOST, "bangnv") == []


@pytest.mark.parametrize(
    ("password", "fragment"),
    [
        ("Ab1!", "shorter than 8"),
        ("abcdefgh12", "2 of the 4"),
        ("Xbangnv-2026", "account name"),
        ("XBANGNV-2026", "account name"),
    ],
)
def test_policy_breaks_are_refused(password: str, fragment: str) -> None:
    """A short, two-class or account-name password is refused with a reason naming its setting."""
    problems = check_password(password, MOST, ["bangnv"])
    assert any(fragment in p for p in problems), problems
    assert all("[password]" in p for p in problems)
    assert all(password not in p for p in problems)


def test_four_classes_policy() -> None:
    """Bình Định's policy (all four classes) refuses a three-class password."""
    assert check_password("Abcdefg123", BD, "x")
    assert check_password("Abcdefg12#", BD, "x") == []


def test_generated_passwords_meet_the_policy() -> None:
    """Generated passwords pass the strictest policy, avoid the account names, and differ each time."""
    seen = set()
    for _ in range(200):
        pw = generate_password(BD, ["bangnv", "bangnv2"])
        assert check_password(pw, BD, ["bangnv", "bangnv2"]) == []
        assert len(pw) >= 16
        seen.add(pw)
    assert len(seen) == 200


def test_generated_length_follows_a_long_policy() -> None:
    """A policy asking for 24 characters gets at least 24."""
    assert len(generate_password(PasswordPolicy(min_length=24), "x")) >= 24


def test_password_file_is_0600_and_appended(tmp_path: Path) -> None:
    """The operator's file is created 0600 and each call appends one tab-separated line."""
    path = tmp_path / "initial-passwords.tsv"
    old = os.umask(0)
    try:
        append_password(path, "bangnv", "bangnv@x.gov.vn", "Secret-1aA")
        append_password(path, "thuytt", None, "Secret-2bB")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().splitlines() == ["bangnv\tbangnv@x.gov.vn\tSecret-1aA", "thuytt\t\tSecret-2bB"]


def test_password_file_mode_is_tightened(tmp_path: Path) -> None:
    """An existing file readable by others is set back to 0600 before a password is written."""
    path = tmp_path / "pw.tsv"
    path.write_text("")
    path.chmod(0o644)
    append_password(path, "a", "a@x.vn", "Secret-1aA")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_random_draws_never_use_a_biased_byte() -> None:
    """A byte at or above the largest multiple of the range (here 250..255 for 10) is skipped, never folded
    into the range; the buffer is refilled when used up."""
    given = [bytes([255, 250, 249]), bytes([7])]
    draws = RandomDraws(source=lambda n: given.pop(0), size=3)
    assert draws.below(10) == 9  # 255 and 250 skipped, 249 % 10
    assert draws.below(10) == 7  # from the refilled buffer
    assert given == []


def test_random_draws_shuffle_is_a_permutation_and_choices_stay_in_range() -> None:
    """Fisher–Yates keeps every element; every draw is inside its range, whatever the range."""
    draws = RandomDraws()
    items = list("ABCDEFGHJK")
    draws.shuffle(items)
    assert sorted(items) == list("ABCDEFGHJK")
    for n in (1, 2, 7, 10, 64, 255, 256, 257, 10_000):
        assert all(0 <= draws.below(n) < n for _ in range(50))
    assert {draws.choice("xyz") for _ in range(200)} == {"x", "y", "z"}


def test_a_generated_password_asks_the_system_for_randomness_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One call to the system's generator per password, not one per character (each such call hands the
    other threads of a parallel apply the interpreter)."""
    calls: list[int] = []
    real = passwords.secrets.token_bytes

    def counted(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(passwords.secrets, "token_bytes", counted)
    password = generate_password(BD)
    assert check_password(password, BD) == [] and len(password) == 16
    assert len(calls) == 1
