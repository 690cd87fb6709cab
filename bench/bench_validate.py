"""Time loading and validating a large agency: `load_state` in-process and `mailstate validate`.

    python bench/bench_validate.py [--people 10000] [--repeat 5] [--state DIR] [--target 2.0]

Without ``--state`` a fresh agency is generated with gen_agency.py in a temporary directory. Prints the
best and median of ``--repeat`` runs for: TOML parsing (tomllib), the position scanner, model + checks,
the whole ``load_state``, and the ``mailstate validate`` process (Python start-up and imports included).
Wall and CPU time are both shown (CPU time is the fair figure on a busy machine). Exits 1 when the
process takes longer than ``--target`` seconds of wall time in its best run — unless the machine is
busy (load average above its CPU count) and the process's CPU time is under the target.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_agency import generate  # noqa: E402

from mailstate.desired_state.documents import iter_toml_files, read_documents, scan_positions  # noqa: E402
from mailstate.desired_state.loader import load_state  # noqa: E402
from mailstate.desired_state.validate import build_state  # noqa: E402


def _cpu(children: bool) -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn: Callable[[], object], repeat: int, children: bool = False) -> tuple[float, float, float]:
    """(best wall, median wall, best CPU) time of ``fn`` over ``repeat`` runs, in seconds.

    CPU time (user + system; of child processes with ``children``) is what to compare on a busy machine.
    """
    times, cpus = [], []
    for _ in range(repeat):
        c0, t0 = _cpu(children), time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        cpus.append(_cpu(children) - c0)
    return min(times), statistics.median(times), min(cpus)


def validate_command() -> list[str]:
    """The `mailstate` console script of this interpreter's environment (or the module as a fallback)."""
    script = Path(sys.executable).with_name("mailstate")
    if script.exists():
        return [str(script)]
    found = shutil.which("mailstate")
    return [found] if found else [sys.executable, "-c", "from mailstate.cli import main; main()"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--state", type=Path, default=None, help="an existing state dir (default: generate one)")
    ap.add_argument("--target", type=float, default=2.0, help="seconds allowed for the validate process")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mailstate-bench-") as tmp:
        root = args.state
        if root is None:
            root = Path(tmp) / "state"
            t0 = time.perf_counter()
            generate(root, args.people)
            print(f"generated {args.people} people in {time.perf_counter() - t0:.2f} s ({root})")
        files = list(iter_toml_files(root))
        texts = [f.read_text(encoding="utf-8") for f in files]
        size = sum(len(t.encode()) for t in texts)
        print(f"state: {len(files)} files, {size / 1e6:.1f} MB")

        rows: list[tuple[str, tuple[float, float, float]]] = []
        rows.append(("tomllib parse", timed(lambda: [tomllib.loads(t) for t in texts], args.repeat)))
        rows.append(("position scan", timed(lambda: [scan_positions(t) for t in texts], args.repeat)))
        docs, _ = read_documents(root)
        rows.append(("models + checks", timed(lambda: build_state(root, docs), args.repeat)))
        rows.append(("load_state total", timed(lambda: load_state(root), args.repeat)))
        cmd = validate_command() + ["validate", "--state", str(root)]
        out: list[str] = []

        def run() -> None:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"validate failed ({proc.returncode}):\n{proc.stderr[:2000]}")
            out[:] = [proc.stdout.strip()]

        process = timed(run, args.repeat, children=True)
        rows.append(("`mailstate validate` process", process))
        print(f"validate says: {out[0]}")
        print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
        print(f"{'step':<30} {'best':>8} {'median':>8} {'CPU':>8}")
        for name, (best, med, cpu) in rows:
            print(f"{name:<30} {best:>7.3f}s {med:>7.3f}s {cpu:>7.3f}s")
        wall, cpu = process[0], process[2]
        busy = os.getloadavg()[0] > (os.cpu_count() or 1)
        if wall < args.target:
            verdict = "ok"
        elif cpu < args.target and busy:
            verdict = f"wall time over on a busy machine; its CPU time ({cpu:.2f} s) is under: ok"
        else:
            verdict = "TOO SLOW"
        print(f"target: validate process under {args.target:.1f} s for {args.people} people: {verdict}")
        return 0 if verdict.endswith("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
