"""The doveadm provider's pure part: doveadm's tab output, fetch streams, archive names and manifests,
the verification of an archive against the live messages. Unit-tested on recorded output.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, BinaryIO, TypeVar

import paramiko

from mailstate.errors import ProviderError
from mailstate.model.records import INBOX, Record, acl_key
from mailstate.model.rights import OWNER_IDENTIFIERS, normalise_rights
from mailstate.model.settings import SshSettings
from mailstate.redact import refuse_userinfo
from mailstate.text import CONTROL_RE

MANIFEST_SUFFIX = ".manifest.json"
SHARED_BOXES = "shared/shared-boxes/"
T = TypeVar("T")

# --------------------------------------------------------------------------------------------------
# Pure parts


def settings_from_env(settings: SshSettings | None) -> SshSettings:
    """[providers.ssh] overridden by MAILSTATE_SSH_HOST/PORT/USER/KEY_FILE/KNOWN_HOSTS/DOVEADM/ARCHIVE_DIR."""
    base = settings.model_copy() if settings is not None else SshSettings()
    updates: dict[str, Any] = {}
    for env, name in (
        ("MAILSTATE_SSH_HOST", "host"),
        ("MAILSTATE_SSH_PORT", "port"),
        ("MAILSTATE_SSH_USER", "user"),
        ("MAILSTATE_SSH_KEY_FILE", "key_file"),
        ("MAILSTATE_SSH_KNOWN_HOSTS", "known_hosts"),
        ("MAILSTATE_SSH_DOVEADM", "doveadm"),
        ("MAILSTATE_SSH_ARCHIVE_DIR", "archive_dir"),
    ):
        value = os.environ.get(env)
        if value:
            updates[name] = value

    refuse_userinfo("MAILSTATE_SSH_HOST" if "host" in updates else "providers.ssh.host",
                    updates.get("host", base.host), host=True)
    if "port" in updates:
        try:
            updates["port"] = int(updates["port"])
        except ValueError:
            raise ProviderError(f"ssh: MAILSTATE_SSH_PORT={updates['port']!r} is not a port number") from None
    return SshSettings.model_validate({**base.model_dump(), **updates})


def doveadm_command(doveadm: str, *args: str) -> str:
    """One shell command line: the configured doveadm (may carry options, e.g. ``doveadm -c CONF``) + args,
    every word quoted with shlex.quote."""
    return " ".join(shlex.quote(w) for w in [*shlex.split(doveadm), *args])


def parse_last_login(text: str, prefix: str) -> dict[str, str]:
    """``doveadm -f tab dict iter DICT PREFIX`` → {user: ISO datetime UTC}; values are Unix times."""
    out: dict[str, str] = {}
    for row in parse_doveadm_tab(text):
        key, value = row.get("key", ""), row.get("value", "").strip()
        if not key.startswith(prefix) or not value:
            continue
        try:
            when = datetime.fromtimestamp(int(value), tz=UTC)
        except (ValueError, OverflowError, OSError):
            continue
        out[key[len(prefix) :]] = when.isoformat(timespec="seconds")
    return out


def last_login_prefix(key_template: str) -> str:
    """The dict key prefix of the last_login key template (``last-login/%u`` → ``shared/last-login/``);
    the plugin stores its keys in the shared namespace of the dict."""
    template = key_template.strip() or "last-login/%u"
    static = template.split("%", 1)[0]
    return static if static.startswith(("shared/", "priv/")) else f"shared/{static}"


def parse_shared_owners(text: str) -> set[str]:
    """Owners named by the ACL shared dict (``doveadm -f tab dict iter -R DICT shared/shared-boxes/``): keys
    ``shared/shared-boxes/user/<grantee>/<owner>``, ``…/anyone/<owner>``, ``…/group/<g>/<owner>``."""
    out: set[str] = set()
    for row in parse_doveadm_tab(text):
        key = row.get("key", "")
        if key.startswith(SHARED_BOXES) and "/" in key[len(SHARED_BOXES) :]:
            out.add(key.rsplit("/", 1)[1])
    return out


def parse_shared_users(text: str) -> set[str]:
    """Every user the ACL shared dict names (``doveadm -f tab dict iter -R DICT shared/shared-boxes/``): the
    owners (``parse_shared_owners``) and the users they share with (``…/user/<grantee>/<owner>``)."""
    out = parse_shared_owners(text)
    for grantees in parse_shared_grantees(text).values():
        out |= grantees
    return out


ACL_FILE = "dovecot-acl"
FIND_ARGS_MAX = 64 * 1024
"""Bytes of mail roots per ``find`` command (a command line stays far below the kernel's argument limit)."""

def mail_roots(path_tab: str) -> dict[str, str]:
    """{mail root: user} from ``doveadm -f tab mailbox path -A -t control INBOX``: the directory above
    ``mailboxes/`` (dbox) or the INBOX control directory itself (Maildir, where folders sit under it)."""
    out: dict[str, str] = {}
    for row in parse_doveadm_tab(path_tab):
        user, path = row.get("username", ""), row.get("path", "").rstrip("/")
        if user and path.startswith("/"):
            out[path.split("/mailboxes/", 1)[0] if "/mailboxes/" in path else path] = user
    return out


ROOT_SAMPLE = 200
"""Users whose mail root is asked of the userdb to learn the pattern of the others' (``root_pattern``)."""
SHARED_SAMPLE = 20
"""Users of the ACL shared dict whose mail root is asked of the userdb to learn the pattern of every root
(``root_pattern``), without listing the userdb's users: one template makes them all, a few show it."""


def spread_sample(users: list[str], size: int = ROOT_SAMPLE) -> list[str]:
    """At most ``size`` of ``users`` spread evenly over the whole list, the first and the last included."""
    if len(users) <= size:
        return list(users)
    step = (len(users) - 1) / (size - 1)
    return sorted({users[round(i * step)] for i in range(size)})


def predictable_user(user: str) -> bool:
    """A user name that can stand inside a path: no "/", not "." or "..", no control character."""
    return bool(user) and "/" not in user and user not in (".", "..") and CONTROL_RE.search(user) is None


def root_pattern(roots: Mapping[str, str]) -> tuple[str, str] | None:
    """(head, tail) such that every sampled mail root ({root: user}) is ``head + user + tail`` — the userdb
    builds them all from one template (``mail_home = /srv/vmail/%d/%n``) — or None when they do not follow
    one (a home per user stored in the directory, with a date in it, …). ``head`` is absolute and holds a
    directory below "/": the tree ``find`` walks for the others."""
    pairs = [(root, user) for root, user in roots.items() if predictable_user(user)]
    if len(pairs) < 2 or len(pairs) != len(roots):
        return None
    root0, user0 = pairs[0]
    at = -1
    while (at := root0.find(user0, at + 1)) >= 0:
        head, tail = root0[:at], root0[at + len(user0):]
        if all(root == f"{head}{user}{tail}" for root, user in pairs) and _walkable(head):
            return head, tail
    return None


def _walkable(head: str) -> bool:
    base = head[: head.rfind("/")]
    return head.startswith("/") and base != "" and "/../" not in f"{head}/" and "/./" not in f"{head}/"


def pattern_base(head: str) -> str:
    """The directory ``find`` walks for the mail roots ``head + user + tail``."""
    return head[: head.rfind("/")]


def unowned_acl_files(grep_out: bytes, roots: Mapping[str, str]) -> list[str]:
    """The ACL files in ``grep -HZ`` output that lie under none of ``roots`` (the pattern missed them)."""
    out: list[str] = []
    for raw in grep_out.split(b"\n"):
        path_b, sep, _line = raw.partition(b"\0")
        if sep:
            path = path_b.decode("utf-8", "surrogateescape")
            if _owner_of(path, roots) is None:
                out.append(path)
    return out


def user_in_path(path: str, head: str, tail: str) -> str | None:
    """The user whose mail root ``head + user + tail`` (``root_pattern``) holds ``path`` (a file under it:
    ``head + user + tail + "/" + rest``), the user a name that can stand in a path (``predictable_user``:
    no "/" in it) and be asked of the userdb (UTF-8: a path's other bytes are kept as surrogates) — or
    None when ``path`` does not fit the pattern."""
    if not path.startswith(head):
        return None
    rest = path[len(head):]
    first = tail.split("/", 1)[0]  # what of the tail shares the user's path component
    end = rest.find("/")
    if end < 0 or not rest[:end].endswith(first):
        return None
    user = rest[: end - len(first)]
    if not predictable_user(user) or not rest[len(user):].startswith(f"{tail}/") or not _utf8(user):
        return None
    return user if len(rest) > len(user) + len(tail) + 1 else None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def roots_in_paths(grep_out: bytes, head: str, tail: str) -> dict[str, str] | None:
    """{mail root: user} of the owner of every ACL file in ``grep -HZ`` output, each taken from the file's
    path by the pattern (``user_in_path``) — or None when any file does not fit it (the caller then asks
    the userdb). Only lines ``path NUL text`` name a file."""
    out: dict[str, str] = {}
    for raw in grep_out.split(b"\n"):
        path_b, sep, _line = raw.partition(b"\0")
        if not sep:
            continue
        user = user_in_path(path_b.decode("utf-8", "surrogateescape"), head, tail)
        if user is None:
            return None
        out[f"{head}{user}{tail}"] = user
    return out


def parse_acl_files(grep_out: bytes, roots: Mapping[str, str]) -> set[str]:
    """Owners with an ACL entry for anyone but themselves in their ACL files (``grep -HZ '' FILE…`` output:
    ``path NUL line``): any entry, negative (``-user=x``) or without the lookup right included — the ACL
    shared dict records only entries that grant lookup, so it misses those."""
    out: set[str] = set()
    for raw in grep_out.split(b"\n"):
        path_b, sep, line_b = raw.partition(b"\0")
        line = line_b.decode("utf-8", "replace").strip()
        if not sep or not line or line.startswith("#"):
            continue
        path = path_b.decode("utf-8", "surrogateescape")
        owner = _owner_of(path, roots)
        ident = line.split()[0]
        if owner is not None and ident not in ("owner", f"user={owner}"):
            out.add(owner)
    return out


ACL_ID_ORDER = {"anyone": 0, "authenticated": 1, "group": 2, "owner": 3, "user": 4, "group-override": 5}
"""The order of Dovecot's identifier types (``enum acl_id_type``): ``acl get`` lists rows by it, then by
name."""
IMAP_RIGHT_LETTERS: Mapping[str, str] = {
    "lookup": "l", "read": "r", "write": "w", "write-seen": "s", "write-deleted": "t", "insert": "i",
    "post": "p", "expunge": "e", "create": "k", "delete": "x", "admin": "a",
}
"""Dovecot's right names and the RFC 4314 letters its IMAP ACL plugin writes for them."""

RIGHT_OF_LETTER: Mapping[str, str] = {letter: name for name, letter in IMAP_RIGHT_LETTERS.items()}
"""Dovecot's ACL file letters (the same as IMAP's) and the right names ``acl get`` shows for them."""
ACL_FILE_LINE = re.compile(
    r"(?P<neg>-?)(?P<id>anyone|authenticated|owner|(?:user|group|group-override)=[^\s\"]+)"
    rf" (?P<letters>[{''.join(RIGHT_OF_LETTER)}]+)"
)
"""A line of a per-folder ACL file in the form Dovecot writes it: ``[-]IDENTIFIER LETTERS``."""


def arg_batches(words: Sequence[str], limit: int = FIND_ARGS_MAX, gap: int = 3) -> list[list[str]]:
    """``words`` (paths for a command line, user names for a command's input) cut in batches of about
    ``limit`` bytes each, ``gap`` counted between two, in order (a word longer than that a batch of its
    own); none for no word."""
    batches: list[list[str]] = []
    size = limit
    for word in words:
        if size >= limit:
            batches.append([])
            size = 0
        batches[-1].append(word)
        size += len(word) + gap
    return batches


WC_MARK = "\0WC\0\n"
"""Between ``grep``'s output and ``wc -l``'s in one command (``with_line_ends``)."""
WC_LINE = re.compile(r"\s*(\d+) (/.*)")


def with_line_ends(text: str) -> dict[str, list[str]]:
    """{path: its lines as Dovecot's file dict reads them} from ``grep -aHZs '' -- PATHS; printf WC_MARK;
    wc -l -- PATHS``: a last line without a line break left out (Dovecot reads a line only once it ends),
    which ``wc -l`` (it counts line breaks) tells from grep (it prints such a line too); a file the two do
    not agree on (rewritten between them) left out, as a missing one — its owner is asked of doveadm."""
    found, mark, counts = text.rpartition(WC_MARK)
    if not mark:
        return {}
    ends = {m[2]: int(m[1]) for line in counts.splitlines() if (m := WC_LINE.fullmatch(line))}
    out: dict[str, list[str]] = {}
    for path, lines in grep_lines(found.encode("utf-8", "surrogateescape")).items():
        if ends.get(path) == len(lines):
            out[path] = lines
        elif ends.get(path) == len(lines) - 1:
            out[path] = lines[:-1]
    return out


def parse_user_field(text: str, users: Sequence[str]) -> dict[str, str] | None:
    """{user: value} from ``doveadm user -f FIELD -- USER…`` (the users in that order): a value a line, a
    line break before each user but the first, nothing for a user the userdb does not know (its error goes
    to standard error) — so ``a\n\n\nb\n`` is a, an unknown one, b. An empty value is taken for none; None
    when the text is not in that form."""
    out: dict[str, str] = {}
    at = 0
    for n, user in enumerate(users):
        if n:
            if text[at:at + 1] != "\n":
                return None
            at += 1
        end = text.find("\n", at)
        if end > at:
            out[user] = text[at:end]
            at = end + 1
    return out if at == len(text) else None


def parse_config_lines(text: str, names: Iterable[str]) -> dict[str, str]:
    """{name: value} of ``names`` from ``doveadm config NAME…`` (``name = value`` lines); a name it prints no
    line for is unset (an empty value: ``doveadm config -h`` prints an empty line for it)."""
    wanted = set(names)
    out = dict.fromkeys(wanted, "")
    for line in text.splitlines():
        name, sep, value = line.partition(" = ")
        if sep and name.strip() in wanted:
            out[name.strip()] = value.strip()
    return out


def grep_lines(grep_out: bytes) -> dict[str, list[str]]:
    """{path: its lines} of the files in ``grep -HZ ''`` output (``path NUL line``), a byte that is no UTF-8
    kept as a surrogate (such a line is no plain ACL line: ``acl_rows_from_file`` refuses it)."""
    out: dict[str, list[str]] = {}
    for raw in grep_out.split(b"\n"):
        path_b, sep, line_b = raw.partition(b"\0")
        if sep:
            path = path_b.decode("utf-8", "surrogateescape")
            out.setdefault(path, []).append(line_b.decode("utf-8", "surrogateescape"))
    return out


@dataclass
class AclFiles:
    """The non-empty ACL files a walk read (``grep -HZ ''`` of them: ``acl_owners``) — {path: its lines} —
    and {user: mail root} of the users whose roots the walk knew (the files' owners, at least)."""

    lines: dict[str, list[str]]
    roots: dict[str, str]

    @classmethod
    def of(cls, grep_out: bytes, roots: Mapping[str, str]) -> AclFiles:
        """From the walk's output and its {mail root: user}."""
        return cls(grep_lines(grep_out), {user: root for root, user in roots.items()})


def acl_rows_from_file(lines: Iterable[str]) -> list[dict[str, str]] | None:
    """The rows ``doveadm -f json acl get`` shows for a folder whose own ACL file holds ``lines`` (``acl =
    vfile`` without global ACLs; an identifier's rights and negative rights in one row, by ``ACL_ID_ORDER``
    and name, names sorted) — or None when a line is not in the plain form Dovecot writes
    (``ACL_FILE_LINE``: a quoted or unknown identifier, ``:named`` rights, a letter twice, an identifier
    given twice with the same sign, a stray space or carriage return): the caller asks doveadm, which reads
    every form. Empty lines and ``#`` comments are skipped, as Dovecot skips them."""
    rights: dict[str, tuple[list[str], list[str]]] = {}
    for line in lines:
        if line == "" or line.startswith("#"):
            continue
        m = ACL_FILE_LINE.fullmatch(line)
        if m is None or len(set(m["letters"])) != len(m["letters"]) or not _clean(line):
            return None
        slot = rights.setdefault(m["id"], ([], []))[1 if m["neg"] else 0]
        if slot:
            return None
        slot.extend(sorted(RIGHT_OF_LETTER[c] for c in m["letters"]))

    def order(ident: str) -> tuple[int, str]:
        kind, _, name = ident.partition("=")
        return ACL_ID_ORDER[kind], name

    return [
        {"id": ident, "global": "", "rights": " ".join([*pos, *(f"-{n}" for n in neg)])}
        for ident, (pos, neg) in sorted(rights.items(), key=lambda item: order(item[0]))
    ]


def acl_fast_path_config(acl: str, globals_only: str) -> bool:
    """Whether folders' ACLs can be read from their own files (``acl_rows_from_file``): ``plugin/acl`` is
    ``vfile`` with no global ACL file or directory (only a ``cache_secs`` option), and ``acl_globals_only``
    is off. A global ACL adds entries no folder's file shows."""
    words = acl.strip().split(":")
    if words[0] != "vfile" or any(not re.fullmatch(r"cache_secs=\d+", w) for w in words[1:]):
        return False
    return globals_only.strip().lower() in ("", "no", "0", "false")


ATTRIBUTE_DICT = re.compile(r"file:%h/(?P<path>[^%\s:]+)")
"""``mail_attribute_dict`` as a file below each user's home: the form read without doveadm."""
TAB_ESCAPES = {"1": "\x01", "t": "\t", "r": "\r", "n": "\n"}
"""Dovecot's tab escapes (``str_tabescape``): ``\x01`` and the letter of the character it stands for."""


def attribute_file_below_home(uri: str) -> str | None:
    """The path below a user's home of the file Dovecot keeps mailbox attributes (IMAP METADATA) in, when
    ``mail_attribute_dict`` is such a file (``file:%h/PATH``, PATH plain names); else None (another dict: a
    database, a proxy — or one per user set elsewhere)."""
    m = ATTRIBUTE_DICT.fullmatch(uri.strip())
    if m is None or any(part in ("", ".", "..") for part in m["path"].split("/")):
        return None
    return m["path"]


def _clean(text: str) -> bool:
    """No byte in ``text`` was anything but UTF-8 (read with replacement characters or as surrogates)."""
    return "\ufffd" not in text and not any("\udc80" <= c <= "\udcff" for c in text)


def _tab_unescaped(text: str) -> str | None:
    """``text`` with Dovecot's tab escapes undone, or None when it holds what Dovecot does not write there
    (an escape it does not make, a raw tab or carriage return, a byte that was no UTF-8)."""
    if "\t" in text or "\r" in text or not _clean(text):
        return None
    if "\x01" not in text:
        return text
    parts = text.split("\x01")
    out = [parts[0]]
    for part in parts[1:]:
        if not part or part[0] not in TAB_ESCAPES:
            return None
        out.append(TAB_ESCAPES[part[0]] + part[1:])
    return "".join(out)


def parse_attribute_file(lines: list[str]) -> dict[str, str] | None:
    """{key: value} of a Dovecot file dict (``mail_attribute_dict = file:…``: a key line and a value line in
    turn, both tab-escaped; a key given twice keeps its last value, as Dovecot reads it), or None when the
    lines are not in that form (``_tab_unescaped``, an odd number of lines): the caller asks doveadm."""
    if len(lines) % 2:
        return None
    out: dict[str, str] = {}
    for at in range(0, len(lines), 2):
        key, value = _tab_unescaped(lines[at]), _tab_unescaped(lines[at + 1])
        if key is None or value is None:
            return None
        out[key] = value
    return out


def _owner_of(path: str, roots: Mapping[str, str]) -> str | None:
    """The user whose mail root holds ``path``: the longest root that is a parent directory of it (each
    parent looked up, so a line costs its depth, not the number of roots)."""
    cut = len(path)
    while (cut := path.rfind("/", 0, cut)) > 0:
        owner = roots.get(path[:cut])
        if owner is not None:
            return owner
    return None


def parse_quota_get(text: str) -> dict[str, int | None]:
    """``doveadm -f tab quota get -A`` → {user: STORAGE limit in bytes, None when unlimited}."""
    out: dict[str, int | None] = {}
    for row in parse_doveadm_tab(text):
        if row.get("type", "").upper() != "STORAGE" or not row.get("username"):
            continue
        limit = row.get("limit", "").strip()
        out[row["username"]] = int(limit) * 1024 if limit.isdigit() else None
    return out


ENTRY_FIELDS = "mailbox-guid uid guid size.physical text"
"""The ``doveadm fetch`` fields read for verification, in this order; ``text``: the full message as stored."""
DIGEST_ALGORITHM = (
    "per message: mailbox GUID, message GUID, size and SHA-256 of the full text (doveadm fetch text); "
    "digest: SHA-256 over the sorted 'mailbox-guid<TAB>guid<TAB>size<TAB>sha256' lines"
)
MAX_REMOVAL_ROUNDS = 5
"""Rounds of expunge → re-list → increment archive before a removal gives up (mail keeps arriving)."""
EXPUNGE_CHUNK = 2000
"""UIDs per ``doveadm expunge`` command (keeps each command line short)."""

@dataclass(frozen=True)
class Message:
    """One message as read back with ``doveadm fetch``: where it is, what it is, and a digest of its text."""
    mailbox_guid: str
    uid: int
    guid: str
    size: int
    sha256: str

    @property
    def entry(self) -> Entry:
        return (self.mailbox_guid, self.guid, self.size, self.sha256)


Entry = tuple[str, str, int, str]
"""(mailbox GUID, message GUID, size, SHA-256 of the full text): what a manifest records per message."""

class FetchFormatError(ValueError):
    """``doveadm -f pager fetch`` output that is not the exact record layout asked for."""

_HEX = frozenset("0123456789abcdef")


def _field(stream: BinaryIO, name: bytes, first: bytes = b"") -> str:
    line = first + stream.readline(4096)
    prefix = name + b": "
    if not line.startswith(prefix) or not line.endswith(b"\n"):
        raise FetchFormatError(f"expected {name.decode()!r}, got {line[:60]!r}")
    return line[len(prefix) : -1].decode("utf-8", "strict")


def read_fetch_stream(stream: BinaryIO) -> Iterator[Message]:
    """Messages of ``doveadm -f pager fetch … 'mailbox-guid uid guid size.physical text' …``, one at a time.

    Each record is ``name: value`` lines, then ``text:`` and exactly size.physical bytes of the message, then
    ``\\f\\n`` before the next record. The text is hashed while it is read (never held whole), so a mailbox of
    any size is read in constant memory. Anything else — a field missing, a text shorter than its size (a
    storage file gone or cut), trailing bytes — raises FetchFormatError: a message that cannot be read back
    is never counted as archived."""
    first = stream.read(1)
    while first:
        mailbox_guid = _field(stream, b"mailbox-guid", first)
        uid_text = _field(stream, b"uid")
        guid = _field(stream, b"guid")
        size_text = _field(stream, b"size.physical")
        hex_guid = bool(mailbox_guid) and set(mailbox_guid) <= _HEX
        if not (uid_text.isdigit() and size_text.isdigit() and hex_guid):
            raise FetchFormatError(f"bad record header (uid {uid_text!r}, size {size_text!r})")
        if not guid or any(ord(c) < 0x20 for c in guid):
            raise FetchFormatError(f"bad message guid {guid!r}")
        if stream.readline(16) != b"text:\n":
            raise FetchFormatError(f"no text for message {guid} (the message could not be read)")
        size, h, left = int(size_text), hashlib.sha256(), int(size_text)
        while left:
            chunk = stream.read(min(left, 1 << 20))
            if not chunk:
                raise FetchFormatError(f"message {guid}: text ends {left} bytes before its size {size}")
            h.update(chunk)
            left -= len(chunk)
        yield Message(mailbox_guid, int(uid_text), guid, size, h.hexdigest())
        sep = stream.read(2)
        if sep == b"":
            return
        if sep != b"\f\n":
            raise FetchFormatError(f"message {guid}: text longer than its size {size} ({sep!r} follows)")
        first = stream.read(1)
        if not first:
            raise FetchFormatError("output ends after a record separator")


def entries_digest(entries: Iterable[Entry]) -> tuple[int, str]:
    """(count, SHA-256 over the sorted entry lines): order-independent, changes with any message."""
    lines = sorted(f"{m}\t{g}\t{s}\t{d}" for m, g, s, d in entries)
    h = hashlib.sha256()
    for ln in lines:
        h.update(ln.encode("utf-8") + b"\n")
    return len(lines), h.hexdigest()


def covered_by(live: Iterable[Message], archived: Counter[Entry]) -> tuple[list[Message], list[Message]]:
    """Split live messages into (held by the archive, not held): a live message is held when an archived
    message has the same mailbox GUID, GUID, size and text digest; each archived copy covers one live copy."""
    left = Counter(archived)
    held, not_held = [], []
    for m in live:
        if left[m.entry] > 0:
            left[m.entry] -= 1
            held.append(m)
        else:
            not_held.append(m)
    return held, not_held


def archive_mismatches(live: Iterable[Message], archived: Iterable[Message]) -> list[str]:
    """Archived messages whose live original (same mailbox GUID and GUID) has another size or text: the copy
    is not faithful. An archived message no longer live (deleted meanwhile) cannot be compared: it is left
    out of the manifest, not counted as a mismatch."""
    by_key: dict[tuple[str, str], set[tuple[int, str]]] = {}
    for m in live:
        by_key.setdefault((m.mailbox_guid, m.guid), set()).add((m.size, m.sha256))
    out = []
    for a in archived:
        seen = by_key.get((a.mailbox_guid, a.guid))
        if seen is not None and (a.size, a.sha256) not in seen:
            out.append(f"{a.guid} in mailbox {a.mailbox_guid} ({a.size} bytes, not the live text)")
    return out


def uid_set(uids: Iterable[int]) -> str:
    """An IMAP sequence set of UIDs: ``1:3,7,9:10``."""
    parts: list[str] = []
    run: list[int] = []
    for u in sorted(set(uids)):
        if run and u == run[-1] + 1:
            run.append(u)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1]}")
        run = [u]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1]}")
    return ",".join(parts)


