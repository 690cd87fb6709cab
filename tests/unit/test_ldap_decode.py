"""The fast paths of reading directory entries give what the general paths give: an attribute's values
decoded (ldapconn), an RDN's value, an entry normalised, a single-valued field, a creation stamp (parse)."""

from __future__ import annotations

import unicodedata

import pytest
from ldap3.protocol.formatters.formatters import format_unicode

from mailstate import ldapconn
from mailstate.ldapconn import single_value
from mailstate.providers.ldap.parse import created_of, normalize, rdn_value, unescape_rdn


@pytest.mark.parametrize("dn, value", [
    ("uid=bangnv,ou=people,dc=lab,dc=example", "bangnv"),
    ("uid=bangnv", "bangnv"),
    ("ou=Phòng Kế toán,ou=units,dc=x", "Phòng Kế toán"),
    ("uid= spaced ,ou=people", "spaced"),
    ("uid=a+cn=b,ou=people", "a"),
    ("cn=a#b,ou=aliases", "a#b"),
    ("cn=old@lab.example.gov.vn,ou=aliases", "old@lab.example.gov.vn"),
    ("cn=a\\,b,ou=groups", "a,b"),                        # escaped: the general path
    ("cn=a\\2Cb+uid=c,ou=groups", "a,b"),
    ("cn=Ph\\C3\\B2ng,ou=units", "Phòng"),
    ("cn=trail\\ ,ou=x", "trail "),
])
def test_rdn_value(dn: str, value: str) -> None:
    assert rdn_value(dn) == value


@pytest.mark.parametrize("dn", ["uid=bangnv,ou=people", "ou=Phòng Kế toán,ou=units", "cn=a b+uid=c,ou=x"])
def test_rdn_value_without_escapes_is_what_unescaping_gives(dn: str) -> None:
    first = dn.split(",")[0].split("+")[0].partition("=")[2]
    assert rdn_value(dn) == unescape_rdn(first.strip(" "))


def test_normalize_decodes_lowercases_merges_and_drops_the_password() -> None:
    nfd = unicodedata.normalize("NFD", "Nguyễn Văn Bằng")
    e = normalize({
        "cn": [nfd, "", None],
        "CN": ["Bằng"],
        "mail": b"bangnv@lab.example.gov.vn",
        "description": ["x", b"", "y"],
        "userPassword": [b"{SSHA}abc"],
        "title": [],
        "sn": ("Nguyễn",),
        "ou": "kt",
        "photo": [b"\xff\xfe"],
    })
    assert e == {
        "cn": [unicodedata.normalize("NFC", nfd), "Bằng"],
        "mail": ["bangnv@lab.example.gov.vn"],
        "description": ["x", "y"],
        "sn": ["Nguyễn"],
        "ou": ["kt"],
        "photo": ["\ufffd\ufffd"],
    }
    assert normalize(e) is e


@pytest.mark.parametrize("values, want", [
    (None, None),
    ([], None),
    (["a"], "a"),
    (["a", "a"], "a"),
    (["b", "a"], ("a", "b")),
    (["b", "a", "b"], ("a", "b")),
])
def test_single_value(values: list[str] | None, want: object) -> None:
    entry = {} if values is None else {"title": values}
    assert single_value(entry, "Title") == want


@pytest.mark.parametrize("stamp, day", [
    ("20260228230000Z", "2026-03-01"),
    ("20260228165959Z", "2026-02-28"),
    ("20261345000000Z", None),  # month 13: no date
    ("20260230000000Z", None),  # 30 February
])
def test_created_of_reads_the_stamp_as_strptime_did(
    stamp: str, day: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Ho_Chi_Minh")
    time.tzset()
    try:
        assert created_of(stamp) == day
    finally:
        monkeypatch.undo()
        time.tzset()


def test_values_decode_as_ldap3s_formatter_gives_them() -> None:
    values = [b"Ph\xc3\xb2ng", b"plain"]
    assert ldapconn._text_values(format_unicode, values) == [format_unicode(v) for v in values]
    mixed = [b"ok", b"\xff not utf-8"]  # format_unicode keeps a value that is not UTF-8 as bytes
    assert ldapconn._text_values(format_unicode, mixed) == ["ok", b"\xff not utf-8"]
    assert ldapconn._text_values(len, values) == [6, 5]  # any other formatter: value by value


def test_attribute_names_and_dns_decode_once_and_alike() -> None:
    name, fmt = ldapconn._attribute_name(b"mailLocalAddress")
    assert name == "mailLocalAddress" and fmt is ldapconn._formatter("mailLocalAddress")
    assert ldapconn._attribute_name(b"mailLocalAddress")[0] is name
    assert ldapconn._dn_text("uid=bằng,ou=people".encode()) == "uid=bằng,ou=people"


@pytest.mark.parametrize("entry", [
    {"cn": ["Nguyễn Văn Bằng"], "objectClass": ["top", "inetOrgPerson"], "mail": ["b@x.vn"]},
    {"mailLocalAddress": ["z@x.vn", "a@x.vn", "m@x.vn"], "UID": ["a"], "description": ["\"quoted\" \\"]},
    {},
])
def test_digest_is_the_sha256_of_the_sorted_json_of_the_normalised_entry(entry: dict) -> None:
    import hashlib
    import json

    from mailstate.providers.ldap.parse import digest

    norm = normalize(entry)
    text = json.dumps({k: sorted(v) for k, v in sorted(norm.items())}, ensure_ascii=False, sort_keys=True)
    assert digest(entry) == hashlib.sha256(text.encode()).hexdigest()
