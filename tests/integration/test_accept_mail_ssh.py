"""Acceptance (SSH provider): known_hosts files as operators really write them — hashed host names,
``@revoked`` and ``@cert-authority`` markers — against the lab's sshd (no mocks)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from mailstate.desired_state.schema import Organization, State
from mailstate.errors import ProviderError
from mailstate.lab import Lab
from mailstate.providers.doveadm.provider import SshProvider

pytestmark = pytest.mark.integration


@pytest.fixture
def provider(lab_env: dict[str, str], clean_lab: Lab) -> Iterator[SshProvider]:
    st = State(root=Path("."), organization=Organization(name="Lab", domain=clean_lab.info["domain"]))
    p = SshProvider.from_state(st)
    try:
        yield p
    finally:
        p.close()


def _with(provider: SshProvider, path: Path) -> SshProvider:
    return SshProvider(provider.settings.model_copy(update={"known_hosts": str(path)}))


def _real_line(provider: SshProvider) -> str:
    return Path(provider.settings.known_hosts or "").read_text().strip()


def test_revoked_host_key_is_refused_with_a_clear_message(provider: SshProvider, tmp_path: Path) -> None:
    """A key listed as known but also marked @revoked (for any host) is refused, naming the revocation."""
    real = _real_line(provider)
    _host, keytype, key = real.split()[:3]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{real}\n@revoked * {keytype} {key}\n")
    p = _with(provider, kh)
    with pytest.raises(ProviderError, match="@revoked"):
        p.read()
    p.close()


def test_hashed_names_and_cert_authority_lines_are_read(provider: SshProvider, tmp_path: Path) -> None:
    """A hashed host line is trusted; an @cert-authority line beside it neither breaks the file nor trusts."""
    real = _real_line(provider)
    host, keytype, key = real.split()[:3]
    hashed = paramiko.HostKeys.hash_host(host)
    kh = tmp_path / "known_hosts"
    kh.write_text(f"@cert-authority *.gov.vn {keytype} {key}\n{hashed} {keytype} {key}\n")
    p = _with(provider, kh)
    assert "last_login" in p.read().facts
    p.close()
    only_ca = tmp_path / "only_ca"
    only_ca.write_text(f"@cert-authority {host} {keytype} {key}\n")
    p = _with(provider, only_ca)
    with pytest.raises(ProviderError, match="not found in known_hosts"):
        p.read()
    p.close()


def test_unreadable_revoked_line_stops_the_connection(provider: SshProvider, tmp_path: Path) -> None:
    """An unreadable @revoked line is not skipped (that would trust a revoked key): it names the line."""
    kh = tmp_path / "known_hosts"
    kh.write_text(f"@revoked * ssh-ed25519 AAAA!!notbase64\n{_real_line(provider)}\n")
    p = _with(provider, kh)
    with pytest.raises(ProviderError, match=r"known_hosts .*:1: unreadable @revoked line"):
        p.read()
    p.close()


@pytest.mark.parametrize("archive_dir", ["", "archive", "/"])
def test_archive_dir_must_be_an_absolute_directory(provider: SshProvider, archive_dir: str) -> None:
    """An empty, relative or root archive_dir is refused before anything is copied; removal is refused too."""
    p = SshProvider(provider.settings.model_copy(update={"archive_dir": archive_dir}))
    with pytest.raises(ProviderError, match="not an absolute directory"):
        p.archive("nobody")
    with pytest.raises(ProviderError, match="not an absolute directory"):
        p.remove_mail("nobody")
    p.close()


def test_a_command_with_much_stderr_does_not_stall(provider: SshProvider) -> None:
    """A command writing more than the channel window (5 MB) to stderr before its stdout ends finishes."""
    p = SshProvider(provider.settings.model_copy(update={"timeout": 5.0}))
    result: list[tuple[int, str, str]] = []
    command = "head -c 5000000 /dev/zero | tr '\\0' x >&2; echo ok"
    worker = threading.Thread(target=lambda: result.append(p.run(command)), daemon=True)
    worker.start()
    worker.join(30)
    p.close()  # unblocks a stalled run
    assert result, "the command stalled: stderr was not drained while stdout was read"
    rc, out, err = result[0]
    assert (rc, out.strip()) == (0, "ok") and err.endswith("x" * 5_000_000)


def test_commands_leave_no_stdin_file_for_the_garbage_collector(provider: SshProvider) -> None:
    """run() makes no paramiko stdin file: its __del__ takes the channel lock, and a GC pass in the transport
    thread while that thread holds the lock deadlocked a plan (one such hang seen in the full suite)."""
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            assert provider.run("true")[0] == 0
        left = [o for o in gc.get_objects() if isinstance(o, paramiko.channel.ChannelStdinFile)]
    finally:
        gc.enable()
    assert left == []
