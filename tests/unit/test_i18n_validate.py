"""Validation speaks the user's language: Vietnamese by default, English with --lang en or
[organization] language = "en"; FILE:LINE and field names stay as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailstate.cli import cli
from mailstate.desired_state.loader import load_state
from mailstate.errors import ValidationError
from mailstate.model import i18n

ORG = """\
[organization]
name = "Sở Công Thương tỉnh Bình Định"
domain = "sct.binhdinh.gov.vn"
{language}
"""

BROKEN = {
    "units/qlcn.toml": """\
[unit]
id = "qlcn"
name = "Phòng Quản lý Công nghiệp"
head = "bangvn"

[[person]]
id = "bangnv"
name = "Nguyễn Văn Bằng"
address = "bangnv@example.com"

[[person]]
id = "bangnv"
name = "Nguyễn Văn Bằng"

[[group]]
id = "lanhdao"
name = "Lãnh đạo"
members = ["unit:qlcm", "bangnv", "bangnv"]

[[shared_folder]]
mailbox = "unit:qlcn"
path = "/Văn bản đến"
read = ["group:lanhdao"]
purpose = "Công văn đến của phòng"
""",
    "units/hc.toml": """\
[unit]
id = "hc"
name = "Văn phòng"
parnet = "qlcn"

[[person]]
name = ""
unit = "hc"
quota = 5

