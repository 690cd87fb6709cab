"""Validation: one test per class of error, each asserting file, line, field and message."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailstate.cli import cli
from mailstate.desired_state.loader import load_state
from mailstate.errors import Problem, ValidationError

pytestmark = pytest.mark.usefixtures("english")  # asserts validation's English texts

WriteState = Callable[[dict[str, str]], Path]

UNIT = """\
[unit]
id = "qlcn"
name = "Phòng Quản lý Công nghiệp"
head = "bangnv"
delegates = ["thuytt"]

[[person]]
id = "bangnv"
name = "Nguyễn Văn Bằng"
address = "bangnv@sct.binhdinh.gov.vn"

[[person]]
id = "thuytt"
name = "Trần Thị Thủy"
"""
# UNIT has 14 lines; text appended to it starts on line 15 (after a blank line: 16).


def problems_of(root: Path) -> list[Problem]:
    """The problems load_state reports for ``root`` (fails the test if it loads)."""
    with pytest.raises(ValidationError) as info:
        load_state(root)
    return info.value.problems


def one(root: Path) -> Problem:
    """The single problem reported for ``root``."""
    found = problems_of(root)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def with_unit(write_state: WriteState, org: str, extra: str = "", **files: str) -> Path:
    return write_state({"mailstate.toml": org, "units/qlcn.toml": UNIT + "\n" + extra, **files})


def test_good_state_loads(write_state: WriteState, org: str) -> None:
    """The base state used by the other tests is valid."""
    state = load_state(with_unit(write_state, org))
    assert state.summary() == "1 unit, 2 people, 0 groups, 0 shared folders, 0 access grants"


def test_toml_syntax_error_names_its_line(write_state: WriteState, org: str) -> None:
    """A TOML syntax error is reported with its file and line."""
    p = one(with_unit(write_state, org, '[[person]]\nid = "x\n'))
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 17, "id")  # the key written on that line
    assert p.message.startswith("TOML syntax error")


def test_unknown_field_suggests_the_closest(write_state: WriteState, org: str) -> None:
    """An unknown key is named with the closest valid field."""
    p = one(with_unit(write_state, org, '[[person]]\nid = "anhnv"\nname = "A"\nnmae = "Nguyễn Văn Anh"\n'))
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 19, "person.nmae")
    assert p.message.startswith("unknown field 'nmae'; did you mean 'name'?")


def test_unknown_table_suggests_the_closest(write_state: WriteState, org: str) -> None:
    """An unknown top-level table is named with the closest table name."""
    p = one(with_unit(write_state, org, '[[persons]]\nid = "anhnv"\n'))
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 16, "persons")
    assert p.message.startswith("unknown table 'persons'; did you mean 'person'?")


def test_missing_required_field(write_state: WriteState, org: str) -> None:
    """A person without a name is reported at its [[person]] line."""
    p = one(with_unit(write_state, org, '[[person]]\nid = "anhnv"\n'))
    assert (p.file, p.line, p.field, p.message) == (
        "units/qlcn.toml",
        16,
        "person.name",
        "missing required field 'name'",
    )


def test_literal_secret_is_refused_without_its_value(write_state: WriteState, org: str) -> None:
    """A password written in TOML is refused, and the value appears nowhere in the error or CLI output."""
    secret = "Hunter2-S3cret!"
    root = write_state(
        {
            "mailstate.toml": org + f'\n[providers.ldap]\nurl = "ldaps://x"\nbind_password = "{secret}"\n',
            "units/qlcn.toml": UNIT + f'\n[[person]]\nid = "anhnv"\nname = "A"\ntoken = "{secret}"\n',
        }
    )
    with pytest.raises(ValidationError) as info:
        load_state(root)
    found = info.value.problems
    assert [(p.file, p.line, p.field) for p in found] == [
        ("mailstate.toml", 7, "providers.ldap.bind_password"),
        ("units/qlcn.toml", 19, "person[2].token"),
    ]
    assert all(
        p.message.startswith("secrets never in TOML: use password_env or password_file") for p in found
    )
    assert secret not in str(info.value)
    result = CliRunner().invoke(cli, ["validate", "--lang", "en", "--state", str(root)])
    assert result.exit_code == 1
    assert secret not in result.output and secret not in result.stderr


def test_provider_values_are_never_echoed(write_state: WriteState, org: str) -> None:
    """A wrong value in a providers table is reported without echoing it."""
    root = write_state({"mailstate.toml": org + '\n[providers.imap]\ntimeout = "s3cr3t-ish"\n'})
    p = one(root)
    assert (p.file, p.line, p.field) == ("mailstate.toml", 6, "providers.imap.timeout")
    assert "s3cr3t-ish" not in p.message


def test_bad_id_syntax(write_state: WriteState, org: str) -> None:
    """An id that is not a safe LDAP uid is refused, saying what an id may hold."""
    p = one(with_unit(write_state, org, '[[person]]\nid = "Bằng NV"\nname = "B"\n'))
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 17, "person.id")
    assert p.message.startswith("'Bằng NV' is not a valid id: an id is lower-case ASCII")


def test_duplicate_id_across_files_names_both_places(write_state: WriteState, org: str) -> None:
    """The same person id in two files is reported at the second, naming the first."""
    root = with_unit(
        write_state, org, **{"units/vp.toml": '[[person]]\nid = "bangnv"\nname = "B"\nunit = "qlcn"\n'}
    )
    p = one(root)
    assert (p.file, p.line, p.field) == ("units/vp.toml", 2, "person.id")
    assert p.message == "duplicate person id 'bangnv': also at units/qlcn.toml:7"


def test_id_shared_by_a_unit_and_a_person(write_state: WriteState, org: str) -> None:
    """A group id equal to a person id is refused: ids are unique across people, units and groups."""
    p = one(with_unit(write_state, org, '[[group]]\nid = "thuytt"\nname = "G"\n'))
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 17, "group.id")
    assert p.message.startswith(
        "id 'thuytt' is already used by the person at units/qlcn.toml:12: ids are unique across"
    )


def test_unresolved_reference_suggests_the_closest_id(write_state: WriteState, org: str) -> None:
    """A group member that does not exist is reported with the closest person id."""
    p = one(with_unit(write_state, org, '[[group]]\nid = "g"\nname = "G"\nmembers = ["bangvn"]\n'))
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 19, "group.members")
    assert p.message == "no person 'bangvn'; did you mean 'bangnv'?"


def test_bare_unit_id_suggests_the_unit_prefix(write_state: WriteState, org: str) -> None:
    """A bare id that names a unit (a person reference) suggests `unit:<id>`."""
    extra = '[[shared_folder]]\nmailbox = "qlcn"\npath = "Văn bản"\npurpose = "P"\n'
    p = one(with_unit(write_state, org, extra))
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 17, "shared_folder.mailbox")
    assert p.message == "no person 'qlcn' ('qlcn' is a unit); did you mean 'unit:qlcn'?"


def test_group_cannot_hold_a_mailbox(write_state: WriteState, org: str) -> None:
    """An access grant on a group's mailbox is refused: a group has no mailbox."""
    extra = (
        '[[group]]\nid = "g"\nname = "G"\n\n[[access_grant]]\nmailbox = "group:g"\nto = "bangnv"\n'
        'until = 2026-12-31\nreason = "R"\n'
    )
    p = one(with_unit(write_state, org, extra))
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 21, "access_grant.mailbox")
    assert p.message.startswith("'group:g' is a group, which is not allowed here")


