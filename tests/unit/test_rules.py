"""The agency's rules as the law counts them: keep_after_leaving needs a decision (and the post the rule
allows), durations beyond their article's maximum are warned about, the owner of a temporarily locked
mailbox is named in the lock and the journal, and no plan of any example cites another agency's article."""

from __future__ import annotations

import os
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

from mailstate.desired_state.lifecycle import decide_person, decide_unit_mailbox, notice_of
from mailstate.desired_state.loader import load_state
from mailstate.desired_state.projection import project
from mailstate.desired_state.schema import Person, State
from mailstate.errors import ValidationError
from mailstate.model import i18n
from mailstate.model.change import Action, Change
from mailstate.model.records import Record
from mailstate.model.regulation import RULES, preset, preset_names
from mailstate.model.settings import Duration
from mailstate.reconciler.apply.journal import Journal, read_lines
from mailstate.reconciler.plan.diff import diff

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _copy(tmp_path: Path, example: str) -> Path:
    dst = tmp_path / example
    shutil.copytree(EXAMPLES / example, dst)
    return dst


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# -- keep_after_leaving ------------------------------------------------------------------------------

@pytest.mark.usefixtures("english")  # asserts validation's English texts
def test_keep_after_leaving_without_a_decision_is_refused(tmp_path: Path) -> None:
    """A bare `keep_after_leaving = true` says nothing of who decided and why: refused at its line."""
    root = _copy(tmp_path, "mic")
    _edit(root / "units" / "tccb.toml", 'keep_after_leaving = { decision = "Đơn đề nghị ngày 20/12/2024, '
          'Bộ trưởng đồng ý tại Công văn 88/BTTTT-TCCB" }', "keep_after_leaving = true")
    with pytest.raises(ValidationError) as exc:
        load_state(root)
    [problem] = exc.value.problems
    assert problem.file.endswith("tccb.toml") and problem.line > 0
    assert problem.field == "person.keep_after_leaving"
    assert "who decided it and why" in problem.message


@pytest.mark.parametrize("value", ['{ decision = "" }', '{ decision = "   " }', "{ until = 2027-01-01 }"])
def test_keep_after_leaving_with_an_empty_decision_is_refused(tmp_path: Path, value: str) -> None:
    root = _copy(tmp_path, "monre")
    _edit(root / "units" / "tccb.toml", 'keep_after_leaving = { decision = "Đơn đề nghị ngày 15/12/2023, '
          'Bộ trưởng đồng ý tại Công văn 41/BTNMT-TCCB" }', f"keep_after_leaving = {value}")
    with pytest.raises(ValidationError) as exc:
        load_state(root)
    assert any(p.field.startswith("person.keep_after_leaving") for p in exc.value.problems), exc.value


@pytest.mark.usefixtures("english")  # asserts validation's English texts
def test_keep_after_leaving_for_a_post_the_rule_does_not_name_is_refused(tmp_path: Path) -> None:
    """MOST's rule keeps the mailbox only for department-director level posts or above: a "Chuyên viên"
    is refused, naming the article; the post held may be written in the keep itself."""
    root = _copy(tmp_path, "most")
    khtc = root / "units" / "khtc.toml"
    _edit(khtc, "notice_on    = 2026-03-16\n",
          'keep_after_leaving = { decision = "Đơn đề nghị ngày 01/03/2026" }\n')
    with pytest.raises(ValidationError) as exc:
        load_state(root)
    [problem] = exc.value.problems
    assert problem.field == "person.keep_after_leaving"
    assert "'Chuyên viên' is none of them" in problem.message
    assert "Điều 18 khoản 3, Quyết định 4105/QĐ-BKHCN" in problem.message or "Article 18 clause 3" in (
        problem.message)
    _edit(khtc, '{ decision = "Đơn đề nghị ngày 01/03/2026" }',
          '{ decision = "Đơn đề nghị ngày 01/03/2026", post = "Phó Vụ trưởng Vụ Kế hoạch - Tài chính" }')
    assert load_state(root).people["khanh.tv"].keep_after_leaving is not None


