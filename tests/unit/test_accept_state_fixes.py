"""Acceptance of the desired state on a fresh agency: defects found by building inputs nobody had tested."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailstate.cli import cli
from mailstate.desired_state.assign import assign
from mailstate.desired_state.loader import load_state
from mailstate.desired_state.naming import unit_name_key
from mailstate.desired_state.validate import MISSING_PERSON_ID
from mailstate.errors import ValidationError

pytestmark = pytest.mark.usefixtures("english")  # asserts validation's English texts

ORG = """\
[organization]
name = "Sở Y tế tỉnh Sóc Trăng"
domain = "syt.soctrang.gov.vn"

[naming]
person = "{family}.{given}"
unit = "{unit_initials}"
"""
VP = """\
[unit]
id = "vp"
name = "Văn phòng Sở"
head = "thach.sophal"

[[person]]
id = "thach.sophal"
name = "Thạch Sô Phal"    # Khmer name
address = "thach.phal@syt.soctrang.gov.vn"
"""
KTV = """\
[unit]
id = "ktv"
name = "Phòng Kế toán"
parent = "vp"
"""


@pytest.fixture
def agency(tmp_path: Path) -> Path:
    """A small agency with a {family}.{given} rule, two units in two files."""
    (tmp_path / "units").mkdir()
    (tmp_path / "mailstate.toml").write_text(ORG, encoding="utf-8")
    (tmp_path / "units" / "vp.toml").write_text(VP, encoding="utf-8")
    (tmp_path / "units" / "ktv.toml").write_text(KTV, encoding="utf-8")
    return tmp_path


def digest(root: Path) -> dict[str, str]:
    """Checksum of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def problems(root: Path) -> list[str]:
    """The problems of ``root`` as printed (``file:line: field: message``)."""
    with pytest.raises(ValidationError) as info:
        load_state(root)
    return [str(p) for p in info.value.problems]


def test_person_with_pinned_address_and_no_id_gets_its_id(agency: Path) -> None:
    """A person written with an address but no id gets the address's local part as id (no crash)."""
    path = agency / "units" / "ktv.toml"
    path.write_text(KTV + '\n[[person]]\nname = "Trần Pin"\naddress = "tranpin@syt.soctrang.gov.vn"\n',
                    encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(cli, ["assign", "--lang", "en", "--state", str(agency)])
    assert res.exit_code == 0, res.output
    assert "units/ktv.toml:8: person tranpin: id = tranpin" in res.output
    assert path.read_text(encoding="utf-8").endswith(
        '[[person]]\nid   = "tranpin"\nname = "Trần Pin"\naddress = "tranpin@syt.soctrang.gov.vn"\n'
    )
    assert load_state(agency).people["tranpin"].address == "tranpin@syt.soctrang.gov.vn"
    before = digest(agency)
    res = runner.invoke(cli, ["assign", "--lang", "en", "--state", str(agency), "--check"])
    assert res.exit_code == 0 and digest(agency) == before


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Ban Quản lý dự án", "bquanlyduan"),  # Quản (lý) is no Quận
        ("Phòng Quản lý Công nghiệp", "pquanlycongnghiep"),
        ("Cục Quản lý thị trường", "cquanlythitruong"),
        ("Trường Đại học Cần Thơ", "tdaihoccantho"),  # Đại (học) is no Đài
        ("Đài Phát thanh và Truyền hình", "dphatthanhvatruyenhinh"),
        ("Ủy ban nhân dân Quận 1", "ubndq1"),
        ("Văn phòng Uỷ ban nhân dân tỉnh", "vpubndtinh"),  # the old tone placement
        ("So Tai chinh", "staichinh"),  # written without marks
    ],
)
def test_unit_name_kind_words_are_matched_with_their_marks(name: str, expected: str) -> None:
    """{unit_name} shortens only the words that really name a kind of unit, told apart by their marks."""
    assert unit_name_key(name) == expected


def test_syntax_error_is_not_followed_by_false_references(agency: Path) -> None:
    """A file that does not parse gives its syntax error (with its key) and no 'no person' noise elsewhere."""
    bad = VP + '\n[[person]]\nid = "mai"\nname = "Mai"\nleft_on = 2026-02-30\n'
    (agency / "units" / "vp.toml").write_text(bad, encoding="utf-8")
    (agency / "groups.toml").write_text('[[group]]\nid = "g"\nname = "G"\nmembers = ["mai", "unit:vp"]\n',
                                        encoding="utf-8")
    assert problems(agency) == [
        "units/vp.toml:14: left_on: TOML syntax error: Invalid date or datetime (column 11)"
    ]


