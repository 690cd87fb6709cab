"""Pure parts of reading mailboxes through doveadm instead of IMAP (GETACL's answer from ``acl get`` rows,
doveadm's JSON and standard error) and of finding the mail roots from a sample's pattern. As data."""

from __future__ import annotations

import pytest

from mailstate.errors import ProviderError
from mailstate.providers.doveadm.parse import (
    USER_FAILURE,
    autocreated_folders,
    getacl_entries,
    holds_mail,
    own_folder_names,
    owner_may_administer,
    parse_doveadm_json,
    parse_shared_users,
    pattern_base,
    root_pattern,
    roots_in_paths,
    spread_sample,
    unowned_acl_files,
    user_in_path,
    user_messages,
)

ALL = "admin create delete expunge insert lookup post read write write-deleted write-seen"


def row(ident: str, rights: str, glob: str = "") -> dict[str, str]:
    return {"id": ident, "global": glob, "rights": rights}


# (doveadm acl get rows of one folder of "vp", what Dovecot's IMAP GETACL answers for it)
GETACL_CASES = [
    ([row("user=tp", "lookup read write-seen")], [("tp", "lrs")]),
    ([row("user=tp", ALL)], [("tp", "akxeilprwtscd")]),
    ([row("group=ke-toan", "lookup read")], [("$ke-toan", "lr")]),
    ([row("group-override=ban", "lookup")], [("!$ban", "l")]),
    ([row("anyone", "lookup"), row("authenticated", "post")], [("anyone", "l"), ("authenticated", "p")]),
    ([row("user=tp", "-write")], [("-tp", "w")]),
    ([row("user=tp", "lookup read -write-deleted")], [("tp", "lr"), ("-tp", "td")]),
    ([row("user=tp", "lookup", "global")], [("#tp", "l")]),
    ([row("user=tp", "-lookup", "global")], [("-#tp", "l")]),
    ([row("owner", "lookup read admin")], [("vp", "lra")]),
    ([row("owner", "lookup"), row("user=vp", "read")], [("owner", "l"), ("vp", "r")]),
    ([row("owner", ALL, "global"), row("owner", "lookup")], [("#owner", "akxeilprwtscd"), ("owner", "l")]),
    ([row("user=tp", "create")], [("tp", "kc")]),
    ([row("user=tp", "expunge")], [("tp", "ed")]),
    ([row("user=tp", "x-custom-right")], [("tp", "")]),
    ([], []),
]


@pytest.mark.parametrize(("rows", "expected"), GETACL_CASES)
def test_getacl_entries_as_dovecots_imap_plugin_writes_them(
    rows: list[dict[str, str]], expected: list[tuple[str, str]]
) -> None:
    assert getacl_entries(rows, "vp") == expected


def test_doveadm_json_keeps_control_characters_inside_values() -> None:
    text = '[{"username":"vp","value":"a\\tb\\nc"},{"username":"tp","value":""}]'
    rows = [{"username": "vp", "value": "a\tb\nc"}, {"username": "tp", "value": ""}]
    assert parse_doveadm_json(text) == rows
    assert parse_doveadm_json("  \n") == []
    with pytest.raises(ProviderError, match="JSON"):
        parse_doveadm_json('[{"username": "vp"')
    with pytest.raises(ProviderError, match="not a list"):
        parse_doveadm_json('{"username": "vp"}')


def test_doveadm_standard_error_by_user() -> None:
    err = (
        "Could not chdir to home directory /nonexistent: No such file or directory\n"
        "doveadm(vp): Error: Can't open mailbox Cha: Mailbox doesn't exist: Cha\n"
        "doveadm(tp): Info: Some other information\n"
        "doveadm(gone): Info: User no longer exists, skipping\n"
        "doveadm: Fatal: Unknown command\n"
    )
    by_user, other = user_messages(err)
    assert by_user == {
        "vp": ["Error: Can't open mailbox Cha: Mailbox doesn't exist: Cha"],
        "gone": ["Info: User no longer exists, skipping"],
    }
    assert other == ["doveadm: Fatal: Unknown command"]  # the sshd banner says nothing failed


