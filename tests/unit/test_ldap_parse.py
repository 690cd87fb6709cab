"""Unit tests of the pure LDAP entry ⇄ Record translation (providers.ldap_parse), on recorded entries.

The entries below are what ldap3 returned from a real slapd (attributes dict, no schema loaded), with
variations a live directory shows: attribute names in other cases, bytes values, NFD text, upper-case
addresses, scalar values (ldap3 with schema info), operational attributes.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import pytest
from ldap3 import MODIFY_REPLACE

from mailstate.errors import ProviderError
from mailstate.model.records import split_name
from mailstate.model.settings import LdapSettings
from mailstate.providers.ldap.parse import (
    LOCKED_TIME,
    build_entry,
    digest,
    dn_of,
    generalized_to_iso,
    iso_to_generalized,
    lock_values,
    missing_classes,
    modifications,
    parse_alias,
    parse_entry,
    parse_group,
    parse_person,
    parse_unit,
    parse_unit_mailbox,
)
from mailstate.providers.ldap.provider import LdapProvider, resolve_settings

BASE = "dc=sct,dc=binhdinh,dc=gov,dc=vn"

PERSON = {
    "uid": ["bangnv"],
    "mail": ["bangnv@sct.binhdinh.gov.vn"],
    "departmentNumber": ["qlcn"],
    "objectClass": ["top", "inetOrgPerson", "inetLocalMailRecipient", "mailstateAccount"],
    "cn": ["Nguyễn Văn Bằng"],
    "sn": ["Nguyễn"],
    "givenName": ["Bằng"],
    "displayName": ["Nguyễn Văn Bằng"],
    "title": ["Trưởng phòng"],
    "telephoneNumber": ["0256 3822 123"],
    "mailstateBackupMail": ["Bang.NV@Example.com"],
    "mailLocalAddress": ["bangnv@sct.binhdinh.gov.vn", "BANG@sct.binhdinh.gov.vn"],
    "mailstateQuota": ["2147483648"],
}

UNIT_MAILBOX = {
    "uid": ["qlcn"],
    "description": ["Phòng Quản lý Công nghiệp"],
    "mail": ["qlcn@sct.binhdinh.gov.vn"],
    "mailLocalAddress": ["qlcn@sct.binhdinh.gov.vn"],
    "mailstateQuota": ["10737418240"],
    "objectClass": ["top", "account", "simpleSecurityObject", "inetLocalMailRecipient", "mailstateAccount"],
}

UNIT = {
    "ou": ["qlcn"],
    "description": ["Phòng Quản lý Công nghiệp"],
    "mailstateParent": ["sct"],
    "mailstateHead": ["bangnv"],
    "mailstateDelegate": ["thuytt", "anhnt"],
    "mail": ["qlcn@sct.binhdinh.gov.vn"],
    "objectClass": ["top", "organizationalUnit", "mailstateUnit"],
}

GROUP = {
    "cn": ["lanhdao"],
    "displayName": ["Lãnh đạo Sở"],
    "mail": ["lanhdao@sct.binhdinh.gov.vn"],
    "mailLocalAddress": ["lanhdao@sct.binhdinh.gov.vn"],
    "mailstateMember": ["unit:qlcn", "bangnv", "group:banchidao"],
    "rfc822MailMember": [
        "qlcn@sct.binhdinh.gov.vn",
        "bangnv@sct.binhdinh.gov.vn",
        "Thuytt@sct.binhdinh.gov.vn",
    ],
    "objectClass": ["top", "nisMailAlias", "inetLocalMailRecipient", "mailstateGroup"],
}

ALIAS = {
    "cn": ["nvbang@sct.binhdinh.gov.vn"],
    "rfc822MailMember": ["bangnv@sct.binhdinh.gov.vn"],
    "mailstateExpires": ["20270401000000Z"],
    "objectClass": ["top", "nisMailAlias", "mailstateAlias"],
}


def test_person_is_parsed_to_the_record_contract() -> None:
    """A person entry gives every docs/records.md attribute; addresses lower case, aliases apart."""
    r = parse_person(PERSON)
    assert (r.kind, r.key, r.provider, r.unit) == ("person", "bangnv", "ldap", "qlcn")
    a = dict(r.attrs)
    a.pop("_digest")
    assert a == {
        "name": "Nguyễn Văn Bằng",
        "given": "Bằng",
        "family": "Nguyễn",
        "unit": "qlcn",
        "title": "Trưởng phòng",
        "phone": "0256 3822 123",
        "mobile": None,
        "backup_email": "bang.nv@example.com",
        "address": "bangnv@sct.binhdinh.gov.vn",
        "aliases": ("bang@sct.binhdinh.gov.vn",),
        "quota": 2147483648,
        "locked": False,
        "lock_reason": None,
        "refuse_mail": None,
    }


def test_attribute_names_are_case_insensitive_and_values_may_be_bytes_or_scalars() -> None:
    """Names in any case, bytes values and scalar values parse the same as the recorded entry."""
    odd: dict[str, object] = {k.upper(): (v[0] if len(v) == 1 else v) for k, v in PERSON.items()}
    odd["CN"] = "Nguyễn Văn Bằng".encode()
    assert {k: v for k, v in parse_person(odd).attrs.items() if k != "_digest"} == {
        k: v for k, v in parse_person(PERSON).attrs.items() if k != "_digest"
    }


def test_text_is_nfc() -> None:
    """A name stored decomposed (NFD) is read back composed (NFC)."""
    nfd = dict(PERSON, cn=[unicodedata.normalize("NFD", "Nguyễn Văn Bằng")])
    name = parse_person(nfd).attrs["name"]
    assert name == "Nguyễn Văn Bằng" and unicodedata.is_normalized("NFC", name)


def test_lock_is_read_and_operational_attributes_ignored() -> None:
    """pwdAccountLockedTime 000001010000Z means locked; other operational attributes ignored."""
    locked = dict(
        PERSON,
        pwdAccountLockedTime=[LOCKED_TIME],
        mailstateLockReason=["MOST art.13.3: no login since 2026-03-02"],
        modifyTimestamp=["20261123120000Z"],
        entryUUID=["0f0e"],
    )
    a = parse_person(locked).attrs
    assert a["locked"] is True and a["lock_reason"] == "MOST art.13.3: no login since 2026-03-02"


def test_failure_lockout_is_not_an_administrative_lock() -> None:
    """A ppolicy lockout after failed binds (a real time) is not reported as mailstate's lock."""
    a = parse_person(dict(PERSON, pwdAccountLockedTime=["20261123101500Z"])).attrs
    assert a["locked"] is False and a["lock_reason"] is None