def test_unknown_unit_head_and_parent(write_state: WriteState, org: str) -> None:
    """A unit whose parent and head do not exist gets one problem for each, with suggestions."""
    extra = '[[unit]]\nid = "vp"\nname = "VP"\nparent = "qlc"\nhead = "thuyt"\n'
    root = write_state({"mailstate.toml": org, "units/qlcn.toml": UNIT, "units/vp.toml": extra})
    assert [(p.file, p.line, p.field, p.message) for p in problems_of(root)] == [
        ("units/vp.toml", 4, "unit.parent", "no unit 'qlc'; did you mean 'qlcn'?"),
        ("units/vp.toml", 5, "unit.head", "no person 'thuyt'; did you mean 'thuytt'?"),
    ]


def test_person_without_a_unit(write_state: WriteState, org: str) -> None:
    """A person in a file without exactly one [unit] and without `unit` is refused."""
    root = with_unit(write_state, org, **{"people.toml": '[[person]]\nid = "anhnv"\nname = "A"\n'})
    p = one(root)
    assert (p.file, p.line, p.field) == ("people.toml", 2, "person.unit")
    assert p.message.startswith("person 'anhnv' has no unit")


def test_unit_tree_cycle_is_named(write_state: WriteState, org: str) -> None:
    """Units whose parents form a loop are reported with the loop spelled out."""
    extra = '[[unit]]\nid = "a"\nname = "A"\nparent = "b"\n\n[[unit]]\nid = "b"\nname = "B"\nparent = "a"\n'
    root = with_unit(write_state, org, **{"tree.toml": extra})
    p = one(root)
    assert (p.file, p.line, p.field, p.message) == (
        "tree.toml",
        4,
        "unit.parent",
        "the unit tree has a cycle: a → b → a",
    )