def other_namespace_prefixes(config_text: str) -> list[str]:
    """Static prefixes of the non-private namespaces in ``doveadm config -h namespace`` output (``shared/``
    for ``shared/%%n/``), so that removing a user's mail never touches what others share with them."""
    out: list[str] = []
    block: dict[str, str] = {}
    for raw in config_text.splitlines():
        line = raw.strip()
        if line.startswith("namespace ") and line.endswith("{"):
            block = {}
        elif line == "}":
            if block.get("type", "private") != "private" and block.get("prefix"):
                out.append(block["prefix"].split("%", 1)[0])
            block = {}
        elif "=" in line:
            k, _, v = line.partition("=")
            block[k.strip()] = v.strip()
    return out


def autocreated_folders(config_text: str) -> list[str]:
    """The folders Dovecot makes by itself in each user's private namespaces (``mailbox NAME { auto =
    create | subscribe }`` in ``doveadm config -h namespace`` output), with their namespace's prefix: a LIST
    shows (and makes) them before they hold anything, so a read of the folders counts them too."""
    out: list[str] = []
    ns: dict[str, Any] | None = None
    box: dict[str, str] | None = None
    for raw in config_text.splitlines():
        line = raw.strip()
        if line.startswith("namespace ") and line.endswith("{"):
            ns, box = {"boxes": []}, None
        elif ns is not None and line.startswith("mailbox ") and line.endswith("{"):
            box = {"name": line[len("mailbox "):-1].strip().strip('"')}
        elif line == "}":
            if box is not None:
                if ns is not None:
                    ns["boxes"].append(box)
                box = None
            elif ns is not None:
                if ns.get("type", "private") == "private" and ns.get("disabled", "no") != "yes":
                    out.extend(f"{ns.get('prefix', '')}{b['name']}" for b in ns["boxes"]
                               if b.get("auto") in ("create", "subscribe") and b["name"])
                ns = None
        elif "=" in line:
            key, _, value = line.partition("=")
            target = box if box is not None else ns
            if target is not None:
                target[key.strip()] = value.strip()
    return out