@pytest.mark.parametrize("text, failed", [
    ("Error: Can't open mailbox Cha: Mailbox doesn't exist: Cha", True),
    ("Fatal: Couldn't open mail storage", True),
    ("Panic: file mail-index.c: assertion failed", True),
    ("Warning: Maildir: Expunged message reappeared", False),  # doveadm went on: the counts stand
    ("Info: User no longer exists, skipping", False),
    ("Error without the colon", False),
])
def test_a_user_message_says_whether_the_command_failed_for_that_user(text: str, failed: bool) -> None:
    assert bool(USER_FAILURE.match(text)) is failed


def test_own_folder_names_leave_out_the_other_namespaces() -> None:
    rows = [
        {"username": "tp", "mailbox": "shared"},
        {"username": "tp", "mailbox": "shared/vp/INBOX"},
        {"username": "tp", "mailbox": "INBOX"},
        {"username": "tp", "mailbox": "sharedfolder"},
        {"username": "", "mailbox": "INBOX"},
    ]
    assert own_folder_names(rows, ["shared/"]) == {"tp": ["INBOX", "sharedfolder"]}


# ({mail root: user} of a sample, the pattern found or None)
PATTERN_CASES = [
    ({"/srv/vmail/vp/mdbox": "vp", "/srv/vmail/tp/mdbox": "tp"}, ("/srv/vmail/", "/mdbox")),
    ({"/srv/vmail/d.gov.vn/vp": "vp@d.gov.vn", "/srv/vmail/d.gov.vn/tp": "tp@d.gov.vn"}, None),
    ({"/srv/vmail/vp/vp-2024/mdbox": "vp", "/srv/vmail/tp/tp-2025/mdbox": "tp"}, None),
    ({"/srv/vmail/vp/Maildir": "vp", "/home/tp/Maildir": "tp"}, None),
    ({"/vp/mdbox": "vp", "/tp/mdbox": "tp"}, None),  # the tree to walk would be "/"
    ({"/srv/vmail/vp/mdbox": "vp"}, None),  # one is no pattern
    ({"/srv/vmail/a/b/mdbox": "a/b", "/srv/vmail/tp/mdbox": "tp"}, None),  # a name with "/" in it
    ({"/srv/vmail/../vp/mdbox": "vp", "/srv/vmail/../tp/mdbox": "tp"}, None),
    ({"/srv/u/vmail/u/m": "u", "/srv/t/vmail/t/m": "t"}, None),  # the name twice: no one pattern
]


@pytest.mark.parametrize(("roots", "expected"), PATTERN_CASES)
def test_root_pattern(roots: dict[str, str], expected: tuple[str, str] | None) -> None:
    assert root_pattern(roots) == expected


def test_the_tree_a_pattern_walks_and_the_files_it_leaves_without_an_owner() -> None:
    assert pattern_base("/srv/vmail/") == "/srv/vmail"
    roots = {"/srv/vmail/vp/mdbox": "vp"}
    out = (b"/srv/vmail/vp/mdbox/mailboxes/INBOX/dbox-Mails/dovecot-acl\0user=tp lr\n"
           b"/srv/vmail/old/mdbox/mailboxes/INBOX/dbox-Mails/dovecot-acl\0user=tp lr\n")
    assert unowned_acl_files(out, roots) == ["/srv/vmail/old/mdbox/mailboxes/INBOX/dbox-Mails/dovecot-acl"]


