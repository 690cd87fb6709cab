"""The whole reconcile loop against the real lab (slapd over LDAPS): plan → apply → plan, drift, stale plans,
failures mid-apply, transfers, renames, Vietnamese and LDAP-special text, secrets. No mocks.

These tests use the LDAP provider only (the IMAP and SSH providers have their own integration tests).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import ldap3
import pytest
import tomlkit
from click.testing import CliRunner

from mailstate.cli import LANG_ENV, cli
from mailstate.errors import MailstateError, ProviderError, StalePlan, UnsafePlan
from mailstate.lab import Lab
from mailstate.model.change import Action, Change
from mailstate.reconciler.apply.run import ApplyFailed
from mailstate.reconciler.pipeline import apply_plan, make_plan
from mailstate.reconciler.plan.plan import load_plan, plan_changes, plan_json, save_plan

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "binhdinh-sct"
LDAP_ONLY = ["ldap"]
MAILSTATE = Path(sys.executable).with_name("mailstate")

# --------------------------------------------------------------------------------------------------
# Helpers


def write_state(
    root: Path,
    domain: str,
    units: dict[str, dict[str, Any]],
    people: list[dict[str, Any]],
    groups: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A small state repository: mailstate.toml + units/<id>.toml (tomlkit does the quoting)."""
    root.mkdir(parents=True, exist_ok=True)
    top: dict[str, Any] = {
        "organization": {"name": f"Lab {domain}", "domain": domain},
        "providers": {"ldap": {"url": "ldaps://ldap.invalid", "password_env": "MAILSTATE_LDAP_PASSWORD"}},
    }
    top.update(extra or {})
    (root / "mailstate.toml").write_text(tomlkit.dumps(top), encoding="utf-8")
    (root / "units").mkdir(exist_ok=True)
    for uid, unit in units.items():
        doc: dict[str, Any] = {"unit": {"id": uid, **unit}}
        members = [p for p in people if p.get("unit", uid) == uid]
        if members:
            doc["person"] = members
        (root / "units" / f"{uid}.toml").write_text(tomlkit.dumps(doc), encoding="utf-8")
    if groups:
        (root / "groups.toml").write_text(tomlkit.dumps({"group": groups}), encoding="utf-8")
    return root


def small_state(root: Path, domain: str) -> Path:
    units = {
        "qlcn": {"name": "Phòng Quản lý Công nghiệp", "head": "bangnv"},
        "vp": {"name": "Văn phòng Sở", "head": "tuanpm", "delegates": ["maiht"]},
    }
    people = [
        {"id": "bangnv", "name": "Nguyễn Văn Bằng", "unit": "qlcn", "title": "Trưởng phòng"},
        {"id": "thuytt", "name": "Trần Thị Thủy", "unit": "qlcn", "phone": "0256 3822 123"},
        {"id": "tuanpm", "name": "Phạm Minh Tuấn", "unit": "vp", "title": "Chánh Văn phòng"},
        {"id": "maiht", "name": "Huỳnh Thị Mai", "unit": "vp", "title": "Văn thư"},
    ]
    groups = [{"id": "lanhdao", "name": "Lãnh đạo", "members": ["bangnv", "tuanpm", "unit:vp"]}]
    return write_state(root, domain, units, people, groups)


def edit_toml(path: Path, fn: Callable[[Any], None]) -> None:
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    fn(doc)
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")


