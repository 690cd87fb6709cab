"""``main``'s exit without the interpreter's teardown (cli._leave_now), run in a forked child: it happens
only when the command asked for it and no thread runs, after the exit handlers and with the output
flushed, with the command's exit code."""

from __future__ import annotations

import atexit
import os
import sys
import threading

from mailstate import cli
from mailstate.cli.common import Leaving


def _in_child(fast: bool, thread: bool) -> tuple[int, bytes]:
    """(exit code, what the child wrote) of a child calling _leave_now(3), else ending with 9."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(read)
            Leaving.fast = fast
            atexit._clear()  # pytest's own handlers are not this child's to run
            atexit.register(os.write, write, b"handlers ran;")
            stop = threading.Event()
            if thread:
                threading.Thread(target=stop.wait, daemon=True).start()
            sys.stdout = os.fdopen(os.dup(write), "w")  # buffered: only a flush sends it
            print("printed;", end="")
            cli._leave_now(3)
            stop.set()
        finally:
            os._exit(9)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1024):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks)


def test_a_command_that_asked_ends_at_once_with_its_output_and_handlers() -> None:
    code, written = _in_child(fast=True, thread=False)
    assert code == 3 and written == b"printed;handlers ran;"


def test_no_fast_exit_unless_asked_or_while_a_thread_runs() -> None:
    assert _in_child(fast=False, thread=False)[0] == 9
    assert _in_child(fast=True, thread=True)[0] == 9
