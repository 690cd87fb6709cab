"""Benchmark `mailstate assign` on a generated agency (target: 10,000 people in under 5 s).

    .venv/bin/python bench/bench_assign.py [--people 10000] [--seed 1]

Generates the agency with bench/gen_agency.py without addresses, then times, in a temporary directory:
``derive_addresses`` alone, ``assign --check`` (load + derive + compute edits), ``assign`` (the same and
the writes) and a second ``assign`` (which must write nothing). Prints one line per figure.
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mailstate-bench-assign-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        generate(root, args.people, args.seed, addresses=False)
        gen_s = time.perf_counter() - t0
        files = sum(1 for _ in root.rglob("*.toml"))

        t0 = time.perf_counter()
        state = load_state(root)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        addresses = derive_addresses(state)
        derive_s = time.perf_counter() - t0
        numbered = sum(1 for a in addresses.people.values() if any(c.isdigit() for c in a.partition("@")[0]))

        t0 = time.perf_counter()
        checked = assign(root, check=True)
        check_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        result = assign(root)
        assign_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        again = assign(root)
        again_s = time.perf_counter() - t0

    print(f"agency: {args.people} people, {len(state.units)} units, {len(state.groups)} groups, "
          f"{files} files (generated in {gen_s:.2f} s)")
    print(f"load_state:         {load_s:6.2f} s")
    print(f"derive_addresses:   {derive_s:6.2f} s  ({len(addresses.people)} people, {numbered} numbered)")
    print(f"assign --check:     {check_s:6.2f} s  ({checked.summary(check=True)})")
    print(f"assign:             {assign_s:6.2f} s  ({result.summary()})")
    print(f"assign (2nd run):   {again_s:6.2f} s  ({again.summary()})")
    ok = assign_s < TARGET_SECONDS and not again.changed
    ok = ok and len(result.assignments) == len(checked.assignments)
    verdict = "OK" if ok else "FAILED"
    print(f"target: assign under {TARGET_SECONDS:.0f} s, second run writes nothing: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