def _in_other_namespace(name: str, prefixes: Iterable[str]) -> bool:
    """A folder of a non-private namespace, its root included (``shared`` for the prefix ``shared/``)."""
    return any(name.startswith(p) or (p and name == p[:-1]) for p in prefixes)


def archive_name(user: str, day: date) -> str:
    return f"{user}-{day.isoformat()}"


class _RevokedHostKey(paramiko.SSHException):
    """The server presented a host key that known_hosts marks ``@revoked``."""

def _key_id(key: paramiko.PKey) -> tuple[str, bytes]:
    return key.get_name(), key.asbytes()


class _Refuse(paramiko.MissingHostKeyPolicy):
    """paramiko's RejectPolicy, saying so when the unknown key is one known_hosts marks ``@revoked``."""
    def __init__(self, revoked: set[tuple[str, bytes]]) -> None:
        self.revoked = revoked

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if _key_id(key) in self.revoked:
            raise _RevokedHostKey(
                f"the host key of {hostname} ({key.get_name()}) is marked @revoked in known_hosts"
            )
        raise paramiko.SSHException(f"Server {hostname!r} not found in known_hosts")


def load_known_hosts(path: str, into: paramiko.HostKeys) -> set[tuple[str, bytes]]:
    """Read an OpenSSH known_hosts file: plain and hashed host lines go ``into`` the client's host keys; the
    keys of ``@revoked`` lines are returned (never trusted, for any host, even if also listed as known);
    ``@cert-authority`` lines are skipped (host certificates are not used: such a line trusts nothing).
    A line that cannot be read is skipped, as OpenSSH does — it only trusts less — except a ``@revoked``
    line: ignoring that would trust a key the operator revoked, so it stops the connection (ProviderError)."""
    revoked: set[tuple[str, bytes]] = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = list(enumerate(f, 1))
    for lineno, raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = ""
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            line = line.strip()
            if marker != "@revoked":
                continue
        error: Exception | None = None
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
        except Exception as exc:  # paramiko raises SSHException, InvalidHostKey or binascii errors
            entry, error = None, exc
        if entry is None or entry.key is None:
            if marker:
                raise ProviderError(
                    f"ssh: known_hosts {path}:{lineno}: unreadable @revoked line ({type(error).__name__}): "
                    "fix or remove it"
                )
            continue
        if marker:
            revoked.add(_key_id(entry.key))
            continue
        for host in entry.hostnames:
            into.add(host, entry.key.get_name(), entry.key)
    return revoked


