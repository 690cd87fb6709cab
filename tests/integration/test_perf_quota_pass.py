"""A plan's reads skip the doveadm quota pass that nothing in a plan uses (every provider, real lab)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from mailstate.desired_state.loader import load_state
from mailstate.lab import Lab
from mailstate.providers.doveadm.provider import SshProvider
from mailstate.providers.imap.provider import ImapProvider
from mailstate.reconciler.pipeline import apply_plan, make_plan
from mailstate.reconciler.plan.plan import plan_changes, plan_meta

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "binhdinh-sct"



def test_plan_and_apply_read_no_quota_but_a_direct_read_still_can(
    sct_all: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make_plan and apply's stale check never run `doveadm quota get -A`; ImapProvider.read() still does."""
    calls: list[str] = []
    real_quotas = SshProvider.quotas

    def counting_quotas(self: SshProvider) -> Any:
        calls.append("quota get -A")
        return real_quotas(self)

    monkeypatch.setattr(SshProvider, "quotas", counting_quotas)
    state = tmp_path / "state"
    shutil.copytree(EXAMPLE, state)
    plan = make_plan(state)
    assert set(plan_meta(plan).providers) == {"ldap", "imap", "ssh"}
    assert plan_changes(plan)
    home = tmp_path / "home"
    apply_plan(plan, state, journal_dir=home, passwords_out=home / "pw.tsv")
    assert plan_changes(make_plan(state)) == []
    assert calls == []
    # the provider's own default is unchanged: a direct read reports every quota limit
    imap = ImapProvider.from_state(load_state(state))
    try:
        quotas = imap.read().facts["quota"]
    finally:
        imap.close()
    assert calls == ["quota get -A"]
    assert quotas and all(q is None or q > 0 for q in quotas.values())
