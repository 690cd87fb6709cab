"""The secret checks of every TOML value keep their answers with their fast paths: a value without
``://`` or ``-----BEGIN`` cannot match either pattern; a key's answer is remembered per name."""

from __future__ import annotations

import pytest

from mailstate.desired_state.validate import (
    PEM_KEY_RE,
    URL_CREDENTIALS_RE,
    is_secret_key,
    secret_value_message,
)

pytestmark = pytest.mark.usefixtures("english")


@pytest.mark.parametrize("value, secret", [
    ("ldaps://admin:s3cret@ldap.example", True),
    ("  imaps://u:p@host:993", True),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nabc", True),
    ("x -----BEGIN RSA PRIVATE KEY----- y", True),
    ("ldaps://ldap.example", False),
    ("user@example.com", False),
    ("Nguyễn Văn Bằng", False),
    ("-----BEGIN CERTIFICATE-----", False),
    ("", False),
])
def test_secret_values(value: str, secret: bool) -> None:
    assert (secret_value_message(value) is not None) == secret
    assert bool(PEM_KEY_RE.search(value) or URL_CREDENTIALS_RE.match(value)) == secret


@pytest.mark.parametrize("key, secret", [
    ("password", True), ("bind_password", True), ("Token", True), ("mật_khẩu", True), ("pin", True),
    ("password_env", False), ("password_file", False), ("name", False), ("pinned", False),
])
def test_secret_keys_answer_alike_when_asked_again(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret
    assert is_secret_key(key) is secret