def test_group_nesting_cycle_is_named(write_state: WriteState, org: str) -> None:
    """Groups that contain each other are reported once, naming the cycle."""
    extra = (
        '[[group]]\nid = "g1"\nname = "G1"\nmembers = ["group:g2"]\n\n'
        '[[group]]\nid = "g2"\nname = "G2"\nmembers = ["bangnv", "group:g1"]\n'
    )
    p = one(with_unit(write_state, org, **{"groups.toml": extra}))
    assert (p.file, p.line, p.field, p.message) == (
        "groups.toml",
        4,
        "group.members",
        "groups nest in a cycle: g1 → g2 → g1",
    )


def test_invalid_date(write_state: WriteState, org: str) -> None:
    """A date that does not exist is reported at its key."""
    p = one(with_unit(write_state, org, '[[person]]\nid = "anhnv"\nname = "A"\nleft_on = "2026-02-30"\n'))
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 19, "person.left_on")
    assert p.message == "not a valid date: write a TOML date such as 2026-12-31 (got \"2026-02-30\")"


def test_invalid_duration(write_state: WriteState, org: str) -> None:
    """A lifecycle duration that cannot be read is reported with the accepted forms."""
    p = one(write_state({"mailstate.toml": org + '\n[lifecycle]\nlock_after_leaving = "3 monts"\n'}))
    assert (p.file, p.line, p.field) == ("mailstate.toml", 6, "lifecycle.lock_after_leaving")
    assert p.message == '\'3 monts\' is not a duration such as "90 days", "3 months" or "1 year"'


def test_lifecycle_durations_in_order(write_state: WriteState, org: str) -> None:
    """Removing before locking (remove_after shorter than lock_after) is refused."""
    lc = '\n[lifecycle]\nlock_after_inactivity = "6 months"\nremove_after_inactivity = "90 days"\n'
    p = one(write_state({"mailstate.toml": org + lc}))
    assert (p.file, p.line, p.field) == ("mailstate.toml", 7, "lifecycle.remove_after_inactivity")
    assert p.message.startswith(
        "remove_after_inactivity (90 days) is shorter than lock_after_inactivity (6 months)"
    )


def test_address_outside_the_domain(write_state: WriteState, org: str) -> None:
    """A person's address outside the organisation's domain is refused, citing the rule."""
    p = one(
        with_unit(write_state, org, '[[person]]\nid = "anhnv"\nname = "A"\naddress = "anhnv@gmail.com"\n')
    )
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 19, "person.address")
    assert p.message == (
        "'anhnv@gmail.com' is outside the organisation's domain sct.binhdinh.gov.vn"
    )


