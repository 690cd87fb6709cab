"""`mailstate import --layout plain` on trees an IT officer made by hand, in the default lab's slapd: nested
OUs, posixAccount, mixed-case attribute names, names in both orders and decomposed (NFD), people without
mail, a duplicate mail, groups naming what is no person, outside recipients, the usual ways of disabling
an account, hostile names, and two OUs whose names give the same unit id. For each: what the TOML holds,
what the report says, and that `validate` accepts the result; the plan against the same directory changes
nothing the report does not name."""

from __future__ import annotations

import os
import shutil
import tomllib
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ldap3 import MODIFY_REPLACE
from ldap3.utils.dn import escape_rdn

from mailstate.adopt.importer import REPORT
from mailstate.cli import LANG_ENV, cli
from mailstate.lab import Lab
from mailstate.lab.iredmail import testing as irm_t
from mailstate.lab.testing import make_person
from mailstate.model import i18n
from mailstate.reconciler.pipeline import apply_plan, make_plan
from mailstate.reconciler.plan.plan import plan_changes

pytestmark = pytest.mark.integration

DOMAIN = "lab.example.gov.vn"
IRM_DOMAIN = "adopt.example.gov.vn"  # the iRedMail lab of test_iredmail_provider.py (one slapd for both)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "binhdinh-sct"


def _nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


