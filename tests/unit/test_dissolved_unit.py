"""A dissolved unit's mailbox (rule lifecycle.dissolved): what the TOML still gives through it or on it —
its head's and delegates' rights, rights reaching people through it, its shared folders,
its grants, its place in groups —
is not dropped silently: every change that takes one away says so with the rule, and a shared folder that
goes with the removed mailbox is named by the removal instead of being listed as "not in the TOML"."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from mailstate.desired_state.loader import load_state
from mailstate.model.i18n import use
from mailstate.model.provider import Snapshot
from mailstate.model.records import Record
from mailstate.reconciler.pipeline import plan_from
from mailstate.reconciler.plan.plan import plan_changes, plan_unlisted

UNITS = {
    "a": '''[unit]
id = "a"
name = "Phòng A"
head = "bangnv"

[[person]]
id = "bangnv"
name = "Nguyễn Văn Bằng"

[[shared_folder]]
mailbox = "unit:a"
path = "Chung"
purpose = "Văn bản chung"
read = ["unit:old", "tuanpm"]
''',
    "old": '''[unit]
id = "old"
name = "Phòng Cũ"
head = "tuanpm"
delegates = ["thuytt"]
dissolved_on = 2026-03-01

[[person]]
id = "tuanpm"
name = "Phạm Minh Tuấn"
unit = "old"
left_on = 2026-03-01

[[person]]
id = "thuytt"
name = "Trần Thị Thủy"
unit = "old"
left_on = 2026-03-01

[[shared_folder]]
mailbox = "unit:old"
path = "Lưu trữ"
purpose = "Hồ sơ của phòng"
read = ["bangnv"]

[[access_grant]]
mailbox = "unit:old"
to = "bangnv"
rights = "read"
until = 2030-12-31
reason = "Quyết định 1/QĐ"

[[group]]
id = "all"
name = "Toàn thể"
members = ["bangnv", "unit:old"]
''',
}


def _state(root: Path) -> Path:
    (root / "units").mkdir(parents=True)
    (root / "mailstate.toml").write_text(
        '[organization]\nname = "Sở X"\ndomain = "x.gov.vn"\n\n'
        '[lifecycle]\nremove_after_leaving = "12 months"\n',
        encoding="utf-8",
    )
    for uid, text in UNITS.items():
        (root / "units" / f"{uid}.toml").write_text(text, encoding="utf-8")
    return root


def _plan(root: Path, live: dict[str, Snapshot], day: date):  # type: ignore[no-untyped-def]
    return plan_from(load_state(root), root, live, scope_units=None, as_of=day)


def _applied(root: Path, day: date) -> dict[str, Snapshot]:
    """The live side after applying the state on ``day`` (before the dissolution)."""
    live = {"ldap": Snapshot("ldap"), "imap": Snapshot("imap"), "ssh": Snapshot("ssh")}
    for c in plan_changes(_plan(root, {n: Snapshot(n) for n in live}, day)):
        live[c.provider].add(Record(c.kind, c.key, dict(c.after or {}), c.provider, c.unit))
    return live


def test_rights_through_a_dissolved_unit_are_revoked_citing_the_rule(tmp_path: Path) -> None:
    """Locked (dissolved, not yet removed): every right its head and delegates had on its mailbox or through
    it is revoked citing the dissolution (rule lifecycle.dissolved) — none with the generic rule."""
    root = _state(tmp_path / "s")
    live = _applied(root, date(2026, 1, 1))
    plan = _plan(root, live, date(2026, 4, 1))
    revokes = {c.key: c.reasons for c in plan_changes(plan) if c.action.label == "revoke"}
    assert set(revokes) == {
        "unit:old/INBOX#tuanpm", "unit:old/INBOX#thuytt",
        "unit:old/Lưu trữ#tuanpm", "unit:old/Lưu trữ#thuytt",
        "unit:a/Chung#thuytt",  # through unit:old; tuanpm keeps his own right on it
    }
    for key, reasons in revokes.items():
        codes = {r.code for r in reasons}
        assert codes & {"lifecycle.dissolved.no_rights_through", "lifecycle.dissolved.mailbox_unused"}, key
        assert all(r.rule == "lifecycle.dissolved" for r in reasons), (key, reasons)  # none generic
        assert all(dict(r.params)["dissolved_on"] == date(2026, 3, 1) for r in reasons), (key, reasons)


def test_what_goes_with_a_removed_unit_mailbox_is_named(tmp_path: Path) -> None:
    """Removed (12 months after): its shared folder is named by the mailbox's archive and removal (not listed
    as unlisted), the grant on it and the rights of its login are revoked citing the rule, and the group
    that lost it says why."""
    root = _state(tmp_path / "s")
    live = _applied(root, date(2026, 1, 1))
    plan = _plan(root, live, date(2027, 6, 1))
    changes = plan_changes(plan)
    assert [r.key for r in plan_unlisted(plan)] == []
    archive = next(c for c in changes if c.action.label == "archive" and c.key == "old")
    goes = [r for r in archive.reasons if r.code == "archive.before_removal.folder_goes_with"]
    assert [dict(r.params)["path"] for r in goes] == ["Lưu trữ"], archive.reasons
    assert "units/old.toml" in (goes[0].where or "")
    with use("en"):
        assert "its shared folder 'Lưu trữ' goes with it" in goes[0].text()
    revokes = {c.key: c.reasons for c in changes if c.action.label == "revoke"}
    for key in ("unit:old/INBOX#bangnv", "unit:old/Lưu trữ#bangnv", "unit:a/Chung#old"):
        assert any(r.code.startswith("removal.") for r in revokes[key]), key
    group = next(c for c in changes if c.kind == "group" and c.key == "all")
    assert group.fields == ("delivers_to",)
    gone = [r for r in group.reasons if r.code == "removal.rights_revoked.group_member"]
    assert [dict(r.params)["member"] for r in gone] == ["unit:old"], group.reasons
    with use("en"):
        assert gone[0].text().startswith("member unit:old is removed (unit dissolved on"), gone[0].text()


def test_without_the_mail_provider_a_mailbox_is_locked_never_removed(tmp_path: Path) -> None:
    """Planned with the directory and IMAP only (``--provider ldap --provider imap``): no change goes to a
    provider not in use — the mail's archive and removal are left out, and so is the removal of the entry
    that depends on them (a mailbox goes only once its mail is archived); the lock is still planned."""
    root = _state(tmp_path / "s")
    live = _applied(root, date(2026, 1, 1))
    del live["ssh"]
    changes = plan_changes(_plan(root, live, date(2027, 6, 1)))
    assert {c.provider for c in changes} <= {"ldap", "imap"}
    assert not [c for c in changes if c.key == "old" and c.action.label in ("archive", "delete")]
    with_ssh = plan_changes(_plan(root, {**live, "ssh": Snapshot("ssh")}, date(2027, 6, 1)))
    chain = [(c.action.label, c.provider) for c in with_ssh if c.key == "old" and c.kind == "unit_mailbox"]
    assert chain[-3:] == [("archive", "ssh"), ("delete", "ssh"), ("delete", "ldap")]
