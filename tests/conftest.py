"""Suite-wide settings: every test under tests/integration is marked `integration` (deselect with
`-m "not integration"`); the lab fixtures live in tests/integration/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

_INTEGRATION = Path(__file__).parent / "integration"


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
