"""Acceptance: an agency nobody wrote a test for (Sở TT&TT Quảng Ngãi: 3-level unit tree, namesakes,
LDAP-special text, groups nested 3 deep with unit mailboxes in them) applied through the CLI, tampered
with behind mailstate's back as the rootdn, planned again: exactly the repairs, then converged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import ldap3
import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE

from mailstate.lab import Lab

pytestmark = pytest.mark.integration

DOMAIN = "stttt.quangngai.gov.vn"
AGENCY = Path(__file__).parent / "data" / "accept_reconcile_quangngai"
MAILSTATE = Path(sys.executable).with_name("mailstate")


@pytest.fixture
def qn(lab_for: Callable[..., Lab], tmp_path: Path) -> tuple[Lab, Path, dict[str, str]]:
    """A reset lab for the agency, a copy of its state and the environment `mailstate lab env` gives."""
    lab = lab_for(DOMAIN)
    lab.reset()
    state = tmp_path / "state"
    shutil.copytree(AGENCY, state)
    env = {**os.environ, **lab.env(), "MAILSTATE_HOME": str(tmp_path / "home")}
    return lab, state, env


def ms(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MAILSTATE), *args], env=env, capture_output=True, text=True, timeout=120)


def plan_json(env: dict[str, str], state: Path) -> dict:
    out = ms(env, "plan", "--state", str(state), "--provider", "ldap", "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_tampered_directory_plans_exactly_the_repairs(qn: tuple[Lab, Path, dict[str, str]]) -> None:
    """Hand edits as the rootdn plan exactly their repairs (case-only address changes none, extra values of
    single-valued fields and stray mailLocalAddress values removed, strays reported), and apply converges."""
    lab, state, env = qn
    first = ms(env, "apply", "--state", str(state), "--provider", "ldap", "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    assert plan_json(env, state)["changes"] == []

    c = lab.ldap(as_="root")
    base = lab.base_dn

    def person(uid: str) -> str:
        return f"uid={uid},ou=people,{base}"

    edits = [
        # a case-only change of an address is no change (mail and mailLocalAddress match case-insensitively)
        (person("anhnt"), {"mail": [(MODIFY_REPLACE, ["AnhNT@STTTT.QuangNgai.gov.vn"])],
                           "mailLocalAddress": [(MODIFY_REPLACE, ["ANHNT@stttt.quangngai.gov.vn"])]}),
        (person("hoatt"), {"title": [(MODIFY_REPLACE, ["Văn thư"])]}),
        (person("tuanh"), {"mail": [(MODIFY_REPLACE, ["tuan.h@stttt.quangngai.gov.vn"])]}),
        (person("khoadm"), {"mailLocalAddress": [(MODIFY_ADD, ["hacker@evil.example"])]}),
        (person("tinlv"), {"telephoneNumber": [(MODIFY_ADD, ["0255 999 999"])]}),
        (person("hungpq2"), {"title": [(MODIFY_ADD, ["Quyền Giám đốc"])]}),
        (person("hoatt2"), {"pwdAccountLockedTime": [(MODIFY_DELETE, [])]}),
        (f"cn=lanhdao,ou=groups,{base}", {"mailstateMember": [(MODIFY_DELETE, ["tinlv2"])],
                                           "rfc822MailMember": [(MODIFY_DELETE, ["tinlv2@" + DOMAIN])]}),
    ]
    for dn, change in edits:
        assert c.modify(dn, change), (dn, c.result)
    # value order and letter case of a multi-valued address attribute: no change
    c.search(f"cn=toanso,ou=groups,{base}", "(objectClass=*)", attributes=["rfc822MailMember"])
    members = list(c.entries[0].rfc822MailMember.values)
    assert c.modify(f"cn=toanso,ou=groups,{base}",
                    {"rfc822MailMember": [(MODIFY_REPLACE, [m.upper() for m in reversed(members)])]})
    assert c.delete(person("baotq"))
    assert c.add(person("stray"), ["inetOrgPerson"], {"cn": "Kẻ Lạ", "sn": "Lạ", "mail": "stray@" + DOMAIN})

    plan = plan_json(env, state)
    got = {(ch["action"], ch["kind"], ch["key"]) for ch in plan["changes"]}
    assert got == {
        ("update", "person", "hoatt"), ("update", "person", "tuanh"), ("create", "alias", "tuan.h@" + DOMAIN),
        ("update", "person", "khoadm"), ("update", "person", "tinlv"), ("update", "person", "hungpq2"),
        ("lock", "person", "hoatt2"), ("update", "group", "lanhdao"), ("create", "person", "baotq"),
    }
    by_key = {(ch["kind"], ch["key"]): ch for ch in plan["changes"]}
    assert by_key[("person", "khoadm")]["after"]["aliases"] in ([], None)
    assert by_key[("person", "tinlv")]["after"]["phone"] == "0255 3822 001"
    assert [u["key"] for u in plan["unlisted"]] == ["stray"]
    # the old address's alias exists before the owner's address moves (an apply stopped between keeps it)
    ids = [ch["id"] for ch in plan["changes"]]
    alias_id = by_key[("alias", "tuan.h@" + DOMAIN)]["id"]
    assert ids.index(alias_id) < ids.index(by_key[("person", "tuanh")]["id"])

    second = ms(env, "apply", "--state", str(state), "--provider", "ldap", "--yes")
    assert second.returncode == 0, second.stdout + second.stderr
    assert plan_json(env, state)["changes"] == []
    c.search(person("tinlv"), "(objectClass=*)", attributes=["telephoneNumber"])
    assert c.entries[0].telephoneNumber.values == ["0255 3822 001"]
    c.search(person("khoadm"), "(objectClass=*)", attributes=["mailLocalAddress"])
    assert [v.lower() for v in c.entries[0].mailLocalAddress.values] == ["khoadm@" + DOMAIN]
    c.search(f"ou=people,{base}", "(uid=stray)", attributes=["uid"])
    assert len(c.entries) == 1  # reported, never deleted


def test_person_left_without_a_password_gets_one(qn: tuple[Lab, Path, dict[str, str]]) -> None:
    """A person entry without any password (what an apply stopped between the add and the Password Modify
    leaves) is planned as a create and gets an initial password that binds; then the plan is empty."""
    lab, state, env = qn
    first = ms(env, "apply", "--state", str(state), "--provider", "ldap", "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    c = lab.ldap(as_="root")
    dn = f"uid=sonlh,ou=people,{lab.base_dn}"
    assert c.modify(dn, {"userPassword": [(MODIFY_DELETE, [])]})

    plan = plan_json(env, state)
    [change] = plan["changes"]
    assert (change["action"], change["kind"], change["key"]) == ("create", "person", "sonlh")
    assert any(w["rule"] == "password.missing" for w in change["why"])

    home = Path(env["MAILSTATE_HOME"])

    def sonlh_lines() -> list[str]:
        # two applies within one second append to the same file: look at lines, not at new files
        files = sorted(home.rglob("initial-passwords-*.tsv"))
        return [ln for f in files for ln in f.read_text().splitlines() if ln.startswith("sonlh\t")]

    before = sonlh_lines()
    second = ms(env, "apply", "--state", str(state), "--provider", "ldap", "--yes")
    assert second.returncode == 0, second.stdout + second.stderr
    after = sonlh_lines()
    assert after[: len(before)] == before and len(after) == len(before) + 1
    uid, _address, password = after[-1].split("\t")
    assert uid == "sonlh" and password not in second.stdout + second.stderr
    user = ldap3.Connection(ldap3.Server(lab.env()["MAILSTATE_LDAP_URL"], tls=lab.ldap_tls()), dn, password)
    assert user.bind(), user.result
    user.unbind()
    assert plan_json(env, state)["changes"] == []


def test_saved_plans_refused_when_stale_either_way_or_edited(qn: tuple[Lab, Path, dict[str, str]]) -> None:
    """`apply FILE` exits 1 and changes nothing when a TOML file changed (named), when a live object
    changed (named), or when the file's changes were edited; the untouched plan then applies."""
    lab, state, env = qn
    first = ms(env, "apply", "--state", str(state), "--provider", "ldap", "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    vp = state / "units" / "vp.toml"
    vp.write_text(vp.read_text(encoding="utf-8").replace('"Chánh Văn phòng"', '"Chánh VP"'), encoding="utf-8")
    saved = state.parent / "plan.json"
    assert ms(env, "plan", "--state", str(state), "--provider", "ldap", "--out", str(saved)).returncode == 0
    c = lab.ldap(as_="root")

    def title(uid: str) -> str:
        c.search(f"uid={uid},ou=people,{lab.base_dn}", "(objectClass=*)", attributes=["title"])
        return str(c.entries[0].title)

    def apply(path: Path) -> subprocess.CompletedProcess[str]:
        return ms(env, "apply", str(path), "--state", str(state), "--provider", "ldap")

    bcvt = state / "units" / "bcvt.toml"
    original = bcvt.read_text(encoding="utf-8")
    bcvt.write_text(original + "\n# a comment is a change of the file\n", encoding="utf-8")
    out = apply(saved)
    assert out.returncode == 1 and "units/bcvt.toml changed" in out.stdout + out.stderr
    bcvt.write_text(original, encoding="utf-8")

    assert c.modify(f"uid=thuvt2,ou=people,{lab.base_dn}", {"mobile": [(MODIFY_REPLACE, ["0900 000 000"])]})
    out = apply(saved)
    assert out.returncode == 1 and "live person thuvt2 changed" in out.stdout + out.stderr
    assert c.modify(f"uid=thuvt2,ou=people,{lab.base_dn}", {"mobile": [(MODIFY_DELETE, [])]})

    edited = state.parent / "edited.json"
    data = json.loads(saved.read_text(encoding="utf-8"))
    data["changes"][0]["after"]["title"] = "Giám đốc"
    edited.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    out = apply(edited)
    assert out.returncode == 1 and "update person anhnt" in out.stdout + out.stderr
    assert title("anhnt") == "Chánh Văn phòng"

    out = apply(saved)
    assert out.returncode == 0, out.stdout + out.stderr
    assert title("anhnt") == "Chánh VP"


def test_tampered_units_mailboxes_groups_and_aliases_are_repaired(
    qn: tuple[Lab, Path, dict[str, str]],
) -> None:
    """Hand edits of a unit, a unit mailbox, a group's addresses and an old-address alias (an extra
    delivery target) plan exactly their repairs, nothing is reported as not in the TOML, apply converges."""
    lab, state, env = qn
    assert ms(env, "apply", "--state", str(state), "--provider", "ldap", "--yes").returncode == 0
    c = lab.ldap(as_="root")
    base = lab.base_dn
    assert c.modify(f"uid=tuanh,ou=people,{base}", {"mail": [(MODIFY_REPLACE, ["tuan.h@" + DOMAIN])]})
    assert ms(env, "apply", "--state", str(state), "--provider", "ldap", "--yes").returncode == 0  # alias
    edits = [
        (f"ou=ktht,ou=units,{base}", {"mailstateParent": [(MODIFY_REPLACE, ["gd"])],
                                      "description": [(MODIFY_ADD, ["Tên phụ"])]}),
        (f"uid=bcvt,ou=mailboxes,{base}", {"mailLocalAddress": [(MODIFY_ADD, ["buuchinh@" + DOMAIN])],
                                           "mailstateQuota": [(MODIFY_REPLACE, ["1"])]}),
        (f"cn=toanso,ou=groups,{base}", {"mail": [(MODIFY_REPLACE, ["TOANSO@" + DOMAIN.upper()])],
                                          "mailLocalAddress": [(MODIFY_ADD, ["toan.so@" + DOMAIN])]}),
        (f"cn=tuan.h@{DOMAIN},ou=aliases,{base}",
         {"rfc822MailMember": [(MODIFY_ADD, ["evil@evil.example"])]}),
        (f"uid=khoadm,ou=people,{base}", {"pwdAccountLockedTime": [(MODIFY_REPLACE, ["000001010000Z"])],
                                          "mailstateLockReason": [(MODIFY_REPLACE, ["manual"])]}),
    ]
    for dn, change in edits:
        assert c.modify(dn, change), (dn, c.result)
    assert c.delete(f"uid=cntt,ou=mailboxes,{base}")

    plan = plan_json(env, state)
    got = {(ch["action"], ch["kind"], ch["key"], tuple(ch["fields"] or ())) for ch in plan["changes"]}
    creates = {g[:3] for g in got if g[0] == "create"}
    assert creates == {("create", "unit_mailbox", "cntt")}
    assert got - {g for g in got if g[0] == "create"} == {
        ("update", "unit", "ktht", ("name", "parent")),
        ("update", "unit_mailbox", "bcvt", ("aliases", "quota")),
        ("update", "group", "toanso", ("address",)),
        ("update", "alias", "tuan.h@" + DOMAIN, ("target",)),
        ("unlock", "person", "khoadm", ("locked", "lock_reason")),
    }
    assert [u["key"] for u in plan["unlisted"]] == []

    assert ms(env, "apply", "--state", str(state), "--provider", "ldap", "--yes").returncode == 0
    assert plan_json(env, state)["changes"] == []
    c.search(f"cn=tuan.h@{DOMAIN},ou=aliases,{base}", "(objectClass=*)", attributes=["rfc822MailMember"])
    assert c.entries[0].rfc822MailMember.values == ["tuanh@" + DOMAIN]
    c.search(f"cn=toanso,ou=groups,{base}", "(objectClass=*)", attributes=["mailLocalAddress"])
    assert [v.lower() for v in c.entries[0].mailLocalAddress.values] == ["toanso@" + DOMAIN]


def test_one_paged_search_per_subtree_unless_someone_may_lack_a_password(
    qn: tuple[Lab, Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read searches each managed subtree once; only when a person has no pwdChangedTime (ppolicy removes
    it with the password) does one presence search of ou=people follow, and it flags that person."""
    from mailstate.desired_state.loader import load_state
    from mailstate.providers.registry import open_providers

    lab, state, env = qn
    assert ms(env, "apply", "--state", str(state), "--provider", "ldap", "--yes").returncode == 0
    for key, value in lab.env().items():
        monkeypatch.setenv(key, value)
    provider = open_providers(load_state(state), ["ldap"])["ldap"]
    bases: list[str] = []
    real = provider.search_all  # type: ignore[attr-defined]

    def counting(base: str, *args: object, **kwargs: object) -> object:
        bases.append(base.split(",", 1)[0])
        return real(base, *args, **kwargs)

    monkeypatch.setattr(provider, "search_all", counting)
    try:
        snap = provider.read()
        # people just added hold their initial password from the add, which sets no pwdChangedTime: the
        # presence search runs, and finds every one of them with a password
        assert bases.count("ou=people") == 2 and len(bases) == 6
        assert snap.facts["no_password"] == []
        root = lab.ldap(as_="root")
        root.search(f"ou=people,{lab.base_dn}", "(objectClass=person)", attributes=["1.1"])
        for dn in [e["dn"] for e in root.response if e.get("type") == "searchResEntry"]:
            assert root.extend.standard.modify_password(user=dn, new_password="Đổi-mật-khẩu-9x")  # sets it
        bases.clear()
        snap = provider.read()
        assert sorted(bases) == ["ou=aliases", "ou=groups", "ou=mailboxes", "ou=people", "ou=units"]
        assert snap.facts["no_password"] == []
        assert lab.ldap(as_="root").modify(f"uid=hoatt,ou=people,{lab.base_dn}",
                                           {"userPassword": [(MODIFY_DELETE, [])]})
        bases.clear()
        snap = provider.read()
        assert bases.count("ou=people") == 2 and len(bases) == 6
        assert snap.facts["no_password"] == ["hoatt"]
        assert snap.records[("person", "hoatt")].attrs["_no_password"] is True
    finally:
        provider.close()


def test_display_name_and_extra_login_names_are_repaired(qn: tuple[Lab, Path, dict[str, str]]) -> None:
    """A displayName edited by hand and a second uid (a second login name) on a person and on a unit
    mailbox are planned, repaired without touching the password, and the plan is then empty."""
    lab, state, env = qn
    assert ms(env, "apply", "--state", str(state), "--provider", "ldap", "--yes").returncode == 0
    c = lab.ldap(as_="root")
    base = lab.base_dn
    assert c.modify(f"uid=hoatt,ou=people,{base}", {"displayName": [(MODIFY_REPLACE, ["Sếp Hoa"])]})
    assert c.modify(f"uid=anhnt,ou=people,{base}", {"uid": [(MODIFY_ADD, ["chanhvp"])]})
    assert c.modify(f"uid=vp,ou=mailboxes,{base}", {"uid": [(MODIFY_ADD, ["vanphong"])]})
    c.search(f"uid=anhnt,ou=people,{base}", "(objectClass=*)", attributes=["pwdChangedTime"])
    changed = c.entries[0].pwdChangedTime.value

    plan = plan_json(env, state)
    got = {(ch["action"], ch["kind"], ch["key"]) for ch in plan["changes"]}
    assert got == {
        ("update", "person", "hoatt"), ("create", "person", "anhnt"), ("create", "unit_mailbox", "vp")
    }
    assert ms(env, "apply", "--state", str(state), "--provider", "ldap", "--yes").returncode == 0
    assert plan_json(env, state)["changes"] == []
    c.search(f"ou=people,{base}", "(|(uid=chanhvp)(displayName=Sếp Hoa))", attributes=["uid"])
    assert c.entries == []
    c.search(f"ou=mailboxes,{base}", "(uid=vanphong)", attributes=["uid"])
    assert c.entries == []
    c.search(f"uid=anhnt,ou=people,{base}", "(objectClass=*)", attributes=["pwdChangedTime"])
    assert c.entries[0].pwdChangedTime.value == changed  # the password was not reset


def test_an_empty_saved_plan_is_checked_too(qn: tuple[Lab, Path, dict[str, str]]) -> None:
    """A saved plan with no changes is refused (exit 1) when the TOML changed since or when it is another
    organisation's, applies as "nothing to apply" otherwise; `plan --out` into a missing directory is a
    clear error, not a traceback."""
    lab, state, env = qn
    assert ms(env, "apply", "--state", str(state), "--provider", "ldap", "--yes").returncode == 0
    saved = state.parent / "empty.json"
    assert ms(env, "plan", "--state", str(state), "--provider", "ldap", "--out", str(saved)).returncode == 0
    out = ms(env, "apply", str(saved), "--state", str(state), "--provider", "ldap")
    assert out.returncode == 0 and "nothing to apply" in out.stdout

    other = state.parent / "other"
    shutil.copytree(Path(__file__).resolve().parents[2] / "examples" / "mic", other)
    out = ms(env, "apply", str(saved), "--state", str(other))
    assert out.returncode == 1 and "made for stttt.quangngai.gov.vn" in out.stderr

    ktht = state / "units" / "ktht.toml"
    ktht.write_text(ktht.read_text(encoding="utf-8").replace('"Kỹ sư mạng"', '"Kỹ sư mạng chính"'),
                    encoding="utf-8")
    out = ms(env, "apply", str(saved), "--state", str(state), "--provider", "ldap")
    assert out.returncode == 1 and "units/ktht.toml changed" in out.stderr, out.stdout + out.stderr

    out = ms(env, "plan", "--state", str(state), "--provider", "ldap", "--out", str(state / "no" / "p.json"))
    assert out.returncode == 1 and "cannot write the plan" in out.stderr and "Traceback" not in out.stderr
