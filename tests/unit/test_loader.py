"""The loader: every *.toml read, merged, with the file and line of every table and key."""

from __future__ import annotations

import sys
import tomllib
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailstate.desired_state.documents import Document, KeyPath, load_documents, scan_positions
from mailstate.desired_state.loader import load_state

WriteState = Callable[[dict[str, str]], Path]

UNIT_FILE = """\
# Phòng Quản lý Công nghiệp
[unit]
id        = "qlcn"          # stable key
name      = "Phòng Quản lý Công nghiệp"
delegates = [
    "thuytt",   # a comment inside a multi-line array
]

[[person]]
id   = "bangnv"
name = "Nguyễn Văn Bằng"

# between two people

[[person]]    # a comment after the header
id    = "thuytt"
name  = "Trần Thị Thủy"
title = \"\"\"\\
[[person]] \\
id = "not-a-person"\\
\"\"\"
mobile = "0905 123 456"

[[shared_folder]]
mailbox = "unit:qlcn"
path    = "Văn bản đến/2026"
purpose = \"\"\"Văn bản đến \\
[unit]\\
\"\"\"
read    = [ "bangnv", "thuytt" ] # a comment with [brackets] and "quotes
write   = ["bangnv"]
"""


def test_positions_of_tables_and_keys_across_files(write_state: WriteState, org: str) -> None:
    """Each object records its file (relative to the state dir) and the line of its table and of each key
    (multi-line strings whose lines look like tables are skipped; their values are one line: a line break
    is refused in text)."""
    root = write_state({"mailstate.toml": org, "units/qlcn.toml": UNIT_FILE})
    state = load_state(root)
    assert state.organization.source.file == "mailstate.toml"
    assert state.organization.source.line == 1
    assert state.organization.source.line_of("domain") == 3
    unit = state.units["qlcn"]
    assert (unit.source.file, unit.source.line) == ("units/qlcn.toml", 2)
    assert unit.source.line_of("delegates") == 5
    bang, thuy = state.people["bangnv"], state.people["thuytt"]
    assert (bang.source.file, bang.source.line, bang.source.line_of("name")) == ("units/qlcn.toml", 9, 11)
    assert (thuy.source.line, thuy.source.line_of("title")) == (15, 18)
    assert thuy.source.line_of("mobile") == 22, "lines inside a multi-line string are not keys"
    folder = state.shared_folders[0]
    assert (folder.source.line, folder.source.line_of("read"), folder.source.line_of("write")) == (24, 30, 31)


def test_person_unit_defaults_to_the_files_single_unit(write_state: WriteState, org: str) -> None:
    """A person without `unit` belongs to the [unit] of its file."""
    root = write_state({"mailstate.toml": org, "units/qlcn.toml": UNIT_FILE})
    state = load_state(root)
    assert state.people["bangnv"].unit == "qlcn"
    assert state.people["thuytt"].unit == "qlcn"


def test_any_file_may_hold_any_table_and_unit_may_be_an_array(write_state: WriteState, org: str) -> None:
    """Tables spread over files merge; [[unit]] works like [unit]; files are read in sorted order."""
    root = write_state({
        "a/units.toml": """\
            [[unit]]
            id = "sct"
            name = "Sở"

            [[unit]]
            id = "vp"
            name = "Văn phòng"
            parent = "sct"
            """,
        "mailstate.toml": org,
        "z.toml": """\
            [[person]]
            id = "anhnv"
            name = "Nguyễn Văn Anh"
            unit = "vp"
            """,
    })
    state = load_state(root)
    assert list(state.units) == ["sct", "vp"]
    assert state.units["vp"].source.line == 5
    assert state.people["anhnv"].source.file == "z.toml"
    files = [p.relative_to(root).as_posix() for p in state.files]
    assert files == ["a/units.toml", "mailstate.toml", "z.toml"]


def test_hidden_files_and_folders_are_skipped(write_state: WriteState, org: str) -> None:
    """Files under a hidden folder, and hidden files, are not read (a broken one there is ignored)."""
    root = write_state({
        "mailstate.toml": org,
        ".git/config.toml": "this is not toml [",
        "units/.draft.toml": "[organization]\nname = 'x'\ndomain = 'x.vn'\n",
    })
    state = load_state(root)
    assert [p.name for p in state.files] == ["mailstate.toml"]


def test_text_is_stored_nfc(write_state: WriteState, org: str) -> None:
    """A Vietnamese name written decomposed (NFD) is stored composed (NFC)."""
    nfd = unicodedata.normalize("NFD", "Nguyễn Văn Bằng")
    person = f'[unit]\nid = "vp"\nname = "VP"\n[[person]]\nid = "bangnv"\nname = "{nfd}"\n'
    root = write_state({"mailstate.toml": org + person})
    name = load_state(root).people["bangnv"].name
    assert name == unicodedata.normalize("NFC", "Nguyễn Văn Bằng") and name != nfd


def test_load_documents_gives_data_and_positions_per_file(write_state: WriteState, org: str) -> None:
    """load_documents returns each file's parsed data and the line of each table and key, for `assign`."""
    root = write_state({"mailstate.toml": org, "units/qlcn.toml": UNIT_FILE})
    docs = load_documents(root)
    assert [d.rel for d in docs] == ["mailstate.toml", "units/qlcn.toml"]
    doc = docs[1]
    assert doc.data["person"][1]["id"] == "thuytt"
    assert doc.positions[("person", 1)].line == 15
    assert doc.line_of(("person", 1, "name")) == 17
    assert doc.line_of(("person", 1, "no_such_key")) == 15
    assert doc.source(("unit",)).line_of("name") == 4