def test_transposed_short_id_gets_a_suggestion(agency: Path) -> None:
    """A parent written 'pv' for 'vp' is reported with 'vp' as the closest id."""
    ktv = KTV.replace('parent = "vp"', 'parent = "pv"')
    (agency / "units" / "ktv.toml").write_text(ktv, encoding="utf-8")
    assert problems(agency) == ["units/ktv.toml:4: unit.parent: no unit 'pv'; did you mean 'vp'?"]


def test_password_written_into_password_env_is_refused_unechoed(agency: Path) -> None:
    """A password written where the variable's name belongs is refused, and the value is not printed."""
    secret = "Xk-9!pQ2 zz"
    (agency / "mailstate.toml").write_text(
        ORG + f'\n[providers.ldap]\nurl = "ldaps://ldap.example"\npassword_env = "{secret}"\n',
        encoding="utf-8",
    )
    before = digest(agency)
    for args in (["validate", "--lang", "en"], ["assign", "--lang", "en"],
                 ["assign", "--lang", "en", "--check"]):
        res = CliRunner().invoke(cli, [*args, "--state", str(agency)])
        assert res.exit_code == 1, res.output
        assert "mailstate.toml:11: providers.ldap.password_env: is not the name of an env" in res.output
        assert secret not in res.output
    assert digest(agency) == before


def test_assign_names_files_as_seen_from_the_current_directory(agency: Path) -> None:
    """assign reports a problem at the file's path from where it runs, as validate does."""
    ktv = KTV.replace('parent = "vp"', 'parent = "vpp"')
    (agency / "units" / "ktv.toml").write_text(ktv, encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(agency.parent)
    try:
        res = CliRunner().invoke(cli, ["assign", "--lang", "en", "--state", agency.name])
    finally:
        os.chdir(cwd)
    assert res.exit_code == 1
    shown = f"error: {agency.name}/units/ktv.toml:4: unit.parent: no unit 'vpp'; did you mean 'vp'?"
    assert shown in res.output


def test_newcomer_id_avoids_uids_owning_live_addresses(agency: Path) -> None:
    """A person written without an id never gets the uid of a live person (managed or not) as id."""
    ktv = KTV + '\n[[person]]\nname = "Nguyễn Văn Bằng"\n'
    (agency / "units" / "ktv.toml").write_text(ktv, encoding="utf-8")
    live = {"bang.old@syt.soctrang.gov.vn": "nguyen.bang",
            "x@syt.soctrang.gov.vn": "unmanaged person/nguyen.bang-2"}
    result = assign(agency, check=True, live=live)
    got = {(a.key, a.address) for a in result.assignments if a.kind == "person"}
    assert got == {("id", "nguyen.bang-3"), ("address", "nguyen.bang@syt.soctrang.gov.vn")}


def test_bom_and_crlf_survive_assign(agency: Path) -> None:
    """A file with a BOM and CRLF line ends keeps both, and a multi-line name without id gets id + address
    (written with line-ending backslashes: the name itself is one line, a line break in it is refused)."""
    path = agency / "units" / "ktv.toml"
    path.write_bytes(("\ufeff" + KTV + '\n[[person]]\nname = """\\\nTrần Văn \\\nAn"""').replace("\n", "\r\n")
                     .encode("utf-8"))
    res = CliRunner().invoke(cli, ["assign", "--lang", "en", "--state", str(agency)])
    assert res.exit_code == 0, res.output
    assert path.read_bytes().decode("utf-8") == (
        "\ufeff"
        + KTV.replace('"Phòng Kế toán"\n', '"Phòng Kế toán"\naddress = "pkt@syt.soctrang.gov.vn"\n')
        + '\n[[person]]\nid = "tran.an"\naddress = "tran.an@syt.soctrang.gov.vn"\n'
        + 'name = """\\\nTrần Văn \\\nAn"""'
    ).replace("\n", "\r\n")
    assert "units/ktv.toml:8: person tran.an: id = tran.an" in res.output
    assert "units/ktv.toml:9: person tran.an: address = tran.an@syt.soctrang.gov.vn" in res.output


def test_inline_table_fallback_keeps_crlf(agency: Path) -> None:
    """People written as inline tables in a CRLF file get their keys from tomlkit, with CRLF line ends."""
    path = agency / "units" / "more.toml"
    path.write_bytes(b'person = [\r\n  { id = "p1", name = "L\xc3\xbd Kha", unit = "ktv" },\r\n]\r\n')
    assign(agency)
    text = path.read_bytes().decode("utf-8")
    assert 'address = "ly.kha@syt.soctrang.gov.vn"' in text
    assert "\n" not in text.replace("\r\n", "")


def test_line_separator_in_a_comment_does_not_shift_the_insertion(agency: Path) -> None:
    """A U+2028 in a comment is no line end: the address still goes right after the name, at the line said."""
    path = agency / "units" / "ktv.toml"
    path.write_text(KTV + '\n# note\u2028more\n[[person]]\nid = "a1"\nname = "Lê Văn Tám"\ntitle = "x"\n',
                    encoding="utf-8")
    res = CliRunner().invoke(cli, ["assign", "--lang", "en", "--state", str(agency)])
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[9:12] == ['name = "Lê Văn Tám"', 'address = "le.tam@syt.soctrang.gov.vn"', 'title = "x"']
    assert "units/ktv.toml:11: person a1: address = le.tam@syt.soctrang.gov.vn" in res.output


@pytest.mark.parametrize(
    ("extra", "line", "field"),
    [
        ('\n[providers.ssh]\nkey_file = """-----BEGIN OPENSSH PRIVATE KEY-----\n{s}\n'
         '-----END OPENSSH PRIVATE KEY-----"""\n', 10, "providers.ssh.key_file"),
        ('\n[providers.ldap]\nurl = "ldaps://cn=admin:{s}@ldap.example"\n', 10, "providers.ldap.url"),
        ('\n[[person]]\nid = "x"\nname = "X"\nunit = "vp"\nmat_khau = "{s}"\n', 13, "person[0].mat_khau"),
    ],
)
def test_secret_under_any_key_is_refused_unechoed(agency: Path, extra: str, line: int, field: str) -> None:
    """A private key, a password in a URL or a 'mật khẩu' key is refused at its line, never shown."""
    secret = "b3JnYW5pemF0aW9u-Zz9"
    (agency / "mailstate.toml").write_text(ORG + extra.format(s=secret), encoding="utf-8")
    before = digest(agency)
    for args in (["validate", "--lang", "en"], ["assign", "--lang", "en"],
                 ["assign", "--lang", "en", "--check"]):
        res = CliRunner().invoke(cli, [*args, "--state", str(agency)])
        assert res.exit_code == 1, res.output
        assert f"mailstate.toml:{line}: {field}: " in res.output and "(the value is not shown)" in res.output
        assert secret not in res.output
    assert digest(agency) == before


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('\n[lifecycle]\nlock_after_leaving = "99999999 years"\n',
         "mailstate.toml:10: lifecycle.lock_after_leaving: '99999999 years' is longer than 100 years"),
        ('separator = "@"\n',
         "mailstate.toml:8: naming.separator: '@' must be \"\", \".\" or \"-\""),
    ],
)
def test_policy_values_out_of_range(agency: Path, extra: str, expected: str) -> None:
    """A duration past any date is an error at its line (was an internal ValueError); so is a separator
    that an address cannot hold (was silently dropped)."""
    (agency / "mailstate.toml").write_text(ORG + extra, encoding="utf-8")
    res = CliRunner().invoke(cli, ["validate", "--lang", "en", "--state", str(agency)])
    assert res.exit_code == 1 and "internal error" not in res.output
    assert expected in res.output


