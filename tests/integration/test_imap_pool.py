"""An agency with more unit mailboxes than a default Dovecot accepts connections (imap-login
process_limit 100, the lab's limits are Dovecot 2.3's defaults): the first apply of every unit mailbox
with its shared folder, and a head swap across all of them, each finish in one run of ``mailstate apply``
and converge; the old heads keep no right anywhere (the ACLs are read back over IMAP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailstate.lab import Lab
from mailstate.lab.testing import imap_master_login

pytestmark = pytest.mark.integration

DOMAIN = "pool.example.gov.vn"
MAILSTATE = Path(sys.executable).with_name("mailstate")
UNITS = 132
FOLDER = "Văn bản đến/2026"


def write_agency(root: Path, units: int, head: str) -> None:
    """An agency of ``units`` units, each with two people (``tp…`` and ``cv…``), ``head`` of them heading
    it, and a shared folder in the unit mailbox that ``cv…`` writes in."""
    (root / "units").mkdir(parents=True, exist_ok=True)
    (root / "mailstate.toml").write_text(
        "[organization]\n"
        'name   = "Sở Thử nghiệm kết nối"\n'
        f'domain = "{DOMAIN}"\n\n'
        "[naming]\n"
        'person    = "{given}{initials}"\n'
        'unit      = "{unit}"\n'
        'collision = "number"\n',
        encoding="utf-8",
    )
    for n in range(1, units + 1):
        u, tp, cv = f"dv{n:03d}", f"tp{n:03d}", f"cv{n:03d}"
        head_id = tp if head == "tp" else cv
        (root / "units" / f"{u}.toml").write_text(
            f'[unit]\nid = "{u}"\nname = "Phòng số {n}"\nhead = "{head_id}"\n\n'
            f'[[person]]\nid = "{tp}"\nname = "Trần Phúc {n}"\n'
            f'[[person]]\nid = "{cv}"\nname = "Cao Văn {n}"\n\n'
            f'[[shared_folder]]\nmailbox = "unit:{u}"\npath = "{FOLDER}"\n'
            f'purpose = "Văn bản đến của phòng số {n}"\nwrite = ["{cv}"]\n',
            encoding="utf-8",
        )


class Run:
    def __init__(self, lab: Lab, state: Path, env: dict[str, str]) -> None:
        self.lab, self.state, self.env = lab, state, env

    def ms(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MAILSTATE), *args, "--state", str(self.state)],
            env=self.env, capture_output=True, text=True, timeout=300,
        )

    def plan(self) -> list[dict]:
        out = self.ms("plan", "--format", "json")
        assert out.returncode == 0, out.stdout + out.stderr
        return list(json.loads(out.stdout)["changes"])

    def apply(self) -> None:
        out = self.ms("apply", "--yes")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.fixture
def run(lab_for: Callable[..., Lab], tmp_path: Path) -> Run:
    lab = lab_for(DOMAIN)
    lab.reset()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSTATE_")}
    env.update(lab.env())
    env["MAILSTATE_HOME"] = str(tmp_path / "home")
    return Run(lab, tmp_path / "state", env)


def acls(lab: Lab, unit: str) -> dict[str, dict[str, str]]:
    """{folder: {identifier: rights}} of INBOX and the shared folder, read as the owner over IMAP."""
    c = imap_master_login(lab, unit)
    own = (unit.encode(), b"owner")
    try:
        return {
            f: {i.decode(): "".join(sorted(r.decode())) for i, r in c.getacl(f) if i not in own}
            for f in ("INBOX", FOLDER)
        }
    finally:
        c.logout()


def test_many_unit_mailboxes_apply_and_swap_heads_in_one_run(run: Run) -> None:
    write_agency(run.state, UNITS, head="tp")
    first = run.plan()
    imap = [c for c in first if c["provider"] == "imap"]
    assert len({c["key"].split("/")[0] for c in imap}) == UNITS
    run.apply()
    assert run.plan() == []

    write_agency(run.state, UNITS, head="cv")  # every unit gets a new head: its writer
    run.apply()
    assert run.plan() == []

    # the old heads keep nothing, the new ones have every right (Dovecot adds the obsolete c and d)
    full = "acdeiklprstwx"
    numbers = range(1, UNITS + 1)
    with ThreadPoolExecutor(max_workers=4) as threads:
        live = dict(zip(numbers, threads.map(lambda n: acls(run.lab, f"dv{n:03d}"), numbers), strict=True))
    want = {n: {"INBOX": {f"cv{n:03d}": full}, FOLDER: {f"cv{n:03d}": full}} for n in numbers}
    assert {n: got for n, got in live.items() if got != want[n]} == {}
