"""`python -m mailstate.lab._guard PROGRAM ARGS…`: run a server that clears its parent-death signal.

Postfix's master changes its credentials at start, which makes the kernel forget PR_SET_PDEATHSIG: a lab
started with die_with_parent would leave it running when the test session dies. This guard keeps the
setting (it gets SIGTERM when the lab's creator dies), runs the server as its child in its own process
group, and on SIGTERM passes it to the whole group, then exits with the server's status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    child = subprocess.Popen(argv)

    def stop(_sig: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(0, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