ACL = "mailboxes/INBOX/dbox-Mails/dovecot-acl"
# (path of an ACL file, head, tail, the user whose root head + user + tail holds it or None)
USER_IN_PATH_CASES = [
    (f"/srv/vmail/vp/mdbox/{ACL}", "/srv/vmail/", "/mdbox", "vp"),
    ("/srv/vmail/vp/dovecot-acl", "/srv/vmail/", "", "vp"),  # tail empty
    ("/srv/vmail/vp/.Sent/dovecot-acl", "/srv/vmail/", "", "vp"),
    ("/home/vp/Maildir/dovecot-acl", "/home/", "/Maildir", "vp"),
    ("/home/vp/Maildir/.Sent/dovecot-acl", "/home/", "/Maildir", "vp"),
    ("/home/vp.d/Maildir/dovecot-acl", "/home/", ".d/Maildir", "vp"),  # tail not starting with "/"
    ("/home/vp.d.d/Maildir/dovecot-acl", "/home/", ".d/Maildir", "vp.d"),
    ("/srv/mail/u-vp-x/m/dovecot-acl", "/srv/mail/u-", "-x/m", "vp"),  # head not ending with "/"
    (f"/srv/vmail/vp@d.gov.vn/mdbox/{ACL}", "/srv/vmail/", "/mdbox", "vp@d.gov.vn"),  # a user with "@"
    ("/srv/vmail/Lưu trữ/m/dovecot-acl", "/srv/vmail/", "/m", "Lưu trữ"),
    # paths that do not fit the pattern
    (f"/srv/vmail/vp/Maildir/{ACL}", "/srv/vmail/", "/mdbox", None),  # another tail
    (f"/srv/vmail/vp/mdboxes/{ACL}", "/srv/vmail/", "/mdbox", None),  # the tail only a prefix of it
    (f"/srv/vmail/d.gov.vn/vp/mdbox/{ACL}", "/srv/vmail/", "/mdbox", None),  # a home one level down
    (f"/srv/other/vp/mdbox/{ACL}", "/srv/vmail/", "/mdbox", None),  # another head
    (f"/srv/vmailx/vp/mdbox/{ACL}", "/srv/vmail/", "/mdbox", None),
    ("/srv/vmail/vp/mdbox", "/srv/vmail/", "/mdbox", None),  # the root itself is no file under it
    ("/srv/vmail/vp/mdbox/", "/srv/vmail/", "/mdbox", None),
    ("/srv/vmail/vp", "/srv/vmail/", "", None),
    ("/srv/vmail//mdbox/dovecot-acl", "/srv/vmail/", "/mdbox", None),  # an empty user
    ("/home/.d/Maildir/dovecot-acl", "/home/", ".d/Maildir", None),
    ("/home/vp/Maildir/dovecot-acl", "/home/", ".d/Maildir", None),
    ("/srv/vmail/v\np/m/dovecot-acl", "/srv/vmail/", "/m", None),  # a control character
    ("/srv/vmail/../m/dovecot-acl", "/srv/vmail/", "/m", None),
    # a name not in UTF-8 on disk (grep's bytes kept as surrogates): no user doveadm can be asked for
    (b"/srv/vmail/v\xffp/m/dovecot-acl".decode("utf-8", "surrogateescape"), "/srv/vmail/", "/m", None),
]


@pytest.mark.parametrize(("path", "head", "tail", "user"), USER_IN_PATH_CASES)
def test_the_user_a_path_names_by_the_pattern(path: str, head: str, tail: str, user: str | None) -> None:
    assert user_in_path(path, head, tail) == user


def test_the_roots_of_every_acl_file_by_the_pattern() -> None:
    """Every file of ``grep -HZ`` output gives its owner's root; one that does not fit gives None."""
    out = (f"/srv/vmail/vp/mdbox/{ACL}\0user=tp lr\n/srv/vmail/vp/mdbox/{ACL}\0owner lr\n"
           f"/srv/vmail/tp/mdbox/mailboxes/Chung/dbox-Mails/dovecot-acl\0-user=vp r\n").encode()
    assert roots_in_paths(out, "/srv/vmail/", "/mdbox") == {"/srv/vmail/vp/mdbox": "vp",
                                                           "/srv/vmail/tp/mdbox": "tp"}
    assert roots_in_paths(b"", "/srv/vmail/", "/mdbox") == {}
    assert roots_in_paths(b"LINK\t/srv/vmail/x\n", "/srv/vmail/", "/mdbox") == {}  # a line of no file
    stray = out + f"/srv/vmail/hand/made/mdbox/{ACL}\0user=tp lr\n".encode()
    assert roots_in_paths(stray, "/srv/vmail/", "/mdbox") is None


