"""The pure parts of `import --layout plain`: unit ids from ou names, the naming template guessed."""

from __future__ import annotations

import unicodedata
from datetime import date

import pytest

from mailstate.adopt.plain import disabled_by, dn_key, family_first, guess_template, unit_id_from_name


@pytest.mark.parametrize(("name", "expected"), [
    ("Phòng Kế toán", "pketoan"),
    ("Văn phòng", "vanphong"),
    ("../../etc", "etc"),  # path tricks leave letters only (checked against the id pattern)
    ("\u202e", None),  # nothing usable: no id, the importer reports it
])
def test_unit_id_from_name(name: str, expected: str | None) -> None:
    assert unit_id_from_name(name) == expected


def test_guess_template_states_how_many_it_explains() -> None:
    pairs = [("Nguyễn Văn Bằng", "bangnv"), ("Trần Thị Hoa", "hoatt"), ("Lê Thọ", "tho")]
    assert guess_template(pairs) == ("{given}{initials}", 2, 3)
    assert guess_template([("Nguyễn Văn Bằng", "nvbang")])[0] == "{initials}{given}"
    assert guess_template([("Nguyễn Văn Bằng", "x123")]) == (None, 0, 1)


@pytest.mark.parametrize(("cn", "sn", "expected"), [
    ("Nguyễn Văn Bằng", "Nguyễn", "Nguyễn Văn Bằng"),  # already family name first
    ("Hoa Trần Thị", "Trần", "Trần Thị Hoa"),  # given name first, sn agrees
    ("An Nguyễn Văn", "An", "Nguyễn Văn An"),  # sn misused for the given name: the family name decides
    ("Bằng Văn", None, "Bằng Văn"),  # "Văn" is a middle name far more often: kept as written
    ("Lan Văn Thị", "Văn", "Văn Thị Lan"),  # ... unless sn says so and nothing else is a family name
    ("Mai Văn Lê", "Lê", "Mai Văn Lê"),  # starts with a family name: kept
    ("Bằng", None, "Bằng"),
    (unicodedata.normalize("NFD", "Hoa Trần Thị"), None, "Trần Thị Hoa"),  # decomposed: NFC out
    ("  Trần   Thị  Hoa ", None, "Trần Thị Hoa"),
])
def test_family_first(cn: str, sn: str | None, expected: str) -> None:
    assert family_first(cn, sn) == expected


TODAY = date(2026, 12, 6)


@pytest.mark.parametrize(("entry", "expected"), [
    ({"pwdaccountlockedtime": ["000001010000Z"]}, "pwdAccountLockedTime: 000001010000Z"),
    ({"shadowexpire": 19000}, "shadowExpire: 19000 (2022-01-08)"),  # days since 1970-01-01, past
    ({"shadowexpire": 30000}, None),  # in the future
    ({"shadowexpire": -1}, None),  # never
    ({"loginshell": "/usr/sbin/nologin"}, "loginShell: /usr/sbin/nologin"),
    ({"loginshell": "/bin/false"}, "loginShell: /bin/false"),
    ({"loginshell": "/bin/bash"}, None),
    ({"accountstatus": "disabled"}, "accountStatus: disabled"),
    ({"accountstatus": "Active"}, None),
    ({}, None),
])
def test_disabled_by(entry: dict[str, object], expected: str | None) -> None:
    assert disabled_by(entry, TODAY) == expected


def test_dn_key_compares_dns_as_the_directory_does() -> None:
    written = "UID=BangNV, OU=Phòng Kế toán,ou=Staff,dc=x"
    assert dn_key(written) == dn_key("uid=bangnv,ou=" + unicodedata.normalize("NFD", "Phòng Kế toán")
                                     + ",ou=staff,DC=x")
    assert dn_key(r"cn=a\,b,dc=x") != dn_key("cn=a,cn=b,dc=x")
    assert dn_key("not a dn") is None
    assert dn_key(r"cn=a\, b,dc=x") == (("cn", "a, b"), ("dc", "x"))  # an escaped comma keeps its space
    assert dn_key(r"ou=Ph\c3\b2ng,dc=x") == dn_key("ou=phòng,dc=x")  # hex-escaped UTF-8


def test_a_unit_name_with_a_control_character_gives_no_id() -> None:
    assert unit_id_from_name("Phòng\x1b[31mĐỏ") is None
