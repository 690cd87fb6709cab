"""Languages and the agency's regulation: catalogues complete, citations from the state only, golden plans.

Golden files: tests/unit/golden/<example>.<lang>.md is the Markdown plan of examples/<example> against an
empty live system on a fixed date. MAILSTATE_UPDATE_GOLDEN=1 rewrites them (then read the diff!).
"""

from __future__ import annotations

import ast
import os
import re
import tomllib
import typing
from datetime import date
from importlib import resources
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir

from mailstate.desired_state.loader import load_state
from mailstate.desired_state.schema import RegulationPreset, RuleCode
from mailstate.model import i18n
from mailstate.model.reason import MESSAGES, Reason, _rule_of
from mailstate.model.regulation import RULES, preset, preset_names
from mailstate.reconciler.plan.diff import diff
from mailstate.reconciler.plan.plan import Plan
from mailstate.reconciler.plan.render import render

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "mailstate"
EXAMPLES = sorted(p.name for p in (ROOT / "examples").iterdir() if (p / "mailstate.toml").is_file())
GOLDEN = Path(__file__).parent / "golden"
AS_OF = date(2027, 9, 1)


KEYWORDS = ("_", "N_", "ngettext")


def _message_ids() -> set[str]:
    """Every message id the code marks with _, N_ or ngettext: what pybabel extract finds, and what a walk of
    the syntax tree finds (Babel's extractor does not look inside f-strings: ``f"## {_('Title')}"``)."""
    ids: set[str] = set()
    keywords = {"_": None, "N_": None, "ngettext": (1, 2)}
    for _file, _line, message, _comments, _ctx in extract_from_dir(str(SRC), keywords=keywords):
        if isinstance(message, tuple):
            ids.add(message[0])
        elif message:
            ids.add(message)
    return ids | _ast_message_ids()


def _ast_message_ids() -> set[str]:
    ids: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in KEYWORDS
                    and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                ids.add(node.args[0].value)
    return ids


