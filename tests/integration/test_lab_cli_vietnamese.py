"""`mailstate lab status|start|env` on the session's running lab, as an IT officer runs them: in Vietnamese
when MAILSTATE_LANG is not set (the autouse fixture's English is taken away here), English with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mailstate.cli import LANG_ENV
from mailstate.lab import Lab

MAILSTATE = Path(sys.executable).parent / "mailstate"


def _cli(*args: str, lang: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != LANG_ENV}
    if lang:
        env[LANG_ENV] = lang
    return subprocess.run([str(MAILSTATE), "lab", *args], env=env, capture_output=True, text=True, timeout=60)


def test_lab_status_and_start_speak_vietnamese_by_default(lab: Lab) -> None:
    """The header, each server's state and `start`'s answer are Vietnamese; the names, pids and ports, what
    a script reads, are as in English; MAILSTATE_LANG=en gives the English lines."""
    status = _cli("status", "--dir", str(lab.dir))
    assert status.returncode == 0, status.stderr
    head, *rows = status.stdout.splitlines()
    assert head == (f"môi trường thử nghiệm {lab.dir}: {lab.info['domain']} ({lab.base_dn}, cấu trúc "
                    f"{lab.layout}), các máy chủ chạy dưới người dùng {lab.info['user']}")
    assert sorted(row.split()[0] for row in rows) == sorted(lab.info["pids"])
    assert all(row.split()[1] == "chạy" and row.split()[2].startswith("pid=") for row in rows), rows
    assert "127.0.0.1:" in rows[0]

    start = _cli("start", "--dir", str(lab.dir))
    assert start.stdout == f"môi trường thử nghiệm {lab.dir}: mọi máy chủ đều đang chạy\n"

    english = _cli("status", "--dir", str(lab.dir), lang="en")
    assert english.stdout.startswith(f"lab {lab.dir}: {lab.info['domain']} ({lab.base_dn}, {lab.layout} "
                                     "layout), servers run as ")
    assert [r.split()[1] for r in english.stdout.splitlines()[1:]] == ["up"] * len(rows)


def test_lab_refusals_on_a_running_lab_are_vietnamese(lab: Lab) -> None:
    """`up` on a running lab and `restart` of a server it does not have are refused in Vietnamese, naming
    the command to run; nothing is changed (the lab still runs with the same pids)."""
    pids = {name: entry["pid"] for name, entry in lab.info["pids"].items()}
    up = _cli("up", "--dir", str(lab.dir), "--domain", lab.info["domain"])
    assert up.returncode == 1
    assert up.stderr == (f"lỗi: đã có một môi trường thử nghiệm đang chạy trong {lab.dir}; hãy dừng trước "
                         f"bằng `mailstate lab down --dir {lab.dir}`\n")
    nope = _cli("restart", "nginx", "--dir", str(lab.dir))
    assert nope.returncode == 1
    assert nope.stderr.startswith(f"lỗi: môi trường thử nghiệm trong {lab.dir} không có nginx (nó chạy ")
    assert {name: entry["pid"] for name, entry in lab.info["pids"].items()} == pids