def test_backup_email_must_be_an_address(write_state: WriteState, org: str) -> None:
    """A backup_email that is not an e-mail address is refused (one outside the domain is fine)."""
    extra = (
        '[[person]]\nid = "anhnv"\nname = "A"\nbackup_email = "anh at gmail"\n\n'
        '[[person]]\nid = "binhnv"\nname = "B"\nbackup_email = "binh.nv@gmail.com"\n'
    )
    p = one(with_unit(write_state, org, extra))
    assert (p.file, p.line, p.field, p.message) == (
        "units/qlcn.toml",
        19,
        "person.backup_email",
        "'anh at gmail' is not a valid e-mail address",
    )


def test_duplicate_address_across_people_groups_and_old_addresses(write_state: WriteState, org: str) -> None:
    """An address already used (by a person, or as an old address) is refused, naming the first owner."""
    extra = (
        '[[group]]\nid = "g"\nname = "G"\naddress = "bangnv@sct.binhdinh.gov.vn"\n\n'
        '[[person]]\nid = "anhnv"\nname = "A"\nold_addresses = ["bangnv@sct.binhdinh.gov.vn"]\n'
    )
    found = problems_of(with_unit(write_state, org, extra))
    assert [(p.file, p.line, p.field, p.message) for p in found] == [
        (
            "units/qlcn.toml",
            19,
            "group.address",
            "address 'bangnv@sct.binhdinh.gov.vn' is already used by person 'bangnv' at units/qlcn.toml:7",
        ),
        (
            "units/qlcn.toml",
            24,
            "person.old_addresses",
            "address 'bangnv@sct.binhdinh.gov.vn' is already used by person 'bangnv' at units/qlcn.toml:7",
        ),
    ]


def test_grant_rights_outside_the_defined_set(write_state: WriteState, org: str) -> None:
    """An access grant with rights other than read, write or full is refused."""
    extra = (
        '[[access_grant]]\nmailbox = "bangnv"\nto = "thuytt"\nrights = "rw"\n'
        'until = 2026-12-31\nreason = "R"\n'
    )
    p = one(with_unit(write_state, org, extra))
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 19, "access_grant.rights")
    assert p.message == "must be one of 'read', 'write' or 'full' (got \"rw\")"


def test_password_policy_out_of_range(write_state: WriteState, org: str) -> None:
    """A minimum password length under 8 is refused, naming the password rule."""
    p = one(write_state({"mailstate.toml": org + "\n[password]\nmin_length = 6\n"}))
    assert (p.file, p.line, p.field, p.message) == (
        "mailstate.toml",
        6,
        "password.min_length",
        "must be at least 8 (got 6) (password.policy)",
    )


def test_delegate_of_another_unit(write_state: WriteState, org: str) -> None:
    """A delegate who is not in the unit (nor a sub-unit) is refused."""
    vp = '[unit]\nid = "vp"\nname = "VP"\ndelegates = ["bangnv"]\n'
    p = one(with_unit(write_state, org, **{"units/vp.toml": vp}))
    assert (p.file, p.line, p.field) == ("units/vp.toml", 4, "unit.delegates")
    assert p.message.startswith("'bangnv' is in unit 'qlcn', so cannot be a delegate of 'vp'")
    assert p.message.endswith("delegated to people of the unit")


def test_head_in_a_sub_unit_is_accepted(write_state: WriteState, org: str) -> None:
    """The head of a unit may sit in one of its sub-units (the director of the department)."""
    top = '[unit]\nid = "sct"\nname = "Sở"\nhead = "bangnv"\n'
    unit = UNIT.replace('name = "Phòng Quản lý Công nghiệp"', 'name = "P"\nparent = "sct"')
    state = load_state(write_state({"mailstate.toml": org + "\n" + top, "units/qlcn.toml": unit}))
    assert state.units["sct"].head == "bangnv"


def test_missing_organization_points_at_mailstate_toml(write_state: WriteState) -> None:
    """With no [organization] anywhere, the problem points at mailstate.toml."""
    p = one(write_state({"units/qlcn.toml": UNIT}))
    assert (p.file, p.line, p.field) == ("mailstate.toml", 0, "organization")
    assert p.message.startswith("no [organization] table in any file")


