"""The base of every TOML table (``Located``: its source position, no control character in any string),
the small value types the tables share (ids, references, durations, sizes, free text), and the settings of
the built-in providers (``[providers.ldap]``, ``[providers.imap]``, ``[providers.ssh]``, ``[password]``).

These are vocabulary: the desired state is made of them and the providers are configured with them, so
they live below both (desired_state.schema builds the organisation from them).
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from mailstate.model.i18n import _
from mailstate.text import CONTROL_CLASS, bad_characters, char_name

# --------------------------------------------------------------------------------------------------
# Small value types

ID_PATTERN = r"^[a-z][a-z0-9._-]{0,63}$"
"""A stable id: a safe LDAP uid / RDN value (lower-case ASCII letter first, then letters, digits, . _ -)."""
ID_RE = re.compile(ID_PATTERN)

REF_PATTERN = r"^((unit|group):)?[a-z][a-z0-9._-]{0,63}$"
REF_RE = re.compile(REF_PATTERN)


def nfc(value: Any) -> Any:
    """``value`` in Unicode NFC if it is a string (Vietnamese text is stored NFC: VL art.9, BĐ art.7.2)."""
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else value


CONTROL_ERROR = "control_character"
"""The pydantic error type of a string holding a control or bidi character (validate.py maps it to its
message, which never echoes the value)."""


def _refuse_controls(value: Any) -> Any:
    """Every string in ``value`` (a string, or inside lists, tuples and dicts, keys too) is free of control,
    line-separator and bidi characters (mailstate.text): refused with where the first one is."""
    msg = _controls_in(value)
    if msg is not None:
        raise PydanticCustomError(CONTROL_ERROR, "{message}", {"message": msg})
    return value


def control_text(text: str) -> str | None:
    """Why ``text`` is refused, in the language of the run (the first bad character, its position, how
    many), or None when it is clean; the text itself is never echoed (mailstate.text.control_message)."""
    if text.isprintable():  # every character refused is a control, separator or format one: none here
        return None
    bad = bad_characters(text)
    if not bad:
        return None
    pos, ch = bad[0]
    more = _(" (and {n} more)").format(n=len(bad) - 1) if len(bad) > 1 else ""
    return _("holds a control or bidirectional character: {character} at character {position}{more}; write "
             "one line of printable text (no line breaks, tabs, escape sequences or direction "
             "overrides)").format(character=char_name(ch), position=pos, more=more)


def _controls_in(value: Any) -> str | None:
    if isinstance(value, str):
        return control_text(value)
    if isinstance(value, list | tuple):
        for item in value:
            msg = _controls_in(item)
            if msg is not None:
                return msg
    elif isinstance(value, dict):
        for k, v in value.items():
            msg = _controls_in(k) or _controls_in(v)
            if msg is not None:
                return msg
    return None


_NO_CONTROLS_SCHEMA = f"^[^{CONTROL_CLASS}]*$".encode("unicode_escape").decode("ascii")

Text = Annotated[
    str, BeforeValidator(nfc), AfterValidator(_refuse_controls), WithJsonSchema(
        {"type": "string", "pattern": _NO_CONTROLS_SCHEMA}
    )
]
"""Free text (titles, purposes, reasons …): always NFC, one line of printable characters — no C0/C1
control, DEL, line separator or bidi override (mailstate.text); ``Located`` checks every other string too."""


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError(_("must not be empty: write the full name"))
    return value


Name = Annotated[
    str, BeforeValidator(nfc), AfterValidator(_refuse_controls), AfterValidator(_not_blank),
    Field(min_length=1), WithJsonSchema({"type": "string", "minLength": 1, "pattern": _NO_CONTROLS_SCHEMA}),
]
"""The name of an organisation, unit, person or group: NFC, never empty (addresses are derived from it),
no control character (as ``Text``)."""


@dataclass(frozen=True, order=True)
class Duration:
    """A calendar duration such as "90 days", "3 months", "1 year" (months and years are calendar-aware)."""

    amount: int
    unit: Literal["day", "week", "month", "year"]

    _RE = re.compile(r"^\s*(\d+)\s*(day|days|d|week|weeks|w|month|months|year|years|y)\s*$", re.I)

    @classmethod
    def parse(cls, value: Any) -> Duration:
        if isinstance(value, Duration):
            return value
        if not isinstance(value, str):
            raise ValueError(_('a duration is a string such as "90 days", "3 months" or "1 year"'))
        m = cls._RE.match(value)
        if not m:
            raise ValueError(_('{value} is not a duration such as "90 days", "3 months" or "1 year"').format(
                value=repr(value)))
        unit = m.group(2).lower()
        unit = {"d": "day", "w": "week", "y": "year"}.get(unit, unit).rstrip("s")
        amount = int(m.group(1))
        if amount * {"day": 1, "week": 7, "month": 31, "year": 366}[unit] > 100 * 366:
            # a date that far out does not exist
            raise ValueError(_("{value} is longer than 100 years").format(value=repr(value)))
        return cls(amount, unit)  # type: ignore[arg-type]

    def after(self, start: date) -> date:
        """The last day of the period of this duration counted from the event on ``start`` (31 Jan +
        1 month = 28/29 Feb). As the Civil Code counts a period (arts. 147-148), the day of the event is
        not counted and the period ends at the end of this day: "after 3 months" is over only from the
        next day (``due``)."""
        if self.unit == "day":
            return date.fromordinal(start.toordinal() + self.amount)
        if self.unit == "week":
            return date.fromordinal(start.toordinal() + 7 * self.amount)
        months = self.amount * (12 if self.unit == "year" else 1)
        y, m = divmod(start.month - 1 + months, 12)
        year, month = start.year + y, m + 1
        return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))

    def due(self, start: date) -> date:
        """The first day on which more than this duration has passed since ``start``: the day after the
        period's last day (``after``). 01/10 + "3 months": the period ends at the end of 01/01, so an
        action "after 3 months" is due on 02/01; 31/08 + "6 months" ends on 28/02, due 01/03. A zero
        duration ("0 days": at once) is due on ``start`` itself."""
        if self.amount == 0:
            return start
        return date.fromordinal(self.after(start).toordinal() + 1)

    def exceeds(self, other: Duration) -> bool:
        """True if, from some start day, this period ends after ``other``'s ("90 days" exceeds "3 months":
        from 01/02 the 3 months end on 01/05, the 90 days on 02/05). Every start of a 4-year cycle is
        tried."""
        first = date(2001, 1, 1).toordinal()
        return any(self.after(d) > other.after(d)
                   for d in map(date.fromordinal, range(first, first + 4 * 366)))

    def __str__(self) -> str:
        return f"{self.amount} {self.unit}{'s' if self.amount != 1 else ''}"


DurationField = Annotated[
    Duration,
    BeforeValidator(Duration.parse),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\s*\d+\s*(days?|weeks?|months?|years?|d|w|y)\s*$"}),
]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB|K|M|G|T)?\s*$", re.I)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
}


def parse_size(value: Any) -> int:
    """Bytes from "2 GiB", "500 MB", or an integer number of bytes."""
    if isinstance(value, bool):
        raise ValueError(_('a size is a string such as "2 GiB"'))
    if isinstance(value, int):
        if value < 0:
            raise ValueError(_("a size cannot be negative"))
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    raise ValueError(_('{value} is not a size such as "2 GiB" or "500 MiB"').format(value=repr(value)))


def format_size(n: int) -> str:
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"


SizeField = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|[KMGT]|B)?\s*$"}),
]

Id = Annotated[str, Field(pattern=ID_PATTERN)]
Ref = Annotated[str, Field(pattern=REF_PATTERN)]
"""A reference: a bare id is a person, ``unit:<id>`` a unit mailbox, ``group:<id>`` a group."""

GRANT_RIGHTS = ("read", "write", "full")
"""Rights an access grant or a shared-folder list may give; see providers.imap for the RFC 4314 letters."""


# --------------------------------------------------------------------------------------------------
# Source positions


@dataclass
class Source:
    """Where an object was written: its file (relative to the state dir), its table line, each key line."""

    file: str
    line: int
    fields: dict[str, int] = field(default_factory=dict)
    items: dict[str, list[int]] = field(default_factory=dict)
    """Line of each element of an array written over several lines (``members = [`` one per line)."""

    def line_of(self, name: str, index: int | None = None) -> int:
        """Line of key ``name`` (of its ``index``-th element when the array spans lines), else the table's."""
        if index is not None:
            lines = self.items.get(name)
            if lines is not None and 0 <= index < len(lines):
                return lines[index]
        return self.fields.get(name, self.line)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class Located(BaseModel):
    """Base of every TOML table: forbids unknown fields and carries its ``Source`` privately."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, validate_default=True)
    _source: Source | None = PrivateAttr(default=None)

    @property
    def source(self) -> Source:
        return self._source or Source("<unknown>", 0)

    def located(self, source: Source) -> Located:
        self._source = source
        return self

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        """Every string field of every table — free text, addresses, paths, settings, list elements and
        table keys — refuses control and bidi characters, whatever its declared type: no field can forget."""
        return _refuse_controls(value)


class PasswordPolicy(Located):
    """Password rules enforced on initial and changed passwords."""

    min_length: int = Field(default=8, ge=8, le=128, description="at least 8 characters")
    min_classes: int = Field(
        default=3,
        ge=3,
        le=4,
        description="of upper, lower, digit, special: at least 3",
    )
    change_at_first_login: bool = Field(
        default=True, description="the initial password must be changed at the first login"
    )
    forbid_account_name: bool = Field(
        default=True, description="the password may not contain the account name"
    )
    max_age: DurationField | None = Field(
        default=None, description="periodic change: slapd's pwdMaxAge (a month counts 30 days, a year 365)"
    )
    history: int = Field(
        default=0, ge=0, le=24, description="a change may not reuse one of this many earlier passwords"
    )
    max_failures: int = Field(
        default=0, ge=0, le=1000, description="failed logins in a row that lock the account (0: never)"
    )
    lockout_minutes: int = Field(
        default=15,
        ge=0,
        le=100 * 366 * 24 * 60,
        description="with max_failures: how long such a lock lasts (0: until an administrator unlocks)",
    )
    change_url: str | None = Field(
        default=None,
        pattern=r"^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/?&=+-]*)?$",
        max_length=200,
        description="where people change their password (self-service, webmail): the mail servers name "
        "it to a person whose initial password must still be changed",
    )


_SECRET = "secrets never in TOML: only the name of the variable or file holding them"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""``password_env`` holds the name of an environment variable, never the password itself."""


UserKeySetting = Annotated[
    Literal["login", "address"] | None,
    Field(
        description="what Dovecot knows a mailbox by: its login id, or its address (an iRedMail server); "
        "default: the address with [providers.iredmail], else the login (docs/iredmail.md)"
    ),
]
"""``user_key`` of [providers.imap] and [providers.ssh] (model/mailbox_users.py)."""


class LdapSettings(Located):
    """The directory (OpenLDAP) connection; the password comes from password_env or password_file."""

    url: str = Field(default="ldaps://localhost", description="ldaps://host[:port] (ldap:// needs start_tls)")
    bind_dn: str | None = Field(
        default=None, description="the service account, cn=mailstate,ou=system,<base>"
    )
    password_env: str | None = Field(
        default="MAILSTATE_LDAP_PASSWORD", description=_SECRET, pattern=ENV_NAME_PATTERN
    )
    password_file: str | None = Field(default=None, description=_SECRET)
    ca_file: str | None = Field(default=None, description="CA certificate to verify the server")
    start_tls: bool = False
    allow_plain: bool = Field(
        default=False, description="allow ldap:// without StartTLS (never in production)"
    )
    page_size: int = Field(default=500, ge=1, le=100000)
    timeout: float = Field(default=30.0, gt=0, description="seconds")
    manage_unlisted: list[str] = Field(
        default_factory=list,
        description="subtrees (ou names) where live objects absent from the TOML are deleted (other live "
        "objects are only reported)",
    )


class IredmailSettings(LdapSettings):
    """The directory of an iRedMail server (docs/iredmail.md): the same connection settings as
    ``[providers.ldap]``, bound as iRedMail's write account (``cn=vmailadmin,<base>``). Writing this table
    makes the ``iredmail`` provider own the directory's kinds instead of ``ldap``."""

    REPLACES: ClassVar[str] = "ldap"
    """The provider this one stands in for when configured (registry.configured_providers)."""

    storage_base: str = Field(
        default="/var/vmail", description="iRedMail's storageBaseDirectory for new mailboxes"
    )
    storage_node: str = Field(default="vmail1", description="iRedMail's storage node (mailMessageStore)")


class ImapSettings(Located):
    """The IMAP server (Dovecot), reached as a master user; its password from password_env or _file."""

    ENV_SWITCH: ClassVar[str] = "MAILSTATE_IMAP_URL"
    """Setting this variable configures the provider without a [providers.imap] table."""

    url: str = Field(default="imaps://localhost", description="imaps://host[:port]")
    admin_user: str = Field(default="mailstate", description="a Dovecot master user")
    password_env: str | None = Field(
        default="MAILSTATE_IMAP_PASSWORD", description=_SECRET, pattern=ENV_NAME_PATTERN
    )
    password_file: str | None = Field(default=None, description=_SECRET)
    ca_file: str | None = Field(default=None, description="CA certificate to verify the server")
    allow_plain: bool = Field(default=False, description="allow imap:// without TLS (never in production)")
    user_key: UserKeySetting = None
    timeout: float = Field(default=30.0, gt=0, description="seconds")
    max_connections: int = Field(
        default=8,
        ge=1,
        le=100,
        description="IMAP connections open at once (reads and apply together); a default Dovecot drops "
        "connections past 100 in all, mail clients included",
    )


class SshSettings(Located):
    """The mail host over SSH, for doveadm (bulk reads, last logins, archives)."""

    ENV_SWITCH: ClassVar[str] = "MAILSTATE_SSH_HOST"
    """Setting this variable configures the provider without a [providers.ssh] table."""

    host: str = "localhost"
    port: int = Field(default=22, ge=1, le=65535)
    user: str = "mailstate"
    key_file: str = Field(
        default="~/.ssh/mailstate_ed25519", description="private key file (never the key itself)"
    )
    known_hosts: str | None = None
    archive_dir: str = Field(
        default="/srv/mail-archive", description="where mailboxes are archived before removal"
    )
    doveadm: str = "doveadm"
    timeout: float = Field(default=30.0, gt=0, description="seconds")
    user_key: UserKeySetting = None




class NotifySettings(Located):
    """The SMTP relay through which apply tells the owner of a temporarily locked mailbox (MOST art.18.4),
    at their ``backup_email`` (docs/regulation.md). Without this table (and without MAILSTATE_SMTP_URL)
    nothing is sent: the plan and the journal still say who must be told."""

    ENV_SWITCH: ClassVar[str] = "MAILSTATE_SMTP_URL"
    """Setting this variable configures the sending without a [notify] table (and overrides ``url``)."""

    url: str = Field(
        default="smtp://localhost",
        description="the relay: smtp://host[:port] (STARTTLS, port 25 by default; plain only with "
        "allow_plain) or smtps://host[:port] (TLS, port 465); never a user or password in it",
    )
    allow_plain: bool = Field(
        default=False,
        description="allow smtp:// without STARTTLS (a relay on the same host; never over a network)",
    )
    from_address: str | None = Field(
        default=None, description="the sender of the notices; by default mailstate@<domain>"
    )
    contact: Text | None = Field(
        default=None,
        description="whom the owner contacts about the lock, as the notice writes it, e.g. "
        '"Phòng Công nghệ thông tin, điện thoại 0256 3822 123, cntt@sct.binhdinh.gov.vn"',
        max_length=300,
    )
    user: str | None = Field(default=None, description="the relay's login (SMTP AUTH), if it asks for one")
    password_env: str | None = Field(
        default="MAILSTATE_SMTP_PASSWORD", description=_SECRET, pattern=ENV_NAME_PATTERN
    )
    password_file: str | None = Field(default=None, description=_SECRET)
    ca_file: str | None = Field(default=None, description="CA certificate to verify the relay")
    timeout: float = Field(default=30.0, gt=0, le=600, description="seconds")

    @field_validator("url")
    @classmethod
    def _a_relay_url(cls, value: str) -> str:
        """Checked where it is written (FILE:LINE), not first at apply: smtp:// or smtps://, a host, a valid
        port, no path, and no user or password at all (``smtp://TOKEN@host`` holds a secret too); the value
        is never repeated."""
        return check_relay_url(value)

    @field_validator("from_address")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        if value is not None and not SENDER_RE.match(value):
            raise ValueError(_("'{address}' is not a valid e-mail address").format(address=value))
        return value


SENDER_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
"""The sender of the notices: an ASCII address (it goes into the SMTP envelope)."""


def check_relay_url(url: str) -> str:
    """``url`` when it is an SMTP relay's URL (``smtp://host[:port]``, ``smtps://host[:port]``), else
    ``ValueError`` saying why, never repeating the value (it may hold a secret)."""
    _scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.partition("/")[0]:
        raise ValueError(_("a user or password never in the relay's URL: write smtp://host[:port] and give "
                           "the login in [notify] user, the password by password_env or password_file (the "
                           "value is not shown)"))
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or port == -1 or port == 0:
        raise ValueError(_("not smtp://host[:port] or smtps://host[:port]"))
    return url
