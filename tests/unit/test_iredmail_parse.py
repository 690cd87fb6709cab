"""The iredmail provider's pure mapping (docs/iredmail.md, "What maps where"), checked as data."""

from __future__ import annotations

import pytest

from mailstate.providers.iredmail import parse as p

D = "x.gov.vn"
USERS = "ou=Users,domainName=x.gov.vn,o=domains,dc=x"


def _user(uid: str, **extra: object) -> dict[str, object]:
    return {"objectClass": ["inetOrgPerson", "mailUser"], "uid": uid, "mail": f"{uid}@{D}", "cn": uid,
            "accountStatus": "active", "enabledService": list(p.USER_SERVICES), "mailQuota": "1024", **extra}


def _parse(users: dict[str, dict[str, object]], lists: dict[str, dict[str, object]] | None = None,
           aliases: dict[str, dict[str, object]] | None = None) -> p.Parsed:
    norm = lambda d: {k: p.normalize(v) for k, v in (d or {}).items()}  # noqa: E731
    return p.parse_domain(p.DomainEntries(users=norm(users), lists=norm(lists), aliases=norm(aliases)))


def test_list_membership_comes_from_the_members_and_skips_disabled_delivery() -> None:
    got = _parse({f"mail=a@{D},{USERS}": _user("a", memberOfGroup=f"hc@{D}"),
                  f"mail=b@{D},{USERS}": _user("b", memberOfGroup=f"HC@{D}", accountStatus="disabled")},
                 lists={f"mail=hc@{D}": {"mail": f"hc@{D}", "cn": "Phòng HC"}})
    group = next(r for r in got.records if r.kind == "group")
    assert (group.key, group.attrs["members"], group.attrs["delivers_to"]) == ("hc", ("a", "b"), (f"a@{D}",))


@pytest.mark.parametrize(("status", "services", "locked", "refused"), [
    ("active", p.USER_SERVICES, False, False),
    ("disabled", p.USER_SERVICES, True, True),
    ("active", tuple(s for s in p.USER_SERVICES if s not in p.LOGIN_SERVICES), True, False),
])
def test_lock_state(status: str, services: tuple[str, ...], locked: bool, refused: bool) -> None:
    e = p.normalize({"accountStatus": status, "enabledService": list(services)})
    assert p.lock_state(e) == (locked, refused)


def test_old_addresses_from_shadow_and_single_target_mail_alias() -> None:
    got = _parse({f"mail=b@{D},{USERS}": _user("b", shadowAddress=f"b.old@{D}")},
                 aliases={f"mail=vt@{D}": {"mail": f"vt@{D}", "accountStatus": "active",
                                           "mailForwardingAddress": f"b@{D}"},
                          f"mail=two@{D}": {"mail": f"two@{D}", "accountStatus": "active",
                                            "mailForwardingAddress": [f"a@{D}", f"b@{D}"]}})
    person = next(r for r in got.records if r.kind == "person")
    assert person.attrs["aliases"] == (f"b.old@{D}", f"vt@{D}")
    assert sorted(r.key for r in got.records if r.kind == "alias") == [f"b.old@{D}", f"vt@{D}"]
    assert [r.key for r in got.unmanaged] == [f"mail=two@{D}"]  # reported, never dropped silently


@pytest.mark.parametrize(("locked", "refuse", "was_active", "status", "login"), [
    (True, "left on 2026-01-01", True, ["disabled"], True),   # a leaver: iRedMail's disabled
    (True, None, True, ["active"], False),                    # a suspension: delivery kept, no login
    (True, None, False, None, True),                          # disabled by hand: left disabled
    (False, None, True, ["active"], True),                    # unlocked: login services back
])
def test_lock_attrs(locked: bool, refuse: str | None, was_active: bool, status: list[str] | None,
                    login: bool) -> None:
    have = [s for s in p.USER_SERVICES if s not in p.LOGIN_SERVICES] if not login and not locked else \
        list(p.USER_SERVICES)
    got = p.lock_attrs(locked, refuse, "why", have, was_active)
    assert got.get("accountStatus") == status
    if "enabledService" in got:
        assert bool(set(got["enabledService"]) & p.LOGIN_SERVICES) == login
        assert {"mail", "deliver", "lmtp"} <= set(got["enabledService"])