def test_two_organizations(write_state: WriteState, org: str) -> None:
    """A second [organization] is refused, naming where the first is."""
    p = one(write_state({"mailstate.toml": org, "other.toml": "# again\n" + org}))
    assert (p.file, p.line, p.field) == ("other.toml", 2, "organization")
    assert p.message.startswith("[organization] is defined twice: also at mailstate.toml:1")


def test_dissolved_unit_with_people_still_in_it(write_state: WriteState, org: str) -> None:
    """A unit dissolved while people in it have not left is refused, naming them."""
    unit = UNIT.replace('delegates = ["thuytt"]', 'delegates = ["thuytt"]\ndissolved_on = 2027-01-01')
    unit += "left_on = 2026-12-01\n"
    p = one(write_state({"mailstate.toml": org, "units/qlcn.toml": unit}))
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 6, "unit.dissolved_on")
    assert p.message.startswith("unit 'qlcn' is dissolved on 2027-01-01 but 1 person is still in it: bangnv")


def test_array_table_written_as_a_single_table(write_state: WriteState, org: str) -> None:
    """[person] (instead of [[person]]) is refused with the right spelling."""
    p = one(write_state({"mailstate.toml": org + '\n[person]\nid = "a"\nname = "A"\n'}))
    assert (p.file, p.line, p.field) == ("mailstate.toml", 5, "person")
    assert p.message.startswith("write [[person]] (an array of tables)")


def test_every_problem_is_reported_at_once(write_state: WriteState, org: str) -> None:
    """Problems in several files and of several kinds are all reported together, sorted by file and line."""
    root = with_unit(
        write_state,
        org,
        '[[person]]\nid = "x"\nname = "X"\naddress = "x@y.vn"\n',
        **{"b.toml": "[naming]\nperson = 5\n", "c.toml": "oops ="},
    )
    found = problems_of(root)
    assert [(p.file, p.field) for p in found] == [
        ("b.toml", "naming.person"),
        ("c.toml", "oops"),
        ("units/qlcn.toml", "person.address"),
    ]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing", "state directory not found"),
        ("empty", "no *.toml file here"),
        ("latin1", "not UTF-8 text"),
    ],
)
def test_unusable_state_dir(tmp_path: Path, setup: str, expected: str) -> None:
    """A missing dir, a dir without TOML, or a non-UTF-8 file gives one clear problem."""
    root = tmp_path / "state"
    if setup != "missing":
        root.mkdir()
    if setup == "latin1":
        (root / "mailstate.toml").write_bytes(
            "name = 'Sở'".encode("latin-1", "replace").replace(b"?", b"\xe0")
        )
    found = problems_of(root)
    assert len(found) == 1 and expected in found[0].message


def test_cli_validate_error_exits_1_with_problems_on_stderr(write_state: WriteState, org: str) -> None:
    """`validate` on a bad state exits 1, prints FILE:LINE: field: message on stderr, nothing on stdout."""
    root = with_unit(write_state, org, '[[person]]\nid = "anhnv"\nnmae = "A"\n')
    result = CliRunner().invoke(cli, ["validate", "--lang", "en", "--state", str(root)])
    assert result.exit_code == 1
    assert result.stdout == ""
    where = (root / "units/qlcn.toml").as_posix()
    assert result.stderr.splitlines()[0].startswith(f"{where}:16: person.name: missing required field")
    assert f"{where}:18: person.nmae: unknown field 'nmae'; did you mean 'name'?" in result.stderr
    assert result.stderr.splitlines()[-1] == "2 problems found; nothing was changed"
    assert "Traceback" not in result.output