def test_user_password_never_enters_a_record_or_digest() -> None:
    """userPassword is dropped: the digest of an entry does not depend on it."""
    with_pw = dict(PERSON, userPassword=[b"{SSHA}abcdef"])
    assert "userPassword" not in str(parse_person(with_pw).attrs)
    assert digest(with_pw) == digest(PERSON)


def test_digest_changes_with_any_value_and_not_with_order() -> None:
    """The digest ignores value order and name case but changes when a value changes."""
    shuffled = dict(PERSON, mailLocalAddress=list(reversed(PERSON["mailLocalAddress"])))
    assert digest(shuffled) == digest(PERSON)
    assert digest({k.lower(): v for k, v in PERSON.items()}) == digest(PERSON)
    assert digest(dict(PERSON, title=["Phó phòng"])) != digest(PERSON)


def test_unit_mailbox_unit_group_alias() -> None:
    """Unit mailbox, unit, group and alias entries parse to their records, multi-valued sorted."""
    mb = parse_unit_mailbox(UNIT_MAILBOX)
    assert (mb.key, mb.unit, mb.attrs["name"], mb.attrs["quota"], mb.attrs["aliases"]) == (
        "qlcn",
        "qlcn",
        "Phòng Quản lý Công nghiệp",
        10737418240,
        (),
    )
    u = parse_unit(UNIT, "ou=qlcn,ou=units," + BASE)
    assert u.attrs["delegates"] == ("anhnt", "thuytt") and u.attrs["parent"] == "sct"
    g = parse_group(GROUP, "cn=lanhdao,ou=groups," + BASE)
    assert g.attrs["members"] == ("bangnv", "group:banchidao", "unit:qlcn")
    assert g.attrs["delivers_to"] == (
        "bangnv@sct.binhdinh.gov.vn",
        "qlcn@sct.binhdinh.gov.vn",
        "thuytt@sct.binhdinh.gov.vn",
    )
    al = parse_alias(ALIAS, "cn=nvbang@sct.binhdinh.gov.vn,ou=aliases," + BASE)
    assert (al.key, al.attrs["target"], al.attrs["expires"]) == (
        "nvbang@sct.binhdinh.gov.vn",
        "bangnv@sct.binhdinh.gov.vn",
        "2027-04-01",
    )


