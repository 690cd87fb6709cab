"""The desired state: pydantic models of the TOML files (DESIGN §2) and of the merged organisation.

Two layers:
- ``StateFile`` is what one TOML file may hold (any file may hold any table); it is also what
  ``mailstate schema`` exports as JSON Schema for editors.
- ``State`` is the whole organisation after every file is loaded, merged and validated; everything
  downstream (naming, plan, providers) works on it.

Every object loaded from a file carries a ``Source`` (file, line of its table, line of each key) in a
private attribute, so that errors and plan reasons can point at it.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

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

from mailstate.text import CONTROL_CLASS, control_message

if TYPE_CHECKING:
    from mailstate.regulation import Regulation as RulesRegulation

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


def _controls_in(value: Any) -> str | None:
    if isinstance(value, str):
        return control_message(value)
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
        raise ValueError("must not be empty: write the full name")
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
            raise ValueError('a duration is a string such as "90 days", "3 months" or "1 year"')
        m = cls._RE.match(value)
        if not m:
            raise ValueError(f'{value!r} is not a duration such as "90 days", "3 months" or "1 year"')
        unit = m.group(2).lower()
        unit = {"d": "day", "w": "week", "y": "year"}.get(unit, unit).rstrip("s")
        amount = int(m.group(1))
        if amount * {"day": 1, "week": 7, "month": 31, "year": 366}[unit] > 100 * 366:
            raise ValueError(f"{value!r} is longer than 100 years")  # a date that far out does not exist
        return cls(amount, unit)  # type: ignore[arg-type]

    def after(self, start: date) -> date:
        """The date this duration after ``start`` (31 Jan + 1 month = 28/29 Feb)."""
        if self.unit == "day":
            return date.fromordinal(start.toordinal() + self.amount)
        if self.unit == "week":
            return date.fromordinal(start.toordinal() + 7 * self.amount)
        months = self.amount * (12 if self.unit == "year" else 1)
        y, m = divmod(start.month - 1 + months, 12)
        year, month = start.year + y, m + 1
        return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))

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
        raise ValueError('a size is a string such as "2 GiB"')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    raise ValueError(f'{value!r} is not a size such as "2 GiB" or "500 MiB"')


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


def parse_ref(ref: str) -> tuple[Literal["person", "unit", "group"], str]:
    """Split a reference into (kind, id): "bangnv" → person, "unit:qlcn" → unit, "group:x" → group."""
    if ref.startswith("unit:"):
        return "unit", ref[5:]
    if ref.startswith("group:"):
        return "group", ref[6:]
    return "person", ref


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


# --------------------------------------------------------------------------------------------------
# mailstate.toml tables


def base_dn_of(domain: str) -> str:
    """dc=sct,dc=binhdinh,dc=gov,dc=vn from sct.binhdinh.gov.vn."""
    return ",".join(f"dc={part}" for part in domain.split("."))


RegulationPreset = Literal["mic-1862", "most-4105", "vinhlong-3088", "monre-2019", "binhdinh-sct-148"]
"""The regulations shipped in ``mailstate/regulations`` (tests check this list against the files)."""

RuleCode = Literal[
    "lifecycle.suspended", "lifecycle.keep_after_leaving", "lifecycle.lock_after_leaving",
    "lifecycle.remove_after_leaving", "lifecycle.lock_after_inactivity", "lifecycle.remove_after_inactivity",
    "lifecycle.dissolved", "lifecycle.unused_unit_mailbox", "handover.head", "handover.head_changed",
    "delegation.delegate", "delegation.revoked", "shared_folder.folder", "shared_folder.reader",
    "shared_folder.writer", "grant.access", "grant.ended", "archive.before_removal",
    "archive.verified_before_delete", "password.missing", "password.policy", "naming.domain",
    "naming.address", "naming.old_address_kept", "naming.old_address_expired", "naming.address_taken",
    "naming.login_names", "registration.backup_mailbox", "unlisted.managed", "acl.not_listed",
    "removal.rights_revoked", "removal.old_address",
]
"""Every rule code (``mailstate.regulation.RULES``; a test keeps the two equal)."""

Article = Annotated[
    str, Field(pattern=r"^\d{1,3}(\.\d{1,3})?(\.?[a-zđ])?$", max_length=12),
    BeforeValidator(_refuse_controls),  # before the pattern: a control character is named, never echoed
]


class Regulation(Located):
    """The agency's own decision and the article of each rule it enforces (cited in plan reasons)."""

    decision: Name | None = Field(
        default=None,
        description='the decision, e.g. "Quyết định 25/2021/QĐ-UBND tỉnh Phú Yên"; replaces the preset\'s',
    )
    articles: dict[RuleCode, Article] = Field(
        default_factory=dict,
        description='article of each rule: "13", "13.2" or "13.2.b" (Điều 13 khoản 2 điểm b)',
    )