def test_cli_validate_missing_dir_exits_1_without_traceback(tmp_path: Path) -> None:
    """`mailstate validate` on a missing directory exits 1 with one line, not a traceback."""
    result = CliRunner().invoke(cli, ["validate", "--lang", "en", "--state", str(tmp_path / "nope")])
    assert result.exit_code == 1 and result.stdout == ""
    assert "state directory not found" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_validate_good_state_prints_one_line(write_state: WriteState, org: str) -> None:
    """`mailstate validate` on a good state prints exactly one summary line and exits 0."""
    root = with_unit(write_state, org)
    result = CliRunner().invoke(cli, ["validate", "--lang", "en", "--state", str(root)])
    assert result.exit_code == 0
    assert result.stdout == (
        "ok: 1 unit, 2 people, 0 groups, 0 shared folders, 0 access grants (sct.binhdinh.gov.vn)\n"
    )


def test_cli_schema_is_json_schema_for_editors() -> None:
    """`mailstate schema` prints a JSON Schema with $schema, $id and the state tables."""
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert "$id" in schema
    assert {"organization", "unit", "person", "group", "shared_folder", "access_grant"} <= set(
        schema["properties"]
    )
    assert schema["additionalProperties"] is False
    text = json.dumps(schema)
    assert '"null"' not in text, "TOML has no null"
    refs = {m for m in text.split('"') if m.startswith("#/")}
    assert refs and all(r.removeprefix("#/definitions/") in schema["definitions"] for r in refs)


def test_an_invalid_person_does_not_cascade_into_reference_errors(write_state: WriteState, org: str) -> None:
    """When a person's table is invalid, the unit naming them as head gets no second, misleading problem."""
    unit = UNIT.replace('name = "Nguyễn Văn Bằng"', 'name = "Nguyễn Văn Bằng"\njoined_on = "yesterday"')
    p = one(write_state({"mailstate.toml": org, "units/qlcn.toml": unit}))
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 10, "person.joined_on")


def test_reference_in_a_multi_line_array_points_at_its_own_line(write_state: WriteState, org: str) -> None:
    """A bad member of a group written one per line is reported at that member's line, with its index."""
    extra = '[[group]]\nid = "g"\nname = "G"\nmembers = [\n    "bangnv",  # head\n    "thuyt",\n]\n'
    p = one(with_unit(write_state, org, extra))
    assert (p.file, p.line, p.field, p.message) == (
        "units/qlcn.toml", 21, "group.members", "no person 'thuyt'; did you mean 'thuytt'?")


def test_malformed_element_of_a_multi_line_array_points_at_it(write_state: WriteState, org: str) -> None:
    """A malformed reference in a multi-line array is reported at its own line, its index in the field."""
    extra = '[[group]]\nid = "g"\nname = "G"\nmembers = [\n    "bangnv",\n    "Unit:qlcn",\n]\n'
    p = one(with_unit(write_state, org, extra))
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 21, "group.members[1]")
    assert p.message.startswith("'Unit:qlcn' is not a valid reference")


def test_grant_to_the_mailbox_owner(write_state: WriteState, org: str) -> None:
    """An access grant to the owner of the mailbox itself is refused."""
    extra = '[[access_grant]]\nmailbox = "bangnv"\nto = "bangnv"\nuntil = 2026-12-31\nreason = "R"\n'
    p = one(with_unit(write_state, org, extra))
    assert (p.file, p.line, p.field) == ("units/qlcn.toml", 18, "access_grant.to")
    assert p.message.startswith("'bangnv' already owns the mailbox")


def test_wrong_type_says_what_is_expected(write_state: WriteState, org: str) -> None:
    """A number where a string is expected is reported in plain words, with the value as TOML writes it."""
    p = one(with_unit(write_state, org, '[[person]]\nid = "anhnv"\nname = "A"\nphone = 2563822123\n'))
    assert (p.file, p.line, p.field, p.message) == (
        "units/qlcn.toml", 19, "person.phone", "must be a string (in double quotes) (got 2563822123)")