[[person]]
id = "lantt"
name = "Trần Thị Lan"
joined_on = "hôm qua"
""",
}
"""Problems of many kinds: an unknown head (a typo), an address outside the domain, a duplicate id, an
unknown unit, a member listed twice, a folder path beginning with '/'; in a second file an unknown field
(a typo), a missing id, an empty name, another unknown field and a date that is no date."""

ENGLISH_WORDS = re.compile(
    r"\b(the|is|are|not|no|must|missing|required|unknown|did|you|mean|found|problems?|already|used|write|"
    r"cannot|of|an?|at|outside|valid|field|listed|twice|nothing|changed|error|date|such|as)\b",
    re.IGNORECASE,
)


@pytest.fixture(autouse=True)
def _no_language_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """MAILSTATE_LANG (a runner's --lang) would decide the language these tests are about."""
    monkeypatch.delenv("MAILSTATE_LANG", raising=False)


def _state(tmp_path: Path, unit: str | None = None, org: str = ORG.format(language="")) -> Path:
    """BROKEN, or the one unit file ``unit``, under ``org``."""
    root = tmp_path / "state"
    (root / "units").mkdir(parents=True)
    (root / "mailstate.toml").write_text(org, encoding="utf-8")
    for rel, text in ({"units/qlcn.toml": unit} if unit is not None else BROKEN).items():
        (root / rel).write_text(text, encoding="utf-8")
    return root


def _sentences(output: str) -> list[str]:
    """What a person reads on each line: FILE:LINE and the field name taken off, quoted input (ids, values,
    suggestions) and backquoted commands removed."""
    out = []
    for line in output.splitlines():
        line = re.sub(r"^(lỗi: |error: )?[\w./-]+\.toml(:\d+)?: ([\w.\[\]]+: )?", "", line)
        line = re.sub(r"'[^']*'|\"[^\"]*\"|`[^`]*`|\[[^\]]*\]", "", line)
        out.append(line)
    return out


def _validate(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["validate", "--state", str(root), *args])


def test_validate_speaks_vietnamese_by_default(tmp_path: Path) -> None:
    """A state with many kinds of error: every message is Vietnamese, not one English sentence; FILE:LINE
    and field names as written."""
    result = _validate(_state(tmp_path))
    assert result.exit_code == 1
    out = result.output
    assert "units/hc.toml:4: unit.parnet: trường 'parnet' không hợp lệ; có phải ý bạn là 'parent'?" in out
    assert "units/qlcn.toml:4: unit.head: không có cán bộ 'bangvn'; có phải ý bạn là 'bangnv'?" in out
    assert "units/hc.toml:14: person.joined_on: ngày không hợp lệ" in out
    assert "units/hc.toml:6: person.id: thiếu trường bắt buộc 'id'" in out
    assert "units/hc.toml:7: person.name: không được để trống" in out
    assert "units/qlcn.toml:12: person.id: mã cán bộ 'bangnv' bị trùng: cũng có tại units/qlcn.toml:6" in out
    assert ("units/qlcn.toml:9: person.address: 'bangnv@example.com' nằm ngoài tên miền sct.binhdinh.gov.vn"
            in out)
    assert "units/qlcn.toml:18: group.members: không có đơn vị 'qlcm'; có phải ý bạn là 'unit:qlcn'?" in out
    assert "units/qlcn.toml:18: group.members: 'bangnv' được ghi hai lần" in out
    assert "units/qlcn.toml:22: shared_folder.path: '/Văn bản đến' bắt đầu bằng '/'" in out
    assert re.search(r"phát hiện \d+ lỗi; chưa thay đổi gì", out)
    english = [s for s in _sentences(out) if ENGLISH_WORDS.search(s)]
    assert not english, english


def test_validate_lang_en_speaks_english(tmp_path: Path) -> None:
    """--lang en: the same problems in English (the message ids)."""
    result = _validate(_state(tmp_path), "--lang", "en")
    assert result.exit_code == 1
    out = result.output
    assert "units/hc.toml:4: unit.parnet: unknown field 'parnet'; did you mean 'parent'?" in out
    assert "units/qlcn.toml:4: unit.head: no person 'bangvn'; did you mean 'bangnv'?" in out
    assert "missing required field 'id'" in out
    assert re.search(r"\d+ problems found; nothing was changed", out)
    assert "không" not in out and "lỗi" not in out
    sentences = _sentences(out)
    assert len(sentences) >= 12 and all(ENGLISH_WORDS.search(s) for s in sentences)  # the check can fail


@pytest.mark.parametrize(("org", "args", "vietnamese"), [
    (ORG.format(language='language = "en"'), (), False),  # the state's language, though it is invalid
    (ORG.format(language='language = "en"'), ("--lang", "vi"), True),  # --lang wins over it
    (ORG.format(language='language = "vi"'), ("--lang", "en"), False),
    ('[organization\nlanguage = "en"\n', (), True),  # mailstate.toml does not parse: vi
    (ORG.format(language='language = "fr"'), (), True),  # a language mailstate does not have: vi
])
def test_the_language_is_lang_else_the_states_else_vi(
    tmp_path: Path, org: str, args: tuple[str, ...], vietnamese: bool
) -> None:
    """--lang, else [organization] language read from mailstate.toml even when the state is invalid, else
    Vietnamese (also when mailstate.toml itself is broken)."""
    result = _validate(_state(tmp_path, org=org), *args)
    assert result.exit_code == 1
    assert ("lỗi; chưa thay đổi gì" in result.output) is vietnamese, result.output
    assert ("problems found; nothing was changed" in result.output) is not vietnamese, result.output


def test_a_good_state_is_summed_up_in_the_language(tmp_path: Path) -> None:
    good = ('[unit]\nid = "qlcn"\nname = "Phòng Quản lý Công nghiệp"\n\n'
            '[[person]]\nid = "bangnv"\nname = "Nguyễn Văn Bằng"\n')
    root = _state(tmp_path, unit=good)
    vi = _validate(root)
    assert vi.exit_code == 0, vi.output
    assert vi.output == ("hợp lệ: 1 đơn vị, 1 cán bộ, 0 nhóm, 0 thư mục dùng chung, 0 cấp quyền truy cập "
                         "(sct.binhdinh.gov.vn)\n")
    en = _validate(root, "--lang", "en")
    assert en.output == ("ok: 1 unit, 1 person, 0 groups, 0 shared folders, 0 access grants "
                         "(sct.binhdinh.gov.vn)\n")


@pytest.mark.parametrize(("args", "expected", "other"), [
    ((), "phát hiện 1 lỗi; chưa ghi gì", "problem"),
    (("--lang", "en"), "1 problem found; nothing was written", "lỗi"),
])
def test_assign_speaks_the_language(tmp_path: Path, args: tuple[str, ...], expected: str, other: str) -> None:
    """`assign` reports the state's problems like validate, in --lang else the state's language else vi."""
    unit = '[unit]\nid = "qlcn"\nname = "Phòng Quản lý Công nghiệp"\nhead = "bangvn"\n'
    result = CliRunner().invoke(cli, ["assign", "--state", str(_state(tmp_path, unit=unit)), *args])
    assert result.exit_code == 1
    assert expected in result.output
    assert other not in result.output.replace("units/qlcn.toml", "")


def test_plan_heads_the_problems_in_the_language(tmp_path: Path) -> None:
    """A command that meets an invalid state (plan) prints the problems under a heading in the language of
    the run: errors.py, below the catalogues, does not say it."""
    root = _state(tmp_path, unit='[unit]\nid = "qlcn"\nname = "Phòng Quản lý Công nghiệp"\nhead = "bangvn"\n')
    vi = CliRunner().invoke(cli, ["plan", "--state", str(root)])
    assert vi.exit_code == 1
    assert vi.output.startswith("lỗi: 1 lỗi trong trạng thái mong muốn:\nunits/qlcn.toml:4: unit.head: "
                                "không có cán bộ 'bangvn'"), vi.output
    en = CliRunner().invoke(cli, ["plan", "--state", str(root), "--lang", "en"])
    assert en.output.startswith("error: 1 problem in the desired state:\nunits/qlcn.toml:4: unit.head: "
                                "no person 'bangvn'"), en.output


def test_library_messages_follow_use(tmp_path: Path) -> None:
    """load_state says its problems in the language in use (messages are made when a problem is found)."""
    root = _state(tmp_path)
    texts = {}
    for lang in i18n.LANGUAGES:
        with i18n.use(lang), pytest.raises(ValidationError) as info:
            load_state(root)
        texts[lang] = [str(p) for p in info.value.problems]
    assert len(texts["vi"]) == len(texts["en"]) >= 10
    for vi, en in zip(texts["vi"], texts["en"], strict=True):
        assert vi.split(": ")[:2] == en.split(": ")[:2]  # same FILE:LINE and field
        assert vi != en