def test_file_not_in_utf8_is_reported_at_its_line(agency: Path) -> None:
    """A file saved in a legacy 8-bit encoding is reported at the line and column of the first bad byte."""
    (agency / "units" / "old.toml").write_bytes(b'[[person]]\nid = "x"\nname = "Nguy\xean X"\n')
    assert problems(agency)[0].startswith("units/old.toml:3: not UTF-8 text (byte 32, column 13)")


def test_schema_out_to_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    """`schema --out` into a folder that does not exist exits 1 with one line, not a traceback."""
    res = CliRunner().invoke(cli, ["schema", "--out", str(tmp_path / "no" / "schema.json")])
    assert res.exit_code == 1 and res.exception is None or isinstance(res.exception, SystemExit)
    assert "cannot write" in res.output and "No such file or directory" in res.output


def test_assign_errors_name_a_person_without_id_by_name(agency: Path) -> None:
    """A problem with a person written without an id names the person, never the stand-in id."""
    (agency / "units" / "two.toml").write_text(
        '[[unit]]\nid = "u1"\nname = "Phòng A"\nparent = "vp"\n'
        '[[unit]]\nid = "u2"\nname = "Phòng B"\nparent = "vp"\n'
        '\n[[person]]\nname = "Lê Văn Tám"\n', encoding="utf-8")
    res = CliRunner().invoke(cli, ["assign", "--lang", "en", "--state", str(agency)])
    assert res.exit_code == 1
    shown = "units/two.toml:10: person.unit: person 'Lê Văn Tám' (written without an id) has no unit"
    assert shown in res.output
    assert "zzzz" not in res.output


