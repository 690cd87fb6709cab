"""Suite-wide settings: every test under tests/integration is marked `integration` (deselect with
`-m "not integration"`); the lab fixtures live in tests/integration/conftest.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

_INTEGRATION = Path(__file__).parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    """With pytest-xdist (``make test`` runs ``-n 2``), the lab user is created once, here in the controller,
    before the workers start: two workers' first labs would otherwise race on ``useradd`` (as root)."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput") \
            and os.geteuid() == 0:
        from mailstate.lab._proc import lab_user

        lab_user()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _default_language() -> Iterator[None]:
    """Each test starts in the default language (Vietnamese): a command run through CliRunner sets the
    language of its run (``--lang``, the state's), which would otherwise leak into the next test."""
    from mailstate.model import i18n

    with i18n.use(i18n.DEFAULT_LANGUAGE):
        yield


@pytest.fixture(autouse=True)
def _no_remembered_secrets() -> Iterator[None]:
    """Each test starts with no secret remembered: a test's password ("direct") remembered by the process
    would be hidden from the next test's messages ("No such file or <redacted>ory") however they run."""
    from mailstate import redact

    before = set(redact._SECRETS)
    yield
    redact._SECRETS.clear()
    redact._SECRETS.update(before)


@pytest.fixture
def english() -> Iterator[None]:
    """The test reads texts in English (the message ids): ``pytestmark = pytest.mark.usefixtures("english")``
    for a module whose assertions quote English messages, e.g. validation's."""
    from mailstate.model import i18n

    with i18n.use("en"):
        yield