def test_scanner_dotted_quoted_keys_subtables_and_inline_tables() -> None:
    """The scanner follows dotted and quoted keys, sub-tables of array elements, and inline tables."""
    text = """\
[providers.ldap]
url = "ldaps://x"
[providers]
ssh.host = "h"
"imap" = { url = "imaps://x", timeout = 5 }
[[person]]
id = "a"
[person.extra]
"quoted key" = 1
[[person]]
id = "b"
[ "quota" . overrides ]
'unit:qlcn' = "5 GiB"
"""
    pos = scan_positions(text)
    assert pos[("providers", "ldap")].line == 1 and pos[("providers", "ldap")].fields == {"url": 2}
    assert pos[("providers",)].line == 3
    assert pos[("providers", "ssh")].fields == {"host": 4}
    assert pos[("providers",)].fields["imap"] == 5 and pos[("providers", "imap")].line == 5
    assert pos[("person", 0)].line == 6 and pos[("person", 0, "extra")].fields == {"quoted key": 9}
    assert pos[("person", 1)].fields == {"id": 11}
    assert pos[("quota", "overrides")].fields == {"unit:qlcn": 13}
    assert tomllib.loads(text)["person"][0]["extra"]["quoted key"] == 1


def test_scanner_agrees_with_every_key_of_a_generated_agency(tmp_path: Path) -> None:
    """On a generated agency, each person's table and key lines found by the scanner hold them."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from gen_agency import generate

    generate(tmp_path, 300, seed=3)
    for doc in load_documents(tmp_path):
        lines = doc.text.splitlines()
        people = doc.data.get("person", [])
        for i in range(len(people)):
            tp = doc.positions[("person", i)]
            assert lines[tp.line - 1].startswith("[[person]]")
            assert set(tp.fields) == set(people[i])
            for key, line in tp.fields.items():
                assert lines[line - 1].startswith(key), (doc.rel, key, line)


def test_crlf_and_bom_do_not_shift_lines(tmp_path: Path) -> None:
    """A file saved with Windows line endings and a byte-order mark loads, with the same line numbers."""
    root = tmp_path / "state"
    root.mkdir()
    text = '[organization]\r\nname = "S"\r\n\r\ndomain = "sct.binhdinh.gov.vn"\r\n'
    (root / "mailstate.toml").write_bytes(b"\xef\xbb\xbf" + text.encode())
    org = load_state(root).organization
    assert (org.source.line, org.source.line_of("domain")) == (1, 4)


def test_scanner_records_the_line_of_each_element_of_a_multi_line_array() -> None:
    """Elements of an array spread over lines get their own lines (nested arrays, strings, comments)."""
    text = (
        '[[group]]\nid = "g"\nmembers = [   # one per line\n    "a",\n    "b", "c",   # two\n'
        '    ["x",\n     "y"],\n    """multi\nline""",\n    "last"\n]\nsingle = ["p", "q"]\n'
    )
    tp = scan_positions(text)[("group", 0)]
    assert tp.items == {"members": [4, 5, 5, 6, 8, 10]}
    assert tp.fields == {"id": 2, "members": 3, "single": 12}
    assert len(tomllib.loads(text)["group"][0]["members"]) == 6


def _check_positions(doc: Document) -> int:
    """Assert every table (and array-of-tables element) of ``doc`` has a position holding each of its keys."""
    lines = doc.text.splitlines()
    checked = 0

    def walk(value: dict[str, Any], path: KeyPath) -> None:
        nonlocal checked
        tp = doc.positions[path]
        for key, sub in value.items():
            assert key in tp.fields, (doc.rel, path, key)
            line = lines[tp.fields[key] - 1]
            assert key in line or line.lstrip().startswith("["), (doc.rel, path, key)
            checked += 1
            if isinstance(sub, dict) and path + (key,) in doc.positions:
                walk(sub, path + (key,))
            elif isinstance(sub, list) and sub and all(isinstance(x, dict) for x in sub):
                for i, item in enumerate(sub):
                    if path + (key, i) in doc.positions:
                        walk(item, path + (key, i))

    walk(doc.data, ())
    return checked


def test_positions_cover_every_key_of_the_examples_and_a_generated_agency(tmp_path: Path) -> None:
    """Every key of every table in the example repositories and a generated agency has a line holding it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from gen_agency import generate

    generate(tmp_path / "gen", 200, seed=5)
    roots = [tmp_path / "gen", *sorted((Path(__file__).resolve().parents[2] / "examples").glob("*/"))]
    total = 0
    for root in roots:
        if root.is_dir() and any(root.glob("*.toml")):
            for doc in load_documents(root):
                total += _check_positions(doc)
    assert total > 1000


def test_unicode_line_separators_inside_strings_neither_crash_nor_shift_lines() -> None:
    """U+2028 / U+0085 inside a string are not TOML line ends: later keys keep their real line numbers."""
    text = 'name = "a\u2028b\u0085c"\n[unit]\nid = "x"\nname = "y"\n'
    pos = scan_positions(text)
    assert pos[("unit",)].line == 2
    assert pos[("unit",)].fields["name"] == 4