@dataclass(frozen=True)
class Manifest:
    """What a verified archive holds, message by message: written only after every archived message was read
    back and compared (size and SHA-256 of its full text) with the live original. ``extends`` names the
    earlier archives of the same set: an increment made during removal for mail that arrived meanwhile."""
    user: str
    archive: str
    location: str
    date: str
    count: int
    digest: str
    verified_at: str
    algorithm: str = DIGEST_ALGORITHM
    messages: tuple[Entry, ...] = ()
    mailboxes: dict[str, str] = field(default_factory=dict)
    extends: tuple[str, ...] = ()

    def to_json(self) -> str:
        data = {**self.__dict__, "messages": [list(e) for e in self.messages], "extends": list(self.extends)}
        return json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """A manifest; ValueError when it is of the older format (no per-message digests) or its messages do
        not add up to its count and digest (edited by hand)."""
        data = json.loads(text)
        if data.get("algorithm") != DIGEST_ALGORITHM or "messages" not in data:
            raise ValueError("manifest of an older format (no per-message content digests)")
        messages = tuple((str(m), str(g), int(n), str(d)) for m, g, n, d in data["messages"])
        out = cls(
            **{k: data[k] for k in cls.__dataclass_fields__ if k not in ("messages", "extends", "mailboxes")},
            messages=messages,
            mailboxes={str(k): str(v) for k, v in data.get("mailboxes", {}).items()},
            extends=tuple(str(x) for x in data.get("extends", ())),
        )
        if entries_digest(messages) != (out.count, out.digest):
            raise ValueError("its messages do not match its count and digest")
        return out


