"""Renderings: text (plain when not a TTY), Markdown for a PR (summary first, folded, cut at 65,536), JSON."""

from __future__ import annotations

import json
import re
from datetime import date

import pytest

from mailstate.desired_state.projection import Desired
from mailstate.model.i18n import use
from mailstate.model.records import Record
from mailstate.reconciler.plan.diff import diff
from mailstate.reconciler.plan.plan import Plan
from mailstate.reconciler.plan.render import (
    MAX_MARKDOWN,
    RENDERERS,
    JsonRenderer,
    MarkdownRenderer,
    TextRenderer,
    render,
)

ANSI = re.compile(r"\x1b\[")
SECRET = "Zx9!pQ77-secret-value"



@pytest.fixture(autouse=True)
def _english():  # type: ignore[no-untyped-def]
    """These tests read the English rendering (test_i18n.py checks the Vietnamese one)."""
    with use("en"):
        yield


def person(key: str, unit: str, **attrs: object) -> Record:
    base = {"name": f"Người {key}", "unit": unit, "title": None, "address": f"{key}@x.vn", "locked": False,
            "lock_reason": None}
    base.update(attrs)
    return Record("person", key, base, "ldap", unit)


def small_plan() -> Plan:
    desired = Desired(as_of=date(2026, 11, 23))
    desired.add(person("bangnv", "qlcn", title="Trưởng phòng"), ["units/qlcn.toml:9: person bangnv"])
    desired.add(person("newp", "kh"), ["units/kh.toml:4: person newp"])
    desired.add(person("lockme", "qlcn", locked=True, lock_reason="MIC art.5.3: left on 2026-10-01"),
                ["MIC art.5.3: left on 2026-10-01, more than 3 months before 2027-01-05"])
    desired.add(Record("person", "sec", {"name": "S", "userPassword": SECRET}, "ldap", "kh"), ["x"])
    desired.remove(("person", "thuytt"), ["MOST art.13.2b: left on 2025-01-01, more than 12 months"])
    live = {
        ("person", "bangnv"): person("bangnv", "qlcn", title="Phó phòng"),
        ("person", "lockme"): person("lockme", "qlcn"),
        ("person", "thuytt"): person("thuytt", "qlcn"),
        ("person", "sec"): Record("person", "sec", {"name": "T", "userPassword": SECRET + "0"}, "ldap", "kh"),
        ("group", "old"): Record("group", "old", {"address": "old@x.vn"}, "ldap", None),
    }
    changes, unlisted = diff(desired, live)
    return Plan.build(changes, unlisted, as_of=date(2026, 11, 23), live=live, organization="x.vn",
                      unit_names={"qlcn": "Phòng Quản lý Công nghiệp", "kh": "Phòng Kế hoạch"})


def big_plan(units: int = 120, per_unit: int = 40) -> Plan:
    desired = Desired(as_of=date(2026, 11, 23))
    for u in range(units):
        for p in range(per_unit):
            key = f"p{u:03d}x{p:03d}"
            desired.add(person(key, f"u{u:03d}", title="Chuyên viên chính phòng " * 3),
                        [f"units/u{u:03d}.toml:{p + 1}: person {key} (Nguyễn Văn Bằng)"])
    changes, unlisted = diff(desired, {})
    return Plan.build(changes, unlisted, as_of=date(2026, 11, 23), organization="x.vn")


def test_renderers_by_name() -> None:
    """The three renderers are looked up by name; an unknown name is a clear error."""
    assert set(RENDERERS) == {"text", "markdown", "json"}
    from mailstate.errors import MailstateError

    with pytest.raises(MailstateError, match="unknown format"):
        render(small_plan(), "html")


def test_text_plain_when_not_a_tty() -> None:
    """Without a TTY the text rendering has no ANSI escape codes; with colour forced it has them."""
    plan = small_plan()
    plain = TextRenderer(color=False).render(plan)
    assert not ANSI.search(plain)
    assert ANSI.search(TextRenderer(color=True).render(plan))


def test_text_summary_first_and_grouped_by_unit() -> None:
    """The first line is the summary with counts; changes appear under their unit's heading with its name."""
    out = TextRenderer(color=False).render(small_plan())
    first = out.splitlines()[0]
    assert first.startswith("Plan for x.vn as of 2026-11-23:") and "update 2" in first and "lock 2" in first
    assert "unit qlcn — Phòng Quản lý Công nghiệp" in out
    assert out.index("unit kh") < out.index("unit qlcn")
    assert "title: Phó phòng → Trưởng phòng" in out
    assert "why: MOST art.13.2b" in out
    assert "? group old" in out


def test_text_no_changes() -> None:
    """An empty plan says so in one line."""
    out = TextRenderer(color=False).render(Plan.build([], organization="x.vn", as_of=date(2026, 1, 1)))
    assert out.strip() == "Plan for x.vn as of 2026-01-01: no changes."


def test_markdown_summary_first_then_callouts_then_details() -> None:
    """Markdown starts with the summary table, calls out locks and removals, then folds details per unit."""
    out = MarkdownRenderer().render(small_plan())
    i_summary = out.index("| action | count |")
    i_lock = out.index("### ⚠ Locks (2)")
    i_remove = out.index("### Removals (1)")
    i_details = out.index("<details>")
    assert i_summary < i_lock < i_remove < i_details
    assert "person `thuytt` — Phòng Quản lý Công nghiệp (archived first)" in out
    assert out.count("<details>") == out.count("</details>") == 3  # kh, qlcn, unlisted
    assert "<summary><b>qlcn</b> — Phòng Quản lý Công nghiệp:" in out
    assert "Phó phòng → Trưởng phòng" in out
    assert "_why_: MIC art.5.3" in out
    assert "### Not in the TOML (1)" in out