def test_entry_without_the_marker_class_is_unmanaged() -> None:
    """An entry in ou=people without mailstateAccount is reported unmanaged, named by its DN."""
    foreign = {"uid": ["legacy"], "cn": ["Legacy"], "sn": ["L"], "objectClass": ["inetOrgPerson"]}
    record, managed = parse_entry("person", "uid=legacy,ou=people," + BASE, foreign)
    assert not managed and record.key == "legacy" and record.attrs["dn"].startswith("uid=legacy")
    _, managed = parse_entry("person", "uid=bangnv,ou=people," + BASE, PERSON)
    assert managed


def test_build_then_parse_round_trips_every_kind() -> None:
    """What build_entry writes parses back to the same record attributes, for every kind."""
    cases = {
        "person": (parse_person, PERSON, "bangnv"),
        "unit_mailbox": (parse_unit_mailbox, UNIT_MAILBOX, "qlcn"),
        "unit": (parse_unit, UNIT, "qlcn"),
        "group": (parse_group, GROUP, "lanhdao"),
        "alias": (parse_alias, ALIAS, "nvbang@sct.binhdinh.gov.vn"),
    }
    for kind, (parse, raw, key) in cases.items():
        record = parse(raw, dn_of(kind, key, BASE))
        spec = build_entry(kind, key, record.attrs, BASE)
        written = {k: v for k, v in spec.attrs.items() if v}
        written["objectClass"] = list(spec.object_classes)
        again = parse(written, spec.dn)
        strip = lambda a: {k: v for k, v in a.items() if k != "_digest"}  # noqa: E731
        assert strip(again.attrs) == strip(record.attrs), kind


def test_person_entry_maps_names_and_addresses() -> None:
    """cn = full name, sn = first word, givenName = last word, mailLocalAddress = address + aliases."""
    spec = build_entry(
        "person",
        "bangnv",
        {
            "name": "Nguyễn Văn Bằng",
            "unit": "qlcn",
            "address": "BangNV@x.gov.vn",
            "aliases": ["old@x.gov.vn"],
            "quota": 1024,
            "title": None,
            "mobile": "",
        },
        BASE,
    )
    assert spec.dn == "uid=bangnv,ou=people," + BASE
    assert spec.attrs["cn"] == ["Nguyễn Văn Bằng"] and spec.attrs["displayName"] == ["Nguyễn Văn Bằng"]
    assert spec.attrs["sn"] == ["Nguyễn"] and spec.attrs["givenName"] == ["Bằng"]
    assert spec.attrs["mail"] == ["bangnv@x.gov.vn"]
    assert spec.attrs["mailLocalAddress"] == ["bangnv@x.gov.vn", "old@x.gov.vn"]
    assert spec.attrs["departmentNumber"] == ["qlcn"] and spec.attrs["mailstateQuota"] == ["1024"]
    assert spec.attrs["title"] == [] and spec.attrs["mobile"] == []
    assert "inetOrgPerson" in spec.object_classes and "mailstateAccount" in spec.object_classes


def test_single_word_name() -> None:
    """A one-word name is the whole sn and the givenName."""
    spec = build_entry("person", "mai", {"name": "Mai"}, BASE)
    assert spec.attrs["sn"] == ["Mai"] and spec.attrs["givenName"] == ["Mai"]
    assert split_name("Nguyễn Thị Minh Khai") == ("Nguyễn", "Khai")


@pytest.mark.parametrize("key", ["a,b", "a+b", 'a"b', "a\\b", "a(b", "#ab", " ab", "ab "])
def test_dn_escapes_special_characters(key: str) -> None:
    """An RDN value with , + \" \\ ( # or a leading/trailing space is escaped and parses back to itself."""
    from mailstate.providers.ldap.parse import rdn_value

    dn = dn_of("group", key, BASE)
    assert dn.endswith(",ou=groups," + BASE)
    assert rdn_value(dn) == key