def _archive_order(name: str, user: str) -> tuple[date, int] | None:
    """(date, sequence) of an archive name ``<user>-<YYYY-MM-DD>`` or ``<user>-<YYYY-MM-DD>.<n>``."""
    if not name.startswith(f"{user}-"):
        return None
    m = _ARCHIVE_SUFFIX.fullmatch(name[len(user) + 1 :])
    try:
        return (date.fromisoformat(m[1]), int(m[2] or 1)) if m else None
    except ValueError:
        return None


_ARCHIVE_SUFFIX = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})(?:\.([0-9]{1,9}))?", re.ASCII)


def latest_manifest_name(names: Iterable[str], user: str) -> str | None:
    """The newest ``<user>-<YYYY-MM-DD>[.<n>].manifest.json`` among directory entries (exact user match)."""
    found = []
    for name in names:
        if name.endswith(MANIFEST_SUFFIX) and (order := _archive_order(name[: -len(MANIFEST_SUFFIX)], user)):
            found.append((order, name))
    return max(found)[1] if found else None


def next_archive_name(names: Iterable[str], user: str, day: date) -> str:
    """A fresh archive name for ``day``: ``<user>-<day>``, else ``<user>-<day>.2``, ``.3`` … — an existing
    archive is never synced into again (``doveadm backup`` mirrors, so it would drop mail deleted since)."""
    taken = {n.removesuffix(MANIFEST_SUFFIX) for n in names}
    base = archive_name(user, day)
    if base not in taken:
        return base
    n = 2
    while f"{base}.{n}" in taken:
        n += 1
    return f"{base}.{n}"




