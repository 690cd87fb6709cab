"""Pure parts of reading folders' ACLs and purposes from the files Dovecot keeps them in (no userdb lookup
per mailbox): an ACL file's lines as the rows ``doveadm acl get`` shows, the settings that allow it, a
file dict's lines, ``grep -HZ`` output. As data; the rows expected are what doveadm 2.3 printed for the
same file in the lab."""

from __future__ import annotations

import pytest

from mailstate.providers.doveadm.parse import (
    AclFiles,
    acl_fast_path_config,
    acl_rows_from_file,
    arg_batches,
    attribute_file_below_home,
    grep_lines,
    owner_surely_reads_attributes,
    parse_attribute_file,
    parse_config_lines,
    parse_user_field,
    with_line_ends,
)

ALL = "admin create delete expunge insert lookup post read write write-deleted write-seen"


def row(ident: str, rights: str) -> dict[str, str]:
    return {"id": ident, "global": "", "rights": rights}


# (an ACL file's lines, the rows `doveadm -f json acl get` printed for it — None: the file is not in the
# plain form Dovecot writes, doveadm is asked)
ACL_FILE_CASES = [
    (["user=dongtd2 keilprwts", "user=tampn akxeilprwts"],
     [row("user=dongtd2", "create expunge insert lookup post read write write-deleted write-seen"),
      row("user=tampn", ALL)]),
    # types in Dovecot's order (anyone, authenticated, group, owner, user, group-override), then by name;
    # an identifier's negative rights in its row; comments and empty lines skipped
    (["anyone l", "-user=ngatq lr", "user=ngatq i", "# c", "", "-anyone a", "authenticated lrwstipekxa",
      "group=abc r", "owner alr", "user=tampn ir", "group-override=zz k", "-group=abc t"],
     [row("anyone", "lookup -admin"), row("authenticated", ALL), row("group=abc", "read -write-deleted"),
      row("owner", "admin lookup read"), row("user=ngatq", "insert -lookup -read"),
      row("user=tampn", "insert read"), row("group-override=zz", "create")]),
    (["user=b l", "user=a r"], [row("user=a", "read"), row("user=b", "lookup")]),
    ([], []),
    (["# only a comment"], []),
    # what Dovecot reads its own way: doveadm is asked
    (["user=tampn r", "user=tampn i"], None),  # twice with one sign: doveadm showed "insert read -"
    (["user=tampn ir :foo :bar"], None),  # named rights
    (["user=tampn"], None),  # no rights
    (["user=tampn  r"], None),  # two spaces
    (["user=tampn r\r"], None),
    (["User=tampn r"], None),  # unknown identifier: doveadm fails the folder
    (['"user=a b" r'], None),  # quoted identifier
    (["user=tampn rr"], None),  # a letter twice
    (["user=tampn rz"], None),  # an unknown letter
    ([" user=tampn r"], None),
    (["user=t\ufffdm r"], None),  # a byte that was no UTF-8
    (["user=t\udcffm r"], None),
    (["user= r"], None),
]


@pytest.mark.parametrize(("lines", "rows"), ACL_FILE_CASES)
def test_an_acl_file_read_as_doveadm_acl_get_shows_it(
    lines: list[str], rows: list[dict[str, str]] | None
) -> None:
    assert acl_rows_from_file(lines) == rows


@pytest.mark.parametrize(("acl", "globals_only", "fast"), [
    ("vfile", "", True),
    ("vfile:cache_secs=30", "no", True),
    (" vfile\n", "", True),
    # a global ACL file (iRedMail's) or directory: its entries are in no folder's file
    ("vfile:/etc/dovecot/dovecot-acl", "", False),
    ("vfile:/etc/dovecot/acls/", "", False),
    ("vfile:/etc/dovecot/acls:cache_secs=30", "", False),
    ("vfile", "yes", False),
    ("", "", False),
    ("ldap", "", False),
])
def test_acls_read_from_files_only_without_global_acls(acl: str, globals_only: str, fast: bool) -> None:
    assert acl_fast_path_config(acl, globals_only) is fast


@pytest.mark.parametrize(("uri", "below"), [
    ("file:%h/dovecot-attributes", "dovecot-attributes"),
    ("file:%h/Maildir/dovecot-attributes", "Maildir/dovecot-attributes"),
    ("", None),
    ("file:/var/lib/dovecot/attributes", None),  # one file for everybody, or elsewhere
    ("file:%h/../attributes", None),
    ("file:%h//attributes", None),
    ("file:%h/%u-attributes", None),
    ("proxy::attributes", None),
    ("redis:host=127.0.0.1", None),
])
def test_the_attribute_file_below_each_home(uri: str, below: str | None) -> None:
    assert attribute_file_below_home(uri) == below


GUID = "f881ec34a04e156b5d79000083ecc375"


@pytest.mark.parametrize(("lines", "attributes"), [
    ([f"shared/{GUID}/comment", "Văn bản đến"], {f"shared/{GUID}/comment": "Văn bản đến"}),
    # Dovecot's tab escapes (\x01 and a letter) undone
    (["k", "a\x01tb\x01nc\x01rd\x011e"], {"k": "a\tb\nc\rd\x01e"}),
    (["k", ""], {"k": ""}),
    (["k", "old", "k", "new"], {"k": "new"}),
    ([], {}),
    (["k"], None),  # a key without its value
    (["k", "a\x01xb"], None),  # an escape Dovecot does not write
    (["k", "a\x01"], None),
    (["k", "a\tb"], None),  # a raw tab: not Dovecot's writing
    (["k", "a\rb"], None),
    (["k", "a\ufffdb"], None),
])
def test_a_file_dict_read_as_dovecot_reads_it(lines: list[str], attributes: dict[str, str] | None) -> None:
    assert parse_attribute_file(lines) == attributes


