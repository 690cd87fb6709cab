"""`mailstate import --layout plain --people-base …` on a tree made by hand in the default lab's slapd:
people under ou=<phòng>,ou=Staff, a groupOfNames, a nisMailAlias, extra addresses in mailLocalAddress.
Every entry is either in the TOML or in the import report with why; the naming template is guessed."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from ldap3.utils.dn import escape_rdn

from mailstate.adopt.importer import REPORT
from mailstate.cli import cli
from mailstate.lab import Lab

pytestmark = pytest.mark.integration

DOMAIN = "lab.example.gov.vn"


@pytest.fixture
def hand_made(
    lab_env: dict[str, str], clean_lab: Lab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Lab:
    lab = clean_lab
    for key in list(os.environ):
        if key.startswith("MAILSTATE_") and not key.startswith("MAILSTATE_LDAP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    base = lab.base_dn
    staff = f"ou=Staff,{base}"
    kt = f"ou={escape_rdn('Phòng Kế toán')},{staff}"
    conn = lab.ldap(as_="root")
    try:
        def add(dn: str, classes: list[str], attrs: dict[str, object]) -> None:
            assert conn.add(dn, classes, attrs), (dn, conn.result)

        add(staff, ["organizationalUnit"], {"ou": "Staff"})
        add(kt, ["organizationalUnit"], {"ou": "Phòng Kế toán"})
        person = ["inetOrgPerson", "inetLocalMailRecipient"]
        add(f"uid=bangnv,{kt}", person, {"uid": "bangnv", "cn": "Nguyễn Văn Bằng", "sn": "Nguyễn",
                                         "mail": f"bangnv@{DOMAIN}",
                                         "mailLocalAddress": [f"bangnv@{DOMAIN}", f"bang.nguyen@{DOMAIN}"]})
        add(f"uid=hoatt,{kt}", person, {"uid": "hoatt", "cn": "Trần Thị Hoa", "sn": "Trần",
                                        "mail": f"hoatt@{DOMAIN}", "title": "Kế toán viên"})
        add(f"uid=tho,{staff}", person, {"uid": "tho", "cn": "Lê Thọ", "sn": "Lê", "mail": f"tho@{DOMAIN}",
                                         "departmentNumber": "vp"})
        add(f"uid=nomail,{kt}", ["inetOrgPerson"], {"uid": "nomail", "cn": "Không Thư", "sn": "Không"})
        add(f"cn=ke-toan,{staff}", ["groupOfNames", "inetLocalMailRecipient"], {
            "cn": "ke-toan", "description": "Tổ kế toán", "mailLocalAddress": f"ke-toan@{DOMAIN}",
                                                        "member": [f"uid=bangnv,{kt}", f"uid=hoatt,{kt}",
                                                                   f"uid=ghost,{kt}"]})
        targets = [f"tho@{DOMAIN}", "x@example.org"]
        add(f"cn=lanh-dao,{staff}", ["nisMailAlias"], {"cn": "lanh-dao", "rfc822MailMember": targets})
    finally:
        conn.unbind()
    return lab


def test_plain_import_writes_the_tree_and_reports_the_rest(hand_made: Lab, tmp_path: Path) -> None:
    lab = hand_made
    out = tmp_path / "state"
    r = CliRunner().invoke(cli, ["import", "--out", str(out), "--domain", DOMAIN, "--layout", "plain",
                                 "--people-base", f"ou=Staff,{lab.base_dn}"])
    assert r.exit_code == 0, r.output
    top = tomllib.loads((out / "mailstate.toml").read_text(encoding="utf-8"))
    assert top["naming"]["person"] == "{given}{initials}"  # guessed: bangnv, hoatt (tho is not its form)
    people: dict[str, dict[str, object]] = {}
    units: dict[str, dict[str, object]] = {}
    for f in (out / "units").glob("*.toml"):
        doc = tomllib.loads(f.read_text(encoding="utf-8"))
        if "unit" in doc:
            units[doc["unit"]["id"]] = doc["unit"]
        people.update({p["id"]: p for p in doc.get("person", [])})
    assert set(people) == {"bangnv", "hoatt", "tho"}
    assert units["pketoan"] == {"id": "pketoan", "name": "Phòng Kế toán", "mailbox": False}
    assert units["vp"]["mailbox"] is False
    assert (people["bangnv"]["unit"], people["tho"]["unit"]) == ("pketoan", "vp")
    assert people["bangnv"]["old_addresses"] == [f"bang.nguyen@{DOMAIN}"]
    assert people["bangnv"]["address"] == f"bangnv@{DOMAIN}"  # pinned as found
    groups = {g["id"]: g for g in tomllib.loads((out / "groups.toml").read_text(encoding="utf-8"))["group"]}
    assert groups["ke-toan"]["members"] == ["bangnv", "hoatt"]
    assert groups["lanh-dao"] == {"id": "lanh-dao", "name": "lanh-dao", "address": f"lanh-dao@{DOMAIN}",
                                  "members": ["tho"]}
    report = (out / REPORT).read_text(encoding="utf-8")
    for why in ("uid=nomail", "no mail attribute", "uid=ghost", "x@example.org", "{given}{initials}",
                "gives 2 of the 3 addresses", "unit pketoan"):
        assert why in report, (why, report)
    r = CliRunner().invoke(cli, ["validate", "--state", str(out)])
    assert r.exit_code == 0, r.output


def test_people_base_goes_with_plain(hand_made: Lab, tmp_path: Path) -> None:
    args = ["import", "--out", str(tmp_path / "s"), "--domain", DOMAIN, "--layout", "plain"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0 and "--people-base" in r.output
