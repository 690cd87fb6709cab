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
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources

from mailstate.model.i18n import N_, _
from mailstate.model.settings import Duration

RULES: dict[str, str | None] = {
    # code                              the TOML setting behind it (None: the rule itself, no setting)
    "lifecycle.suspended": "suspended",
    "lifecycle.keep_after_leaving": "keep_after_leaving",
    "lifecycle.lock_after_leaving": "lock_after_leaving",
    "lifecycle.remove_after_leaving": "remove_after_leaving",
    "lifecycle.remove_after_notice": "remove_after_notice",
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
    maximum: Mapping[str, str] = field(default_factory=dict)
    """Rule code → the longest duration its article allows ("6 months"), for the lifecycle settings."""
    keep_posts: tuple[str, ...] = ()
    """The posts (words of a title) that allow keeping a mailbox after leaving; empty: no such rule."""

    def citation(self, rule: str) -> Citation | None:
        article = self.articles.get(rule)
        if not article:
            return None
        return Citation(self.decision or "", article)

    def max_duration(self, rule: str) -> Duration | None:
        text = self.maximum.get(rule)
        return Duration.parse(text) if text else None

    def allows(self, rule: str, configured: Duration | None) -> bool:
        """True unless ``configured`` is longer than the maximum of the rule's article: a duration the
        article does not allow is the agency's own setting, and its reason cites the setting, not it."""
        most = self.max_duration(rule)
        return configured is None or most is None or not configured.exceeds(most)

    def without(self, rule: str) -> Regulation:
        """The same regulation with no article for ``rule``."""
        return replace(self, articles={k: v for k, v in self.articles.items() if k != rule})

    def post_allows_keeping(self, post: str) -> bool:
        """True if ``post`` (a title) is one of the posts that allow keeping a mailbox after leaving: it
        begins with one of them, after "Nguyên" (former), "Phó" (deputy) or "Quyền" (acting) — "Vụ trưởng
        Vụ Tổ chức cán bộ", "Nguyên Phó Vụ trưởng …", never a title that only names one ("Thư ký của Thứ
        trưởng")."""
        words = " ".join(unicodedata.normalize("NFC", post).casefold().split())
        words = _POST_PREFIX.sub("", words)
        for allowed in self.keep_posts:
            name = " ".join(unicodedata.normalize("NFC", allowed).casefold().split())
            if words == name or words.startswith(name + " "):
                return True
        return False


_POST_PREFIX = re.compile(r"^(?:(?:nguyên|phó|quyền)\s+)+")
"""Words before a post that keep its rank: former, deputy, acting."""


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
    return Regulation(data.get("decision"), dict(data.get("articles", {})), dict(data.get("maximum", {})),
                      tuple((data.get("keep_after_leaving") or {}).get("posts", ())))


def combine(
    preset_name: str | None,
    decision: str | None,
    articles: Mapping[str, str],
    maximum: Mapping[str, str] | None = None,
    keep_posts: tuple[str, ...] | None = None,
) -> Regulation:
    """The preset (if any) with the state's own decision, articles, maxima and posts over it."""
    base = preset(preset_name) if preset_name else Regulation(None, {})
    if decision and decision != base.decision:
        # another decision: the preset's articles, maxima and posts belong to the preset's decision
        return Regulation(decision, dict(articles), dict(maximum or {}), tuple(keep_posts or ()))
    return Regulation(base.decision, {**base.articles, **articles}, {**base.maximum, **(maximum or {})},
                      base.keep_posts if keep_posts is None else tuple(keep_posts))


# Texts used by Citation.text: listed for extraction.
_TEXTS = (N_("Article {n}"), N_(" clause {n}"), N_(" point {p}"))
