"""LdapProvider.snapshot_of: the snapshot of what ``fetch`` read, made without a server (the half of a read
a plan's parent process does while its child fetches): records, unmanaged entries and facts from recorded
entries; and a snapshot the parent cannot make fails as a read does."""

from __future__ import annotations

from typing import Any

import pytest

from mailstate.errors import ProviderError
from mailstate.model.provider import ReadsInTwoSteps
from mailstate.providers.ldap.parse import LOCKED_TIME
from mailstate.providers.ldap.provider import Fetched, LdapProvider
from mailstate.reconciler.read_ahead import ReadAhead

pytestmark = pytest.mark.usefixtures("english")

BASE = "dc=sct,dc=binhdinh,dc=gov,dc=vn"
CLASSES = ["top", "inetOrgPerson", "inetLocalMailRecipient", "mailstateAccount"]


def person(uid: str, **more: Any) -> tuple[str, dict[str, Any]]:
    attrs = {"uid": [uid], "objectClass": CLASSES, "cn": [f"Người {uid}"], "mail": [f"{uid}@sct.vn"],
             "departmentNumber": ["vp"], "createTimestamp": ["20260228230000Z"], **more}
    return f"uid={uid},ou=people,{BASE}", attrs


FETCHED = Fetched(
    entries=[
        ("unit", []),
        ("unit_mailbox", []),
        ("person", [
            person("bangnv", pwdChangedTime=["20260101000000Z"]),
            person("maiht"),  # no pwdChangedTime: may have no password at all
            person("khoa", pwdChangedTime=["20260101000000Z"], pwdAccountLockedTime=["20260301000000Z"]),
            person("tuan", pwdChangedTime=["20260101000000Z"], pwdAccountLockedTime=[LOCKED_TIME]),
            (f"uid=other,ou=people,{BASE}", {"uid": ["other"], "objectClass": ["inetOrgPerson"]}),
        ]),
        ("group", []),
        ("alias", [(f"cn=old@sct.vn,ou=aliases,{BASE}",
                    {"cn": ["old@sct.vn"], "objectClass": ["nisMailAlias", "mailstateAlias"],
                     "rfc822MailMember": ["bangnv@sct.vn"]})]),
    ],
    no_password=[f"uid=maiht,ou=people,{BASE}", f"uid=nobody,ou=people,{BASE}"],
)


def test_the_ldap_provider_reads_in_two_steps() -> None:
    assert issubclass(LdapProvider, ReadsInTwoSteps)


def test_records_and_facts_of_what_was_fetched() -> None:
    snap = LdapProvider.snapshot_of(FETCHED)
    assert sorted(snap.records) == [("alias", "old@sct.vn"), ("person", "bangnv"), ("person", "khoa"),
                                    ("person", "maiht"), ("person", "tuan")]
    assert [r.key for r in snap.unmanaged] == ["other"]
    # the people the directory found without a password (a DN of no record: nobody's)
    assert snap.facts["no_password"] == ["maiht"]
    assert snap.records[("person", "maiht")].attrs["_no_password"] is True
    assert "_no_password" not in snap.records[("person", "bangnv")].attrs
    assert snap.facts["lockouts"] == {"khoa": "20260301000000Z"}  # ppolicy's own lockout, not mailstate's
    assert snap.records[("person", "tuan")].attrs["locked"] is True
    assert set(snap.facts["created"]) == {"bangnv", "maiht", "khoa", "tuan"}
    assert snap.facts["addresses"]["old@sct.vn"] == snap.facts["addresses"]["bangnv@sct.vn"] == "bangnv"
    assert snap.facts["dns"]["person/maiht"] == f"uid=maiht,ou=people,{BASE}"
    # the facts read with an entry are never part of its record (nor its digest)
    attrs = snap.records[("person", "bangnv")].attrs
    assert attrs["_digest"] == LdapProvider.snapshot_of(Fetched(
        [("person", [person("bangnv", pwdChangedTime=["20270101000000Z"], createTimestamp=["2027"])])], []
    )).records[("person", "bangnv")].attrs["_digest"]
    # asked only when someone lacks pwdChangedTime: else any answer is not one for this read
    everyone_set = Fetched([("person", [person("bangnv", pwdChangedTime=["2026"])])],
                           [f"uid=bangnv,ou=people,{BASE}"])
    assert LdapProvider.snapshot_of(everyone_set).facts["no_password"] == []
    # what was fetched is left as it was (the snapshot can be made again)
    assert LdapProvider.snapshot_of(FETCHED).records == snap.records


def test_a_snapshot_the_parent_cannot_make_fails_as_a_read_does() -> None:
    ahead = ReadAhead.__new__(ReadAhead)
    ahead.timings = {}
    with pytest.raises(ProviderError, match="ldap: reading the live state failed: TypeError"):
        ahead._snapshot_of("ldap", Fetched(entries=[("person", [("uid=x", None)])], no_password=[]))
