"""reconciler.read_ahead without a server: the settings the child opens with, what it may not see, how its
errors come back (same type and message, secrets hidden), when it does not start, and that every child is
reaped. (Against the lab: tests/integration/test_read_ahead_lab.py.)"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailstate.cli import cli
from mailstate.desired_state.loader import load_state
from mailstate.errors import ChangeRefused, MailstateError, ProviderError, StalePlan
from mailstate.reconciler import read_ahead as ra
from mailstate.redact import remember_secret

pytestmark = pytest.mark.usefixtures("english")


@pytest.fixture(autouse=True)
def _threads_of_this_test_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The read-ahead forks only from a process without threads; a thread an earlier test of the same
    worker left idle (a library's pool) is not this test's: counted from what runs when it starts."""
    real = threading.active_count
    before = real()
    monkeypatch.setattr(threading, "active_count", lambda: real() - before + 1)

TOP = """\
[organization]
name = "Sở Thử"
domain = "thu.example.gov.vn"

[password]
min_length = 12

[providers.ldap]
url = "{url}"
password_env = "MAILSTATE_LDAP_PASSWORD"

[unit]
id = "vp"
name = "Văn phòng"

[[person]]
id = "maiht"
name = "Huỳnh Thị Mai"
"""


def state_dir(root: Path, url: str = "ldaps://127.0.0.1:1", extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mailstate.toml").write_text(TOP.format(url=url) + extra, encoding="utf-8")
    return root


def reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.fixture(autouse=True)
def _on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ra.DISABLE_ENV, raising=False)
    for key in list(os.environ):
        if key.startswith(("MAILSTATE_LDAP_", "MAILSTATE_IMAP_", "MAILSTATE_SSH_")):
            monkeypatch.delenv(key)


def test_the_settings_state_holds_the_settings_tables_of_mailstate_toml_only(tmp_path: Path) -> None:
    root = state_dir(tmp_path / "s")
    got = ra.settings_state(root)
    assert got is not None
    assert got.domain == "thu.example.gov.vn" and got.password.min_length == 12
    assert got.providers.ldap.url == "ldaps://127.0.0.1:1"
    assert got.people == {} and got.units == {}  # never parsed, never validated here
    assert ra.settings_of(got) == ra.settings_of(load_state(root))


@pytest.mark.parametrize("text", [
    None,                                   # no mailstate.toml
    '[providers.ldap]\nurl = "ldaps://x"\n',  # no [organization] there
    "[organization\n",                      # not TOML
    '[organization]\nname = 3\n',           # not valid
])
def test_no_settings_state_when_mailstate_toml_cannot_give_it(tmp_path: Path, text: str | None) -> None:
    root = tmp_path / "s"
    root.mkdir()
    if text is not None:
        (root / "mailstate.toml").write_text(text, encoding="utf-8")
    assert ra.settings_state(root) is None
    assert ra.start(root, ["ldap"]) is None


def test_a_provider_opening_with_the_settings_only_never_sees_the_people(tmp_path: Path) -> None:
    state = ra.settings_state(state_dir(tmp_path / "s"))
    assert state is not None
    only = ra.SettingsOnly(state)
    assert only.root == state.root and only.domain == state.domain and only.base_dn == state.base_dn
    assert only.providers is state.providers and only.password is state.password
    for name in ("people", "units", "groups", "shared_folders", "access_grants"):
        with pytest.raises(ra.NeedsWholeState):
            getattr(only, name)
    assert not issubclass(ra.NeedsWholeState, Exception)  # no provider's `except Exception` turns it


def test_a_provider_wanting_the_whole_state_is_read_by_the_caller(tmp_path: Path) -> None:
    """IMAP opens with the shared folders of the TOML: the child answers "again", the caller reads."""
    root = state_dir(tmp_path / "s", extra='\n[providers.imap]\nurl = "imaps://127.0.0.1:1"\n')
    with ra.read_ahead(root, ["imap"]) as ahead:
        assert ahead is not None and ahead.pid is not None
        pid = ahead.pid
        assert ahead.snapshots(load_state(root), ["imap"], {}) is None
    assert reaped(pid)


