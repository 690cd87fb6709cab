"""The CLI speaks the language of the run: every `--help` page (commands, options, click's own words) and the
output of `lab`, `server-config` and `forge`, Vietnamese by default, English with --lang en or
MAILSTATE_LANG=en."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mailstate.cli import LANG_ENV, cli
from mailstate.cli.helptext import HELP_OPTION_HELP, Command, Group, message_id
from mailstate.lab import _proc
from mailstate.model import i18n

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "binhdinh-sct"
NO_LANG: dict[str, str | None] = {LANG_ENV: None}
"""The environment of a run without MAILSTATE_LANG (whatever the test runner's says)."""


def _commands(cmd: click.Command = cli, path: tuple[str, ...] = ()
              ) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            found += _commands(cmd.commands[name], (*path, name))
    return found


COMMANDS = _commands()
PATHS = [" ".join(path) or "mailstate" for path, _cmd in COMMANDS]


def _texts(cmd: click.Command) -> list[str]:
    """The message ids a person reads on a command's help page: its help, short help, each option's."""
    texts = [message_id(cmd.help), message_id(cmd.short_help)]
    texts += [message_id(p.help) for p in cmd.params if isinstance(p, click.Option)]
    return [t for t in texts if t]


def _flat(text: str) -> str:
    """Whitespace folded: click wraps help texts at the terminal's width."""
    return " ".join(text.split())


def _help(path: tuple[str, ...], *extra: str, env: dict[str, str | None] | None = None) -> str:
    out = CliRunner().invoke(cli, [*path, "--help", *extra], env=env or NO_LANG, prog_name="mailstate")
    assert out.exit_code == 0, out.output
    return _flat(out.output)


def test_every_command_renders_its_help_in_the_language_of_the_run() -> None:
    """Each command is a helptext Command or Group (the classes that translate when the page is shown),
    and everything its page shows has a translation in both catalogues: a help written without N_(), as a
    docstring, or on a command of plain click's class fails here."""
    assert len(COMMANDS) > 15
    for path, cmd in COMMANDS:
        assert isinstance(cmd, Command | Group), (path, type(cmd))
        assert cmd.help, path
        for lang in i18n.LANGUAGES:
            catalogue = i18n.catalogue(lang)
            for text in _texts(cmd):
                entry = catalogue.get(text)
                assert entry is not None and entry.string, (lang, path, text)


@pytest.mark.parametrize("path", [p for p, _c in COMMANDS], ids=PATHS)
def test_help_is_vietnamese_by_default(path: tuple[str, ...]) -> None:
    """`mailstate … --help` without --lang or MAILSTATE_LANG: the command's help, every option's help and
    click's words (Usage, Options, the help option) are Vietnamese; no English help text is left."""
    cmd = dict(COMMANDS)[path]
    page = _help(path)
    assert page.startswith("Cách dùng: mailstate"), page[:80]
    assert "Tùy chọn:" in page and "Hiện hướng dẫn này rồi thoát." in page
    with i18n.use("vi"):
        for text in _texts(cmd):
            if text == cmd.short_help:
                continue
            assert _flat(i18n._(text)) in page, text
            assert _flat(text) not in page, text
    for english in ("Usage:", "Options:", "Commands:", "Show this message", "[default:", "[required]"):
        assert english not in page, english
    if isinstance(cmd, click.Group):
        assert "Lệnh:" in page


@pytest.mark.parametrize("path", [p for p, _c in COMMANDS], ids=PATHS)
def test_help_is_english_with_mailstate_lang(path: tuple[str, ...]) -> None:
    """MAILSTATE_LANG=en: the same pages in English, the message ids as written."""
    cmd = dict(COMMANDS)[path]
    page = _help(path, env={LANG_ENV: "en"})
    assert page.startswith("Usage: mailstate"), page[:80]
    assert "Options:" in page and HELP_OPTION_HELP in page
    for text in _texts(cmd):
        if text != cmd.short_help:
            assert _flat(text) in page, text
    assert "Cách dùng" not in page and "Tùy chọn" not in page


@pytest.mark.parametrize("args", [("--help", "--lang", "en"), ("--lang", "en", "--help"),
                                  ("--help", "--lang=en")])
def test_lang_applies_to_help_wherever_it_is_given(args: tuple[str, ...]) -> None:
    """--help is eager: it must not print before --lang is seen, before or after it on the command line;
    --lang vi wins over MAILSTATE_LANG=en as it does for the command's output."""
    out = CliRunner().invoke(cli, ["plan", *args], env=NO_LANG, prog_name="mailstate")
    assert out.output.startswith("Usage: mailstate plan"), out.output[:80]
    assert "Read the live state and print what apply would change." in out.output
    vi = CliRunner().invoke(cli, ["plan", "--help", "--lang", "vi"], env={LANG_ENV: "en"},
                            prog_name="mailstate")
    assert vi.output.startswith("Cách dùng: mailstate plan"), vi.output[:80]


def test_defaults_and_required_are_said_in_the_language() -> None:
    """Click's notes after an option's help ([default: text], [required]) follow the language too; the
    option names, metavars and choices stay as written."""
    vi = _help(("server-config",))
    assert "[bắt buộc]" in vi and "--out DIRECTORY" in vi and "--password-check-module" in vi
    plan = _help(("plan",))
    assert "[mặc định: text]" in plan and "--format [text|markdown|json|gitlab]" in plan
    assert "`apply FILE`" in plan and "[organization]" in plan
    en = _help(("server-config",), env={LANG_ENV: "en"})
    assert "[required]" in en


def test_lab_says_in_vietnamese_what_is_wrong(tmp_path: Path) -> None:
    """`mailstate lab …` without MAILSTATE_LANG: its refusals and reports are Vietnamese; with
    MAILSTATE_LANG=en the same in English (no server is started: every case is refused first)."""
    none = tmp_path / "none"
    runner = CliRunner()
    status = runner.invoke(cli, ["lab", "status", "--dir", str(none)], env=NO_LANG)
    assert status.exit_code == 1
    assert status.output == (f"lỗi: không có môi trường thử nghiệm nào trong {none} "
                             f"(hãy chạy `mailstate lab up --dir {none}`)\n")
    down = runner.invoke(cli, ["lab", "down", "--dir", str(none)], env=NO_LANG)
    assert down.output == f"không có môi trường thử nghiệm nào trong {none}\n"
    start = runner.invoke(cli, ["lab", "start", "--dir", str(none)], env=NO_LANG)
    assert start.output.startswith(f"lỗi: không có môi trường thử nghiệm nào trong {none} (hãy tạo bằng")
    if _proc.missing_programs(("slapd", "dovecot", "sshd")):
        pytest.skip("the lab's programs are not installed: `lab up` refuses that first")
    bad = runner.invoke(cli, ["lab", "up", "--dir", str(tmp_path / "x"), "--domain", "not a domain"],
                        env=NO_LANG)
    assert bad.exit_code == 1
    assert bad.output.startswith("lỗi: không phải tên miền: 'not a domain' (ví dụ sct.binhdinh.gov.vn)")
    assert not (tmp_path / "x").exists()
    no_state = runner.invoke(cli, ["lab", "up", "--dir", str(tmp_path / "y"), "--state", str(tmp_path)],
                             env=NO_LANG)
    assert no_state.output.startswith(
        f"lỗi: {tmp_path / 'mailstate.toml'}: không tìm thấy (hãy chỉ --state DIR")
    en = runner.invoke(cli, ["lab", "status", "--dir", str(none)], env={LANG_ENV: "en"})
    assert en.output == f"error: no lab in {none} (run `mailstate lab up --dir {none}`)\n"


def test_server_config_reports_in_vietnamese(tmp_path: Path) -> None:
    """server-config's summary and its refusal of a value it would write into a configuration file are
    Vietnamese by default, English with MAILSTATE_LANG=en (server-config has no --lang)."""
    out = CliRunner().invoke(cli, ["server-config", "--state", str(EXAMPLE), "--out", str(tmp_path / "c")],
                             env=NO_LANG)
    assert out.exit_code == 0, out.output
    assert out.output.startswith("đã ghi ") and " tệp cho " in out.output and "(xem " in out.output
    bad = CliRunner().invoke(cli, ["server-config", "--state", str(EXAMPLE), "--out", str(tmp_path / "d"),
                                   "--mail-root", "/var/v mail"], env=NO_LANG)
    assert bad.exit_code == 1
    assert bad.output == ("lỗi: --mail-root: '/var/v mail' phải là một từ, không có ký tự điều khiển "
                          "(giá trị được ghi vào tệp cấu hình)\n")
    en = CliRunner().invoke(cli, ["server-config", "--state", str(EXAMPLE), "--out", str(tmp_path / "e")],
                            env={LANG_ENV: "en"})
    assert en.output.startswith("wrote ") and " files for " in en.output


def test_forge_refusal_and_schema_write_error_are_vietnamese(tmp_path: Path) -> None:
    """forge's and schema's errors go through the same boundary as every other command's."""
    out = CliRunner().invoke(cli, ["forge", "comment", "--forge", "gitlab"], env=NO_LANG)
    assert out.exit_code == 1 and out.output.startswith("lỗi: ")
    schema = CliRunner().invoke(cli, ["schema", "--out", str(tmp_path / "no" / "s.json")], env=NO_LANG)
    assert schema.exit_code == 1
    assert schema.output.startswith(f"lỗi: không ghi được {tmp_path / 'no' / 's.json'}: ")