def test_names_with_special_characters_are_plain_values() -> None:
    """LDAP-special characters in a name stay as written in cn (values need no escaping)."""
    name = 'Lê Văn "Tí", Jr + (#1) \\'
    spec = build_entry("person", "tilv", {"name": name}, BASE)
    assert spec.attrs["cn"] == [name] and spec.dn == "uid=tilv,ou=people," + BASE


def test_modifications_replace_only_what_differs() -> None:
    """Only differing attributes are replaced; multi-valued are set exactly; an empty list removes."""
    wanted = build_entry(
        "person",
        "bangnv",
        {**parse_person(PERSON).attrs, "title": None, "aliases": ("a@x.vn", "b@x.vn")},
        BASE,
    ).attrs
    mods = modifications(PERSON, wanted)
    assert mods["title"] == [(MODIFY_REPLACE, [])]
    assert mods["mailLocalAddress"] == [(MODIFY_REPLACE, ["a@x.vn", "b@x.vn", "bangnv@sct.binhdinh.gov.vn"])]
    assert set(mods) == {"title", "mailLocalAddress"}


def test_modifications_of_an_identical_entry_are_empty() -> None:
    """An entry already as wanted needs no change (idempotent apply), address case aside."""
    wanted = build_entry("person", "bangnv", parse_person(PERSON).attrs, BASE).attrs
    upper = dict(PERSON, mail=["BANGNV@sct.binhdinh.gov.vn"])
    assert modifications(upper, wanted) == {}


def test_lock_values_and_missing_classes() -> None:
    """Lock sets the ppolicy time and reason, unlock empties both; missing auxiliary classes are found."""
    assert lock_values(True, "MOST art.18.4") == {
        "pwdAccountLockedTime": [LOCKED_TIME],
        "mailstateLockReason": ["MOST art.18.4"],
    }
    assert lock_values(False, "x") == {"pwdAccountLockedTime": [], "mailstateLockReason": []}
    assert lock_values(True, None) == {"pwdAccountLockedTime": [LOCKED_TIME], "mailstateLockReason": []}
    assert missing_classes(
        {"objectClass": ["top", "inetOrgPerson"]}, ["inetOrgPerson", "mailstateAccount"]
    ) == ["mailstateAccount"]


def test_generalized_time_conversion() -> None:
    """ISO dates and LDAP GeneralizedTime convert both ways; garbage gives None."""
    assert iso_to_generalized("2027-01-31") == "20270131000000Z"
    assert generalized_to_iso("20270131000000Z") == "2027-01-31"
    assert generalized_to_iso("garbage") is None and iso_to_generalized(None) is None


def test_hex_escaped_rdn_values_are_unescaped() -> None:
    """Hex escapes in a DN from the server (\\2C, UTF-8 bytes) come back as the original characters."""
    from mailstate.providers.ldap.parse import unescape_rdn

    assert unescape_rdn("a\\2Cb") == "a,b"
    assert unescape_rdn("\\C3\\A0 la") == "à la"


# --------------------------------------------------------------------------------------------------
# Settings resolution and filters (pure parts of providers.ldap; no server involved)


def test_environment_overrides_the_toml_settings(tmp_path: Path) -> None:
    """MAILSTATE_LDAP_* override [providers.ldap]; MAILSTATE_LDAP_PASSWORD wins over password_env."""
    toml = LdapSettings(url="ldaps://prod.example", bind_dn="cn=x", password_env="MY_PW")
    env = {
        "MAILSTATE_LDAP_URL": "ldap://127.0.0.1:3890",
        "MAILSTATE_LDAP_BIND_DN": "cn=mailstate,ou=system,dc=lab",
        "MAILSTATE_LDAP_CA_FILE": "/tmp/ca.pem",
        "MAILSTATE_LDAP_START_TLS": "true",
        "MY_PW": "from-my-pw",
    }
    settings, password = resolve_settings(toml, env)
    assert settings.url == "ldap://127.0.0.1:3890" and settings.bind_dn == "cn=mailstate,ou=system,dc=lab"
    assert settings.ca_file == "/tmp/ca.pem" and settings.start_tls is True
    assert password == "from-my-pw"
    assert resolve_settings(toml, {**env, "MAILSTATE_LDAP_PASSWORD": "direct"})[1] == "direct"
    assert toml.url == "ldaps://prod.example"  # the model itself is left alone