def test_cli_validate_github_annotations(write_state: WriteState, org: str) -> None:
    """With --format github, each problem is also a GitHub Actions ::error annotation (escaped) on stdout."""
    root = with_unit(write_state, org, '[[person]]\nid = "anhnv"\nname = "A"\naddress = "anhnv@gmail.com"\n')
    result = CliRunner().invoke(cli, ["validate", "--lang", "en", "--state", str(root), "--format", "github"])
    assert result.exit_code == 1
    file = (root / "units/qlcn.toml").as_posix().replace(":", "%3A").replace(",", "%2C")
    assert result.stdout == (
        f"::error file={file},line=19,title=person.address::'anhnv@gmail.com' is outside the organisation's "
        "domain sct.binhdinh.gov.vn\n"
    )


def test_generated_agency_is_valid(tmp_path: Path) -> None:
    """bench/gen_agency.py writes a state that validates, with exactly the number of people asked for."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from gen_agency import generate

    generate(tmp_path, 500, seed=2)
    state = load_state(tmp_path)
    assert len(state.people) == 500 and len(state.units) == 13 and state.groups and state.shared_folders


def test_naming_template_with_an_unknown_placeholder(write_state: WriteState, org: str) -> None:
    """An address template with an unknown placeholder is reported at its line."""
    p = one(write_state({"mailstate.toml": org + '\n[naming]\nperson = "{given}{initial}"\n'}))
    assert (p.file, p.line, p.field) == ("mailstate.toml", 6, "naming.person")
    assert "unknown placeholder {initial}" in p.message


def test_syntax_error_hides_the_missing_organization(write_state: WriteState, org: str) -> None:
    """When the file holding [organization] does not parse, only its syntax error is reported."""
    p = one(write_state({"mailstate.toml": org + "broken = [\n", "units/qlcn.toml": UNIT}))
    assert (p.file, p.field) == ("mailstate.toml", "")
    assert p.message.startswith("TOML syntax error")


def test_unit_that_is_its_own_parent(write_state: WriteState, org: str) -> None:
    """A unit naming itself as parent gets one problem (not also a one-unit cycle)."""
    p = one(with_unit(write_state, org, **{"vp.toml": '[unit]\nid = "vp"\nname = "VP"\nparent = "vp"\n'}))
    assert (p.file, p.line, p.field) == ("vp.toml", 4, "unit.parent")
    assert p.message == "unit 'vp' cannot be its own parent"


def test_every_example_file_fits_the_editor_schema_model(tmp_path: Path) -> None:
    """Each TOML file of the examples and of a generated agency fits StateFile, the schema's model."""
    import sys
    import tomllib

    from mailstate.desired_state.schema import StateFile

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from gen_agency import generate

    generate(tmp_path, 100, seed=4)
    examples = Path(__file__).resolve().parents[2] / "examples"
    files = sorted(examples.rglob("*.toml")) + sorted(tmp_path.rglob("*.toml"))
    assert len(files) > 10
    for path in files:
        StateFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))


def test_cli_validate_paths_are_relative_to_the_working_dir(
    write_state: WriteState, org: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run in the state dir itself, problems name files relative to it (as CI in the repository sees them)."""
    root = with_unit(write_state, org, '[[person]]\nid = "anhnv"\nname = "A"\naddress = "x@y.vn"\n')
    monkeypatch.chdir(root)
    monkeypatch.delenv("MAILSTATE_STATE", raising=False)
    result = CliRunner().invoke(cli, ["validate", "--lang", "en"])
    assert result.exit_code == 1
    assert result.stderr.startswith("units/qlcn.toml:19: person.address: 'x@y.vn' is outside")


def test_a_backup_mailbox_inside_the_agency_is_refused(write_state: WriteState, org: str) -> None:
    """registration.backup_mailbox: the backup mailbox is outside the agency (a mailbox that still works
    when the agency's does not), so one in the organisation's own domain is refused."""
    extra = '[[person]]\nid = "anhnv"\nname = "A"\nbackup_email = "anh.backup@sct.binhdinh.gov.vn"\n'
    p = one(with_unit(write_state, org, extra))
    assert (p.file, p.line, p.field, p.message) == (
        "units/qlcn.toml", 19, "person.backup_email",
        "the backup mailbox is outside the agency, not in sct.binhdinh.gov.vn",
    )