def unit_work(rows: Iterable[Mapping[str, str]], other_prefixes: Iterable[str] = ()) -> str | None:
    """A sign that someone worked in a mailbox, from ``doveadm -f tab mailbox status 'messages unseen
    uidnext'`` rows of its folders, or None when it only ever received mail. Delivery adds unseen
    messages to INBOX and nothing else; a delegate reading (\\Seen), filing, moving or deleting mail,
    or sending with a copy, leaves a read message, a folder other than INBOX holding mail, or a UID that
    no longer holds a message (the mailbox's own state changes, whoever logged in)."""
    prefixes = tuple(other_prefixes)
    for row in rows:
        name = row.get("mailbox", "")
        if not name or _in_other_namespace(name, prefixes):
            continue
        try:
            messages, unseen, uidnext = (int(row.get(k) or 0) for k in ("messages", "unseen", "uidnext"))
        except ValueError:
            continue
        if messages > unseen:
            return f"{name}: {messages - unseen} read"
        if name.upper() != "INBOX" and messages:
            return f"{name}: {messages} filed"
        if uidnext - 1 > messages:
            return f"{name}: {uidnext - 1 - messages} moved or deleted"
    return None


def holds_mail(rows: Iterable[Mapping[str, str]], other_prefixes: Iterable[str] = ()) -> bool:
    """Whether any of a mailbox's own folders (``mailbox status 'messages …'`` rows) holds a message. One that
    holds none and shows no sign of work (``unit_work``) never received one: no delegate can have read,
    flagged or kept anything in it, so their views need not be asked. An unreadable count counts as mail."""
    prefixes = tuple(other_prefixes)
    for row in rows:
        name = row.get("mailbox", "")
        if not name or _in_other_namespace(name, prefixes):
            continue
        count = (row.get("messages") or "0").strip()
        if not count.isdigit() or int(count) > 0:
            return True
    return False


def parse_shared_grantees(text: str) -> dict[str, set[str]]:
    """{owner: the users it shares folders with} from the ACL shared dict (``doveadm -f tab dict iter -R DICT
    shared/shared-boxes/``): keys ``shared/shared-boxes/user/<grantee>/<owner>``; groups and ``anyone``
    name no one who could be asked."""
    out: dict[str, set[str]] = {}
    head = SHARED_BOXES + "user/"
    for row in parse_doveadm_tab(text):
        key = row.get("key", "")
        parts = key[len(head) :].split("/") if key.startswith(head) else []
        if len(parts) == 2 and all(parts) and parts[0] != parts[1]:
            out.setdefault(parts[1], set()).add(parts[0])
    return out


def delegate_work(rows: Iterable[Mapping[str, str]], delegate: str) -> str | None:
    """A sign that ``delegate`` read mail in another's mailbox, from their own ``doveadm -f tab mailbox status
    'messages unseen'`` rows of its folders (``shared/<unit>/*``): Dovecot keeps a delegate's \\Seen in their
    private index (INDEXPVT), so the mailbox's own counters never show it — the delegate's view does."""
    for row in rows:
        try:
            messages, unseen = (int(row.get(k) or 0) for k in ("messages", "unseen"))
        except ValueError:
            continue
        if messages > unseen:
            return f"{delegate}: {row.get('mailbox', '')}: {messages - unseen} read"
    return None