class Organization(Located):
    """The agency (exactly one [organization] across the files, normally in mailstate.toml)."""

    name: Name = Field(description="full name, e.g. Sở Công Thương tỉnh Bình Định (Unicode, stored NFC)")
    domain: Annotated[
        str,
        Field(
            pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
            max_length=253,
            description="the agency's own domain; every address uses it",
        ),
    ]
    base_dn: str | None = Field(default=None, description="LDAP suffix; defaults from the domain (dc=…)")
    language: Literal["vi", "en"] = Field(
        default="vi", description="language of plans, apply and drift reports: vi or en; --lang overrides"
    )
    regulation: RegulationPreset | None = Field(
        default=None,
        description="the agency's regulation, a shipped preset; [regulation] adds or overrides articles",
    )

    @field_validator("domain", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @property
    def suffix(self) -> str:
        return self.base_dn or base_dn_of(self.domain)


class Naming(Located):
    """Address templates (REGULATIONS §2): {given} {family} {middle} {initials} {unit} {unit_name} {group}."""

    person: str = Field(
        default="{given}{initials}",
        description='address template for people: BĐ "{given}{initials}", VL "{initials}{given}.{unit}"',
    )
    unit: str = Field(
        default="{unit}", description='address template for unit mailboxes: "{unit}" or "{unit_name}"'
    )
    group: str = Field(default="{group}", description="address template for groups")
    collision: Literal["number"] = Field(
        default="number", description="bangnv, bangnv2, bangnv3 … (BĐ art.4.2)"
    )
    collision_start: int = Field(default=2, ge=2, le=9, description="first sequence number: bangnv2")
    separator: str = Field(
        default="", pattern=r"^[.-]?$", description='between the name and its sequence number: "", "." or "-"'
    )


_D = 'a duration such as "90 days", "3 months", "1 year"'


LifecycleRule = Literal[  # the keys of the older [lifecycle.cite]
    "suspended",
    "keep_after_leaving",
    "lock_after_leaving",
    "remove_after_leaving",
    "inactivity",
    "dissolved",
    "unused_unit_mailbox",
]
LIFECYCLE_CITE_RULES: dict[str, tuple[str, ...]] = {
    "suspended": ("lifecycle.suspended",),
    "keep_after_leaving": ("lifecycle.keep_after_leaving",),
    "lock_after_leaving": ("lifecycle.lock_after_leaving",),
    "remove_after_leaving": ("lifecycle.remove_after_leaving",),
    "inactivity": ("lifecycle.lock_after_inactivity", "lifecycle.remove_after_inactivity"),
    "dissolved": ("lifecycle.dissolved",),
    "unused_unit_mailbox": ("lifecycle.unused_unit_mailbox",),
}
"""``[lifecycle.cite]`` keys → the rule codes whose article they give (kept for older states)."""


class Lifecycle(Located):
    """When mailboxes are locked and removed (REGULATIONS §3); durations such as "90 days", "3 months"."""

    lock_after_leaving: DurationField = Field(
        default=Duration(3, "month"), description=f"lock after left_on; {_D}"
    )
    remove_after_leaving: DurationField = Field(
        default=Duration(12, "month"), description=f"archive and remove after left_on; {_D}"
    )
    lock_after_inactivity: DurationField = Field(
        default=Duration(6, "month"), description=f"lock after no login for this long; {_D}"
    )
    remove_after_inactivity: DurationField = Field(
        default=Duration(12, "month"),
        description=f"remove after no login for this long; {_D}",
    )
    remove_unused_unit_mailbox: DurationField = Field(
        default=Duration(6, "month"), description=f"remove a unit mailbox never used; {_D}"
    )
    keep_old_address: DurationField = Field(
        default=Duration(6, "month"), description=f"a changed address keeps receiving as an alias; {_D}"
    )
    deliver_to_leavers: bool = Field(
        default=False,
        description="keep delivering mail to a person locked because they left (default: refused at "
        "RCPT with a 5xx and the reason, docs/mailflow.md)",
    )
    cite: dict[LifecycleRule, Article] = Field(
        default_factory=dict,
        description="older form of [regulation.articles] for the lifecycle rules, e.g. "
        '{ lock_after_leaving = "10.4" }: the article of the [regulation] decision',
    )


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


class Quota(Located):
    """Mailbox sizes such as "2 GiB" or "500 MB"."""

    person: SizeField = Field(default=2 * 1024**3, description='personal mailboxes, e.g. "2 GiB"')
    unit: SizeField = Field(default=10 * 1024**3, description='unit mailboxes, e.g. "10 GiB"')
    overrides: dict[str, SizeField] = Field(
        default_factory=dict, description='per reference: bangnv = "5 GiB", "unit:qlcn" = "20 GiB"'
    )


_SECRET = "secrets never in TOML: only the name of the variable or file holding them"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""``password_env`` holds the name of an environment variable, never the password itself."""


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
        description="subtrees (ou names) where live objects absent from the TOML are deleted (DESIGN §6.2)",
    )


class ImapSettings(Located):
    """The IMAP server (Dovecot), reached as a master user; its password from password_env or _file."""

    url: str = Field(default="imaps://localhost", description="imaps://host[:port]")
    admin_user: str = Field(default="mailstate", description="a Dovecot master user")
    password_env: str | None = Field(
        default="MAILSTATE_IMAP_PASSWORD", description=_SECRET, pattern=ENV_NAME_PATTERN
    )
    password_file: str | None = Field(default=None, description=_SECRET)
    ca_file: str | None = Field(default=None, description="CA certificate to verify the server")
    allow_plain: bool = Field(default=False, description="allow imap:// without TLS (never in production)")
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


class Providers(Located):
    """Connection settings of the back-ends (overridable by MAILSTATE_* environment variables)."""

    ldap: LdapSettings = Field(default_factory=LdapSettings)
    imap: ImapSettings | None = None
    ssh: SshSettings | None = None


class Safety(Located):
    """DESIGN §6.3: a plan that removes or locks more than this stops unless explicitly allowed."""

    max_destructive_count: int = Field(default=10, ge=0, description="removals and locks allowed in one plan")
    max_destructive_share: float = Field(default=0.3, ge=0, le=1, description="share of live mailboxes (0–1)")
    min_existing: int = Field(
        default=10, ge=0, description="below this many live mailboxes the share is not applied"
    )


# --------------------------------------------------------------------------------------------------
# Units, people, groups, folders, grants


class Unit(Located):
    """A unit (phòng, chi cục …) and its unit mailbox (MIC art.2; MOST art.12.3a; BĐ art.4.1)."""

    id: Id = Field(description="stable key, never reused: the unit mailbox's login and LDAP uid")
    name: Name = Field(description="e.g. Phòng Quản lý Công nghiệp (Unicode, stored NFC)")
    parent: Id | None = Field(default=None, description="the parent unit's id: units form a tree")
    head: Id | None = Field(
        default=None, description="person id of the head, who manages the unit mailbox (MIC art.6)"
    )
    delegates: list[Id] = Field(
        default_factory=list, description="people of the unit who may use the unit mailbox (MIC art.6)"
    )
    address: str | None = Field(
        default=None, description="derived from [naming].unit, then pinned by `assign`"
    )
    abbreviation: str | None = Field(
        default=None, description="{unit} in templates when it differs from the id"
    )
    dissolved_on: date | None = Field(
        default=None, description="the unit mailbox is locked, archived, removed"
    )


PHONE_PATTERN = r"^[A-Za-z0-9'()+,./:?= -]+$"
"""LDAP's telephoneNumber syntax is a PrintableString (RFC 4517 §3.3.31): slapd refuses anything else
(``*``, ``#``, ``;``, letters with marks) at apply time, so validation refuses it first."""


class Person(Located):
    """A staff member and their personal mailbox (MIC art.2; MOST art.12.3b)."""

    id: Id = Field(description="stable key (LDAP uid, login); never changes, even when the address does")
    name: Name = Field(description="full Vietnamese name, family name first (Unicode, stored NFC)")
    unit: Id | None = Field(default=None, description="the unit's id; defaults to the file's [unit]")
    title: Text | None = Field(default=None, description="position (chức vụ)")
    phone: str | None = Field(default=None, description="office phone (digits, space, ( ) + - . /)")
    mobile: str | None = None
    backup_email: str | None = Field(
        default=None, description="backup mailbox outside the agency (MOST appendix 03)"
    )
    address: str | None = Field(
        default=None, description="derived from [naming].person, then pinned by `assign`"
    )
    joined_on: date | None = None
    left_on: date | None = Field(
        default=None, description="retirement / transfer out: the lifecycle clock starts"
    )
    keep_after_leaving: bool = Field(default=False, description="MOST art.18.3 exception")
    suspended: Text | None = Field(default=None, description="reason of a temporary lock (MOST art.18.4)")
    old_addresses: list[str] = Field(
        default_factory=list, description="kept as aliases until keep_old_address"
    )

    @field_validator("phone", "mobile")
    @classmethod
    def _telephone_number(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(PHONE_PATTERN, v):
            bad = "".join(sorted({c for c in v if not re.fullmatch(PHONE_PATTERN, c)}))
            raise ValueError(
                f"{v!r} is not a telephone number LDAP accepts (a PrintableString): {bad!r} not allowed; "
                "use digits, letters without marks, space and ' ( ) + , - . / : ? ="
            )
        return v


class Group(Located):
    """A group address that forwards to its members (MOST art.12.5c)."""

    id: Id = Field(description="stable key, unique across people, units and groups")
    name: Name
    address: str | None = Field(
        default=None, description="derived from [naming].group, then pinned by `assign`"
    )
    members: list[Ref] = Field(
        default_factory=list, description='person ids, "unit:<id>" unit mailboxes, "group:<id>" nested groups'
    )


def inbox_canonical(path: str) -> str:
    """A folder path as the IMAP server compares it: a first level ``inbox`` in any letter case is ``INBOX``
    (RFC 3501 §5.1), every other name exactly as written (``Inbox/X`` is ``INBOX/X``; ``Hồ sơ/inbox`` and
    ``INBOXES`` stay)."""
    top, sep, rest = path.partition("/")
    return "INBOX" + sep + rest if top.upper() == "INBOX" else path


class SharedFolder(Located):
    """A folder used by a group or everyone, with read and write rights (MIC art.2, art.7)."""

    mailbox: Ref = Field(description='whose mailbox holds it: a person id or "unit:<id>"')
    path: Text = Field(description="folder path, names separated by '/', e.g. Văn bản đến/2026")
    purpose: Text = Field(description="the nature of its content (MIC art.7.1)")
    read: list[Ref] = Field(
        default_factory=list, description="who may read: person ids, unit:<id>, group:<id>"
    )
    write: list[Ref] = Field(
        default_factory=list, description="who may write: person ids, unit:<id>, group:<id>"
    )


class AccessGrant(Located):
    """Time-boxed access to a mailbox (MOST art.18.9); revoked when it expires."""

    mailbox: Ref = Field(description='the mailbox: a person id or "unit:<id>"')
    to: Ref = Field(description="who gets access: a person id, unit:<id> or group:<id>")
    rights: Literal["read", "write", "full"] = "read"
    until: date = Field(description="last day of access, a TOML date such as 2026-12-31")
    reason: Text = Field(description="the decision that allows it, e.g. Quyết định 12/QĐ-TTr")


class StateFile(BaseModel):
    """What one TOML file of the state repository may hold (any file may hold any table)."""

    model_config = ConfigDict(extra="forbid", title="mailstate state file")

    organization: Organization | None = None
    naming: Naming | None = None
    lifecycle: Lifecycle | None = None
    regulation: Regulation | None = None
    password: PasswordPolicy | None = None
    quota: Quota | None = None
    safety: Safety | None = None
    providers: Providers | None = None
    unit: Unit | list[Unit] | None = Field(
        default=None, description="[unit] in a unit's file, or [[unit]] entries"
    )
    person: list[Person] = Field(default_factory=list)
    group: list[Group] = Field(default_factory=list)
    shared_folder: list[SharedFolder] = Field(default_factory=list)
    access_grant: list[AccessGrant] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# The merged organisation


@dataclass
class State:
    """The whole desired state after loading every file; ids are unique across files."""

    root: Path
    organization: Organization
    naming: Naming = field(default_factory=Naming)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    regulation: Regulation = field(default_factory=Regulation)
    password: PasswordPolicy = field(default_factory=PasswordPolicy)
    quota: Quota = field(default_factory=Quota)
    safety: Safety = field(default_factory=Safety)
    providers: Providers = field(default_factory=Providers)
    units: dict[str, Unit] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    shared_folders: list[SharedFolder] = field(default_factory=list)
    access_grants: list[AccessGrant] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    """Every TOML file read, absolute, in the order read (sorted)."""

    @property
    def domain(self) -> str:
        return self.organization.domain

    @property
    def base_dn(self) -> str:
        return self.organization.suffix

    @property
    def language(self) -> str:
        return self.organization.language

    @property
    def rules(self) -> RulesRegulation:
        """The organisation's regulation: the preset, its own decision and articles, [lifecycle.cite]."""
        from mailstate.regulation import combine

        own: dict[str, str] = {}
        for key, article in self.lifecycle.cite.items():
            own.update({code: article for code in LIFECYCLE_CITE_RULES[key]})
        own.update({str(k): v for k, v in self.regulation.articles.items()})
        return combine(self.organization.regulation, self.regulation.decision, own)

    def summary(self) -> str:
        return (
            f"{len(self.units)} units, {len(self.people)} people, {len(self.groups)} groups, "
            f"{len(self.shared_folders)} shared folders, {len(self.access_grants)} access grants"
        )