def test_other_providers_or_other_settings_than_the_childs_are_read_by_the_caller(tmp_path: Path) -> None:
    root = state_dir(tmp_path / "s")
    with ra.read_ahead(root, None) as ahead:
        assert ahead is not None
        pid = ahead.pid
        assert ahead.snapshots(load_state(root), ["ldap", "imap"], {}) is None
    assert pid is not None and reaped(pid)
    with ra.read_ahead(root, ["ldap"]) as ahead:
        assert ahead is not None
        state = load_state(root)
        state.password = state.password.model_copy(update={"min_length": 9})
        assert ahead.snapshots(state, ["ldap"], {}) is None


def test_an_error_in_the_child_reaches_the_caller_as_the_same_error(tmp_path: Path) -> None:
    """A plain ldap:// URL is refused when the provider opens: raised in the child, re-raised here."""
    root = state_dir(tmp_path / "s", url="ldap://127.0.0.1:1")
    state = load_state(root)
    with pytest.raises(ProviderError) as direct:
        from mailstate.providers.registry import open_providers

        open_providers(state, ["ldap"], for_plan=True)
    with ra.read_ahead(root, ["ldap"]) as ahead:
        assert ahead is not None
        with pytest.raises(ProviderError) as child:
            ahead.snapshots(state, ["ldap"], {})
    assert type(child.value) is type(direct.value) and str(child.value) == str(direct.value)
    assert "without StartTLS" in str(child.value)


def test_the_cli_shows_the_childs_error_as_it_shows_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = state_dir(tmp_path / "s", url="ldap://127.0.0.1:1")
    out = []
    for on in ("1", "0"):
        monkeypatch.setenv(ra.DISABLE_ENV, on)
        r = CliRunner().invoke(cli, ["plan", "--state", str(root), "--provider", "ldap", "--lang", "en"])
        assert r.exit_code == 1 and "Traceback" not in r.output
        out.append(r.stderr)
    assert out[0] == out[1] and "without StartTLS" in out[0]


def test_the_childs_error_is_sent_with_its_secrets_hidden() -> None:
    remember_secret("s3cret-Pw!")
    shown = ra._shown(ProviderError("bind as cn=x with s3cret-Pw! refused"))
    assert type(shown) is ProviderError and "s3cret-Pw!" not in str(shown) and "refused" in str(shown)
    assert type(ra._shown(ChangeRefused("no"))) is ChangeRefused

    class Odd(MailstateError):
        exit_code = 3

        def __init__(self, a: str, b: int) -> None:
            super().__init__(a)

    odd = ra._shown(Odd("s3cret-Pw! here", 2))  # cannot be rebuilt from its args: a ProviderError
    assert isinstance(odd, ProviderError) and "s3cret-Pw!" not in str(odd) and odd.exit_code == 3
    assert type(ra._shown(StalePlan("x"))) is StalePlan


def test_no_child_when_turned_off_or_a_thread_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = state_dir(tmp_path / "s")
    monkeypatch.setenv(ra.DISABLE_ENV, "0")
    assert ra.start(root, ["ldap"]) is None
    monkeypatch.delenv(ra.DISABLE_ENV)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert ra.start(root, ["ldap"]) is None  # forking beside a thread could copy a held lock
    finally:
        stop.set()
        thread.join()


def test_leaving_the_block_on_an_error_stops_and_reaps_the_child(tmp_path: Path) -> None:
    root = state_dir(tmp_path / "s")
    with pytest.raises(RuntimeError), ra.read_ahead(root, ["ldap"]) as ahead:
        assert ahead is not None
        pid = ahead.pid
        raise RuntimeError("the TOML failed")
    assert pid is not None and reaped(pid)


def test_an_answer_cut_short_is_read_again_by_the_caller(tmp_path: Path) -> None:
    """The child died while writing (killed, out of memory): what arrived is not used, the caller reads."""
    root = state_dir(tmp_path / "s")
    state = load_state(root)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, b"\x80\x05\x95 cut short")
        os._exit(0)
    os.close(write)
    ahead = ra.ReadAhead(pid, read, ra.settings_of(state), ["ldap"])
    assert ahead.snapshots(state, ["ldap"], {}) is None
    assert reaped(pid)