@pytest.fixture
def messy(lab_env: dict[str, str], clean_lab: Lab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Lab:
    lab = clean_lab
    for key in list(os.environ):
        if key.startswith("MAILSTATE_") and not key.startswith(("MAILSTATE_LDAP_", "MAILSTATE_LANG")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    base = lab.base_dn
    people = f"ou=Staff,{base}"
    kt = f"ou={escape_rdn('Phòng Kế toán')},{people}"
    thue = f"ou={escape_rdn('Tổ Thuế')},{kt}"
    kt2 = f"ou={escape_rdn('Phòng Kế-toán')},{people}"  # gives the same id as "Phòng Kế toán"
    evil_ou = f"ou={escape_rdn('Phòng' + chr(0x1b) + '[31mĐỏ')},{people}"
    dots = f"ou={escape_rdn('../../etc')},{people}"
    conn = lab.ldap(as_="root")
    try:
        def add(dn: str, classes: list[str], attrs: dict[str, object]) -> None:
            assert conn.add(dn, classes, attrs), (dn, conn.result)

        for dn, ou in ((people, "Staff"), (kt, "Phòng Kế toán"), (thue, "Tổ Thuế"), (kt2, "Phòng Kế-toán"),
                       (evil_ou, "Phòng\x1b[31mĐỏ"), (dots, "../../etc")):
            add(dn, ["organizationalUnit"], {"ou": ou})
        inet = ["inetOrgPerson", "inetLocalMailRecipient"]
        posix = ["inetOrgPerson", "posixAccount", "shadowAccount"]

        def px(uid: str, n: int, shell: str = "/bin/bash", **more: object) -> dict[str, object]:
            return {"uidNumber": str(n), "gidNumber": "100", "homeDirectory": f"/home/{uid}",
                    "loginShell": shell, **more}

        # mixed-case attribute names, an upper-case address, an old address in mailLocalAddress
        add(f"uid=bangnv,{kt}", inet, {"UID": "bangnv", "CN": "Nguyễn Văn Bằng", "SN": "Nguyễn",
                                       "MAIL": f"BangNV@{DOMAIN.upper()}",
                                       "mailLocalAddress": [f"bangnv@{DOMAIN}", f"bang.nguyen@{DOMAIN}"]})
        # nested OU, cn written given name first
        add(f"uid=hoatt,{thue}", inet, {"uid": "hoatt", "cn": "Hoa Trần Thị", "sn": "Trần",
                                        "givenName": "Hoa", "mail": f"hoatt@{DOMAIN}",
                                        "title": "Kế toán viên"})
        # decomposed Vietnamese (NFD) in cn and title, in the OU that clashes with Phòng Kế toán
        add(f"uid=lantt,{kt2}", inet, {"uid": "lantt", "cn": _nfd("Trần Thị Lan"), "sn": _nfd("Trần"),
                                       "mail": f"lantt@{DOMAIN}", "title": _nfd("Phó phòng")})
        # only inetOrgPerson, departmentNumber, "A Nguyễn Văn" with no hint but the family name
        add(f"uid=anv,{people}", ["inetOrgPerson"], {"uid": "anv", "cn": "An Nguyễn Văn", "sn": "An",
                                                     "mail": f"anv@{DOMAIN}", "departmentNumber": "vp"})
        # the usual ways of disabling an account
        add(f"uid=tuan,{kt}", posix, {"uid": "tuan", "cn": "Phạm Tuấn", "sn": "Phạm",
                                      "mail": f"tuan@{DOMAIN}",
                                      **px("tuan", 1001, "/sbin/nologin")})
        add(f"uid=minh,{kt}", posix, {"uid": "minh", "cn": "Đỗ Minh", "sn": "Đỗ", "mail": f"minh@{DOMAIN}",
                                      **px("minh", 1002, shadowExpire="19000")})
        add(f"uid=khoa,{kt}", posix, {"uid": "khoa", "cn": "Vũ Khoa", "sn": "Vũ", "mail": f"khoa@{DOMAIN}",
                                      **px("khoa", 1003)})
        locked = {"pwdAccountLockedTime": [(MODIFY_REPLACE, ["20250101000000Z"])]}
        assert conn.modify(f"uid=khoa,{kt}", locked), conn.result
        # no mail; a duplicate mail; a uid that is no id; hostile text
        add(f"uid=nomail,{kt}", ["inetOrgPerson"], {"uid": "nomail", "cn": "Không Thư", "sn": "Không"})
        add(f"uid=trung,{kt}", inet, {"uid": "trung", "cn": "Lê Trung", "sn": "Lê",
                                      "mail": f"bangnv@{DOMAIN}"})
        add(f"uid=BadId,{kt}", inet, {"uid": "../BadId", "cn": "Hồ Sai", "sn": "Hồ", "mail": f"sai@{DOMAIN}"})
        add(f"uid=evil,{evil_ou}", inet, {"uid": "evil", "cn": "Ngô\x1b]0;pwned\x07 Ác", "sn": "Ngô",
                                          "mail": f"evil@{DOMAIN}", "title": "=HYPERLINK(\"http://x\")"})
        add(f"uid=dot,{dots}", inet, {"uid": "dot", "cn": "Lý Chấm", "sn": "Lý", "mail": f"dot@{DOMAIN}"})
        # groups: members that are no person, found nowhere, another group; outside recipients
        add(f"cn=lanh-dao,{base}", ["nisMailAlias"], {"cn": "lanh-dao",
                                                      "rfc822MailMember": [f"anv@{DOMAIN}", "x@example.org"]})
        add(f"cn=ke-toan,{base}", ["groupOfNames", "extensibleObject"], {
            "cn": "ke-toan", "description": "Tổ kế toán", "mail": f"ketoan@{DOMAIN}",
            "member": [f"UID=BangNV, {kt}", f"uid=hoatt,{thue}", kt, f"uid=ghost,{kt}",
                       f"cn=lanh-dao,{base}"]})
        add(f"cn=admins,{base}", ["groupOfNames"], {"cn": "admins", "member": [f"uid=bangnv,{kt}"]})
        add(f"cn={escape_rdn('=cmd|x')},{base}", ["groupOfNames", "extensibleObject"], {
            "cn": "=cmd|x", "mail": f"cmd@{DOMAIN}", "member": [f"uid=bangnv,{kt}"]})
    finally:
        conn.unbind()
    return lab


def _read(out: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    people: dict[str, Any] = {}
    units: dict[str, Any] = {}
    for f in (out / "units").glob("*.toml"):
        doc = tomllib.loads(f.read_text(encoding="utf-8"))
        if "unit" in doc:
            units[doc["unit"]["id"]] = doc["unit"]
        people.update({p["id"]: p for p in doc.get("person", [])})
    groups_file = out / "groups.toml"
    groups = ({g["id"]: g for g in tomllib.loads(groups_file.read_text(encoding="utf-8"))["group"]}
              if groups_file.exists() else {})
    return people, units, groups


def test_a_messy_hand_made_tree(messy: Lab, tmp_path: Path) -> None:
    lab = messy
    out = tmp_path / "state"
    r = CliRunner().invoke(cli, ["import", "--out", str(out), "--domain", DOMAIN, "--layout", "plain",
                                 "--people-base", f"ou=Staff,{lab.base_dn}"])
    assert r.exit_code == 0, r.output
    people, units, groups = _read(out)
    report = (out / REPORT).read_text(encoding="utf-8")
    assert "\x1b" not in report and "\x07" not in report

    assert set(people) == {"bangnv", "hoatt", "lantt", "anv", "tuan", "minh", "khoa", "evil", "dot"}
    # names: NFC, family name first
    assert people["hoatt"]["name"] == "Trần Thị Hoa" and "'Hoa Trần Thị'" in report
    assert people["lantt"]["name"] == "Trần Thị Lan" and people["lantt"]["title"] == "Phó phòng"
    assert people["anv"]["name"] == "Nguyễn Văn An"
    assert people["bangnv"]["address"] == f"bangnv@{DOMAIN}"
    assert people["bangnv"]["old_addresses"] == [f"bang.nguyen@{DOMAIN}"]
    # units: the OU path, nested with its parent; a clash made distinct and reported; departmentNumber
    assert units["pketoan"]["name"] == "Phòng Kế toán"
    assert units["tothue"] == {"id": "tothue", "name": "Tổ Thuế", "parent": "pketoan", "mailbox": False}
    assert units["pketoan-2"]["name"] == "Phòng Kế-toán" and people["lantt"]["unit"] == "pketoan-2"
    assert (f"unit ou=Phòng Kế-toán,ou=Staff,{lab.base_dn}: its name gives the id pketoan, already the unit "
            "'Phòng Kế toán': written as pketoan-2") in report
    assert (people["hoatt"]["unit"], people["anv"]["unit"]) == ("tothue", "vp")
    assert "unit" not in people["evil"]  # an OU holding an escape sequence gives no id: reported
    assert "no id can be made from its name" in report and r"unit ou=Phòng\x1b[31mĐỏ,ou=Staff," in report
    assert units["etc"]["name"] == "../../etc" and not (tmp_path / "etc").exists()
    # disabled accounts come back disabled, with what disabled them
    for pid, what in (("tuan", "loginShell: /sbin/nologin"), ("minh", "shadowExpire: 19000"),
                      ("khoa", "pwdAccountLockedTime: 20250101000000Z")):
        sus = people[pid]["suspended"]
        assert sus["disabled"] is True and what in sus["reason"], (pid, sus)
        assert f"person {pid}: locked in the directory" in report
    assert "suspended" not in people["bangnv"]
    # left out, each with its DN and why
    for why in ("uid=nomail,ou=Phòng Kế toán", "no mail attribute",
                "uid=trung,", f"its address bangnv@{DOMAIN} is already bangnv's",
                "uid=BadId,", "'../BadId' is not a valid id",
                "cn=admins,", "a groupOfNames without an address (mail or mailLocalAddress) is no mail group",
                "its cn '=cmd|x' is not a valid id",
                "uid=ghost,", "member ou=Phòng Kế toán", "x@example.org would stop receiving"):
        assert why in report, (why, report)
    # groups: people by their DN however written, a nested group as group:<id>
    assert groups["ke-toan"]["members"] == ["bangnv", "group:lanh-dao", "hoatt"]
    assert groups["ke-toan"]["address"] == f"ketoan@{DOMAIN}"
    assert groups["lanh-dao"]["members"] == ["anv"]
    assert set(groups) == {"ke-toan", "lanh-dao"}
    # hostile text: written escaped and reported, never raw
    text = "".join(p.read_text(encoding="utf-8") for p in out.rglob("*.toml"))
    assert "\x1b" not in text and "\x07" not in text
    assert "person evil: name holds a control or bidirectional character" in report
    # the naming template, how many addresses it gives and which it does not
    top = tomllib.loads((out / "mailstate.toml").read_text(encoding="utf-8"))
    assert top["naming"]["person"] == "{given}{initials}"
    assert "gives 3 of the 9 addresses" in report and "tuan (tuan)" in report

    # the reviewer fixes what the report says validate refuses
    unassigned = out / "units" / "_unassigned.toml"
    unassigned.write_text(unassigned.read_text(encoding="utf-8").replace(
        "Ngô\\u001b]0;pwned\\u0007 Ác", "Ngô Ác").replace('id = "evil"', 'id = "evil"\nunit = "pketoan"'),
        encoding="utf-8")
    assert "person evil: no unit" in report
    assert CliRunner().invoke(cli, ["validate", "--state", str(out)]).exit_code == 0
    # the first plan: everything it would do is named in the report as not adoptable as is, with why
    plan = make_plan(out, providers=["ldap"])
    named = {tuple(line.split(" ", 2)[:2]) for line in report.splitlines()
             if "cannot be adopted as is:" in line and "mailstate keeps it at" in line}
    assert {(c.kind, c.key) for c in plan_changes(plan)} == named
    assert f"person hoatt (uid=hoatt,ou=Tổ Thuế,ou=Phòng Kế toán,ou=Staff,{lab.base_dn})" in report
    assert f"unit tothue (ou=Tổ Thuế,ou=Phòng Kế toán,ou=Staff,{lab.base_dn})" in report
    assert "unit vp (departmentNumber)" in report


def test_mailstate_layout_import_drops_references_to_what_it_left_out(messy: Lab, tmp_path: Path) -> None:
    """The same mistakes on mailstate's own layout: a group naming a person left out (an id mailstate
    refuses), a unit headed by one, and an old address two people hold, are reported and left out, so the
    state written passes `validate`, and the plan names only what the report does."""
    lab = messy
    base = lab.base_dn
    make_person(lab, "bangnv", cn="Nguyễn Văn Bằng", unit="qlcn",
                extra={"mailLocalAddress": [f"bangnv@{DOMAIN}", f"chung@{DOMAIN}"]})
    make_person(lab, "hoatt", cn="Trần Thị Hoa", unit="qlcn",
                extra={"mailLocalAddress": [f"hoatt@{DOMAIN}", f"chung@{DOMAIN}"]})
    make_person(lab, "Evil.X", cn="Kẻ Xấu", unit="qlcn")
    conn = lab.ldap(as_="root")
    try:
        assert conn.add(f"ou=qlcn,ou=units,{base}", ["organizationalUnit", "mailstateUnit"],
                        {"ou": "qlcn", "description": "Phòng Quản lý Công nghiệp", "mailstateHead": "Evil.X",
                         "mailstateDelegate": ["hoatt", "Evil.X"]}), conn.result
        assert conn.add(f"cn=toan-so,ou=groups,{base}", ["nisMailAlias", "inetLocalMailRecipient",
                                                        "mailstateGroup"],
                        {"cn": "toan-so", "displayName": "Toàn Sở", "mail": f"toan-so@{DOMAIN}",
                         "mailLocalAddress": f"toan-so@{DOMAIN}", "mailstateMember": ["bangnv", "Evil.X"],
                         "rfc822MailMember": [f"bangnv@{DOMAIN}", f"evil.x@{DOMAIN}"]}), conn.result
    finally:
        conn.unbind()
    out = tmp_path / "state"
    r = CliRunner().invoke(cli, ["import", "--out", str(out), "--domain", DOMAIN])
    assert r.exit_code == 0, r.output
    people, units, groups = _read(out)
    report = (out / REPORT).read_text(encoding="utf-8")
    assert "Evil.X" not in people and "'Evil.X': not imported" in report
    assert groups["toan-so"]["members"] == ["bangnv"]
    assert "group toan-so: member Evil.X is not imported: left out" in report
    assert "head" not in units["qlcn"] and units["qlcn"]["delegates"] == ["hoatt"]
    assert "unit qlcn: head Evil.X is not imported: left out" in report
    assert people["bangnv"]["old_addresses"] == [f"chung@{DOMAIN}"]
    assert "old_addresses" not in people["hoatt"]
    assert f"person hoatt: the address chung@{DOMAIN} is already bangnv's: left out" in report
    r = CliRunner().invoke(cli, ["validate", "--state", str(out)])
    assert r.exit_code == 0, r.output


def test_import_of_the_example_plans_nothing_with_the_imap_rights(sct_all: Lab, tmp_path: Path) -> None:
    """Every provider (directory, IMAP rights, doveadm): the example converged, imported, plans nothing."""
    state = tmp_path / "example"
    shutil.copytree(EXAMPLE, state)
    home = tmp_path / "home"
    apply_plan(make_plan(state), state, journal_dir=home, audit_log=home / "audit.jsonl",
               passwords_out=home / "pw.tsv", allow_destructive=True)
    out = tmp_path / "imported"
    r = CliRunner().invoke(cli, ["import", "--out", str(out), "--state", str(state)])
    assert r.exit_code == 0, r.output
    folders = tomllib.loads((out / "shared_folders.toml").read_text(encoding="utf-8"))["shared_folder"]
    assert {f["path"]: f.get("read") for f in folders}["Lịch công tác"] == ["group:toanso"]  # as written
    plan = make_plan(out)
    got = sorted(f"{c.action.label} {c.kind} {c.key} {c.fields}" for c in plan_changes(plan))
    assert got == [], "\n".join(got)


def test_the_report_and_summary_read_vietnamese_by_default(messy: Lab, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LANG_ENV, raising=False)
    out = tmp_path / "state"
    with i18n.use("vi"):
        r = CliRunner().invoke(cli, ["import", "--out", str(out), "--domain", DOMAIN, "--layout", "plain",
                                     "--people-base", f"ou=Staff,{messy.base_dn}"])
    assert r.exit_code == 0, r.output
    report = (out / REPORT).read_text(encoding="utf-8")
    assert report.startswith(f"Báo cáo nhập của {DOMAIN}")
    assert "không nhập: không có thuộc tính mail" in report
    assert "đặt tên: đoán person = '{given}{initials}': mẫu này cho ra 3 trong 9 địa chỉ" in report
    assert "đã ghi: 9 cán bộ, 5 đơn vị, 2 nhóm" in r.stdout
    assert f"cần rà soát, mỗi mục kèm lý do: {out / REPORT}" in r.stdout
    assert "warning" not in r.stdout  # the entries themselves go to stderr


def test_plain_import_of_an_iredmail_like_tree_reads_account_status(
    lab_for: Callable[..., Lab], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`--layout plain` on iRedMail's own tree (what an officer who added users by hand next to iRedMail
    has): accountStatus disabled comes back disabled, with it; a mailList is reported, not dropped."""
    lab = lab_for(IRM_DOMAIN, "Sở thử nghiệm tiếp nhận", layout="iredmail")
    lab.reset()
    irm_t.add_list(lab, "phong-hc", cn="Phòng Hành chính")
    irm_t.add_user(lab, "an", "mat-khau-An-1", cn="Nguyễn Văn An")
    irm_t.add_user(lab, "cuong", "mat-khau-Cuong-3", cn="Lê Cường", status="disabled")
    for key in list(os.environ):
        if key.startswith("MAILSTATE_") and key != LANG_ENV:
            monkeypatch.delenv(key)
    for key, value in lab.env().items():
        if key.startswith("MAILSTATE_LDAP_"):
            monkeypatch.setenv(key, value)
    users = irm_t.entry_dn(lab, "an", "Users").split(",", 1)[1]
    out = tmp_path / "state"
    r = CliRunner().invoke(cli, ["import", "--out", str(out), "--domain", IRM_DOMAIN, "--layout", "plain",
                                 "--people-base", users])
    assert r.exit_code == 0, r.output
    people, _units, _groups = _read(out)
    assert "suspended" not in people["an"]
    assert people["cuong"]["suspended"] == {
        "reason": "disabled in the directory before mailstate (accountStatus: disabled)", "disabled": True}
    report = (out / REPORT).read_text(encoding="utf-8")
    assert "cn=phong-hc" in report.lower() or "mail=phong-hc" in report.lower()
    assert "import with --layout iredmail" in report


def test_an_imap_server_that_does_not_answer_is_reported_not_fatal(messy: Lab, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    make_person(messy, "bangnv", cn="Nguyễn Văn Bằng", unit="qlcn")
    monkeypatch.setenv("MAILSTATE_IMAP_URL", "imaps://127.0.0.1:1")
    out = tmp_path / "state"
    r = CliRunner().invoke(cli, ["import", "--out", str(out), "--domain", DOMAIN])
    assert r.exit_code == 0, r.output
    assert (out / "units" / "_unassigned.toml").exists() or list((out / "units").glob("*.toml"))
    assert not (out / "shared_folders.toml").exists()
    assert "IMAP rights: not read: " in (out / REPORT).read_text(encoding="utf-8")
