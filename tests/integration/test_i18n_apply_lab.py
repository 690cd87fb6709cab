"""Apply speaks the organisation's language through the CLI, on the real lab: the plan, the progress lines,
the summary and the errors an operator meets, in Vietnamese (the default, or --lang vi) and in English."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MAILSTATE = Path(sys.executable).with_name("mailstate")
DOMAIN = "lab.example.gov.vn"

ENGLISH = re.compile(
    r"\b(done|applied|apply|change|changes|journal|audit|log|create|person|unit|nothing|error|note|initial|"
    r"passwords|written|mode|hand|delete|not|terminal|give|after|today|never|before|the|is|of|to|and)\b",
    re.IGNORECASE,
)


def write_state(root: Path, people: int, language: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lang = f'language = "{language}"\n' if language else ""
    (root / "mailstate.toml").write_text(
        f'[organization]\nname = "Lab"\ndomain = "{DOMAIN}"\n{lang}\n'
        '[providers.ldap]\nurl = "ldaps://ldap.invalid"\npassword_env = "MAILSTATE_LDAP_PASSWORD"\n',
        encoding="utf-8",
    )
    rows = ['[unit]\nid = "qlcn"\nname = "Phòng Quản lý Công nghiệp"\nhead = "p000"\n']
    rows += [f'[[person]]\nid = "p{i:03d}"\nname = "Nguyễn Văn Người {i:03d}"\n' for i in range(people)]
    (root / "units").mkdir(exist_ok=True)
    (root / "units" / "qlcn.toml").write_text("\n".join(rows), encoding="utf-8")
    return root


def ms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MAILSTATE), *args], capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)


def english_words(output: str) -> list[str]:
    """English words in what a person reads; paths (the journal's, the passwords file's), ids, addresses and
    command lines (`mailstate plan --as-of …`) are left out: they stay as written."""
    text = re.sub(r"`[^`]*`", " ", output)
    text = " ".join(t for t in text.split() if "/" not in t and "@" not in t and not t.startswith("-"))
    return ENGLISH.findall(text)


@pytest.fixture
def home(lab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / DOMAIN


def test_apply_in_vietnamese_then_english(home: Path, tmp_path: Path) -> None:
    root = write_state(tmp_path / "state", 3)

    # the default language (none in the TOML): Vietnamese, errors included
    refused = ms("apply", "--state", str(root))
    assert refused.returncode == 1
    assert refused.stderr.startswith("lỗi: không chạy trên thiết bị đầu cuối: thêm --yes"), refused.stderr
    assert refused.stderr.count("--yes") == 1

    vi = ms("apply", "--state", str(root), "--yes", "--lang", "vi")
    assert vi.returncode == 0, vi.stderr
    out = vi.stdout + vi.stderr
    assert "xong: tạo cán bộ p000" in vi.stderr
    assert re.search(r"^đã áp dụng \d+ thay đổi; nhật ký: ", vi.stdout, re.M), vi.stdout
    assert "mật khẩu ban đầu đã ghi vào" in vi.stdout
    assert not english_words(out), (english_words(out), out)

    future = (date.today() + timedelta(days=3)).isoformat()
    ahead = ms("apply", "--state", str(root), "--yes", "--as-of", future)
    assert ahead.returncode == 1
    assert "là sau hôm nay" in ahead.stderr and "chưa áp dụng gì" in ahead.stderr
    assert not english_words(ahead.stderr), ahead.stderr

    write_state(root, 4)
    en = ms("apply", "--state", str(root), "--yes", "--lang", "en")
    assert en.returncode == 0, en.stderr
    assert "done: create person p003" in en.stderr
    assert re.search(r"^applied \d+ changes?; journal: ", en.stdout, re.M), en.stdout
    said = en.stdout + en.stderr
    for name in ("Nguyễn Văn Người", "Nguyễn", "Phòng Quản lý Công nghiệp"):  # names stay as written
        said = said.replace(name, "")
    assert not re.search(r"[ạảãáàâầấậẩẫăằắặẳẵđêềếệểễơờớợởỡưừứựửữ]", said), said

    nothing = ms("apply", "--state", str(root), "--yes")
    assert nothing.stdout.strip().endswith(
        "không có gì để áp dụng: hệ thống đã đúng như trạng thái mong muốn")


def test_the_state_language_is_the_default_of_errors(home: Path, tmp_path: Path) -> None:
    """With `language = "en"` in the TOML and no --lang, apply's errors are in English."""
    root = write_state(tmp_path / "state", 1, language="en")
    refused = ms("apply", "--state", str(root))
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: not a terminal: give --yes"), refused.stderr
    assert ms("apply", "--state", str(root), "--lang", "vi").stderr.startswith("lỗi: ")
