"""`mailstate assign`: derived addresses written into the TOML, everything else kept byte-for-byte."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailstate.cli import cli
from mailstate.desired_state.assign import AssignError, assign, live_addresses_of, write_texts
from mailstate.model.provider import Snapshot
from mailstate.model.records import Record

pytestmark = pytest.mark.usefixtures("english")  # asserts validation's English texts

MAILSTATE_TOML = """\
# Sở Công Thương — state repository
[organization]
name   = "Sở Công Thương tỉnh Bình Định"
domain = "sct.binhdinh.gov.vn"

[naming]                       # BĐ art.4
person = "{given}{initials}"   # Nguyễn Văn Bằng -> bangnv
unit   = "{unit}"
"""

QLCN_TOML = """\
# Phòng Quản lý Công nghiệp
[unit]
id        = "qlcn"                        # stable key
name      = "Phòng Quản lý Công nghiệp"   # NFC
head      = "bangnv"

[[person]]
id     = "bangnv"                  # the LDAP uid
name   = "Nguyễn Văn Bằng"
title  = "Trưởng phòng"   # odd    spacing   kept

# a namesake
[[person]]
  id = "bangnv-b"
  name = "Nguyễn Văn Bằng"
  phone = "0256 3822 123"

[[person]]
id = "thuytt"
name = \"\"\"Trần Thị \\
Thủy\"\"\"
mobile = "0905 123 456"

[[person]]
id = "pinned"
name = "Lê Minh Tuấn"
address = "tuan.le@sct.binhdinh.gov.vn"  # already pinned

[[group]]
id = "lanhdao"
name = "Lãnh đạo phòng"
members = ["bangnv", "unit:qlcn"]"""  # no final newline on purpose

VP_TOML = "\r\n".join(  # CRLF line ends
    ["[unit]", 'id = "vp"', 'name = "Văn phòng Sở"', "",
     "[[person]]", 'id = "tuanpm"', 'name = "Phạm Minh Tuấn"', ""]
)


@pytest.fixture()
def state_dir(tmp_path: Path) -> Path:
    """A small state repository: comments, odd layout, a multi-line name (a line-ending backslash: the name is
    one line), CRLF, no final newline."""
    (tmp_path / "units").mkdir()
    (tmp_path / "mailstate.toml").write_text(MAILSTATE_TOML, encoding="utf-8")
    (tmp_path / "units" / "qlcn.toml").write_bytes(QLCN_TOML.encode())
    (tmp_path / "units" / "vp.toml").write_bytes(VP_TOML.encode())
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_round_trip_keeps_everything_else(state_dir: Path) -> None:
    """Removing the inserted lines gives back the original files byte-for-byte (up to a final newline)."""
    before = snapshot(state_dir)
    result = assign(state_dir)
    after = snapshot(state_dir)
    assert set(after) == set(before)
    inserted: dict[str, set[int]] = {}
    for item in result.assignments:
        inserted.setdefault(item.file, set()).add(item.line)
    for rel, old in before.items():
        new_lines = after[rel].decode().splitlines(keepends=True)
        for line_no in inserted.get(rel, ()):
            assert new_lines[line_no - 1].lstrip().startswith("address")
        kept = "".join(line for i, line in enumerate(new_lines, 1) if i not in inserted.get(rel, set()))
        if rel == "units/qlcn.toml":  # the file had no final newline; its last line got one only if an anchor
            assert kept.rstrip("\n") == old.decode()
        else:
            assert kept == old.decode()
    vp = after["units/vp.toml"]
    assert b"\r\n" in vp and vp.count(b"\n") == vp.count(b"\r\n")


def test_addresses_and_placement(state_dir: Path) -> None:
    """Addresses are derived (namesake numbered), placed after name aligned; pinned ones untouched."""
    assign(state_dir)
    text = (state_dir / "units" / "qlcn.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    people = {p["id"]: p.get("address") for p in data["person"]}
    assert people == {
        "bangnv": "bangnv@sct.binhdinh.gov.vn",
        "bangnv-b": "bangnv2@sct.binhdinh.gov.vn",
        "thuytt": "thuytt@sct.binhdinh.gov.vn",
        "pinned": "tuan.le@sct.binhdinh.gov.vn",
    }
    assert data["unit"]["address"] == "qlcn@sct.binhdinh.gov.vn"
    assert data["group"][0]["address"] == "lanhdao@sct.binhdinh.gov.vn"
    assert 'name   = "Nguyễn Văn Bằng"\naddress = "bangnv@sct.binhdinh.gov.vn"\ntitle' in text
    assert '  name = "Nguyễn Văn Bằng"\n  address = "bangnv2@sct.binhdinh.gov.vn"\n' in text
    assert 'name      = "Phòng Quản lý Công nghiệp"   # NFC\naddress   = "qlcn@' in text
    # a multi-line name: the address goes after the id
    assert 'id = "thuytt"\naddress = "thuytt@sct.binhdinh.gov.vn"\nname = """' in text


