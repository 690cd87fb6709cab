"""Fast tests of the engine's pure parts: fingerprints, stale reasons, scope, journal, directory escaping."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from mailstate.adopt.directory import Entry, to_csv, to_html, to_vcard
from mailstate.errors import MailstateError
from mailstate.model import i18n
from mailstate.model.change import Action, Change
from mailstate.model.records import Record
from mailstate.reconciler.apply.journal import Journal, read_lines, scrub
from mailstate.reconciler.apply.run import redact
from mailstate.reconciler.plan.fingerprint import Fingerprint, file_digests, record_digest, stale_reasons
from mailstate.reconciler.plan.scope import ScopeFilter, parse_scope


def _person(key: str, unit: str, **attrs: object) -> Record:
    return Record("person", key, {"unit": unit, **attrs}, provider="ldap", unit=unit)


def test_file_digests_change_with_content(tmp_path: Path) -> None:
    """Editing one state file changes its digest and only its digest."""
    (tmp_path / "units").mkdir()
    (tmp_path / "mailstate.toml").write_text("a = 1\n")
    (tmp_path / "units" / "qlcn.toml").write_text("b = 2\n")
    before = file_digests(tmp_path)
    (tmp_path / "units" / "qlcn.toml").write_text("b = 3\n")
    after = file_digests(tmp_path)
    assert set(before) == {"mailstate.toml", "units/qlcn.toml"}
    assert before["mailstate.toml"] == after["mailstate.toml"]
    assert before["units/qlcn.toml"] != after["units/qlcn.toml"]


def test_file_digests_skip_hidden_directories(tmp_path: Path) -> None:
    """TOML files under hidden directories (.git, .mailstate) are not part of the state."""
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.toml").write_text("x = 1\n")
    (tmp_path / "mailstate.toml").write_text("a = 1\n")
    assert list(file_digests(tmp_path)) == ["mailstate.toml"]


def test_record_digest_is_order_independent() -> None:
    """Two records with the same attributes in another order share a digest; a changed value does not."""
    a = _person("bangnv", "qlcn", name="Nguyễn Văn Bằng", title="x")
    b = Record("person", "bangnv", {"title": "x", "name": "Nguyễn Văn Bằng", "unit": "qlcn"}, "ldap", "qlcn")
    c = _person("bangnv", "qlcn", name="Nguyễn Văn Bằng", title="y")
    assert record_digest(a) == record_digest(b)
    assert record_digest(a) != record_digest(c)


def test_stale_reasons_name_files_and_live_objects() -> None:
    """A stale check names the changed file, the changed live object and the appeared one."""
    old = Fingerprint(
        "d1",
        "l1",
        {"units/qlcn.toml": "1", "mailstate.toml": "2"},
        {"ldap:person:bangnv": "a", "ldap:unit:qlcn": "b"},
    )
    new = Fingerprint(
        "d2",
        "l2",
        {"units/qlcn.toml": "9", "mailstate.toml": "2"},
        {"ldap:person:bangnv": "z", "ldap:unit:qlcn": "b", "ldap:group:x": "c"},
    )
    with i18n.use("vi"):
        assert stale_reasons(old, new)[0] == "units/qlcn.toml đã thay đổi"
    with i18n.use("en"):
        reasons = stale_reasons(old, new)
    assert reasons == [
        "units/qlcn.toml changed",
        "live group x appeared",
        "live person bangnv changed",
    ]
    assert stale_reasons(old, old) == []


def test_parse_scope() -> None:
    """--scope takes unit:<id> values and rejects anything else."""
    assert parse_scope(["unit:qlcn", "unit:vp", "unit:qlcn"]) == ["qlcn", "vp"]
    assert parse_scope([]) is None
    with pytest.raises(MailstateError):
        parse_scope(["person:bangnv"])


def test_scope_filter_covers_units_people_and_naming_objects() -> None:
    """A scope covers its units, their people (even transferred out live), groups and ACLs naming them."""
    sf = ScopeFilter(units=frozenset({"qlcn"}), people=frozenset({"bangnv"}))
    assert sf.covers(_person("bangnv", "vp"))
    assert sf.covers(Record("unit_mailbox", "qlcn", {}, "ldap", "qlcn"))
    assert not sf.covers(_person("tuanpm", "vp"))
    assert sf.covers(Record("group", "g", {"members": ("tuanpm", "unit:qlcn")}, "ldap", None))
    assert not sf.covers(Record("group", "g", {"members": ("tuanpm",)}, "ldap", None))
    assert sf.covers(Record("acl", "tuanpm/Inbox#bangnv", {}, "imap", None))
    assert not sf.covers(Record("acl", "tuanpm/Inbox#maiht", {}, "imap", None))


def test_redact_removes_secret_values() -> None:
    """An error text that echoes a configured secret is redacted."""
    assert redact("bind failed for s3cr3t!pw", ["s3cr3t!pw"]) == "bind failed for <redacted>"


def test_scrub_hides_password_attributes() -> None:
    """Attributes named like passwords are redacted at any depth."""
    assert scrub({"after": {"password": "x", "name": "n"}}) == {
        "after": {"password": "<redacted>", "name": "n"}
    }


def test_journal_and_audit_are_append_only_json_lines(tmp_path: Path) -> None:
    """Each change is journalled started then done; the audit log one line per applied change; mode 0600."""
    ch = Change(
        "c1", Action.CREATE, "person", "bangnv", "ldap", None, {"name": "Nguyễn Văn Bằng"}, fields=("name",)
    )
    j = Journal(tmp_path / "j.jsonl", tmp_path / "a.jsonl", who="tester", commit="abc")
    j.run_started(plan_fingerprint="f", changes=1)
    j.started(ch)
    j.done(ch)
    j.run_finished(outcome="ok", done=1, failed=0, not_tried=0)
    j.close()
    j2 = Journal(tmp_path / "j.jsonl", tmp_path / "a.jsonl", who="tester", commit="abc")
    j2.started(ch)
    j2.failed(ch, "boom")
    j2.close()
    events = [r["event"] for r in read_lines(tmp_path / "j.jsonl")]
    assert events == ["apply-started", "started", "done", "apply-finished", "started", "failed"]
    audit = read_lines(tmp_path / "a.jsonl")
    assert len(audit) == 1 and audit[0]["who"] == "tester" and audit[0]["commit"] == "abc"
    assert audit[0]["after"] == {"name": "Nguyễn Văn Bằng"}
    assert stat.S_IMODE((tmp_path / "j.jsonl").stat().st_mode) == 0o600
    json.loads((tmp_path / "a.jsonl").read_text().splitlines()[0])


def _entries() -> list[Entry]:
    return [
        Entry("unit", "qlcn", 'Phòng <b>"QL"</b> & CN', None, None, None, None, "qlcn@x.vn"),
        Entry(
            "person",
            "bangnv",
            "Nguyễn Văn Bằng, Jr; <script>",
            "qlcn",
            "Phòng QLCN",
            "Trưởng phòng",
            "0256 3822 123",
            "bangnv@x.vn",
        ),
    ]


def test_directory_html_is_escaped() -> None:
    """Names with HTML-special characters are escaped in the HTML directory."""
    out = to_html(_entries())
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "&lt;b&gt;&quot;QL&quot;&lt;/b&gt; &amp; CN" in out


def test_directory_csv_and_vcard_escape_separators() -> None:
    """CSV quotes fields with commas; vCard escapes commas and semicolons (RFC 6350)."""
    csv_text = to_csv(_entries())
    assert '"Nguyễn Văn Bằng, Jr; <script>"' in csv_text
    vcard = to_vcard(_entries())
    assert "FN:Nguyễn Văn Bằng\\, Jr\\; <script>" in vcard
    assert vcard.count("BEGIN:VCARD") == 2


def test_record_digest_uses_the_providers_raw_digest() -> None:
    """When the provider gives a digest of the raw object, a change of it changes the record digest."""
    a = Record("person", "bangnv", {"name": "x", "_digest": "raw1"}, "ldap", "qlcn")
    b = Record("person", "bangnv", {"name": "x", "_digest": "raw2"}, "ldap", "qlcn")
    assert record_digest(a) != record_digest(b)
    assert record_digest(a) == record_digest(Record("person", "bangnv", {"_digest": "raw1"}, "ldap", "qlcn"))


def _tiny_state(root: Path) -> Path:
    (root / "units").mkdir(parents=True)
    (root / "mailstate.toml").write_text(
        '[organization]\nname = "Sở X"\ndomain = "x.gov.vn"\n', encoding="utf-8"
    )
    (root / "units" / "a.toml").write_text(
        '[unit]\nid = "a"\nname = "Phòng A"\n\n[[person]]\nid = "bangnv"\nname = "Nguyễn Văn Bằng"\n',
        encoding="utf-8",
    )
    (root / "units" / "b.toml").write_text(
        '[unit]\nid = "b"\nname = "Phòng B"\n\n[[person]]\nid = "tuanpm"\nname = "Phạm Minh Tuấn"\n',
        encoding="utf-8",
    )
    return root


def test_plan_from_an_empty_live_side_creates_everything_and_then_nothing(tmp_path: Path) -> None:
    """Planning against nothing creates every desired record; against those records it plans nothing."""
    from datetime import date

    from mailstate.desired_state.loader import load_state
    from mailstate.model.provider import Snapshot
    from mailstate.reconciler.pipeline import plan_from
    from mailstate.reconciler.plan.plan import plan_changes, plan_meta

    root = _tiny_state(tmp_path / "s")
    state = load_state(root)
    plan = plan_from(state, root, {"ldap": Snapshot("ldap")}, scope_units=None, as_of=date(2026, 1, 1))
    created = {(c.kind, c.key) for c in plan_changes(plan)}
    assert {("unit", "a"), ("unit", "b"), ("person", "bangnv"), ("person", "tuanpm")} <= created
    assert set(plan_meta(plan).fingerprint.files) == {"mailstate.toml", "units/a.toml", "units/b.toml"}
    live = Snapshot("ldap")
    for c in plan_changes(plan):
        live.add(Record(c.kind, c.key, dict(c.after or {}), "ldap", c.unit))
    again = plan_from(state, root, {"ldap": live}, scope_units=None, as_of=date(2026, 1, 1))
    assert plan_changes(again) == []
    assert plan_meta(again).fingerprint.live != plan_meta(plan).fingerprint.live


def test_plan_from_with_a_scope_plans_only_that_unit(tmp_path: Path) -> None:
    """A scope of unit b plans unit b and its person, not unit a's."""
    from datetime import date

    from mailstate.desired_state.loader import load_state
    from mailstate.model.provider import Snapshot
    from mailstate.reconciler.pipeline import plan_from
    from mailstate.reconciler.plan.plan import plan_changes

    root = _tiny_state(tmp_path / "s")
    plan = plan_from(
        load_state(root), root, {"ldap": Snapshot("ldap")}, scope_units=["b"], as_of=date(2026, 1, 1)
    )
    keys = {(c.kind, c.key) for c in plan_changes(plan)}
    assert ("person", "tuanpm") in keys and ("unit", "b") in keys
    assert not any(k[1] in ("a", "bangnv") for k in keys)


def test_a_malformed_plan_file_is_named_in_the_error(tmp_path: Path) -> None:
    """A saved plan whose changes are damaged: the error names the file (not only "plan file")."""
    import json

    import pytest

    from mailstate.errors import MailstateError
    from mailstate.reconciler.plan.plan import load_plan

    path = tmp_path / "damaged-plan.json"
    data = {"schema_version": 1, "created_at": "2026-01-01T00:00:00Z", "changes": [{"id": "x"}],
            "fingerprint": {"desired": "a", "live": "b"}, "engine": {"schema": 1, "as_of": "2026-01-01",
                                                                     "domain": "x.vn", "files": {}}}
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(MailstateError) as err:
        load_plan(path)
    assert str(path) in str(err.value)
    assert "malformed" in str(err.value)
