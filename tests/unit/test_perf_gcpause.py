"""The collector pause of the bulk phases (mailstate.gcpause)."""

from __future__ import annotations

import gc

import pytest

from mailstate.desired_state.projection import project
from mailstate.gcpause import gc_paused, with_gc_paused
from mailstate.providers.ldap.provider import LdapProvider
from mailstate.reconciler.plan.diff import diff


def test_gc_paused_restores_an_enabled_collector_even_on_error() -> None:
    """Inside the block the collector is off; after it (also after an exception) it is on again."""
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_gc_paused_leaves_a_disabled_collector_disabled() -> None:
    """A caller that had disabled the collector (load_state does) keeps it disabled after the block."""
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_decorated_function_runs_without_the_collector_and_keeps_its_metadata() -> None:
    """The decorator pauses the collector for the call, returns its value and keeps name and docstring."""

    @with_gc_paused
    def probe(x: int) -> tuple[int, bool]:
        """Doc."""
        return x + 1, gc.isenabled()

    assert probe(1) == (2, False)
    assert gc.isenabled()
    assert probe.__name__ == "probe" and probe.__doc__ == "Doc."


@pytest.mark.parametrize("func", [LdapProvider.read, project, diff])
def test_bulk_phases_pause_the_collector(func: object) -> None:
    """The LDAP read, the projection and the diff are the phases wrapped (their signatures unchanged)."""
    assert getattr(func, "__wrapped__", None) is not None