def test_second_run_writes_nothing(state_dir: Path) -> None:
    """Running assign again changes no byte and reports nothing to assign."""
    assign(state_dir)
    before = snapshot(state_dir)
    result = assign(state_dir)
    assert not result.changed and result.texts == {}
    assert snapshot(state_dir) == before
    assert "nothing to assign" in result.summary()


def test_check_exit_codes(state_dir: Path) -> None:
    """--check writes nothing and exits 2 when something would be written, 0 once all is assigned."""
    runner = CliRunner()
    before = snapshot(state_dir)
    res = runner.invoke(cli, ["assign", "--lang", "en", "--state", str(state_dir), "--check"])
    assert res.exit_code == 2, res.output
    assert "would assign 7 addresses in 2 files" in res.output
    assert "units/qlcn.toml:" in res.output
    assert snapshot(state_dir) == before
    res = runner.invoke(cli, ["assign", "--lang", "en", "--state", str(state_dir)])
    assert res.exit_code == 0 and "assigned 7 addresses in 2 files" in res.output
    res = runner.invoke(cli, ["assign", "--lang", "en", "--state", str(state_dir), "--check"])
    assert res.exit_code == 0, res.output


def test_validation_error_writes_nothing(state_dir: Path) -> None:
    """A bad reference is reported with its file and line, exit 1, and no file is written."""
    path = state_dir / "units" / "vp.toml"
    bad = b'\r\n[[group]]\r\nid = "vpgroup"\r\nname = "X"\r\nmembers = ["nosuch"]\r\n'
    path.write_bytes(path.read_bytes() + bad)
    before = snapshot(state_dir)
    res = CliRunner().invoke(cli, ["assign", "--lang", "en", "--state", str(state_dir)])
    assert res.exit_code == 1
    assert "units/vp.toml:" in res.output and "nosuch" in res.output
    assert "nothing was written" in res.output
    assert "Traceback" not in res.output
    assert snapshot(state_dir) == before


def test_template_error_exit_1(state_dir: Path) -> None:
    """A bad [naming] template is exit 1 naming mailstate.toml and its line, and nothing is written."""
    path = state_dir / "mailstate.toml"
    path.write_text(MAILSTATE_TOML.replace('"{given}{initials}"', '"{given}{initial}"'), encoding="utf-8")
    before = snapshot(state_dir)
    res = CliRunner().invoke(cli, ["assign", "--lang", "en", "--state", str(state_dir)])
    assert res.exit_code == 1
    assert "mailstate.toml:7" in res.output and "{initial}" in res.output
    assert snapshot(state_dir) == before


def test_inline_tables_fall_back_to_tomlkit(tmp_path: Path) -> None:
    """People written as inline tables still get their address (tomlkit edits), with the comments kept."""
    (tmp_path / "mailstate.toml").write_text(MAILSTATE_TOML, encoding="utf-8")
    (tmp_path / "u.toml").write_text(
        '# inline people\nperson = [ # list\n  { id = "a1", name = "Đặng Văn Lâm", unit = "u" },\n]\n'
        '[unit]\nid = "u"\nname = "Phòng U"\n',
        encoding="utf-8",
    )
    result = assign(tmp_path)
    data = tomllib.loads((tmp_path / "u.toml").read_text(encoding="utf-8"))
    assert data["person"][0]["address"] == "lamdv@sct.binhdinh.gov.vn"
    assert data["unit"]["address"] == "u@sct.binhdinh.gov.vn"
    assert "# inline people" in (tmp_path / "u.toml").read_text(encoding="utf-8")
    assert len(result.assignments) == 2


def test_write_is_all_or_nothing(tmp_path: Path) -> None:
    """When one file cannot be written, no file is changed and no temporary file is left behind."""
    (tmp_path / "a.toml").write_text("x = 1\n", encoding="utf-8")
    with pytest.raises(AssignError):
        write_texts(tmp_path, {"a.toml": "x = 2\n", "missing/b.toml": "y = 1\n"})
    assert (tmp_path / "a.toml").read_text(encoding="utf-8") == "x = 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.toml"]


