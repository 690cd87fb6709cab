"""The language of a run is set without reading its catalogue; the catalogue is read at the first text
translated, or when ``prepare`` is called (plan reads it while its child process reads the directory)."""

from __future__ import annotations

import pytest

from mailstate.model import i18n


def test_an_unknown_language_is_refused_when_set() -> None:
    with pytest.raises(ValueError, match="expected one of vi, en"):
        i18n.set_language("fr")
    with pytest.raises(ValueError, match="expected one of"), i18n.use("xx"):
        pass


def test_setting_the_language_reads_no_catalogue_until_a_text_is_translated() -> None:
    before = i18n.current()
    i18n.translations.cache_clear()
    try:
        i18n.set_language("en")
        assert i18n.translations.cache_info().currsize == 0
        assert i18n._("error: {message}") == "error: {message}"
        assert i18n.translations.cache_info().currsize == 1
        i18n.translations.cache_clear()
        i18n.prepare("vi", "en")
        assert i18n.translations.cache_info().currsize == 2
        i18n.set_language("vi")
        assert i18n._("error: {message}") == "lỗi: {message}"
    finally:
        i18n.set_language(before)