@pytest.mark.parametrize(("post", "allowed"), [
    ("Vụ trưởng Vụ Tổ chức cán bộ", True),
    ("Nguyên Vụ trưởng Vụ Tổ chức cán bộ", True),
    ("Phó Vụ trưởng Vụ Kế hoạch - Tài chính", True),
    ("nguyên Quyền Cục trưởng Cục Sở hữu trí tuệ", True),
    ("Thứ trưởng", True),
    ("Thư ký của Thứ trưởng", False),  # works for one, is not one
    ("Chuyên viên Văn phòng, giúp việc Bộ trưởng", False),
    ("Trợ lý Vụ trưởng", False),
    ("Chuyên viên", False),
])
def test_the_post_held_is_one_the_rule_names_not_a_post_that_mentions_one(post: str, allowed: bool) -> None:
    """MOST art.18.3 keeps the mailbox for posts "từ cấp vụ hoặc tương đương trở lên": the post (after
    "Nguyên", "Phó", "Quyền") is one of the listed ones — not any title that merely names one."""
    assert preset("most-4105").post_allows_keeping(post) is allowed


def test_rank_is_not_checked_where_the_agency_rule_names_no_post(tmp_path: Path) -> None:
    """Bình Định's regulation has no rank rule: a keep with a decision is accepted for any title, and
    its reason cites the setting, not another agency's article."""
    state = load_state(EXAMPLES / "binhdinh-sct")
    assert not state.rules.keep_posts
    person = state.people["longnt"]
    got = decide_person(person, state, date(2027, 9, 1))
    with i18n.use("vi"):
        [text] = [r.text() for r in got.reasons]
    assert "Công văn 310/SCT-VP" in text and text.endswith("theo `keep_after_leaving`"), text
    assert "4105" not in text and "18" not in text.split("Công văn")[0]


def test_notice_on_without_left_on_is_refused(tmp_path: Path) -> None:
    root = _copy(tmp_path, "most")
    _edit(root / "units" / "khtc.toml", "left_on      = 2026-02-28\n", "")
    with pytest.raises(ValidationError) as exc:
        load_state(root)
    assert [p.field for p in exc.value.problems] == ["person.notice_on"]


# -- maxima ------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("english")  # asserts validation's English texts
def test_a_duration_beyond_its_article_is_warned_about_naming_both(tmp_path: Path) -> None:
    root = _copy(tmp_path, "most")
    assert load_state(root).warnings == []
    _edit(root / "mailstate.toml", 'remove_after_leaving    = "12 months"',
          'remove_after_leaving    = "2 years"')
    state = load_state(root)
    [warning] = state.warnings
    assert warning.file == "mailstate.toml" and warning.line > 0
    assert warning.field == "lifecycle.remove_after_leaving"
    assert "configured 2 years exceeds the maximum 12 months of" in warning.message
    assert "13" in warning.message and "4105/QĐ-BKHCN" in warning.message


def test_the_warning_reads_its_durations_in_the_organisations_language(tmp_path: Path) -> None:
    """A Vietnamese reviewer reads "2 năm" and "12 tháng", not the TOML's English words."""
    root = _copy(tmp_path, "most")
    _edit(root / "mailstate.toml", 'remove_after_leaving    = "12 months"',
          'remove_after_leaving    = "2 years"')
    with i18n.use("vi"):
        [warning] = load_state(root).warnings
    assert "cấu hình 2 năm vượt mức tối đa 12 tháng của Điều 13 khoản 2 điểm b" in warning.message, \
        warning.message


@pytest.mark.parametrize(
    ("configured", "maximum", "exceeds"),
    [("90 days", "3 months", True), ("89 days", "3 months", False), ("3 months", "3 months", False),
     ("1 year", "12 months", False), ("13 months", "1 year", True), ("26 weeks", "6 months", True),
     ("0 days", "1 day", False)],
)
def test_duration_exceeds(configured: str, maximum: str, exceeds: bool) -> None:
    """"Exceeds" compares the end of the periods from every start day (months are calendar months)."""
    assert Duration.parse(configured).exceeds(Duration.parse(maximum)) is exceeds


def test_preset_maxima_are_durations_of_rules_the_preset_cites() -> None:
    """Every maximum of a preset parses, belongs to a lifecycle rule with a setting and to an article the
    preset cites (a maximum is the article's, never a free-floating figure)."""
    for name in preset_names():
        reg = preset(name)
        for rule in reg.maximum:
            assert RULES.get(rule), (name, rule)
            assert reg.citation(rule) is not None, (name, rule)
            assert reg.max_duration(rule) is not None


# -- boundary days, counted as the law counts --------------------------------------------------------