def entries(lab: Lab, container: str, attrs: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """DN → attributes of every entry directly under ou=<container> (read as the root DN)."""
    conn = lab.ldap(as_="root")
    try:
        conn.search(
            f"ou={container},{lab.base_dn}", "(objectClass=*)", ldap3.LEVEL, attributes=attrs or ["*", "+"]
        )
        return {e.entry_dn: e.entry_attributes_as_dict for e in conn.entries}
    finally:
        conn.unbind()


def root_modify(lab: Lab, dn: str, changes: dict[str, Any]) -> None:
    conn = lab.ldap(as_="root")
    try:
        assert conn.modify(dn, {k: [(ldap3.MODIFY_REPLACE, v)] for k, v in changes.items()}), conn.result
    finally:
        conn.unbind()


def apply(plan: Any, state: Path, home: Path, **kw: Any) -> Any:
    return apply_plan(
        plan,
        state,
        journal_dir=home,
        audit_log=home / "audit.jsonl",
        passwords_out=home / "passwords.tsv",
        **kw,
    )


def _use_lab(lab: Lab, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    for key in list(os.environ):
        if key.startswith("MAILSTATE_") and key != LANG_ENV:
            monkeypatch.delenv(key)
    for key, value in lab.env().items():
        if key.startswith("MAILSTATE_LDAP_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MAILSTATE_HOME", str(home))
    monkeypatch.setenv("MAILSTATE_ACTOR", "test-operator")


@pytest.fixture
def env(lab_env: dict[str, str], clean_lab: Lab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Lab:
    """The clean default lab, LDAP variables only, journal/audit under tmp_path/home."""
    _use_lab(clean_lab, monkeypatch, tmp_path / "home")
    return clean_lab


@pytest.fixture
def sct_lab(lab_for: Callable[..., Lab], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Lab:
    """A clean lab for sct.binhdinh.gov.vn (the example agency's domain)."""
    lab = lab_for("sct.binhdinh.gov.vn", "Sở Công Thương tỉnh Bình Định")
    lab.reset()
    _use_lab(lab, monkeypatch, tmp_path / "home")
    return lab


def secrets_of(lab: Lab, home: Path) -> list[str]:
    """Every secret that must never be printed: the lab's passwords and the generated initial passwords."""
    found = [lab.secret(n) for n in ("ldap_root", "ldap_service", "ldap_dovecot", "imap_master")]
    for pw_file in home.glob("*.tsv"):
        for line in pw_file.read_text(encoding="utf-8").splitlines():
            found.append(line.split("\t")[2])
    return [s for s in found if s]


# --------------------------------------------------------------------------------------------------
# From empty to converged


def test_example_agency_converges(sct_lab: Lab, tmp_path: Path) -> None:
    """The Bình Định example goes from an empty directory to converged; a second plan has no changes."""
    state = tmp_path / "state"
    shutil.copytree(EXAMPLE, state)
    home = tmp_path / "home"
    plan = make_plan(state, providers=LDAP_ONLY)
    creates = [c for c in plan_changes(plan) if c.action is Action.CREATE]
    assert len(creates) == len(plan_changes(plan)) > 20
    result = apply(plan, state, home)
    assert len(result.done) == len(creates)
    again = make_plan(state, providers=LDAP_ONLY)
    assert plan_changes(again) == [], [c.id for c in plan_changes(again)]
    people = entries(sct_lab, "people", ["uid", "cn"])
    assert "uid=bangnv,ou=people,dc=sct,dc=binhdinh,dc=gov,dc=vn" in people
    assert "uid=bangnv2,ou=people,dc=sct,dc=binhdinh,dc=gov,dc=vn" in people


def test_generated_agency_converges(env: Lab, tmp_path: Path) -> None:
    """A generated agency of 300 people (bench/gen_agency.py) converges; the next plan is empty."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from gen_agency import generate
    finally:
        sys.path.pop(0)
    state = tmp_path / "state"
    generate(state, 300, seed=7, domain="lab.example.gov.vn")
    plan = make_plan(state, providers=LDAP_ONLY)
    assert sum(1 for c in plan_changes(plan) if c.kind == "person") == 300
    apply(plan, state, tmp_path / "home")
    assert plan_changes(make_plan(state, providers=LDAP_ONLY)) == []
    assert len(entries(env, "people", ["uid"])) == 300


def test_small_agency_converges_and_second_apply_does_nothing(env: Lab, tmp_path: Path) -> None:
    """A generated agency converges; apply of the second (empty) plan changes nothing and journals nothing."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    home = tmp_path / "home"
    apply(make_plan(state, providers=LDAP_ONLY), state, home)
    journal_lines = (home / "journal.jsonl").read_text().count("\n")
    plan = make_plan(state, providers=LDAP_ONLY)
    assert plan_changes(plan) == []
    result = apply(plan, state, home)
    assert result.done == []
    events = [json.loads(x)["event"] for x in (home / "journal.jsonl").read_text().splitlines()]
    assert len(events) == journal_lines + 2 and events[-2:] == ["apply-started", "apply-finished"]
    assert len(entries(env, "people")) == 4


def test_journal_and_audit_log_record_who_what_commit(env: Lab, tmp_path: Path) -> None:
    """Every applied change is journalled started/done and audited with who and the state's git commit."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    subprocess.run(["git", "init", "-q", str(state)], check=True)
    subprocess.run(
        ["git", "-C", str(state), "-c", "user.name=t", "-c", "user.email=t@x", "add", "."], check=True
    )
    subprocess.run(
        ["git", "-C", str(state), "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "s"],
        check=True,
    )
    head = subprocess.run(
        ["git", "-C", str(state), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    home = tmp_path / "home"
    plan = make_plan(state, providers=LDAP_ONLY)
    apply(plan, state, home)
    journal = [json.loads(x) for x in (home / "journal.jsonl").read_text().splitlines()]
    audit = [json.loads(x) for x in (home / "audit.jsonl").read_text().splitlines()]
    n = len(plan_changes(plan))
    assert sum(1 for j in journal if j["event"] == "started") == n
    assert sum(1 for j in journal if j["event"] == "done") == n
    assert len(audit) == n
    assert {a["who"] for a in audit} == {"test-operator"} and {a["commit"] for a in audit} == {head}
    # an uncommitted edit that is applied is recorded as such
    edit_toml(state / "units" / "vp.toml", lambda d: d["person"][0].__setitem__("title", "Phó Chánh VP"))
    apply(make_plan(state, providers=LDAP_ONLY), state, home)
    last = json.loads((home / "audit.jsonl").read_text().splitlines()[-1])
    assert last["commit"] == head + "+dirty" and last["key"] == "tuanpm"
    assert stat.S_IMODE((home / "audit.jsonl").stat().st_mode) == 0o600


# --------------------------------------------------------------------------------------------------
# Drift and repair


def test_live_change_behind_our_back_is_planned_and_repaired(env: Lab, tmp_path: Path) -> None:
    """A title changed by the rootdn behind our back is planned as an update of that field, and repaired."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    home = tmp_path / "home"
    apply(make_plan(state, providers=LDAP_ONLY), state, home)
    dn = f"uid=bangnv,ou=people,{env.base_dn}"
    root_modify(env, dn, {"title": ["Giám đốc (giả)"]})
    plan = make_plan(state, providers=LDAP_ONLY)
    [change] = plan_changes(plan)
    assert (change.action, change.kind, change.key) == (Action.UPDATE, "person", "bangnv")
    assert "title" in change.fields and change.after is not None and change.after["title"] == "Trưởng phòng"
    apply(plan, state, home)
    assert entries(env, "people", ["title"])[dn]["title"] == ["Trưởng phòng"]
    assert plan_changes(make_plan(state, providers=LDAP_ONLY)) == []


def test_live_object_not_in_the_toml_is_reported_not_deleted(env: Lab, tmp_path: Path) -> None:
    """A person added by hand is listed as unlisted (drift exits 2), never deleted by apply
    (docs/operations.md)."""
    from mailstate.lab.testing import make_person
    from mailstate.reconciler.plan.plan import plan_unlisted

    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    apply(make_plan(state, providers=LDAP_ONLY), state, tmp_path / "home")
    make_person(env, "stranger", cn="Người Lạ", unit="vp")
    plan = make_plan(state, providers=LDAP_ONLY)
    assert plan_changes(plan) == []
    assert [(r.kind, r.key) for r in plan_unlisted(plan)] == [("person", "stranger")]
    args = ["drift", "--state", str(state), "--provider", "ldap", "--format", "markdown"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and "stranger" in r.output
    apply(plan, state, tmp_path / "home")
    assert f"uid=stranger,ou=people,{env.base_dn}" in entries(env, "people", ["uid"])


def test_drift_command_exit_codes(env: Lab, tmp_path: Path) -> None:
    """`mailstate drift` exits 2 while something differs and 0 once converged."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    runner = CliRunner()
    r = runner.invoke(cli, ["drift", "--state", str(state), "--provider", "ldap"])
    assert r.exit_code == 2, r.output
    apply(make_plan(state, providers=LDAP_ONLY), state, tmp_path / "home")
    r = runner.invoke(cli, ["drift", "--state", str(state), "--provider", "ldap"])
    assert r.exit_code == 0, r.output


# --------------------------------------------------------------------------------------------------
# Stale plans


def test_stale_plan_refused_after_toml_change(env: Lab, tmp_path: Path) -> None:
    """A saved plan is refused when a state file changed since, naming the file; nothing is applied."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    plan_file = tmp_path / "plan.json"
    save_plan(make_plan(state, providers=LDAP_ONLY), plan_file)
    edit_toml(state / "units" / "qlcn.toml", lambda d: d["person"][0].__setitem__("title", "Phó phòng"))
    with pytest.raises(StalePlan, match=r"units/qlcn.toml changed"):
        apply(load_plan(plan_file), state, tmp_path / "home")
    assert entries(env, "people") == {} and entries(env, "units") == {}


def test_stale_plan_refused_after_live_change(env: Lab, tmp_path: Path) -> None:
    """A saved plan is refused when a live object it read changed since, naming it; nothing is applied."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    home = tmp_path / "home"
    apply(make_plan(state, providers=LDAP_ONLY), state, home)
    edit_toml(
        state / "units" / "vp.toml", lambda d: d["person"][0].__setitem__("title", "Phó Chánh Văn phòng")
    )
    plan_file = tmp_path / "plan.json"
    save_plan(make_plan(state, providers=LDAP_ONLY), plan_file)
    dn = f"uid=maiht,ou=people,{env.base_dn}"
    root_modify(env, dn, {"telephoneNumber": ["0000"]})
    with pytest.raises(StalePlan, match=r"live person maiht changed"):
        apply(load_plan(plan_file), state, home)
    people = entries(env, "people", ["title"])
    assert people[f"uid=tuanpm,ou=people,{env.base_dn}"]["title"] == ["Chánh Văn phòng"]


def test_plan_for_another_day_needs_its_date_confirmed(env: Lab, tmp_path: Path) -> None:
    """A plan made --as-of an earlier day is refused by apply unless that date is given again; then applied
    (a day after today is never applied: test_apply_safety)."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    later = (date.today() - timedelta(days=40)).isoformat()
    plan_file = tmp_path / "plan.json"
    save_plan(make_plan(state, providers=LDAP_ONLY, as_of=later), plan_file)
    with pytest.raises(StalePlan, match=f"--as-of {later}"):
        apply(load_plan(plan_file), state, tmp_path / "home")
    assert entries(env, "people") == {}
    r = CliRunner().invoke(cli, ["apply", str(plan_file), "--state", str(state), "--as-of", later])
    assert r.exit_code == 0, r.output
    assert len(entries(env, "people")) == 4


def test_saved_plan_applies_when_nothing_changed(env: Lab, tmp_path: Path) -> None:
    """`plan --out` then `apply FILE` through the CLI applies the saved plan; the next plan is empty."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    runner = CliRunner()
    plan_file = tmp_path / "plan.json"
    r = runner.invoke(
        cli,
        ["plan", "--state", str(state), "--provider", "ldap", "--out", str(plan_file), "--detailed-exitcode"],
    )
    assert r.exit_code == 2, r.output
    data = json.loads(plan_file.read_text())
    assert data["schema_version"] == 1 and data["fingerprint"]["desired"] and data["changes"]
    r = runner.invoke(cli, ["apply", str(plan_file), "--state", str(state)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["plan", "--state", str(state), "--provider", "ldap", "--detailed-exitcode"])
    assert r.exit_code == 0, r.output


# --------------------------------------------------------------------------------------------------
# Failures


@pytest.fixture
def crash_lab(lab_for: Callable[..., Lab], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Lab]:
    """A lab of its own (crash.example.gov.vn) whose slapd a test may kill; restarted afterwards."""
    from mailstate.lab import _proc

    lab = lab_for("crash.example.gov.vn")
    lab.reset()
    _use_lab(lab, monkeypatch, tmp_path / "home")
    yield lab
    entry = lab.info["pids"].get("slapd")
    if not entry or not _proc.alive(entry["pid"], entry["start_time"]):
        lab.start_service("slapd")


def _kill_slapd(lab: Lab) -> None:
    entry = lab.info["pids"]["slapd"]
    os.kill(entry["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    from mailstate.lab import _proc

    while _proc.alive(entry["pid"], entry["start_time"]) and time.monotonic() < deadline:
        time.sleep(0.02)


def _apply_killing_slapd(lab: Lab, plan_file: Path, state: Path, home: Path, after: int) -> dict[str, Any]:
    """Apply the saved plan in a child process (as an operator's `mailstate apply` would run) that kills
    slapd after ``after`` changes are done; return what its ApplyFailed said."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child() -> None:
        done_count = 0

        def hook(change: Change, event: str) -> None:
            nonlocal done_count
            if event == "done":
                done_count += 1
                if done_count == after:
                    _kill_slapd(lab)

        try:
            apply(load_plan(plan_file), state, home, on_change=hook)
            queue.put({"error": None})
        except ApplyFailed as exc:
            queue.put(
                {
                    "error": "ApplyFailed",
                    "message": str(exc),
                    "done": len(exc.done),
                    "not_tried": len(exc.not_tried),
                    "failed": exc.failed.id,
                }
            )
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as data
            queue.put({"error": type(exc).__name__, "message": str(exc)})

    proc = ctx.Process(target=child)
    proc.start()
    result = queue.get(timeout=120)
    proc.join(30)
    return dict(result)


def test_slapd_killed_mid_apply_stops_then_rerun_converges(crash_lab: Lab, tmp_path: Path) -> None:
    """slapd killed after 5 changes: apply says done/failed/not tried; after a restart a rerun converges."""
    state = small_state(tmp_path / "state", "crash.example.gov.vn")
    home = tmp_path / "home"
    plan = make_plan(state, providers=LDAP_ONLY)
    total = len(plan_changes(plan))
    plan_file = tmp_path / "plan.json"
    save_plan(plan, plan_file)
    res = _apply_killing_slapd(crash_lab, plan_file, state, home, after=5)
    assert res["error"] == "ApplyFailed", res
    assert res["done"] == 5 and res["not_tried"] == total - 6
    msg = res["message"]
    assert "failed" in msg and "done (5)" in msg and f"not tried ({total - 6})" in msg and "journal" in msg
    assert f"initial passwords of the people created so far: {home / 'passwords.tsv'}" in msg
    for secret in secrets_of(crash_lab, home):
        assert secret not in msg
    journal = [json.loads(x) for x in (home / "journal.jsonl").read_text().splitlines()]
    events = [j["event"] for j in journal]
    assert events.count("done") == 5 and events.count("failed") == 1 and events[-1] == "apply-finished"
    # while slapd is down a plan cannot be made: a failed read aborts, it is never "absent"
    with pytest.raises(ProviderError):
        make_plan(state, providers=LDAP_ONLY)
    r = CliRunner().invoke(cli, ["plan", "--state", str(state), "--provider", "ldap"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    crash_lab.start_service("slapd")  # same config, ports and data
    # the killed apply could not remove its lock entry; its process is gone, so the rerun breaks it
    rerun = make_plan(state, providers=LDAP_ONLY)
    assert 0 < len(plan_changes(rerun)) <= total - 5
    result = apply(rerun, state, home)
    assert any("stale apply lock" in n for n in result.notices)
    assert plan_changes(make_plan(state, providers=LDAP_ONLY)) == []


def test_read_failure_with_wrong_ca_aborts_the_plan(
    env: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a CA that did not sign the server's certificate, plan fails with exit 1 and creates nothing."""
    from mailstate.lab.tls import make_tls

    other = tmp_path / "other"
    other.mkdir()
    make_tls(other / "ca.pem", other / "ca.key", other / "s.pem", other / "s.key", label="other")
    monkeypatch.setenv("MAILSTATE_LDAP_CA_FILE", str(other / "ca.pem"))
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    with pytest.raises(ProviderError):
        make_plan(state, providers=LDAP_ONLY)
    r = CliRunner().invoke(cli, ["apply", "--state", str(state), "--provider", "ldap", "--yes"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert entries(env, "people") == {}


def test_apply_lock_held_elsewhere_refuses(env: Lab, tmp_path: Path) -> None:
    """While another apply holds the lock in the directory, apply refuses and changes nothing."""
    from mailstate.desired_state.loader import load_state
    from mailstate.providers.ldap.provider import LdapProvider

    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    plan = make_plan(state, providers=LDAP_ONLY)
    other = LdapProvider.from_state(load_state(state))
    try:
        with other.apply_lock("someone-else@elsewhere"), pytest.raises(MailstateError, match="another apply"):
            apply(plan, state, tmp_path / "home")
    finally:
        other.close()
    assert entries(env, "people") == {}


def test_unsafe_plan_stops_without_allow_destructive(env: Lab, tmp_path: Path) -> None:
    """A plan locking more than [safety] allows is refused unless allow_destructive; nothing is locked."""
    units = {"u": {"name": "Đơn vị U"}}
    people = [{"id": f"nv{i:02d}", "name": f"Nguyễn Văn Người {i}", "unit": "u"} for i in range(12)]
    state = write_state(
        tmp_path / "state",
        "lab.example.gov.vn",
        units,
        people,
        extra={"safety": {"max_destructive_count": 3}},
    )
    home = tmp_path / "home"
    apply(make_plan(state, providers=LDAP_ONLY), state, home)
    left = (date.today() - timedelta(days=200)).isoformat()

    def leave(doc: Any) -> None:
        for p in list(doc["person"])[:5]:
            p["left_on"] = tomlkit.date(left)

    edit_toml(state / "units" / "u.toml", leave)
    plan = make_plan(state, providers=LDAP_ONLY)
    locks = [c for c in plan_changes(plan) if c.action is Action.LOCK]
    assert len(locks) == 5
    with pytest.raises(UnsafePlan, match="allow-destructive"):
        apply(plan, state, home)
    locked_now = [dn for dn, a in entries(env, "people", ["pwdAccountLockedTime"]).items()
                  if a.get("pwdAccountLockedTime")]
    assert locked_now == []
    apply(plan, state, home, allow_destructive=True)
    locked = [
        dn
        for dn, a in entries(env, "people", ["pwdAccountLockedTime"]).items()
        if a.get("pwdAccountLockedTime")
    ]
    assert len(locked) == 5


# --------------------------------------------------------------------------------------------------
# Identity, names


def test_transfer_keeps_the_dn(env: Lab, tmp_path: Path) -> None:
    """A person moved to another unit's file is an update of `unit`, not a move: the DN stays the same."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    home = tmp_path / "home"
    apply(make_plan(state, providers=LDAP_ONLY), state, home)
    dn = f"uid=thuytt,ou=people,{env.base_dn}"
    before = entries(env, "people", ["entryUUID", "departmentNumber"])[dn]

    def move_out(doc: Any) -> None:
        doc["person"] = [p for p in doc["person"] if p["id"] != "thuytt"]

    def move_in(doc: Any) -> None:
        doc["person"].append(
            {"id": "thuytt", "name": "Trần Thị Thủy", "unit": "vp", "phone": "0256 3822 123"}
        )

    edit_toml(state / "units" / "qlcn.toml", move_out)
    edit_toml(state / "units" / "vp.toml", move_in)
    plan = make_plan(state, providers=LDAP_ONLY)
    person_changes = [c for c in plan_changes(plan) if c.kind == "person"]
    assert [(c.action, c.key) for c in person_changes] == [(Action.UPDATE, "thuytt")]
    assert "unit" in person_changes[0].fields
    apply(plan, state, home)
    after = entries(env, "people", ["entryUUID", "departmentNumber"])[dn]
    assert after["entryUUID"] == before["entryUUID"]
    assert after["departmentNumber"] == ["vp"]
    assert plan_changes(make_plan(state, providers=LDAP_ONLY)) == []


def test_unit_renamed(env: Lab, tmp_path: Path) -> None:
    """Renaming a unit updates the unit and its mailbox's name in place; the plan then converges."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    home = tmp_path / "home"
    apply(make_plan(state, providers=LDAP_ONLY), state, home)
    edit_toml(
        state / "units" / "qlcn.toml",
        lambda d: d["unit"].__setitem__("name", "Phòng Công nghiệp và Năng lượng"),
    )
    plan = make_plan(state, providers=LDAP_ONLY)
    kinds = sorted((c.action.label, c.kind, c.key) for c in plan_changes(plan))
    assert ("update", "unit", "qlcn") in kinds and all(k[0] == "update" for k in kinds)
    apply(plan, state, home)
    unit = entries(env, "units", ["description"])[f"ou=qlcn,ou=units,{env.base_dn}"]
    assert unit["description"] == ["Phòng Công nghiệp và Năng lượng"]
    assert plan_changes(make_plan(state, providers=LDAP_ONLY)) == []


def test_vietnamese_names_round_trip_nfc(env: Lab, tmp_path: Path) -> None:
    """A name written in NFD in the TOML is stored NFC in the directory and plans nothing afterwards."""
    nfd = unicodedata.normalize("NFD", "Nguyễn Thị Ánh Tuyết")
    assert nfd != unicodedata.normalize("NFC", nfd)
    state = write_state(
        tmp_path / "state",
        "lab.example.gov.vn",
        {"kt": {"name": unicodedata.normalize("NFD", "Phòng Kế toán")}},
        [
            {
                "id": "tuyetnta",
                "name": nfd,
                "unit": "kt",
                "title": unicodedata.normalize("NFD", "Kế toán viên"),
            }
        ],
    )
    home = tmp_path / "home"
    apply(make_plan(state, providers=LDAP_ONLY), state, home)
    person = entries(env, "people", ["cn", "title"])[f"uid=tuyetnta,ou=people,{env.base_dn}"]
    assert person["cn"] == ["Nguyễn Thị Ánh Tuyết"] and unicodedata.is_normalized("NFC", person["cn"][0])
    assert unicodedata.is_normalized("NFC", person["title"][0])
    assert plan_changes(make_plan(state, providers=LDAP_ONLY)) == []


def test_ldap_special_characters_in_names(env: Lab, tmp_path: Path) -> None:
    """Names and titles with , + " \\ ( ) * = do not break reading, writing or convergence."""
    weird = 'Lê, Văn + "Tí" \\ (Bé) *'
    state = write_state(
        tmp_path / "state",
        "lab.example.gov.vn",
        {"dv": {"name": 'Đơn vị (A+B), "Đặc biệt" = \\x *'}},
        [
            {
                "id": "tilv",
                "name": weird,
                "unit": "dv",
                "title": "Chuyên viên (tạm) = *)(uid=*",
                "address": "tilv@lab.example.gov.vn",
            }
        ],
    )
    home = tmp_path / "home"
    apply(make_plan(state, providers=LDAP_ONLY), state, home)
    person = entries(env, "people", ["cn", "title"])[f"uid=tilv,ou=people,{env.base_dn}"]
    assert person["cn"] == [weird] and person["title"] == ["Chuyên viên (tạm) = *)(uid=*"]
    assert plan_changes(make_plan(state, providers=LDAP_ONLY)) == []
    scoped = make_plan(state, providers=LDAP_ONLY, scope=["unit:dv"])
    assert plan_changes(scoped) == []


# --------------------------------------------------------------------------------------------------
# Scope


def test_scope_limits_plan_to_a_unit(env: Lab, tmp_path: Path) -> None:
    """--scope unit:qlcn plans only qlcn, its people and objects naming them; applying it leaves vp alone."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    home = tmp_path / "home"
    plan = make_plan(state, providers=LDAP_ONLY, scope=["unit:qlcn"])
    keys = {(c.kind, c.key) for c in plan_changes(plan)}
    assert ("person", "bangnv") in keys and ("unit", "qlcn") in keys
    assert ("person", "tuanpm") not in keys and ("unit", "vp") not in keys
    apply(plan, state, home)
    uids = {dn.split(",")[0] for dn in entries(env, "people")}
    assert uids == {"uid=bangnv", "uid=thuytt"}


# --------------------------------------------------------------------------------------------------
# Secrets, exit codes, files


def test_no_secret_in_any_output(env: Lab, tmp_path: Path) -> None:
    """No lab password and no initial password appears in renderings, plan file, journal or audit log."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    home = tmp_path / "home"
    runner = CliRunner()
    outputs = []
    plan_file = tmp_path / "plan.json"
    for fmt in ("text", "markdown", "json"):
        r = runner.invoke(
            cli,
            ["plan", "--state", str(state), "--provider", "ldap", "--format", fmt, "--out", str(plan_file)],
        )
        assert r.exit_code == 0, r.output
        outputs.append(r.output)
    r = runner.invoke(
        cli,
        [
            "apply",
            "--state",
            str(state),
            "--provider",
            "ldap",
            "--yes",
            "--passwords-out",
            str(home / "pw.tsv"),
            "--journal-dir",
            str(home),
        ],
    )
    assert r.exit_code == 0, r.output
    outputs.append(r.output)
    pw_file = home / "pw.tsv"
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    assert len(pw_file.read_text().splitlines()) == 4  # one initial password per new person
    secrets = secrets_of(env, home)
    assert len(secrets) >= 4 + 4
    texts = outputs + [plan_file.read_text(), (home / "journal.jsonl").read_text()]
    audit = Path(os.environ["MAILSTATE_HOME"]) / "lab.example.gov.vn" / "audit.jsonl"
    texts.append(audit.read_text())
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert str(pw_file) in outputs[-1]


def test_plan_detailed_exitcode_and_bad_input(env: Lab, tmp_path: Path) -> None:
    """plan --detailed-exitcode exits 2 with changes, else 0; bad TOML exits 1 naming file:line."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    runner = CliRunner()
    r = runner.invoke(cli, ["plan", "--state", str(state), "--provider", "ldap", "--detailed-exitcode"])
    assert r.exit_code == 2
    r = runner.invoke(cli, ["plan", "--state", str(state), "--provider", "ldap"])
    assert r.exit_code == 0
    r = runner.invoke(cli, ["apply", "--state", str(state), "--provider", "ldap"])
    assert r.exit_code == 1 and "--yes" in r.output  # not a terminal: refuses without --yes
    assert entries(env, "people") == {}
    (state / "units" / "vp.toml").write_text(
        (state / "units" / "vp.toml").read_text() + '\n[[person]]\nid = "x"\nname = "X"\nunit = "nowhere"\n'
    )
    r = runner.invoke(cli, ["plan", "--state", str(state), "--provider", "ldap", "--detailed-exitcode"])
    assert r.exit_code == 1 and "units/vp.toml:" in r.output and "Traceback" not in r.output


def _apply_on_a_tty(state: Path, answer: str) -> tuple[int, str]:
    """Run `mailstate apply` on a terminal, answer its prompt, return (exit code, output)."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(MAILSTATE), "apply", "--state", str(state), "--provider", "ldap"],
                            stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    out = b""
    deadline = time.monotonic() + 60
    while b"[y/N]" not in out and time.monotonic() < deadline:
        try:
            out += os.read(leader, 65536)
        except OSError:
            break
    os.write(leader, answer.encode() + b"\n")
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    code = proc.wait(60)
    os.close(leader)
    return code, out.decode(errors="replace")


def test_apply_asks_on_a_terminal(env: Lab, tmp_path: Path) -> None:
    """On a terminal apply asks first: "n" applies nothing (exit 1), "y" applies the plan (exit 0)."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    code, out = _apply_on_a_tty(state, "n")
    assert code == 1 and "Apply these 9 changes?" in out and "nothing was applied" in out
    assert entries(env, "people") == {}
    code, out = _apply_on_a_tty(state, "y")
    assert code == 0, out
    assert len(entries(env, "people")) == 4


def test_import_round_trip(env: Lab, tmp_path: Path) -> None:
    """`import` of a converged directory writes a state whose plan against the same directory is empty."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    apply(make_plan(state, providers=LDAP_ONLY), state, tmp_path / "home")
    out = tmp_path / "imported"
    r = CliRunner().invoke(cli, ["import", "--out", str(out), "--domain", "lab.example.gov.vn"])
    assert r.exit_code == 0, r.output
    assert (out / "mailstate.toml").exists() and (out / "units" / "qlcn.toml").exists()
    plan = make_plan(out, providers=LDAP_ONLY)
    assert [(c.action.label, c.kind, c.key, c.fields) for c in plan_changes(plan)] == []


def test_import_of_the_example_plans_nothing(sct_lab: Lab, tmp_path: Path) -> None:
    """Importing the converged example (its policies from --state) gives a state whose plan is empty."""
    state = tmp_path / "state"
    shutil.copytree(EXAMPLE, state)
    apply(make_plan(state, providers=LDAP_ONLY), state, tmp_path / "home")
    out = tmp_path / "imported"
    r = CliRunner().invoke(cli, ["import", "--out", str(out), "--state", str(state)])
    assert r.exit_code == 0, r.output
    text = "".join(p.read_text() for p in sorted(out.rglob("*.toml")))
    assert "left_on = " in text and "suspended = " in text  # locks explained, not unlocked
    plan = make_plan(out, providers=LDAP_ONLY)
    assert [(c.action.label, c.kind, c.key, c.fields) for c in plan_changes(plan)] == []


def test_directory_excludes_people_who_left(tmp_path: Path) -> None:
    """The public directory lists current people with title and phone, not those who left or are suspended."""
    units = {"vp": {"name": "Văn phòng <Sở>"}}
    people = [
        {"id": "anv", "name": "Nguyễn Văn A", "unit": "vp", "title": "Chánh <b>VP</b>", "phone": "0256 1"},
        {"id": "bnv", "name": "Nguyễn Văn B", "unit": "vp", "left_on": date(2020, 1, 1)},
        {"id": "cnv", "name": "Nguyễn Văn C", "unit": "vp", "suspended": "security"},
    ]
    state = write_state(tmp_path / "state", "lab.example.gov.vn", units, people)
    runner = CliRunner()
    r = runner.invoke(cli, ["directory", "--state", str(state), "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert "Nguyễn Văn A" in r.output and "0256 1" in r.output
    assert "Nguyễn Văn B" not in r.output and "Nguyễn Văn C" not in r.output
    r = runner.invoke(cli, ["directory", "--state", str(state), "--format", "html"])
    assert "Chánh &lt;b&gt;VP&lt;/b&gt;" in r.output and "<b>VP" not in r.output
    r = runner.invoke(cli, ["directory", "--state", str(state), "--format", "vcard"])
    assert r.output.count("BEGIN:VCARD") == 2


def test_plan_json_is_the_saved_plan(env: Lab, tmp_path: Path) -> None:
    """`plan --format json` prints the same document `--out` saves (schema_version, fingerprint, changes)."""
    state = small_state(tmp_path / "state", "lab.example.gov.vn")
    plan = make_plan(state, providers=LDAP_ONLY)
    data = plan_json(plan)
    for key in ("schema_version", "created_at", "fingerprint", "summary", "changes"):
        assert key in data
    assert data["summary"]["create"] == len(data["changes"])
    path = tmp_path / "p.json"
    save_plan(plan, path)
    again = load_plan(path)
    assert [c.id for c in plan_changes(again)] == [c.id for c in plan_changes(plan)]