def test_markdown_cut_at_unit_boundary_with_note() -> None:
    """A plan too big for a PR comment is cut at a unit boundary, ≤ 65,536 chars, with a note on the rest."""
    plan = big_plan()
    full = MarkdownRenderer(max_length=10**9).render(plan)
    assert len(full) > MAX_MARKDOWN  # the case really is too big
    out = MarkdownRenderer(full_plan="the CI artefact plan.json").render(plan)
    assert len(out) <= MAX_MARKDOWN
    m = re.search(r"Plan cut\*\*: (\d+) change\(s\) in (\d+) unit\(s\) not shown", out)
    assert m, out[-800:]
    shown_units = out.count("<details>")
    assert int(m.group(2)) == 120 - shown_units
    assert int(m.group(1)) == 40 * (120 - shown_units)
    assert "the CI artefact plan.json" in out
    assert out.count("<details>") == out.count("</details>")  # never cut inside a unit
    assert out.startswith("<!-- mailstate-plan org=x.vn scope=all -->\n## mailstate plan")  # marker kept


def test_markdown_callouts_capped() -> None:
    """A plan locking thousands of mailboxes lists 50 in the callout and says how many more."""
    desired = Desired(as_of=date(2026, 11, 23))
    live = {}
    for i in range(300):
        desired.add(person(f"p{i:03d}", "u", locked=True, lock_reason="r"), ["MOST art.13.3: x"])
        live[("person", f"p{i:03d}")] = person(f"p{i:03d}", "u")
    changes, _ = diff(desired, live)
    out = MarkdownRenderer().render(Plan.build(changes))
    assert "… and 250 more" in out
    assert len(out) <= MAX_MARKDOWN


def test_no_secret_in_any_rendering() -> None:
    """An attribute named like a password is redacted in text, Markdown and JSON renderings."""
    plan = small_plan()
    for name in RENDERERS:
        out = render(plan, name, **({"color": False} if name == "text" else {}))
        assert SECRET not in out, name
    assert "<redacted>" in render(plan, "json")


def test_markdown_escapes_html() -> None:
    """Values that look like HTML or Markdown are escaped, so a name cannot inject markup into the comment."""
    desired = Desired(as_of=date(2026, 11, 23))
    desired.add(person("x", "u", title="<script>alert(1)</script> | **bold**"), ["r"])
    out = MarkdownRenderer().render(Plan.build(diff(desired, {})[0]))
    assert "<script>" not in out
    assert "&lt;script&gt;" in out


def test_json_rendering_is_plan_json() -> None:
    """The JSON rendering is exactly Plan.to_json()."""
    plan = small_plan()
    assert json.loads(JsonRenderer().render(plan)) == json.loads(json.dumps(plan.to_json()))


def test_text_default_follows_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """By default colour follows stdout: none when it is not a TTY, none with NO_COLOR even on a TTY."""
    plan = small_plan()
    monkeypatch.setattr("sys.stdout.isatty", lambda: False, raising=False)
    assert not ANSI.search(TextRenderer().render(plan))
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert ANSI.search(TextRenderer().render(plan))
    monkeypatch.setenv("NO_COLOR", "1")
    assert not ANSI.search(TextRenderer().render(plan))


def test_markdown_many_unlisted_and_many_changes() -> None:
    """Thousands of unlisted objects and changes still fit: some unlisted are listed, the rest counted."""
    plan = big_plan()
    plan.unlisted = [Record("person", f"old{i:05d}", {}, "ldap", "u") for i in range(5000)]
    out = MarkdownRenderer().render(plan)
    assert len(out) <= MAX_MARKDOWN
    assert "### Not in the TOML (5000)" in out
    m = re.search(r"- … (\d+) more not shown \(comment size\)", out)
    assert m and 0 < int(m.group(1)) < 5000
    assert out.count("<details>") == out.count("</details>")


def test_multi_valued_update_shows_what_is_added_and_removed() -> None:
    """An update of a long member list shows only the members added and removed, not two truncated lists."""
    members = [f"p{i:03d}" for i in range(300)]
    desired = Desired(as_of=date(2026, 11, 23))
    desired.add(Record("group", "toanso", {"members": (*members[1:], "newbie")}, "ldap", None), ["r"])
    live = {("group", "toanso"): Record("group", "toanso", {"members": tuple(members)}, "ldap", None)}
    plan = Plan.build(diff(desired, live)[0])
    text = TextRenderer(color=False).render(plan)
    assert "members: +newbie, −p000" in text
    assert "`members`: +newbie, −p000" in MarkdownRenderer().render(plan)


class _Writes:
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)


def test_a_large_text_plan_is_written_as_it_is_made() -> None:
    """Without colour the text of a province's plan goes out in pieces (never all its lines held at once),
    and the pieces are exactly what ``render`` gives."""
    from mailstate.reconciler.plan.render import render_plan

    plan = big_plan()
    out = _Writes()
    render_plan(plan, "text", out, color=False)
    assert len(out.parts) > 2
    assert "".join(out.parts) == render(plan, "text", color=False)
    small = _Writes()
    render_plan(small_plan(), "text", small, color=False)
    assert "".join(small.parts) == render(small_plan(), "text", color=False)
