"""The agency's own regulation: which article of which decision each rule of mailstate enforces.

Every rule that can drive a change has a stable code (``RULES``). A state names its regulation with
``[organization] regulation = "<preset>"`` (the five shipped in ``mailstate/regulations/*.toml``) and/or
a ``[regulation]`` table (``decision`` and ``articles``, which override the preset's). A reason cites
``citation(rule)`` when the regulation has an article for it; otherwise it states the rule itself and
the TOML setting behind it. No article is written anywhere else in the code.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from mailstate.model.i18n import N_, _

RULES: dict[str, str | None] = {
    # code                              the TOML setting behind it (None: the rule itself, no setting)
    "lifecycle.suspended": "suspended",
    "lifecycle.keep_after_leaving": "keep_after_leaving",
    "lifecycle.lock_after_leaving": "lock_after_leaving",
    "lifecycle.remove_after_leaving": "remove_after_leaving",
    "lifecycle.lock_after_inactivity": "lock_after_inactivity",
    "lifecycle.remove_after_inactivity": "remove_after_inactivity",
    "lifecycle.dissolved": "dissolved_on",
    "lifecycle.unused_unit_mailbox": "remove_unused_unit_mailbox",
    "handover.head": "head",
    "handover.head_changed": "head",
    "delegation.delegate": "delegates",
    "delegation.revoked": "delegates",
    "shared_folder.folder": "shared_folder",
    "shared_folder.reader": "read",
    "shared_folder.writer": "write",
    "grant.access": "access_grant",
    "grant.ended": "until",
    "archive.before_removal": None,
    "archive.verified_before_delete": None,
    "password.missing": None,
    "password.policy": "password",
    "naming.domain": "domain",
    "naming.address": "naming",
    "naming.old_address_kept": "keep_old_address",
    "naming.old_address_expired": "keep_old_address",
    "naming.address_taken": "naming",
    "naming.login_names": None,
    "registration.backup_mailbox": "backup_mailbox",
    "unlisted.managed": "manage_unlisted",
    "acl.not_listed": None,
    "removal.rights_revoked": None,
    "removal.old_address": None,
}
"""Every rule code; a ``[regulation.articles]`` key must be one of them."""

ARTICLE = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.?([a-zđ]))?$")
"""``13``, ``13.2``, ``13.2.b`` (or ``13.2b``): article, clause, point."""

PRESETS_DIR = "regulations"


@dataclass(frozen=True)
class Citation:
    """An article of a decision: rendered "Điều 13 khoản 2 điểm b, Quyết định 4105/QĐ-BKHCN"."""

    decision: str
    article: str

    def text(self) -> str:
        m = ARTICLE.match(self.article)
        if not m:
            where = self.article
        else:
            art, clause, point = m.groups()
            where = _("Article {n}").format(n=art)
            if clause:
                where += _(" clause {n}").format(n=clause)
            if point:
                where += _(" point {p}").format(p=point)
        return f"{where}, {self.decision}" if self.decision else where


@dataclass(frozen=True)
class Regulation:
    decision: str | None
    articles: Mapping[str, str]

    def citation(self, rule: str) -> Citation | None:
        article = self.articles.get(rule)
        if not article:
            return None
        return Citation(self.decision or "", article)


@cache
def preset_names() -> tuple[str, ...]:
    files = resources.files("mailstate") / PRESETS_DIR
    return tuple(sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml")))


@cache
def preset(name: str) -> Regulation:
    """A shipped regulation by name (``most-4105`` …); KeyError if there is none."""
    if name not in preset_names():
        raise KeyError(name)
    path = resources.files("mailstate") / PRESETS_DIR / f"{name}.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return Regulation(data.get("decision"), dict(data.get("articles", {})))


def combine(preset_name: str | None, decision: str | None, articles: Mapping[str, str]) -> Regulation:
    """The preset (if any) with the state's own decision and articles over it."""
    base = preset(preset_name) if preset_name else Regulation(None, {})
    if decision and decision != base.decision:
        # another decision: the preset's articles belong to the preset's decision, not to this one
        return Regulation(decision, dict(articles))
    return Regulation(base.decision, {**base.articles, **articles})


# Texts used by Citation.text: listed for extraction.
_TEXTS = (N_("Article {n}"), N_(" clause {n}"), N_(" point {p}"))