UNMARKED_FLAGS = frozenset({"\\recent", "\\seen"})
"""Flags that are no sign of a delegate's marking: \\Recent comes with delivery; \\Seen is read by the
counters (the mailbox's own, or the delegate's private view)."""


def marked_work(rows: Iterable[Mapping[str, str]], other_prefixes: Iterable[str] = ()) -> str | None:
    """A sign that someone marked mail in a mailbox, from ``doveadm -f tab fetch 'mailbox flags'`` rows of
    its messages: delivery sets no flag, so a message holding \\Flagged, \\Answered, \\Deleted, \\Draft or
    a keyword was marked by a mail client — a delegate's under their own login (those flags are shared:
    Dovecot keeps only \\Seen private, INDEXPVT). None when no message holds one."""
    prefixes = tuple(other_prefixes)
    found: dict[str, Counter[str]] = {}
    for row in rows:
        name = row.get("mailbox", "")
        if not name or _in_other_namespace(name, prefixes):
            continue
        for flag in row.get("flags", "").split():
            if flag.lower() not in UNMARKED_FLAGS and CONTROL_RE.search(flag) is None:
                found.setdefault(name, Counter())[flag] += 1
    for name, flags in found.items():
        marks = ", ".join(f"{flag} {n}" for flag, n in sorted(flags.items()))
        return f"{name}: marked ({marks})"
    return None


