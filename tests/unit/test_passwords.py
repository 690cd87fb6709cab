"""Unit tests of the initial-password policy check, generator and operator file (providers.passwords)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

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
