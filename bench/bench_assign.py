"""Benchmark `mailstate assign` on a generated agency (target: 10,000 people in under 5 s).

    .venv/bin/python bench/bench_assign.py [--people 10000] [--seed 1]

Generates the agency with bench/gen_agency.py without addresses, then times, in a temporary directory:
``derive_addresses`` alone, ``assign --check`` (load + derive + compute edits), ``assign`` (the same and
the writes) and a second ``assign`` (which must write nothing). Prints one line per figure: wall-clock
seconds, and the process's CPU seconds (less sensitive to other load on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_agency import generate  # noqa: E402

from mailstate.desired_state.assign import assign  # noqa: E402
from mailstate.desired_state.loader import load_state  # noqa: E402
from mailstate.desired_state.naming import derive_addresses  # noqa: E402

TARGET_SECONDS = 5.0


class Timer:
    """Wall-clock and CPU seconds of a block."""

    def __enter__(self) -> Timer:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0

    def __str__(self) -> str:
        return f"{self.wall:6.2f} s (cpu {self.cpu:5.2f} s)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mailstate-bench-assign-") as tmp:
        root = Path(tmp)
        with Timer() as gen_t:
            generate(root, args.people, args.seed, addresses=False)
        files = sum(1 for _ in root.rglob("*.toml"))

        with Timer() as load_t:
            state = load_state(root)
        with Timer() as derive_t:
            addresses = derive_addresses(state)
        numbered = sum(1 for a in addresses.people.values() if any(c.isdigit() for c in a.partition("@")[0]))

        with Timer() as check_t:
            checked = assign(root, check=True)
        with Timer() as assign_t:
            result = assign(root)
        with Timer() as again_t:
            again = assign(root)
        load_avg = os.getloadavg()[0]

    print(f"agency: {args.people} people, {len(state.units)} units, {len(state.groups)} groups, "
          f"{files} files (generated in {gen_t.wall:.2f} s)")
    print(f"machine: load average {load_avg:.1f} on {os.cpu_count()} cpus")
    print(f"load_state:         {load_t}")
    print(f"derive_addresses:   {derive_t}  ({len(addresses.people)} people, {numbered} numbered)")
    print(f"assign --check:     {check_t}  ({checked.summary(check=True)})")
    print(f"assign:             {assign_t}  ({result.summary()})")
    print(f"assign (2nd run):   {again_t}  ({again.summary()})")
    ok = min(assign_t.wall, assign_t.cpu) < TARGET_SECONDS and not again.changed
    ok = ok and len(result.assignments) == len(checked.assignments)
    verdict = "OK" if ok else "FAILED"
    print(f"target: assign under {TARGET_SECONDS:.0f} s (cpu, when the machine is shared), "
          f"second run writes nothing: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