@pytest.mark.parametrize(
    ("start", "duration", "last_day", "due"),
    [
        (date(2026, 10, 1), "3 months", date(2027, 1, 1), date(2027, 1, 2)),
        (date(2026, 8, 31), "6 months", date(2027, 2, 28), date(2027, 3, 1)),   # month-end clamping
        (date(2027, 8, 31), "6 months", date(2028, 2, 29), date(2028, 3, 1)),   # leap year
        (date(2028, 2, 29), "12 months", date(2029, 2, 28), date(2029, 3, 1)),  # from a leap day
        (date(2028, 2, 29), "1 year", date(2029, 2, 28), date(2029, 3, 1)),
        (date(2026, 12, 31), "1 day", date(2027, 1, 1), date(2027, 1, 2)),
        (date(2026, 1, 31), "1 month", date(2026, 2, 28), date(2026, 3, 1)),
        (date(2026, 10, 1), "0 days", date(2026, 10, 1), date(2026, 10, 1)),     # "at once"
    ],
)
def test_period_last_day_and_due_day(start: date, duration: str, last_day: date, due: date) -> None:
    d = Duration.parse(duration)
    assert d.after(start) == last_day
    assert d.due(start) == due


def test_more_than_is_said_only_when_true() -> None:
    """Across two years of leaving days, a reason saying "more than N" appears only once N is over, and
    the lock never comes on the period's last day."""
    state = load_state(EXAMPLES / "mic")
    lc = state.lifecycle
    day = date(2026, 1, 1)
    while day < date(2028, 1, 1):
        p = Person(id="x", name="Nguyễn Văn X", left_on=day)
        last = lc.lock_after_leaving.after(day)
        for as_of in (last - timedelta(days=1), last, last + timedelta(days=1)):
            got = decide_person(p, state, as_of)
            with i18n.use("en"):
                says_more = any("more than" in r.text() for r in got.reasons)
            assert got.locked is (as_of > last) is says_more, (day, as_of, got)
        day += timedelta(days=13)


def test_unit_mailbox_removal_counts_the_same_way() -> None:
    state = load_state(EXAMPLES / "most")
    unit = next(iter(state.units.values())).model_copy(update={"dissolved_on": date(2026, 8, 31)})
    last = state.lifecycle.remove_after_leaving.after(date(2026, 8, 31))
    assert not decide_unit_mailbox(unit, state, last).remove
    assert decide_unit_mailbox(unit, state, last + timedelta(days=1)).remove


# -- the owner of a temporarily locked mailbox is told -----------------------------------------------

def _lock_changes(state: State, as_of: date) -> list[Change]:
    """The plan's changes when the live side is the desired state with nobody locked yet."""
    desired = project(state, as_of, folders=False)
    live = {}
    for ref, rec in desired.records.items():
        attrs = dict(rec.attrs)
        if "locked" in attrs:
            attrs["locked"], attrs["lock_reason"] = False, None
        if rec.kind == "person" and rec.key == "quan.vd":
            attrs["title"] = "Kỹ sư"  # an update beside the lock
        live[ref] = Record(rec.kind, rec.key, attrs, rec.provider, rec.unit)
    changes, _ = diff(desired, live)
    return changes


def test_the_lock_names_who_must_be_told_and_the_journal_records_it(tmp_path: Path) -> None:
    state = load_state(EXAMPLES / "most")
    changes = _lock_changes(state, date(2026, 12, 1))
    [lock] = [c for c in changes if c.action is Action.LOCK and c.key == "quan.vd"]
    assert notice_of(lock.reasons) == {"who": "quan.vd", "how": "backup_email",
                                       "to": "vudinhquan.backup@example.com"}
    with i18n.use("vi"):
        assert any("qua hộp thư dự phòng vudinhquan.backup@example.com" in r.text() for r in lock.reasons)
    # only the lock carries it: an update of the same person beside it does not
    assert any(c.key == "quan.vd" and c.action is Action.UPDATE for c in changes)
    for c in changes:
        if c.key == "quan.vd" and c.action is not Action.LOCK:
            assert notice_of(c.reasons) is None, c
    # a leaver's lock asks no notice (the rule is for temporary locks)
    for c in changes:
        if c.action is Action.LOCK and c.key != "quan.vd":
            assert notice_of(c.reasons) is None, c
    j = Journal(tmp_path / "j.jsonl", tmp_path / "a.jsonl", who="tester", commit=None)
    j.started(lock)
    j.done(lock)
    j.close()
    lines = read_lines(tmp_path / "j.jsonl")
    assert [x["notify"] for x in lines] == [{"who": "quan.vd", "how": "backup_email",
                                             "to": "vudinhquan.backup@example.com"}] * 2
    assert read_lines(tmp_path / "a.jsonl")[0]["notify"]["to"] == "vudinhquan.backup@example.com"