def parse_doveadm_tab(text: str) -> list[dict[str, str]]:
    """Rows of ``doveadm -f tab …`` output: a header line of field names, then a tab-separated row a line."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    header = [h.strip().lower() for h in lines[0].split("\t")]
    rows = []
    for ln in lines[1:]:
        cells = ln.split("\t")
        cells += [""] * (len(header) - len(cells))
        rows.append(dict(zip(header, cells, strict=False)))
    return rows


DOVEADM_RIGHT_LETTERS: Mapping[str, str] = {
    "lookup": "l",
    "read": "r",
    "write-seen": "s",
    "write": "w",
    "insert": "i",
    "post": "p",
    "create": "k",
    "delete": "x",
    "write-deleted": "t",
    "expunge": "e",
    "admin": "a",
}
"""doveadm acl shows and takes right names (docs/imap.md); their RFC 4314 letters."""

def doveadm_rights_to_letters(names: str) -> str:
    """``lookup read write-seen`` → ``lrs``; unknown names raise ValueError."""
    letters = []
    for name in names.split():
        if name not in DOVEADM_RIGHT_LETTERS:
            raise ValueError(f"unknown doveadm right {name!r}")
        letters.append(DOVEADM_RIGHT_LETTERS[name])
    return normalise_rights("".join(letters))


def parse_doveadm_acl(
    text: str,
    mailbox_of_user: Mapping[str, tuple[str, str | None]],
    folder: str = INBOX,
    user: str | None = None,
) -> list[Record]:
    """acl records from ``doveadm -f tab acl get [-A|-u USER] FOLDER`` (columns [username] id global rights).

    ``mailbox_of_user`` maps a Dovecot user to (mailbox ref, unit). Owner rows and global (acl file of the
    administrator) rows are left out: mailstate manages only the per-mailbox ACL.
    """
    out: list[Record] = []
    for row in parse_doveadm_tab(text):
        owner = row.get("username") or user
        if owner is None or owner not in mailbox_of_user:
            continue
        ident = row.get("id", "")
        if ident.startswith("user="):
            ident = ident[5:]
        if ident == owner or ident in OWNER_IDENTIFIERS or row.get("global", "").strip() in ("1", "yes", "y"):
            continue
        rights = doveadm_rights_to_letters(row.get("rights", ""))
        if not rights:
            continue
        ref, unit = mailbox_of_user[owner]
        out.append(Record("acl", acl_key(ref, folder, ident), {"rights": rights, "why": None}, "imap", unit))
    return out


def parse_doveadm_mailbox_list(text: str) -> dict[str, list[str]]:
    """``doveadm -f tab mailbox list -A`` → {user: [folder, …]} (folder names as doveadm prints them)."""
    out: dict[str, list[str]] = {}
    for row in parse_doveadm_tab(text):
        user = row.get("username", "")
        name = row.get("mailbox", "")
        if user and name:
            out.setdefault(user, []).append(unicodedata.normalize("NFC", name))
    return out




# --------------------------------------------------------------------------------------------------
# A mailbox's folders, rights and purposes through doveadm (the IMAP provider's reads without a login)

USER_MESSAGE = re.compile(r"^doveadm\((?P<user>.+?)\): (?P<level>[A-Za-z]+): (?P<text>.*)$")
"""A line doveadm writes on standard error about one user of ``-F``/``-A``."""
NO_SUCH_FOLDER = "Mailbox doesn't exist"
"""What doveadm says of a name that is no folder of the user (a \\NonExistent or \\Noselect parent)."""


def parse_doveadm_json(text: str) -> list[dict[str, str]]:
    """Rows of ``doveadm -f json …`` output (one array of objects; an empty output is no row). Unlike the
    tab formatter, JSON escapes a tab or a line break inside a value (a folder's purpose set by hand)."""
    text = text.strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProviderError(f"ssh: doveadm's JSON output could not be read: {exc.msg}") from None
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise ProviderError("ssh: doveadm's JSON output is not a list of rows")
    return [{str(k).lower(): "" if v is None else str(v) for k, v in row.items()} for row in data]


FAILURE_LINE = re.compile(r"^(doveadm|sh|bash)\b|\b(Error|Fatal|Panic|not found|denied)\b", re.IGNORECASE)
"""A line on standard error that says a command failed (not a login banner such as sshd's "Could not chdir
to home directory")."""


USER_FAILURE = re.compile(r"^(Error|Fatal|Panic):")
"""A ``user_messages`` text that says the command failed for that user (not a Warning, not Info)."""
UNKNOWN_USER = "User no longer exists"
"""What doveadm says (as Info) of a user of ``-F`` the userdb does not know, before skipping it."""


def rows_by_user(rows: Iterable[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """{user: their rows} of doveadm rows given ``-F``/``-A`` (each with a ``username`` field)."""
    out: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        out.setdefault(row.get("username", ""), []).append(row)
    return out


def user_messages(stderr: str) -> tuple[dict[str, list[str]], list[str]]:
    """doveadm's standard error: ({user: ["Level: text", …]}, [lines that say something failed]) — Info lines
    (but a skipped unknown user) and lines that say nothing failed left out."""
    by_user: dict[str, list[str]] = {}
    other: list[str] = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        m = USER_MESSAGE.match(line)
        if m is None:
            if FAILURE_LINE.search(line):
                other.append(line)
        elif m.group("level") != "Info" or m.group("text").startswith(UNKNOWN_USER):
            by_user.setdefault(m.group("user"), []).append(f"{m.group('level')}: {m.group('text')}")
    return by_user, other



def _imap_letters(names: Iterable[str]) -> str:
    """The letters GETACL writes for right names: the known ones, then ``c`` after ``k``/``x`` and ``d`` after
    ``t``/``e`` (RFC 4314's obsolete rights); names without a letter are left out, as IMAP leaves them."""
    letters = "".join(IMAP_RIGHT_LETTERS[n] for n in names if n in IMAP_RIGHT_LETTERS)
    if set(letters) & {"k", "x"}:
        letters += "c"
    if set(letters) & {"t", "e"}:
        letters += "d"
    return letters


def _imap_identifier(ident: str, owner: str | None) -> str:
    """doveadm's identifier (``user=…``, ``group=…``, ``group-override=…``, ``anyone``, ``authenticated``,
    ``owner``) as GETACL names it (the user, ``$group``, ``!$group``, …; ``owner`` as the owner's user)."""
    if ident == "owner":
        return owner or "owner"
    for head, prefix in (("user=", ""), ("group=", "$"), ("group-override=", "!$")):
        if ident.startswith(head):
            return prefix + ident[len(head):]
    return ident


def getacl_entries(rows: Iterable[Mapping[str, str]], owner: str) -> list[tuple[str, str]]:
    """What ``GETACL`` answers for one folder of ``owner``, from the rows of ``doveadm acl get`` for it
    (columns id, global, rights): as Dovecot's IMAP ACL plugin writes them — a negative entry as ``-id``,
    a global one as ``#id`` (``-#id``), ``owner`` as the owner's user name unless another entry (``owner``
    or ``user=<owner>``, global or not) names them too, letters with ``c``/``d`` added. The owner's
    default rights it adds when no entry gives the owner any are not written (they are never a grant)."""
    rows = list(rows)
    # as the plugin: ``owner`` is written as the user only when no other entry (global or not) names them
    convert = sum(1 for r in rows if r.get("id", "") in ("owner", f"user={owner}")) < 2
    out: list[tuple[str, str]] = []
    for row in rows:
        ident = _imap_identifier(row.get("id", ""), owner if convert else None)
        glob = "#" if row.get("global", "").strip() else ""
        words = row.get("rights", "").split()
        positive = [w for w in words if not w.startswith("-")]
        negative = [w[1:] for w in words if w.startswith("-")]
        if positive:
            out.append((glob + ident, _imap_letters(positive)))
        if negative:
            out.append(("-" + glob + ident, _imap_letters(negative)))
    return out


def owner_may_administer(rows: Iterable[Mapping[str, str]], owner: str) -> bool:
    """Whether ``owner`` keeps the admin right on a folder, from its ``acl get`` rows: GETACL, which an
    IMAP read sends as the owner, is refused without it. False when an entry naming the owner (``owner``,
    ``user=<owner>``) gives rights without admin and none gives admin, or anyone's entry takes admin away:
    such a mailbox is read over IMAP, which says so as it always did."""
    given = taken = named = False
    for row in rows:
        ident = row.get("id", "")
        words = row.get("rights", "").split()
        if ident in ("owner", f"user={owner}"):
            named = named or any(not w.startswith("-") for w in words)
            given = given or "admin" in words
        if "-admin" in words and ident in ("owner", f"user={owner}", "anyone", "authenticated"):
            taken = True
    return not taken and (given or not named)


ATTRIBUTE_RIGHTS = frozenset({"read", "write-seen", "write", "insert", "post"})
"""With lookup, any of these lets a user read a folder's attributes (RFC 5464 with ACLs, as Dovecot does)."""


def owner_surely_reads_attributes(rows: Iterable[Mapping[str, str]], owner: str) -> bool:
    """Whether ``owner`` surely may read the attributes (IMAP METADATA) of a folder with these ``acl get``
    rows: the rights Dovecot gives them — their defaults (all rights) when no entry applies to them, else
    those of the last kind of entry that applies (locals before globals, each in ``ACL_ID_ORDER``: each kind
    that applies *replaces* the rights the kinds before it gave, as ``acl_object_rebuild_cache`` does; so
    ``anyone lr`` with ``owner la`` leaves the owner ``la``) — hold lookup and one of ATTRIBUTE_RIGHTS. False
    when unsure — a group they may be in coming at or after that kind, a negative right that may touch
    them, an identifier of no known kind: doveadm, which knows, is asked."""
    mine = ("owner", f"user={owner}", "anyone", "authenticated")
    given: dict[tuple[bool, int], set[str]] = {}
    groups: set[tuple[bool, int]] = set()
    for row in rows:
        ident = row.get("id", "")
        words = row.get("rights", "").split()
        kind = ident.partition("=")[0]
        grouped = kind in ("group", "group-override")
        if not (ident in mine or grouped):
            continue
        if any(w.startswith("-") for w in words) or kind not in ACL_ID_ORDER:
            return False
        at = (row.get("global", "").strip() not in ("", "0", "no", "n"), ACL_ID_ORDER[kind])
        if grouped:
            groups.add(at)
        else:
            given.setdefault(at, set()).update(words)
    if not given:
        return not groups
    last = max(given)
    if any(at >= last for at in groups):
        return False
    return "lookup" in given[last] and bool(given[last] & ATTRIBUTE_RIGHTS)


def own_folder_names(rows: Iterable[Mapping[str, str]], prefixes: Iterable[str]) -> dict[str, list[str]]:
    """{user: [folder, …]} from ``doveadm mailbox list`` rows, leaving out the other namespaces (``shared/``
    and its root ``shared``): the names a user's own LIST shows (selectable or not; ``acl get`` tells)."""
    heads = [p for p in prefixes if p]
    out: dict[str, list[str]] = {}
    for row in rows:
        user, name = row.get("username", ""), row.get("mailbox", "")
        if not user or not name or _in_other_namespace(name, heads):
            continue
        out.setdefault(user, []).append(name)
    return out