def test_validate_checks_the_rest_of_a_person_written_without_id(agency: Path) -> None:
    """validate reports the missing id and, at once, the other problems of that person, naming them."""
    (agency / "units" / "two.toml").write_text(
        '[[unit]]\nid = "u1"\nname = "Phòng A"\nparent = "vp"\n'
        '[[unit]]\nid = "u2"\nname = "Phòng B"\nparent = "vp"\n'
        '\n[[person]]\nname = "Lê Văn Tám"\n'
        '\n[[person]]\nname = "Lê Văn Tư"\nunit = "u9"\naddress = "tu@other.gov.vn"\n', encoding="utf-8")
    assert problems(agency) == [
        f"units/two.toml:10: person.id: {MISSING_PERSON_ID}",
        "units/two.toml:10: person.unit: person 'Lê Văn Tám' (written without an id) has no unit: set unit = "
        "\"<unit id>\" (it defaults to the file's [unit] only when the file has exactly one)",
        f"units/two.toml:13: person.id: {MISSING_PERSON_ID}",
        "units/two.toml:15: person.unit: no unit 'u9'; did you mean 'u1'?",
        "units/two.toml:16: person.address: 'tu@other.gov.vn' is outside the organisation's domain "
        "syt.soctrang.gov.vn",
    ]


def test_blank_name_is_refused(agency: Path) -> None:
    """A person, unit or group named "" or only spaces is an error at the name (addresses come from it)."""
    (agency / "units" / "blank.toml").write_text(
        '[[person]]\nid = "b1"\nname = "   "\nunit = "vp"\n\n[[group]]\nid = "g1"\nname = ""\nmembers = []\n',
        encoding="utf-8")
    assert problems(agency) == [
        "units/blank.toml:3: person.name: must not be empty: write the full name",
        "units/blank.toml:8: group.name: must not be empty: write the full name",
    ]


def test_empty_derivation_names_the_person_and_the_default_template(tmp_path: Path) -> None:
    """A name that gives no address under the default template names the person (never a stand-in id) and
    says the template is the default one (was '<unknown>:0')."""
    org = '[organization]\nname = "X"\ndomain = "x.gov.vn"\n'
    (tmp_path / "mailstate.toml").write_text(org, encoding="utf-8")
    (tmp_path / "u.toml").write_text('[unit]\nid = "q"\nname = "Phòng Q"\naddress = "q@x.gov.vn"\n\n'
                                     '[[person]]\nname = "!!!"\n', encoding="utf-8")
    res = CliRunner().invoke(cli, ["assign", "--lang", "en", "--state", str(tmp_path)])
    assert res.exit_code == 1
    assert ("u.toml:6: person.name: the template '{given}{initials}' ([naming].person, the default: no "
            "[naming] table) gives an empty address for person '!!!' (written without an id)") in res.output
    assert "zzzz" not in res.output


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ('head = "Thach.Sophal"', "units/vp.toml:4: unit.head: 'Thach.Sophal' is not a valid id"),
        ('head = "thạch.sophal"', "units/vp.toml:4: unit.head: 'thạch.sophal' is not a valid id"),
        ('head = "thach.sophal"\n[[shared_folder]]\nmailbox = "Unit: KTV"\npath = "A"\npurpose = "p"',
         "units/vp.toml:6: shared_folder.mailbox: 'Unit: KTV' is not a valid reference"),
    ],
)
def test_misspelt_id_gets_its_plain_spelling_suggested(agency: Path, written: str, expected: str) -> None:
    """An id or reference in capitals, with marks or spaces is refused with its plain spelling suggested."""
    (agency / "units" / "vp.toml").write_text(VP.replace('head = "thach.sophal"', written), encoding="utf-8")
    (got,) = problems(agency)
    assert got.startswith(expected)
    assert got.endswith("; did you mean '" + ("unit:ktv" if "KTV" in written else "thach.sophal") + "'?")


def test_assign_many_people_in_one_file_is_linear(agency: Path) -> None:
    """3,000 people without id or address in one file: every reported line holds what it says, in a few
    seconds of CPU (finding each line again by scanning the file was quadratic: 10,000 people took 87 s)."""
    import time

    people = "".join(f'\n[[person]]\nname = "Lê Văn {chr(0x61 + i % 26)}{i}"\n' for i in range(3000))
    path = agency / "units" / "ktv.toml"
    path.write_text(KTV + people, encoding="utf-8")
    start = time.process_time()
    result = assign(agency)
    assert time.process_time() - start < 4.0
    lines = path.read_text(encoding="utf-8").split("\n")
    assert len(result.assignments) == 6002  # and the two units
    for a in result.assignments:
        if a.file == "units/ktv.toml":
            assert lines[a.line - 1].startswith(a.key) and f'"{a.address}"' in lines[a.line - 1], a