def test_live_addresses_of_snapshots() -> None:
    """Live records give address → owner: people, unit mailboxes, groups, aliases (their target's owner)."""
    snap = Snapshot("ldap")
    snap.add(Record("person", "bangnv", {"address": "BangNV@x.vn", "aliases": ("bang.old@x.vn",)}))
    snap.add(Record("unit_mailbox", "qlcn", {"address": "qlcn@x.vn", "aliases": ()}))
    snap.add(Record("group", "lanhdao", {"address": "lanhdao@x.vn"}))
    snap.add(Record("alias", "nvbang@x.vn", {"target": "bangnv@x.vn", "expires": "2027-01-01"}))
    snap.unmanaged.append(Record("person", "stranger", {"address": "stranger@x.vn"}))
    assert live_addresses_of([snap]) == {
        "bangnv@x.vn": "bangnv",
        "bang.old@x.vn": "bangnv",
        "qlcn@x.vn": "unit:qlcn",
        "lanhdao@x.vn": "group:lanhdao",
        "nvbang@x.vn": "bangnv",
        "stranger@x.vn": "unmanaged person/stranger",
    }


def test_live_mapping_keeps_addresses(state_dir: Path) -> None:
    """With live addresses given, a live owner keeps its address and nobody else gets a live one."""
    live = {"bangnv@sct.binhdinh.gov.vn": "bangnv-b", "thuytt@sct.binhdinh.gov.vn": "someone-gone"}
    result = assign(state_dir, live=live)
    got = {(a.kind, a.id): a.address for a in result.assignments}
    assert got[("person", "bangnv-b")] == "bangnv@sct.binhdinh.gov.vn"
    assert got[("person", "bangnv")] == "bangnv2@sct.binhdinh.gov.vn"
    assert got[("person", "thuytt")] == "thuytt2@sct.binhdinh.gov.vn"


def test_namesake_in_an_earlier_file_gets_next_number(state_dir: Path) -> None:
    """After assign, a namesake added in a file read earlier gets bangnv3; no written address moves."""
    assign(state_dir)
    before = snapshot(state_dir)
    (state_dir / "units" / "a.toml").write_text(
        '[unit]\nid = "a"\nname = "Phòng A"\n\n[[person]]\nid = "aaa"\nname = "Nguyễn Văn Bằng"\n',
        encoding="utf-8",
    )
    result = assign(state_dir)
    assert [(a.id, a.address) for a in result.assignments] == [
        ("a", "a@sct.binhdinh.gov.vn"), ("aaa", "bangnv3@sct.binhdinh.gov.vn")
    ]
    after = snapshot(state_dir)
    assert {k: v for k, v in after.items() if k != "units/a.toml"} == before


def test_person_without_id_gets_id_and_address_after_everyone_else(state_dir: Path) -> None:
    """A namesake added without an id gets the next free number as address and id; nobody is renumbered."""
    assign(state_dir)  # the existing people get their addresses first
    before = (state_dir / "units" / "qlcn.toml").read_text(encoding="utf-8")
    (state_dir / "units" / "qlcn.toml").write_text(
        before + '\n\n[[person]]\nname  = "Nguyễn Vân Bằng"\ntitle = "Chuyên viên"\n', encoding="utf-8"
    )
    result = assign(state_dir)
    written = {(a.key, a.id, a.address) for a in result.assignments}
    assert written == {("id", "bangnv3", "bangnv3"), ("address", "bangnv3", "bangnv3@sct.binhdinh.gov.vn")}
    text = (state_dir / "units" / "qlcn.toml").read_text(encoding="utf-8")
    assert text.startswith(before)  # everything before the new table is byte-for-byte the same
    assert text.endswith(
        '[[person]]\nid    = "bangnv3"\nname  = "Nguyễn Vân Bằng"\n'
        'address = "bangnv3@sct.binhdinh.gov.vn"\ntitle = "Chuyên viên"\n'
    )
    people = tomllib.loads(text)["person"]
    assert [p["address"].split("@")[0] for p in people[:2]] == ["bangnv", "bangnv2"]
    assert assign(state_dir).assignments == []  # stable: a second run writes nothing


def test_validate_names_the_missing_id_and_the_way_out(state_dir: Path) -> None:
    """validate refuses a person without an id, pointing at assign, and writes nothing."""
    path = state_dir / "units" / "vp.toml"
    path.write_bytes(path.read_bytes() + b'\r\n[[person]]\r\nname = "Phan Thanh B\xc3\xacnh"\r\n')
    result = CliRunner().invoke(cli, ["validate", "--lang", "en", "--state", str(state_dir)])
    assert result.exit_code == 1
    assert "vp.toml:9: person.id: missing required field 'id'" in result.output
    assert "mailstate assign" in result.output