def test_password_file_is_relative_to_the_state_and_its_first_line(tmp_path: Path) -> None:
    """A relative password_file is read from the state directory; only its first line is the password."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "ldap").write_text("s3cret-line\nignored\n")
    settings = LdapSettings(password_env=None, password_file="secrets/ldap")
    assert resolve_settings(settings, {}, root=tmp_path)[1] == "s3cret-line"
    (tmp_path / "secrets" / "ldap").write_text("")
    with pytest.raises(ProviderError, match="empty"):
        resolve_settings(settings, {}, root=tmp_path)
    with pytest.raises(ProviderError, match="cannot read"):
        resolve_settings(LdapSettings(password_env=None, password_file="nope"), {}, root=tmp_path)


@pytest.mark.parametrize(
    ("url", "extra", "ok"),
    [
        ("ldaps://127.0.0.1:636", {}, True),
        ("ldap://127.0.0.1:389", {"start_tls": True}, True),
        ("ldap://127.0.0.1:389", {"allow_plain": True}, True),
        ("ldap://127.0.0.1:389", {}, False),
        ("http://127.0.0.1", {}, False),
    ],
)
def test_plain_ldap_needs_start_tls_or_allow_plain(url: str, extra: dict[str, Any], ok: bool) -> None:
    """ldaps:// or StartTLS pass; plain ldap:// is refused with a message naming allow_plain."""
    settings = LdapSettings(url=url, **extra)
    if ok:
        LdapProvider(settings, base_dn="dc=x", password=None)
    else:
        with pytest.raises(ProviderError, match="ldaps://"):
            LdapProvider(settings, base_dn="dc=x", password=None)


def test_scope_filters_escape_unit_ids() -> None:
    """Scope filters OR the escaped unit ids; groups and aliases are read whole; empty scope: nothing."""
    assert LdapProvider.scope_filter("person", ["qlcn"]) == "(departmentNumber=qlcn)"
    assert LdapProvider.scope_filter("unit", ["a", "b*)("]) == "(|(ou=a)(ou=b\\2a\\29\\28))"
    assert LdapProvider.scope_filter("group", ["qlcn"]) == "(objectClass=*)"
    assert LdapProvider.scope_filter("unit_mailbox", None) == "(objectClass=*)"
    assert LdapProvider.scope_filter("person", []) == "(!(objectClass=*))"


def test_direct_values_for_fields_that_stand_alone() -> None:
    """Fields with their own attribute map directly (addresses lower case, dates generalized); a field
    that feeds several attributes (a person's name, address, aliases) asks for a read instead."""
    from mailstate.providers.ldap.parse import direct_values

    assert direct_values(
        "person", {"title": None, "unit": "tchc", "backup_email": "A@B.vn", "locked": True}
    ) == {
        "title": [],
        "departmentNumber": ["tchc"],
        "mailstateBackupMail": ["a@b.vn"],
    }
    assert direct_values("alias", {"expires": "2027-01-31"}) == {"mailstateExpires": ["20270131000000Z"]}
    assert direct_values("group", {"delivers_to": ("B@x.vn", "a@x.vn")}) == {
        "rfc822MailMember": ["a@x.vn", "b@x.vn"]
    }
    assert direct_values("person", {"name": "Nguyễn Văn A"}) is None
    assert direct_values("person", {"aliases": ()}) is None
    assert direct_values("unit_mailbox", {"address": "x@y.vn"}) is None


def test_manage_unlisted_names_subtrees_or_kinds() -> None:
    """[providers.ldap].manage_unlisted names the directory's subtrees (or the kinds): the provider, not the
    central diff, knows which kind a subtree holds."""
    from types import SimpleNamespace

    state = SimpleNamespace(providers=SimpleNamespace(ldap=LdapSettings(manage_unlisted=["groups", "alias"])))
    assert LdapProvider.unlisted_kinds(state) == {"group", "alias"}  # type: ignore[arg-type]
