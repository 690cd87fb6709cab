"""Why a change is made: a rule code, its parameters and its citation, rendered in the run's language.

A ``Reason`` is data (``rule``, ``params``, ``cite``, ``where``), so a plan can be rendered in Vietnamese
or English, and JSON carries the stable rule code beside the rendered text. ``MESSAGES`` holds the
English message id of every rule code; the catalogues translate them. Parameters are formatted by name:
dates (``DATE_PARAMS``) as dd/mm/yyyy in Vietnamese, ``duration`` as "3 tháng", ``rights`` in words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mailstate.model.i18n import N_, _, fmt_date, fmt_duration, rights_text
from mailstate.model.regulation import RULES, Citation, Regulation

MESSAGES: dict[str, str] = {
    # where the object is written (no rule: the TOML says so)
    "source.unit": N_("unit {id} ({name})"),
    "source.unit_mailbox": N_("unit mailbox of {id} ({name})"),
    "source.person": N_("person {id} ({name})"),
    "source.group": N_("group {id} ({name})"),
    "source.old_address": N_("old address {address} of {owner} listed in old_addresses"),
    "text": "{text}",
    # lifecycle
    "lifecycle.suspended": N_("suspended: {text}"),
    "lifecycle.suspended.notify": N_("the owner {owner} must be told of this temporary lock, at the "
                                     "backup mailbox {backup}"),
    "lifecycle.suspended.notify_in_person": N_("the owner {owner} must be told of this temporary lock: no "
                                               "backup mailbox is recorded, so in person or through the "
                                               "head of unit {unit}"),
    "lifecycle.keep_after_leaving": N_("left on {left_on} but kept on request ({decision}): not locked "
                                       "or removed for leaving"),
    "lifecycle.keep_after_leaving.until": N_("left on {left_on} but kept on request until {until} "
                                             "({decision}): not locked or removed for leaving until then"),
    "lifecycle.keep_after_leaving.ended": N_("left on {left_on}, kept on request until {until} "
                                             "({decision}); the leaving rules count from that day"),
    "lifecycle.remove_after_notice": N_("left on {left_on}; the notice of the leaving came on {notice_on}: "
                                        "removed within {duration} of it, by {remove_on}: locked, "
                                        "archived, then removed"),
    "lifecycle.lock_after_leaving": N_("left on {left_on}, more than {duration} ago"),
    "lifecycle.lock_after_leaving.pending": N_("left on {left_on}; lock due {lock_on}"),
    "lifecycle.lock_after_leaving.locked": N_("left on {left_on}"),
    "lifecycle.lock_after_leaving.removal_due": N_("left on {left_on}, more than {duration} ago; "
                                                   "removal due {remove_on}"),
    "lifecycle.remove_after_leaving": N_("left on {left_on}, more than {duration} ago: locked, "
                                         "archived, then removed"),
    "lifecycle.lock_after_inactivity": N_("no login since {since}, more than {duration}"),
    "lifecycle.lock_after_inactivity.never": N_("never logged in since its creation on {since}, more "
                                                "than {duration}"),
    "lifecycle.remove_after_inactivity": N_("no login since {since}, more than {duration}: locked, "
                                            "archived, then removed"),
    "lifecycle.remove_after_inactivity.never": N_("never logged in since its creation on {since}, more "
                                                  "than {duration}: locked, archived, then removed"),
    "lifecycle.lock_after_inactivity.locked": N_("no login since {since}"),
    "lifecycle.dissolved": N_("unit dissolved on {dissolved_on}: locked; archived and removed from "
                              "{remove_on}"),
    "lifecycle.dissolved.locked": N_("unit dissolved on {dissolved_on}"),
    "lifecycle.dissolved.remove": N_("unit dissolved on {dissolved_on}, more than {duration} ago: "
                                     "locked, archived, then removed"),
    "lifecycle.unused_unit_mailbox": N_("unit mailbox never used since its creation on {created}, more "
                                        "than {duration}: locked, archived, then removed"),
    "lifecycle.unused_unit_mailbox.locked": N_("unit mailbox never used since its creation on {created}"),
    # handover and delegation
    "handover.head": N_("{login} heads unit {unit}"),
    "handover.head_changed": N_("{login} no longer heads unit {unit} (head now: {head}); the unit "
                                "mailbox and all its mail stay"),
    "delegation.delegate": N_("delegate of unit {unit}"),
    "delegation.revoked": N_("{login} is no longer a delegate of unit {unit}"),
    "delegation.through_unit": N_("{text} (through unit {unit}: its head and delegates)"),
    # shared folders and grants
    "shared_folder.folder": N_("shared folder '{path}' of {mailbox} ({purpose})"),
    "shared_folder.reader": N_("reader of shared folder '{path}'"),
    "shared_folder.writer": N_("writer of shared folder '{path}'"),
    "grant.access": N_("access grant ({rights}) until {until}: {text}"),
    "grant.ended": N_("access grant to {to} on {mailbox} ({rights}) ended {until} ({text}); {where}"),
    # mail is never destroyed
    "archive.before_removal": N_("the mail is archived (verified) before any removal"),
    "archive.verified_before_delete": N_("the mail is removed only once its archive is verified"),
    # passwords, names, the directory
    "password.missing": N_("the entry exists without a password (an apply stopped before setting it): "
                           "an initial password is set"),
    "naming.login_names": N_("the entry also answers to the login name(s) {others}; its id {id} is its "
                             "only one"),
    "naming.old_address_kept": N_("old address {address} of {owner} keeps delivering until {expires} "
                                  "({duration})"),
    "naming.old_address_expired": N_("old address {address} of {owner} kept until {expires} "
                                     "({duration}); expired by {as_of}"),
    "naming.old_address_expired.live": N_("old address {address} kept until {expires}; expired by "
                                          "{as_of}"),
    "naming.address_taken": N_("{address} is now the address of {holder}; it stops delivering to "
                               "{owner}"),
    "acl.not_listed": N_("rights not given in the TOML are removed: no one reads another's mailbox except "
                         "by delegation, a shared folder or a grant"),
    "unlisted.managed": N_("{kind} {key} is not in the TOML and its subtree is managed"),
    "removal.rights_revoked": N_("{who} is being removed: its rights on {owner} are revoked"),
    "removal.rights_on_it": N_("{owner} is being removed: rights on it are revoked"),
    "removal.old_address": N_("{owner} is removed, so is its old address"),
    "removal.rights_revoked.group_member": N_("member {member} is removed ({text}): it no longer receives "
                                              "the group's mail"),
    "removal.rights_revoked.by_rule": N_("its lifecycle rule"),
    "lifecycle.dissolved.no_rights_through": N_("unit {unit} dissolved on {dissolved_on}: no rights through "
                                                "it any more ({text})"),
    "lifecycle.dissolved.mailbox_unused": N_("unit {unit} dissolved on {dissolved_on}: its head and "
                                             "delegates no longer use its mailbox (locked; its mail is kept, "
                                             "then archived)"),
    "archive.before_removal.folder_goes_with": N_("its shared folder '{path}' goes with it: archived with "
                                                  "its mail, then removed"),
}
"""Rule code (or code.variant) → English message id; every code of ``RULES`` that drives a change."""

DATE_PARAMS = frozenset({"left_on", "notice_on", "lock_on", "remove_on", "since", "dissolved_on", "created",
                         "until", "expires", "as_of"})
CITED_BY = "; "


def _rule_of(code: str) -> str:
    """``lifecycle.lock_after_leaving.pending`` → ``lifecycle.lock_after_leaving`` (the citable rule)."""
    parts = code.split(".")
    while parts and ".".join(parts) not in RULES:
        parts.pop()
    return ".".join(parts)


@dataclass(frozen=True)
class Reason:
    """One reason: ``code`` (a rule code, maybe with a variant), ``params``, the ``cite`` and ``where``
    (``FILE:LINE`` of the TOML that says so)."""

    code: str
    params: tuple[tuple[str, Any], ...] = ()
    cite: Citation | None = None
    where: str | None = None

    @property
    def rule(self) -> str:
        return _rule_of(self.code) or self.code

    def text(self) -> str:
        """The reason in the current language (``i18n.use``)."""
        values: dict[str, Any] = {}
        for k, v in self.params:
            if k in DATE_PARAMS:
                values[k] = fmt_date(v)
            elif k == "duration" and isinstance(v, (list, tuple)):
                values[k] = fmt_duration(int(v[0]), str(v[1]))
            elif k == "rights":
                values[k] = rights_text(v)
            elif k == "text" and isinstance(v, Reason):
                values[k] = v.text()
            else:
                values[k] = "" if v is None else str(v)
        message = MESSAGES.get(self.code, "{text}")
        body = (_(message) if message != "{text}" else message).format_map(_Missing(values))
        rule = self.rule
        if self.cite is not None:
            body = _("{text} ({citation})").format(text=body, citation=self.cite.text())
        elif RULES.get(rule):
            body = _("{text}, under `{setting}`").format(text=body, setting=RULES[rule])
        return f"{self.where}: {body}" if self.where else body

    def __str__(self) -> str:
        return self.text()

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "text": self.text(),
            "code": self.code,
            "params": {k: (v.to_json() if isinstance(v, Reason) else v) for k, v in self.params},
            "citation": ({"decision": self.cite.decision, "article": self.cite.article}
                         if self.cite else None),
            "where": self.where,
        }

    @classmethod
    def from_json(cls, data: Any) -> Reason:
        if isinstance(data, str):
            return as_reason(data)
        params = []
        for k, v in (data.get("params") or {}).items():
            if isinstance(v, Mapping) and "code" in v:
                v = cls.from_json(v)
            elif isinstance(v, list):
                v = tuple(v)
            params.append((k, v))
        c = data.get("citation")
        return cls(
            data.get("code") or data.get("rule") or "text",
            tuple(params),
            Citation(c["decision"], c["article"]) if c else None,
            data.get("where"),
        )


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def reason(code: str, regulation: Regulation | None = None, where: Any = None, **params: Any) -> Reason:
    """A Reason for ``code`` with its citation looked up in the organisation's ``regulation``."""
    cite = regulation.citation(_rule_of(code)) if regulation is not None else None
    return Reason(code, tuple(params.items()), cite, str(where) if where else None)


def source(kind: str, where: Any, **params: Any) -> Reason:
    """Where an object is written: "units/qlcn.toml:12: person bangnv (Nguyễn Văn Bằng)"."""
    return Reason(f"source.{kind}", tuple(params.items()), None, str(where) if where else None)


def as_reason(r: Reason | str) -> Reason:
    """``r`` itself, or a plain text kept as a reason with no rule (older callers and plan files)."""
    return r if isinstance(r, Reason) else Reason("text", (("text", str(r)),))


def texts(reasons: Iterable[Reason | str]) -> list[str]:
    return [r.text() if isinstance(r, Reason) else str(r) for r in reasons]