def test_the_users_the_shared_dict_names() -> None:
    """Owners and the users they share with; a group and ``anyone`` name no user."""
    text = ("key\tvalue\nshared/shared-boxes/user/tp/vp\t1\nshared/shared-boxes/anyone/hoa\t1\n"
            "shared/shared-boxes/group/ke-toan/lan\t1\nshared/shared-boxes/user/an@d.vn/bang@d.vn\t1\n")
    assert parse_shared_users(text) == {"tp", "vp", "hoa", "lan", "an@d.vn", "bang@d.vn"}
    assert parse_shared_users("key\tvalue\n") == set()


def test_spread_sample_covers_the_whole_list() -> None:
    users = [f"u{i:05d}" for i in range(10_000)]
    sample = spread_sample(users, 200)
    assert len(sample) == 200 and sample[0] == "u00000" and sample[-1] == "u09999"
    assert spread_sample(users[:5], 200) == users[:5]


@pytest.mark.parametrize(("rows", "expected"), [
    ([], False),
    ([{"mailbox": "INBOX", "messages": "0"}, {"mailbox": "Sent", "messages": "0"}], False),
    ([{"mailbox": "INBOX", "messages": "0"}, {"mailbox": "Sent", "messages": "2"}], True),
    ([{"mailbox": "shared/vp/INBOX", "messages": "9"}], False),  # another's mail seen through sharing
    ([{"mailbox": "INBOX", "messages": "?"}], True),  # a count it cannot read counts as mail
])
def test_holds_mail(rows: list[dict[str, str]], expected: bool) -> None:
    assert holds_mail(rows, ["shared/"]) is expected


@pytest.mark.parametrize(("rows", "expected"), [
    ([], True),  # the owner's default rights: admin included
    ([row("user=tp", "lookup read")], True),
    ([row("owner", "lookup read")], False),  # GETACL as the owner is refused: read over IMAP
    ([row("user=vp", "lookup read -admin")], False),
    ([row("owner", "lookup read admin")], True),
    ([row("owner", "-write")], True),  # only a negative entry: the defaults, admin with them, stay
    ([row("anyone", "-admin")], False),
])
def test_owner_may_administer(rows: list[dict[str, str]], expected: bool) -> None:
    assert owner_may_administer(rows, "vp") is expected


NAMESPACES = """namespace inbox {
  inbox = yes
  mailbox Drafts {
    auto = no
    special_use = \\Drafts
  }
  mailbox "Sent Messages" {
    auto = subscribe
  }
  mailbox Trash {
    auto = create
  }
  prefix = INBOX/
  type = private
}
namespace shared {
  mailbox Junk {
    auto = create
  }
  prefix = shared/%%n/
  type = shared
}
"""


def test_autocreated_folders_of_the_private_namespaces_only() -> None:
    assert autocreated_folders(NAMESPACES) == ["INBOX/Sent Messages", "INBOX/Trash"]
    assert autocreated_folders("") == []


def test_the_users_of_one_command_go_to_one_process_unless_its_line_grows_too_long() -> None:
    """Sharing one command's users out over processes side by side costs the mail host's one auth process
    several times the CPU per userdb lookup (USERS_BATCH_BYTES): up to about 8,000 users are one batch;
    more are cut in batches of at most that many bytes, every user in exactly one, in order."""
    from mailstate.model.settings import SshSettings
    from mailstate.providers.doveadm.provider import USERS_BATCH_BYTES, SshProvider

    prov = SshProvider(SshSettings())
    few = [f"ccptnt{i}" for i in range(5000)]
    assert prov._user_batches(few) == [few]
    many = [f"nguoi-dung-so-{i:06d}" for i in range(20000)]
    batches = prov._user_batches(many)
    assert len(batches) > 1 and [u for b in batches for u in b] == many
    assert all(sum(len(u) + 1 for u in b) <= USERS_BATCH_BYTES + 64 for b in batches)
    assert prov._user_batches([]) == []