def test_grep_output_by_file_and_the_roots_by_user() -> None:
    out = b"/m/a/acl\0user=b l\n/m/a/acl\0\n/m/b/acl\0owner \xff\nLINK\t/m/c\n/m/d/acl\0last"
    lines = grep_lines(out)
    assert lines == {"/m/a/acl": ["user=b l", ""], "/m/b/acl": ["owner \udcff"], "/m/d/acl": ["last"]}
    files = AclFiles.of(out, {"/m/a": "a", "/m/b": "b"})
    assert files.roots == {"a": "/m/a", "b": "/m/b"}
    assert files.lines == lines


OWNER_BUT_ADMIN = "create delete expunge insert lookup post read write write-deleted write-seen"


@pytest.mark.parametrize(("rows", "sure"), [
    ([], True),  # the owner's default rights
    ([row("user=tp", "lookup read")], True),  # entries for others only
    ([row("owner", OWNER_BUT_ADMIN)], True),
    ([row("owner", "admin lookup read")], True),
    ([row("user=vp", "lookup post")], True),
    # each kind of entry that applies replaces the kinds before it (anyone, authenticated, group, owner,
    # user, group-override; globals after locals): the owner's entry takes anyone's read away
    ([row("owner", "admin lookup"), row("anyone", "read")], False),
    ([row("anyone", "lookup read"), row("owner", "admin lookup")], False),
    ([row("anyone", "lookup read"), row("user=vp", "admin lookup")], False),
    ([row("owner", "admin lookup"), row("user=vp", "lookup read")], True),
    ([row("anyone", "lookup"), row("authenticated", "lookup read")], True),
    ([row("owner", "lookup read"), row("group=ke-toan", "lookup")], True),  # the owner's entry comes later
    ([row("owner", "lookup read"), row("group-override=ke-toan", "lookup")], False),  # a later group
    ([row("owner", "lookup read"), {"id": "anyone", "global": "1", "rights": "lookup"}], False),
    ([row("owner", "admin insert read write")], False),  # no lookup: Dovecot shows no attribute
    ([row("owner", "admin lookup")], False),  # lookup alone
    ([row("anyone", "lookup")], False),  # does the owner keep their defaults? doveadm knows
    ([row("group=ke-toan", "lookup read")], False),  # a group they may be in
    ([row("user=tp", "lookup read"), row("user=vp", "lookup read -write")], False),
    ([row("anyone", "-lookup")], False),
    ([row("group-override=ban", "-read")], False),
])
def test_whether_the_owner_surely_reads_a_folders_attributes(rows: list[dict[str, str]], sure: bool) -> None:
    assert owner_surely_reads_attributes(rows, "vp") is sure


def test_settings_asked_together() -> None:
    text = "plugin/acl = vfile\nmail_attribute_dict = file:%h/dovecot-attributes\nplugin/x = a = b\n"
    names = ["plugin/acl", "plugin/acl_globals_only", "mail_attribute_dict", "plugin/x"]
    assert parse_config_lines(text, names) == {
        "plugin/acl": "vfile", "plugin/acl_globals_only": "",
        "mail_attribute_dict": "file:%h/dovecot-attributes", "plugin/x": "a = b",
    }


@pytest.mark.parametrize(("words", "limit", "batches"), [
    ([], 10, []),
    (["a", "b", "c"], 100, [["a", "b", "c"]]),
    (["aaaa", "bbbb", "cccc"], 10, [["aaaa", "bbbb"], ["cccc"]]),  # 7 + 7 bytes reach the limit
    (["a" * 50, "b"], 10, [["a" * 50], ["b"]]),  # a long word: a batch of its own
])
def test_command_line_words_in_batches(words: list[str], limit: int, batches: list[list[str]]) -> None:
    assert arg_batches(words, limit) == batches


def test_a_last_line_without_a_line_break_is_left_out_as_dovecot_reads_a_file_dict() -> None:
    out = ("/h/a/attrs\0k\n/h/a/attrs\0v\n"  # two lines, two line breaks
           "/h/b/attrs\0k\n/h/b/attrs\0v\n/h/b/attrs\0half\n"  # the last line unfinished
           "/h/c/attrs\0k\n"  # rewritten between grep and wc: left out
           "\0WC\0\n  2 /h/a/attrs\n  2 /h/b/attrs\n  5 /h/c/attrs\n  9 total\n")
    assert with_line_ends(out) == {"/h/a/attrs": ["k", "v"], "/h/b/attrs": ["k", "v"]}
    assert with_line_ends("/h/a/attrs\0k\n") == {}  # no count: nothing taken


@pytest.mark.parametrize(("text", "users", "values"), [
    ("/h/c\n\n/h/a\n", ["c", "a"], {"c": "/h/c", "a": "/h/a"}),
    # what doveadm 2.3 printed with an unknown user first, between, last
    ("\n/h/c\n\n/h/a\n", ["x", "c", "a"], {"c": "/h/c", "a": "/h/a"}),
    ("/h/c\n\n\n/h/a\n", ["c", "x", "a"], {"c": "/h/c", "a": "/h/a"}),
    ("/h/c\n\n/h/a\n\n", ["c", "a", "x"], {"c": "/h/c", "a": "/h/a"}),
    ("\n", ["x", "y"], {}),
    ("", [], {}),
    ("/h/c\n/h/a\n", ["c", "a"], None),  # no line break between: not the form expected
    ("/h/c\n\n/h/a\n\n/h/b\n", ["c", "a"], None),  # more than the users asked
])
def test_one_field_of_several_users(text: str, users: list[str], values: dict[str, str] | None) -> None:
    assert parse_user_field(text, users) == values
