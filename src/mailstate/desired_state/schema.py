"""The desired state: pydantic models of the TOML files and of the merged organisation.

Two layers:
- ``StateFile`` is what one TOML file may hold (any file may hold any table); it is also what
  ``mailstate schema`` exports as JSON Schema for editors.
- ``State`` is the whole organisation after every file is loaded, merged and validated; everything
  downstream (naming, plan, providers) works on it.

Every object loaded from a file carries a ``Source`` (file, line of its table, line of each key) in a
private attribute, so that errors and plan reasons can point at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
)

from mailstate.model.i18n import N_, _, ngettext
from mailstate.model.regulation import Regulation as RulesRegulation
from mailstate.model.regulation import combine
from mailstate.model.settings import (
    Duration,
    DurationField,
    Id,
    ImapSettings,
    IredmailSettings,
    LdapSettings,
    Located,
    Name,
    NotifySettings,
    PasswordPolicy,
    Ref,
    SizeField,
    SshSettings,
    Text,
    _refuse_controls,
)

# --------------------------------------------------------------------------------------------------
# mailstate.toml tables


def base_dn_of(domain: str) -> str:
    """dc=sct,dc=binhdinh,dc=gov,dc=vn from sct.binhdinh.gov.vn."""
    return ",".join(f"dc={part}" for part in domain.split("."))


RegulationPreset = Literal["mic-1862", "most-4105", "vinhlong-3088", "monre-2019", "binhdinh-sct-148"]
"""The regulations shipped in ``mailstate/regulations`` (tests check this list against the files)."""

RuleCode = Literal[
    "lifecycle.suspended", "lifecycle.keep_after_leaving", "lifecycle.lock_after_leaving",
    "lifecycle.remove_after_leaving", "lifecycle.remove_after_notice", "lifecycle.lock_after_inactivity",
    "lifecycle.remove_after_inactivity",
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
    maximum: dict[RuleCode, DurationField] = Field(
        default_factory=dict,
        description='the longest duration the article of a lifecycle rule allows, e.g. '
        '{ "lifecycle.remove_after_leaving" = "12 months" }: a longer [lifecycle] setting is warned about',
    )
    keep_after_leaving_posts: list[Text] | None = Field(
        default=None,
        description="posts (words of a title) whose holders may keep their mailbox after leaving, e.g. "
        '["Vụ trưởng", "Cục trưởng"]; replaces the preset\'s list ([] = no such check)',
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
    """Address templates: {given} {family} {middle} {initials} {unit} {unit_name} {group}."""

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
    """When mailboxes are locked and removed; durations such as "90 days", "3 months"."""

    lock_after_leaving: DurationField = Field(
        default=Duration(3, "month"), description=f"lock after left_on; {_D}"
    )
    remove_after_leaving: DurationField = Field(
        default=Duration(12, "month"), description=f"archive and remove after left_on; {_D}"
    )
    remove_after_notice: DurationField | None = Field(
        default=None,
        description="archive and remove within this long after a person's notice_on (the written notice "
        f"of the leaving), when that comes before remove_after_leaving; {_D}",
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


class Quota(Located):
    """Mailbox sizes such as "2 GiB" or "500 MB"."""

    person: SizeField = Field(default=2 * 1024**3, description='personal mailboxes, e.g. "2 GiB"')
    unit: SizeField = Field(default=10 * 1024**3, description='unit mailboxes, e.g. "10 GiB"')
    overrides: dict[str, SizeField] = Field(
        default_factory=dict, description='per reference: bangnv = "5 GiB", "unit:qlcn" = "20 GiB"'
    )


class Providers(Located):
    """Connection settings of the back-ends (overridable by MAILSTATE_* environment variables)."""

    ldap: LdapSettings = Field(default_factory=LdapSettings)
    iredmail: IredmailSettings | None = None
    imap: ImapSettings | None = None
    ssh: SshSettings | None = None


class Safety(Located):
    """A plan that removes or locks more than this stops unless explicitly allowed (--allow-destructive)."""

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
    mailbox: bool = Field(
        default=True,
        description="false: the unit has no unit mailbox yet (imported from a directory that has none); "
        "nothing is created for it until this is true (or removed)",
    )


PHONE_PATTERN = r"^[A-Za-z0-9'()+,./:?= -]+$"
"""LDAP's telephoneNumber syntax is a PrintableString (RFC 4517 §3.3.31): slapd refuses anything else
(``*``, ``#``, ``;``, letters with marks) at apply time, so validation refuses it first."""


KEEP_NEEDS_DECISION = N_(
    'keep_after_leaving needs who decided it and why: write keep_after_leaving = { decision = "Quyết định '
    '…/đơn đề nghị ngày …", post = "the post held, e.g. Vụ trưởng Vụ Tổ chức cán bộ", until = 2027-12-31 } '
    "(post and until are optional)"
)


class KeepAfterLeaving(Located):
    """A mailbox kept on request after its owner left: who decided it and why, the post that allows it."""

    decision: Text = Field(
        min_length=1,
        description="who decided and why: the decision or the approved request, e.g. Công văn 12/TCCB "
        "ngày 05/09/2024 (đơn đề nghị của ông Thọ, Bộ trưởng đồng ý)",
    )
    post: Text | None = Field(
        default=None,
        description="the post held that allows it (default: the person's title), checked against the "
        "posts of the agency's rule where it has one",
    )
    until: date | None = Field(
        default=None,
        description="last day it is kept; from the next day the leaving rules count from this date",
    )

    @field_validator("decision")
    @classmethod
    def _decision_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError(_(KEEP_NEEDS_DECISION))
        return v


def _keep(value: Any) -> Any:
    """``keep_after_leaving``: a table with the decision, or ``false``; a bare ``true`` is refused."""
    if value is True:
        raise ValueError(_(KEEP_NEEDS_DECISION))
    if value is False:
        return None
    return value


class Suspension(Located):
    """``suspended = { reason = "…", disabled = true }``: a temporary lock, in its table form."""

    reason: Text = Field(min_length=1, description="why the mailbox is locked; the owner is told")
    disabled: bool = Field(
        default=False,
        description="true: the account was disabled in the directory before mailstate (imported that way): "
        "it stays as found — no login, and its mail refused where the server refuses a disabled account's "
        "mail (iRedMail) — and mailstate writes no lock reason to it",
    )


def _suspension_form(value: Any) -> str:
    return "<table>" if isinstance(value, dict | Suspension) else "<text>"


UNION_TAGS = frozenset({"<text>", "<table>"})
"""Tags of a field written either as text or as a table (``suspended``): they are no TOML key, and an error's
location drops them (validate.pydantic_problems)."""


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
    notice_on: date | None = Field(
        default=None,
        description="the day the unit's written notice of the leaving reached the IT team: the mailbox is "
        "then removed remove_after_notice after it (if that comes before remove_after_leaving)",
    )
    keep_after_leaving: Annotated[KeepAfterLeaving | None, BeforeValidator(_keep)] = Field(
        default=None,
        description="kept on request after leaving (not locked or removed for leaving): "
        '{ decision = "who decided and why", post = "post held", until = date }',
    )
    suspended: Annotated[
        Annotated[Text, Tag("<text>")] | Annotated[Suspension, Tag("<table>")],
        Discriminator(_suspension_form),
    ] | None = Field(
        default=None,
        description="reason of a temporary lock; the owner is told (at backup_email when there is one); "
        'or { reason = "…", disabled = true } for an account disabled in the directory before mailstate',
    )
    old_addresses: list[str] = Field(
        default_factory=list, description="kept as aliases until keep_old_address"
    )

    @property
    def suspension(self) -> str | None:
        """The reason of the temporary lock, whichever form ``suspended`` takes."""
        s = self.suspended
        return s.reason if isinstance(s, Suspension) else s

    @property
    def disabled_before(self) -> bool:
        """Disabled in the directory before mailstate, and kept as found (``suspended.disabled``)."""
        return isinstance(self.suspended, Suspension) and self.suspended.disabled

    @field_validator("phone", "mobile")
    @classmethod
    def _telephone_number(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(PHONE_PATTERN, v):
            bad = "".join(sorted({c for c in v if not re.fullmatch(PHONE_PATTERN, c)}))
            raise ValueError(
                _("{value} is not a telephone number LDAP accepts (a PrintableString): {bad} not allowed; "
                  "use digits, letters without marks, space and ' ( ) + , - . / : ? =").format(
                    value=repr(v), bad=repr(bad))
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
    notify: NotifySettings | None = None
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
    notify: NotifySettings | None = None
    """``[notify]``: the relay that tells the owner of a temporary lock (reconciler.apply.notify)."""
    units: dict[str, Unit] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    shared_folders: list[SharedFolder] = field(default_factory=list)
    access_grants: list[AccessGrant] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    """Every TOML file read, absolute, in the order read (sorted)."""
    warnings: list[Any] = field(default_factory=list)
    """``errors.Problem``s that do not stop a plan (a duration beyond its article's maximum)."""

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

        own: dict[str, str] = {}
        for key, article in self.lifecycle.cite.items():
            own.update({code: article for code in LIFECYCLE_CITE_RULES[key]})
        own.update({str(k): v for k, v in self.regulation.articles.items()})
        reg = self.regulation
        posts = None if reg.keep_after_leaving_posts is None else tuple(reg.keep_after_leaving_posts)
        return combine(self.organization.regulation, reg.decision, own,
                       {str(k): str(v) for k, v in reg.maximum.items()}, posts)

    def summary(self) -> str:
        return ", ".join((
            ngettext("{n} unit", "{n} units", len(self.units)).format(n=len(self.units)),
            ngettext("{n} person", "{n} people", len(self.people)).format(n=len(self.people)),
            ngettext("{n} group", "{n} groups", len(self.groups)).format(n=len(self.groups)),
            ngettext("{n} shared folder", "{n} shared folders", len(self.shared_folders)).format(
                n=len(self.shared_folders)),
            ngettext("{n} access grant", "{n} access grants", len(self.access_grants)).format(
                n=len(self.access_grants)),
        ))