def test_without_a_backup_mailbox_the_owner_is_told_in_person() -> None:
    state = load_state(EXAMPLES / "binhdinh-sct")
    changes = _lock_changes(state, date(2026, 12, 1))
    [lock] = [c for c in changes if c.action is Action.LOCK and c.key == "trangdc"]
    assert notice_of(lock.reasons) == {"who": "trangdc", "how": "in_person", "to": None}


# -- no foreign article in any plan of any example ---------------------------------------------------

OWN = {"most": "MOST", "mic": "MIC", "vinhlong": "VL", "binhdinh-sct": "BĐ", "monre": "MONRE"}
DECISIONS = {name: preset(name).decision or "" for name in preset_names()}


@pytest.mark.parametrize("example", sorted(OWN))
def test_no_plan_of_an_example_cites_another_agency(example: str) -> None:
    """Every reason of every mailbox of the example, on the first day of each quarter of four years and on
    the golden plans' day, in both languages, names only the agency's own decision and articles."""
    state = load_state(EXAMPLES / example)
    own = state.organization.regulation
    foreign_decisions = [d.split("/")[0].split()[-1] + "/" for n, d in DECISIONS.items() if n != own and d]
    foreign_marks = [f"{abbr} art" for ex, abbr in OWN.items() if ex != example]
    seen = 0
    days = [date(y, m, 1) for y in range(2026, 2030) for m in (1, 4, 7, 10)] + [date(2027, 9, 1)]
    for day in days:
        desired = project(state, day, folders=True)
        for lang in i18n.LANGUAGES:
            with i18n.use(lang):
                for reasons in desired.reasons.values():
                    for r in reasons:
                        text = r.text()
                        seen += 1
                        for mark in foreign_decisions + foreign_marks:
                            assert mark not in text, (example, day, text)
    assert seen > 500


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_the_maximum_warning_is_printed_by_plan_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     command: str) -> None:
    """A duration beyond its article is printed on stderr by plan as by validate (in the state's language),
    before any server is read (here none answers: the plan then fails, the warning was given); stdout
    carries none."""
    from click.testing import CliRunner

    from mailstate.cli import cli

    root = _copy(tmp_path, "most")
    _edit(root / "mailstate.toml", 'remove_after_leaving    = "12 months"',
          'remove_after_leaving    = "2 years"')
    for name in [n for n in os.environ if n.startswith("MAILSTATE_")]:
        monkeypatch.delenv(name)
    result = CliRunner().invoke(cli, [command, "--state", str(root)])
    assert result.exit_code == (0 if command == "validate" else 1), result.output + result.stderr
    assert "cảnh báo: mailstate.toml:" in result.stderr
    assert "cấu hình 2 năm vượt mức tối đa 12 tháng" in result.stderr  # all in the state's language
    assert "cảnh báo" not in result.stdout


# -- the auditor's table in docs/regulation.md --------------------------------------------------------

def test_the_rule_table_names_every_rule_and_real_tests() -> None:
    """Every rule code has a row (and no row names another), and every test a row names exists: a
    ``file::name`` whose file defines ``name``, and for a data case ``name[case]`` its case file."""
    import re

    text = (ROOT / "docs" / "regulation.md").read_text(encoding="utf-8")
    heading = "## Every rule, what enforces it, the test that proves it"
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| `")]
    codes = [re.match(r"\| `([^`]+)`", ln).group(1) for ln in rows]  # type: ignore[union-attr]
    assert sorted(codes) == sorted(RULES) and len(codes) == len(set(codes))
    cases = {"test_lifecycle_case": "lifecycle_cases/{}.toml", "test_diff_case": "diff_cases/{}.json"}
    named = 0
    for ln in rows:
        tests = re.findall(r"`(tests/[\w/]+\.py)::(\w+)(?:\[([\w-]+)\])?`", ln.split("|")[3])
        assert tests, ln
        for path, name, case in tests:
            source = (ROOT / path).read_text(encoding="utf-8")
            assert re.search(rf"^def {name}\(", source, re.M), f"{path}::{name}"
            if case:
                assert (ROOT / path).parent.joinpath(cases[name].format(case)).exists(), f"{name}[{case}]"
            named += 1
    assert named >= len(RULES)
