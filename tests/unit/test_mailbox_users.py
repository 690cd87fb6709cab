"""Which name the mail server knows a mailbox by (model/mailbox_users.py, docs/iredmail.md): pure parts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from mailstate.errors import ProviderError
from mailstate.model.change import Action, Change
from mailstate.model.mailbox_users import MailboxUsers, layout_user_key, users_of
from mailstate.model.provider import Snapshot
from mailstate.model.records import Record
from mailstate.reconciler.pipeline import hand_mailbox_users

DIRECTORY = [
    Record("person", "an", {"address": "An@So.gov.vn"}),
    Record("unit_mailbox", "hc", {"address": "hc@so.gov.vn"}),
    Record("person", "moi", {"address": None}),  # no address: not in the mapping
    Record("group", "phong-hc", {"address": "phong-hc@so.gov.vn"}),  # no mailbox
]


def test_users_of_takes_the_mailboxes_addresses_lowercased() -> None:
    assert users_of(DIRECTORY) == {"an": "an@so.gov.vn", "hc": "hc@so.gov.vn"}


@pytest.mark.parametrize(
    ("configured", "iredmail", "want"),
    [(None, None, "login"), (None, {}, "address"), ("login", {}, "login"), ("address", None, "address")],
)
def test_the_layout_decides_unless_the_setting_does(configured: str | None, iredmail: Any, want: str) -> None:
    state = SimpleNamespace(providers=SimpleNamespace(iredmail=iredmail))
    assert layout_user_key(state, configured) == want


def test_by_login_everything_is_the_identity_and_nothing_is_read() -> None:
    def never() -> Mapping[str, str]:
        raise AssertionError("the default layout never needs the directory's addresses")

    users = MailboxUsers("login")
    users.take(never)
    assert (users.user("an"), users.login("an"), users.identifier("an")) == ("an", "an", "an")


def test_by_address_logins_map_both_ways_and_an_unknown_login_is_refused(english: None) -> None:
    calls: list[int] = []

    def directory() -> Mapping[str, str]:
        calls.append(1)
        return users_of(DIRECTORY)

    users = MailboxUsers("address", "ssh")
    users.take(directory)
    users.add({"hoa": "Hoa@so.gov.vn"})  # made by the apply
    assert users.user("an") == "an@so.gov.vn" and users.user("hoa") == "hoa@so.gov.vn"
    assert users.login("AN@so.gov.vn") == "an" and users.login("hc@so.gov.vn") == "hc"
    assert users.login("la@khac.vn") == "la@khac.vn"  # a live user no mailbox of the directory has
    assert users.user("la@khac.vn") == "la@khac.vn"
    assert users.identifier("an") == "an@so.gov.vn" and users.identifier("anyone") == "anyone"
    with pytest.raises(ProviderError, match="no address known for the mailbox moi"):
        users.user("moi")
    assert calls == [1]  # read once, when first needed


class _Mail:
    kinds = frozenset({"mail_archive"})

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, str]] | None = None
        self.added: dict[str, str] = {}

    def take_mailbox_users(self, users: Callable[[], Mapping[str, str]]) -> None:
        self.source = users

    def add_mailbox_users(self, users: Mapping[str, str]) -> None:
        self.added.update(users)


class _Directory:
    kinds = frozenset({"person", "unit_mailbox"})

    def __init__(self) -> None:
        self.reads = 0

    def read(self, scope: Any = None) -> Snapshot:
        self.reads += 1
        snap = Snapshot("iredmail")
        for rec in DIRECTORY:
            snap.add(rec)
        return snap


def test_an_apply_hands_the_directorys_addresses_lazily_and_the_new_mailboxes() -> None:
    mail, directory = _Mail(), _Directory()
    changes = [
        Change("c1", Action.CREATE, "person", "hoa", "iredmail", None, {"address": "hoa@so.gov.vn"}, ()),
        Change("c2", Action.UPDATE, "person", "an", "iredmail", None, {"title": "x"}, ()),
        Change("c3", Action.CREATE, "group", "g", "iredmail", None, {"address": "g@so.gov.vn"}, ()),
    ]
    hand_mailbox_users({"ssh": mail, "iredmail": directory}, changes)  # type: ignore[dict-item]
    assert mail.added == {"hoa": "hoa@so.gov.vn"}
    assert directory.reads == 0  # not read until a provider needs it
    assert mail.source is not None
    assert mail.source() == {"an": "an@so.gov.vn", "hc": "hc@so.gov.vn"}
    mail.source()
    assert directory.reads == 1