def test_the_walk_sees_messages_inside_f_strings() -> None:
    """The tree walk finds a message Babel's extractor misses, so such a message cannot go untranslated."""
    assert "Drift report" in _ast_message_ids()
    tree = ast.parse('x = f"## {_(\'Hidden title\')}"')
    found = [n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert found == ["Hidden title"]


HELP_KEYWORDS = ("help", "short_help", "epilog")


def _unmarked_help_texts(source: str, name: str = "<src>") -> list[str]:
    """``help="…"`` (and short_help, epilog) given as a bare string or f-string: invisible to the
    extraction above, so it would stay English on a Vietnamese help page. A help is ``N_("…")`` or a name
    bound to one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in HELP_KEYWORDS and isinstance(kw.value, ast.Constant | ast.JoinedStr):
                    found.append(f"{name}:{kw.value.lineno}: {kw.arg}=")
    return found


def test_help_texts_are_marked_for_the_catalogues() -> None:
    """Every click help text in the source is an N_() message, so the extraction (and the test below) sees
    it; a command's docstring is not its help (cli/helptext.py; test_i18n_cli.py checks what is shown)."""
    offenders = [hit for path in SRC.rglob("*.py") for hit in
                 _unmarked_help_texts(path.read_text(encoding="utf-8"), str(path.relative_to(SRC)))]
    assert not offenders, offenders
    assert "Read the live state and print what apply would change." in _message_ids()
    bad = '@click.option("--x", help="Plain English")\n@click.command(help=f"x {1}")\ndef f(): ...'
    assert len(_unmarked_help_texts(bad)) == 2
    assert _unmarked_help_texts('@click.option("--x", help=N_("Marked"))\ndef f(): ...') == []


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_every_message_has_a_translation(lang: str) -> None:
    """A message id without a (non-empty) translation in a catalogue fails, naming it."""
    catalogue = i18n.catalogue(lang)
    ids = _message_ids()
    assert len(ids) > 100
    missing = sorted(m for m in ids if not (catalogue.get(m) and all(catalogue.get(m).string)
                                            if isinstance(catalogue.get(m).string if catalogue.get(m)
                                                          else None, tuple)
                                            else catalogue.get(m) and catalogue.get(m).string))
    assert not missing, f"{lang}: messages without a translation: {missing}"


def test_placeholders_survive_translation() -> None:
    """A translation keeps exactly the {placeholders} of its message id (else .format fails or drops one)."""
    for message in i18n.catalogue("vi"):
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        want = set(re.findall(r"\{(\w+)\}", ids[-1]))  # Vietnamese has one form: the plural's
        for s in strings:
            assert set(re.findall(r"\{(\w+)\}", s)) == want, (message.id, s)


def test_rule_codes_are_one_list() -> None:
    """The TOML's rule codes, the regulation's and the messages' are the same set."""
    assert set(typing.get_args(RuleCode)) == set(RULES)
    for code in MESSAGES:
        if not code.startswith(("source.", "text", "delegation.through_unit", "removal.rights_on_it")):
            assert _rule_of(code) in RULES, code


def test_presets_are_the_shipped_files_and_cite_known_rules() -> None:
    """Each preset names its decision; every article is of a known rule and reads as Điều/khoản/điểm."""
    assert set(typing.get_args(RegulationPreset)) == set(preset_names())
    for name in preset_names():
        reg = preset(name)
        assert reg.decision and reg.decision.startswith("Quyết định ")
        for rule in reg.articles:
            assert rule in RULES, (name, rule)
            with i18n.use("vi"):
                text = reg.citation(rule).text()  # type: ignore[union-attr]
            assert text.startswith("Điều ") and text.endswith(reg.decision), text


def test_no_agency_article_is_written_in_the_code() -> None:
    """Articles come from the regulation table: none of MIC, MOST, VL, BĐ or MONRE in the rule code."""
    pattern = re.compile(r"\b(MIC|MOST|VL|BĐ|MONRE)\b[^\n]{0,3}art\.")
    offenders = []
    for name in ("desired_state/projection_imap.py", "reconciler/plan/diff.py", "desired_state/projection.py",
                 "desired_state/lifecycle.py", "reconciler/plan/render/__init__.py", "model/reason.py",
                 "desired_state/validate.py", "providers/ldap/passwords.py"):
        for n, line in enumerate((SRC / name).read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{name}:{n}: {line.strip()}")
    assert not offenders, offenders


def test_reason_json_round_trip_keeps_rule_and_renders_in_either_language() -> None:
    """JSON keeps the rule code and the parameters, so a saved plan renders in the language asked."""
    r = Reason("lifecycle.remove_after_leaving", (("left_on", "2026-08-15"), ("duration", (12, "month"))),
               preset("most-4105").citation("lifecycle.remove_after_leaving"), "units/vp.toml:3")
    data = r.to_json()
    assert data["rule"] == "lifecycle.remove_after_leaving"
    back = Reason.from_json(data)
    assert back == Reason(r.code, (("left_on", "2026-08-15"), ("duration", (12, "month"))), r.cite, r.where)
    with i18n.use("vi"):
        assert back.text() == ("units/vp.toml:3: nghỉ việc từ 15/08/2026, đã quá 12 tháng: khóa, lưu trữ rồi "
                               "xóa (Điều 13 khoản 2 điểm b, Quyết định 4105/QĐ-BKHCN)")
    with i18n.use("en"):
        assert back.text().endswith("(Article 13 clause 2 point b, Quyết định 4105/QĐ-BKHCN)")


def _plan(example: str) -> tuple[Plan, object]:
    from mailstate.desired_state.projection import project

    state = load_state(ROOT / "examples" / example)
    desired = project(state, AS_OF, folders=True)
    changes, unlisted = diff(desired, {})
    plan = Plan.build(changes, unlisted, as_of=AS_OF, organization=state.domain,
                      unit_names={u: x.name for u, x in state.units.items()})
    plan.language = state.language
    return plan, state


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize("example", EXAMPLES)
def test_example_plan_matches_golden(example: str, lang: str) -> None:
    """The Markdown plan of every example, in Vietnamese and in English, is the reviewed golden file."""
    plan, state = _plan(example)
    with i18n.use(lang):
        text = render(plan, "markdown", state)
    path = GOLDEN / f"{example}.{lang}.md"
    if os.environ.get("MAILSTATE_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("example", EXAMPLES)
def test_vietnamese_plan_has_no_english_rule_text(example: str) -> None:
    """A Vietnamese plan has no English summary words, no rights letters and no other agency's article."""
    plan, state = _plan(example)
    with i18n.use("vi"):
        text = render(plan, "markdown", state)
    for english in ("change(s)", "left on", "locked, archived", " why", "`locked`", "create ", "more than"):
        assert english not in text, english
    assert not re.search(r"`quyền`: [aeiklprstwx]+\s", text)  # rights in words
    own = preset(str(state.organization.regulation)).decision  # type: ignore[attr-defined]
    cited = re.findall(r"\(Điều [^()]*?, (Quyết định [^()]+)\)", text)
    assert cited or not preset(str(state.organization.regulation)).articles  # type: ignore[attr-defined]
    for decision in cited:
        assert decision == own, decision


def test_catalogues_are_package_data() -> None:
    """The .po files and presets ship inside the package (a wheel has them: pyproject package-data)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pkg = data["tool"]["setuptools"]["package-data"]["mailstate"]
    assert "locale/*/LC_MESSAGES/*.po" in pkg and "regulations/*.toml" in pkg
    for lang in i18n.LANGUAGES:
        assert (resources.files("mailstate") / "locale" / lang / "LC_MESSAGES" / "mailstate.po").is_file()


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize("regulation", [None, "most-4105"])
def test_import_reads_back_the_lock_reasons_it_wrote(lang: str, regulation: str | None) -> None:
    """The lock reason stored in the directory (in the organisation's language, cited or not) is turned
    back into left_on / suspended by import, so an imported state plans no unlock."""
    from pathlib import Path as P

    from mailstate.adopt.importer import _lock_fields
    from mailstate.desired_state.lifecycle import decide_person
    from mailstate.desired_state.schema import Organization, Person, State

    state = State(root=P("."), organization=Organization(name="X", domain="x.gov.vn", language=lang,
                                                         regulation=regulation))
    left = decide_person(Person(id="a", name="A B", left_on=date(2026, 8, 15)), state, date(2026, 12, 1))
    assert _lock_fields(left.lock_reason) == {"left_on": date(2026, 8, 15)}
    held = decide_person(Person(id="b", name="B C", suspended="lộ mật khẩu: đổi ngay"), state, AS_OF)
    assert _lock_fields(held.lock_reason) == {"suspended": "lộ mật khẩu: đổi ngay"}


@pytest.mark.parametrize(("args", "heading", "header"), [
    ((), "<h1>Danh bạ thư điện tử</h1>", "loại,mã,họ tên,đơn vị,tên đơn vị,chức vụ,điện thoại,thư điện tử"),
    (("--lang", "vi"), "<h1>Danh bạ thư điện tử</h1>", None),
    (("--lang", "en"), "<h1>E-mail directory</h1>", "kind,id,name,unit,unit name,title,phone,e-mail"),
])
def test_directory_speaks_the_language_asked(args: tuple[str, ...], heading: str, header: str | None) -> None:
    """`directory --lang` overrides [organization] language (vi in the example) in HTML and CSV; ids and
    addresses stay as written."""
    from click.testing import CliRunner

    from mailstate.cli import cli

    state = str(ROOT / "examples" / EXAMPLES[0])
    html_out = CliRunner().invoke(cli, ["directory", "--state", state, *args])
    assert html_out.exit_code == 0, html_out.output
    assert heading in html_out.output
    lang = args[1] if args else "vi"
    assert f'<html lang="{lang}">' in html_out.output
    other = "E-mail directory" if lang == "vi" else "Danh bạ"
    assert other not in html_out.output
    if header is not None:
        csv_out = CliRunner().invoke(cli, ["directory", "--state", state, "--format", "csv", *args])
        assert csv_out.output.splitlines()[0] == header
        assert "@" in csv_out.output


def test_cli_errors_default_to_vietnamese_without_a_state(tmp_path: Path) -> None:
    """No state to read a language from: the error is Vietnamese, names what to fix once."""
    from click.testing import CliRunner

    from mailstate.cli import cli

    out = CliRunner().invoke(cli, ["directory", "--state", str(tmp_path), "--as-of", "tomorrow"])
    assert out.exit_code == 1
    assert out.output.startswith("lỗi: --as-of 'tomorrow': cần một ngày dạng YYYY-MM-DD")
    assert out.output.count("--as-of") == 1
    args = ["directory", "--state", str(tmp_path), "--as-of", "tomorrow"]
    out = CliRunner().invoke(cli, [*args, "--lang", "en"])
    assert out.output.startswith("error: --as-of 'tomorrow': expected a date YYYY-MM-DD")


def test_the_environment_gives_the_language_of_commands_without_lang(tmp_path: Path) -> None:
    """MAILSTATE_LANG is the environment form of --lang: a command without --lang (lab) prints in it,
    and without it the default is Vietnamese."""
    import os
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "mailstate"
    env = {k: v for k, v in os.environ.items() if k != "MAILSTATE_LANG"}
    args = [str(exe), "lab", "status", "--dir", str(tmp_path / "none")]
    vi = subprocess.run(args, env=env, capture_output=True, text=True)
    en = subprocess.run(args, env={**env, "MAILSTATE_LANG": "en"}, capture_output=True, text=True)
    assert vi.stderr.startswith("lỗi: ") and en.stderr.startswith("error: "), (vi.stderr, en.stderr)


def test_no_reason_message_names_a_parameter_it_cannot_get() -> None:
    """``reason(code, reg, where=…)`` takes ``where`` as the reason's place, never as a message parameter:
    a message with ``{where}`` printed it literally (an ended grant's reason did)."""
    from mailstate.model.reason import MESSAGES

    assert [code for code, text in MESSAGES.items() if "{where}" in text] == []


@pytest.mark.parametrize("example", EXAMPLES)
def test_rights_changes_name_the_rights_once(example: str) -> None:
    """Rights granted or revoked read "cấp quyền …" / "grant rights …": the kind is not repeated after
    an action that already names it, in the text plan, the Markdown plan and apply's lines."""
    plan, state = _plan(example)
    for lang, doubled in (("vi", "quyền quyền"), ("en", "rights rights")):
        with i18n.use(lang):
            for fmt in ("text", "markdown"):
                text = render(plan, fmt, state)
                assert doubled not in text and "quyền** quyền" not in text, (lang, fmt)
            assert i18n.change_title("revoke", "acl", "k") == ("thu hồi quyền k" if lang == "vi"
                                                                 else "revoke rights k")
            assert i18n.change_title("lock", "person", "p1") == ("khóa cán bộ p1" if lang == "vi"
                                                                   else "lock person p1")
