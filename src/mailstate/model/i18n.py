"""Languages of what a person reads: gettext catalogues, one ``.po`` per language, read with Babel.

The catalogues are ``mailstate/locale/<lang>/LC_MESSAGES/mailstate.po`` (package data). They are read
at first use with Babel's ``read_po`` and turned into ``gettext`` translations in memory, so an editable
install and a wheel behave the same and there is no compile step to forget. Message ids are the English
texts, with ``{name}`` placeholders filled after translation (``_("left on {date}").format(...)``).

The language is chosen per run (``[organization] language``, overridden by ``--lang``) with
``use(lang)``; ``_``/``ngettext`` translate into it. ``N_`` marks a text for extraction without
translating it (tables of messages looked up later). Dates are dd/mm/yyyy in Vietnamese, ISO in
English; durations "3 tháng" / "3 months"; IMAP rights are said in words.
"""

from __future__ import annotations

import contextlib
import gettext as _gettext
import io
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

from mailstate.model.rights import RIGHTS, normalise_rights

LANGUAGES = ("vi", "en")
DEFAULT_LANGUAGE = "vi"
DOMAIN = "mailstate"

_current: ContextVar[str] = ContextVar("mailstate_language", default=DEFAULT_LANGUAGE)


def catalogue_path(lang: str) -> Any:
    """The ``.po`` file of ``lang`` inside the installed package."""
    return resources.files("mailstate") / "locale" / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def catalogue(lang: str) -> Any:
    """The Babel ``Catalog`` of ``lang`` (parsed once)."""
    from babel.messages.pofile import read_po

    with catalogue_path(lang).open("rb") as fh:
        return read_po(fh, locale=lang, domain=DOMAIN)


def _known(lang: str) -> str:
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r}: expected one of {', '.join(LANGUAGES)}")
    return lang


@cache
def translations(lang: str) -> _gettext.NullTranslations:
    """A ``gettext`` translation of ``lang`` built in memory from its catalogue."""
    _known(lang)
    from babel.messages.mofile import write_mo

    buf = io.BytesIO()
    write_mo(buf, catalogue(lang))
    buf.seek(0)
    return _gettext.GNUTranslations(buf)


def current() -> str:
    return _current.get()


def set_language(lang: str) -> None:
    """Make ``lang`` the language of this run (checked: an unknown language is an error). Its catalogue is
    read at the first text translated (``prepare`` reads it at a time of the caller's choosing)."""
    _current.set(_known(lang))


def prepare(*langs: str) -> None:
    """Read the catalogues of ``langs`` (default: the current language) now, at a time of the caller's
    choosing (a run waiting for another process before it translates)."""
    for lang in langs or (current(),):
        translations(lang)


@contextlib.contextmanager
def use(lang: str | None) -> Iterator[str]:
    """Within the block, texts are in ``lang`` (None: unchanged)."""
    if lang is None:
        yield current()
        return
    translations(lang)
    token = _current.set(lang)
    try:
        yield lang
    finally:
        _current.reset(token)


def _(message: str) -> str:
    return translations(current()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current()).ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Mark ``message`` for the catalogues; translated later with ``_``."""
    return message


def fmt_date(value: date | str | None) -> str:
    """dd/mm/yyyy in Vietnamese, YYYY-MM-DD in English; a text that is not a date is kept."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value[:10])
        except ValueError:
            return str(value)
    return value.strftime("%d/%m/%Y") if current() == "vi" else value.isoformat()


def fmt_duration(amount: int, unit: str) -> str:
    """"3 tháng" / "3 months"."""
    if unit == "day":
        text = ngettext("{n} day", "{n} days", amount)
    elif unit == "week":
        text = ngettext("{n} week", "{n} weeks", amount)
    elif unit == "year":
        text = ngettext("{n} year", "{n} years", amount)
    else:
        text = ngettext("{n} month", "{n} months", amount)
    return text.format(n=amount)


RIGHTS_WORDS = {
    "read": N_("read"),
    "write": N_("read and write"),
    "delegate": N_("use on behalf of the unit"),
    "full": N_("full rights"),
}


def rights_text(value: Any) -> str:
    """IMAP rights in words ("read and write"), from a name or RFC 4314 letters; the letters stay in
    JSON. A set that is none of the named ones is said as its letters."""
    text = str(value)
    if text in RIGHTS_WORDS:
        return _(RIGHTS_WORDS[text])
    letters = normalise_rights(text)
    for name, known in RIGHTS.items():
        if known == letters and name in RIGHTS_WORDS:
            return _(RIGHTS_WORDS[name])
    return text


ACTION_NAMES = {
    "create": N_("create"),
    "update": N_("update"),
    "rename": N_("rename"),
    "grant": N_("grant"),
    "unlock": N_("unlock"),
    "lock": N_("lock"),
    "revoke": N_("revoke"),
    "archive": N_("archive"),
    "delete": N_("delete"),
}
KIND_NAMES = {
    "person": N_("person"),
    "unit": N_("unit"),
    "unit_mailbox": N_("unit mailbox"),
    "group": N_("group"),
    "alias": N_("old address"),
    "shared_folder": N_("shared folder"),
    "acl": N_("rights"),
}


def action_name(label: str) -> str:
    """An action's name in the language of the run ("tạo", "khóa"); an unknown label as written."""
    return _(ACTION_NAMES[label]) if label in ACTION_NAMES else label


RIGHTS_ACTIONS = {"grant": N_("grant rights"), "revoke": N_("revoke rights")}
"""Rights granted or revoked read as one phrase: "cấp quyền", never "cấp quyền quyền"."""


def change_words(label: str, kind: str) -> tuple[str, str]:
    """(the action, the kind) as a change is named in the run's language: "khóa", "cán bộ"; for rights
    the action says it all ("cấp quyền", "") so the kind is not repeated after it."""
    if kind == "acl" and label in RIGHTS_ACTIONS:
        return _(RIGHTS_ACTIONS[label]), ""
    return action_name(label), kind_name(kind)


def change_title(label: str, kind: str, key: str) -> str:
    """"khóa cán bộ p001", "cấp quyền unit:qlcn/INBOX#p002": action, kind and key in one line."""
    return " ".join(w for w in (*change_words(label, kind), key) if w)


def kind_name(kind: str) -> str:
    """A kind's name in the language of the run ("cán bộ", "hộp thư đơn vị"); an unknown kind as written."""
    return _(KIND_NAMES[kind]) if kind in KIND_NAMES else kind
