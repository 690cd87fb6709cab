"""Benchmark at a province's scale, with every provider (by hand; prints figures and ratios).

    python bench/bench_scale.py [--sizes 2000,10000,50000] [--repeat 3] [--parallelism 4] [--seed 1]
                                [--profile DIR]

For each size: a fresh full lab (slapd, Dovecot, sshd; in a temporary directory), a generated agency
(gen_agency.py: people, a unit mailbox with a shared folder and its rights per unit, groups), then, each
`mailstate` command a process of its own (start-up and imports count):
- the first apply from an empty lab, every provider, in one run (``apply --yes``): people/s;
- the no-op plan, LDAP only (``--provider ldap``) and full (every provider), best of --repeat;
- a plan after 1 % of the people changed (a phone number each), full;
- the floor, measured in alternation with the plans in the same run: a raw paged ``ldapsearch`` of the
  whole directory (a process) + a bare ``tomllib`` parse of every state file;
- peak memory (max RSS) of each process;
- the CPU seconds (user + sys) of each process, least of the runs: on a shared machine wall times move with
  the load, CPU seconds much less (they leave out the servers' work: slapd's, Dovecot's, sshd's);
and the ratios the targets are written in: full / LDAP-only no-op plan, LDAP-only no-op plan / floor,
and at every size after the first, time and memory against the second size (10,000).
The machine may be shared: the load average is printed next to the figures (wall time). ``--profile DIR``
runs each mailstate process under cProfile (DIR/<step>.prof; its figures then include the profiler's cost).
50,000 people take minutes (the first apply most): ``--sizes 2000,10000`` leaves it out.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen_agency import generate  # noqa: E402

DOMAIN = "bench.example.gov.vn"
MAILSTATE = Path(sys.executable).with_name("mailstate")


CPU: dict[str, float] = {}
"""CPU seconds (user + sys) of the last process run_timed ran, by the name given to it."""
SERVERS: dict[str, float] = {}
"""CPU seconds the lab's servers (slapd, Dovecot and its auth, sshd and what it ran: doveadm, find) spent
during the last process run_timed ran with a ``lab``, by name (least of the runs)."""
PROFILE: Path | None = None
"""--profile DIR: each mailstate process runs under cProfile, its stats written to DIR/<name>.prof."""


def servers_cpu(lab_dir: Path) -> float:
    """CPU seconds (user + sys) spent so far by the lab's server processes and every process they ran and
    reaped (its children's times): the process trees of the lab's daemons (their command lines name its
    directory), read from /proc."""
    stats: dict[int, tuple[int, float]] = {}
    roots: set[int] = set()
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        pid = int(entry)
        stats[pid] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / tick)
        if str(lab_dir).encode() in cmdline and b"python" not in cmdline:
            roots.add(pid)
    tree = set(roots)
    grown = True
    while grown:
        more = {pid for pid, (ppid, _) in stats.items() if ppid in tree} - tree
        tree |= more
        grown = bool(more)
    return sum(stats[pid][1] for pid in tree)


def run_timed(
    argv: list[str], env: dict[str, str], ok: tuple[int, ...] = (0, 2), name: str = "",
    lab: Path | None = None,
) -> tuple[float, int, float]:
    """(wall seconds, exit code, max RSS in MiB) of one process; a failure stops the benchmark. Its CPU
    seconds (user + sys, the figure a shared machine does not blur) go to CPU[name] (least of the runs);
    with ``lab`` (its directory), the lab's servers' CPU seconds meanwhile to SERVERS[name]."""
    servers = servers_cpu(lab) if lab is not None else 0.0
    if PROFILE is not None and argv[0] == str(MAILSTATE) and name:
        argv = [sys.executable, "-m", "cProfile", "-o", str(PROFILE / f"{name}.prof"), *argv]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")  # read while it runs: a full pipe would stall it
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    cpu = usage.ru_utime + usage.ru_stime
    if name:
        CPU[name] = min(CPU.get(name, cpu), cpu)
    if name and lab is not None:
        servers = servers_cpu(lab) - servers
        SERVERS[name] = min(SERVERS.get(name, servers), servers)
    code = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if code not in ok:
        raise SystemExit(f"{' '.join(argv[:3])} … failed ({code}): {err.strip()[-1500:]}")
    return elapsed, code, usage.ru_maxrss / 1024


def tomllib_floor(state: Path) -> float:
    """Wall seconds of a bare tomllib parse of every state file (its CPU seconds go to CPU["tomllib"])."""
    t0, c0 = time.perf_counter(), time.process_time()
    for path in sorted(state.rglob("*.toml")):
        with path.open("rb") as fh:
            tomllib.load(fh)
    cpu = time.process_time() - c0
    CPU["tomllib"] = min(CPU.get("tomllib", cpu), cpu)
    return time.perf_counter() - t0


def change_one_percent(state: Path) -> int:
    """A new phone number for every 100th person (a field the directory holds): the number changed."""
    changed = 0
    seen = 0
    for path in sorted((state / "units").glob("*.toml")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if re.match(r"^phone\s*=", line):
                if seen % 100 == 0:
                    lines[n] = f'phone  = "0256 3999{changed % 10000:04d}"'
                    changed += 1
                seen += 1
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return changed


def bench(people: int, seed: int, repeat: int, parallelism: int, workdir: Path) -> dict[str, Any]:
    from mailstate.lab import Lab

    lab = Lab(workdir / "lab")
    state = workdir / "state"
    generate(state, people, seed, domain=DOMAIN)
    lab.up(DOMAIN, org_name="Bench")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSTATE_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # .pyc files, as for an installed package
        env.update(lab.env())
        env["MAILSTATE_HOME"] = str(workdir / "home")
        f: dict[str, Any] = {"people": people, "load_before": os.getloadavg()[0]}

        apply_s, _, apply_mib = run_timed(
            [str(MAILSTATE), "apply", "--yes", "--state", str(state), "--parallelism", str(parallelism)],
            env, ok=(0,), name="apply", lab=lab.dir,
        )
        f.update(apply_s=apply_s, apply_mib=apply_mib, people_per_s=people / apply_s)

        pw = workdir / "pw"
        fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, lab.secret("ldap_service").encode())
        os.close(fd)
        info = lab.info
        search = [
            "ldapsearch", "-LLL", "-x", "-H", f"ldaps://127.0.0.1:{info['ports']['ldaps']}",
            "-D", info["dns"]["service"], "-y", str(pw), "-b", lab.base_dn, "-E", "pr=1000/noprompt",
            "(objectClass=*)",
        ]
        search_env = dict(env, LDAPTLS_CACERT=str(lab.ca_file))
        plan = [str(MAILSTATE), "plan", "--state", str(state), "--detailed-exitcode"]
        ldap_runs, full_runs, search_runs, toml_runs = [], [], [], []
        rss = 0.0
        for _ in range(repeat):  # in alternation: a burst of load on a shared machine hits all alike
            s, code, mib = run_timed([*plan, "--provider", "ldap"], env, name="noop_ldap", lab=lab.dir)
            if code != 0:
                raise SystemExit(f"the LDAP-only no-op plan exited {code}: not converged")
            ldap_runs.append(s)
            rss = max(rss, mib)
            s, code, mib = run_timed(plan, env, name="noop_full", lab=lab.dir)
            if code != 0:
                raise SystemExit(f"the full no-op plan exited {code}: not converged")
            full_runs.append(s)
            rss = max(rss, mib)
            search_runs.append(run_timed(search, search_env, ok=(0,), name="ldapsearch")[0])
            toml_runs.append(tomllib_floor(state))
        f.update(
            noop_ldap_s=min(ldap_runs), noop_full_s=min(full_runs), ldapsearch_s=min(search_runs),
            tomllib_s=min(toml_runs), floor_s=min(search_runs) + min(toml_runs), plan_mib=rss,
        )
        f["changed"] = change_one_percent(state)
        changed_runs = []
        for _ in range(repeat):
            s, code, mib = run_timed(plan, env, name="changed")
            if code != 2 and PROFILE is None:  # under cProfile the exit status is always 0
                raise SystemExit(f"the plan after 1 % changed exited {code}, not 2 (changes)")
            changed_runs.append(s)
            f["plan_mib"] = max(f["plan_mib"], mib)
        f["changed_plan_s"] = min(changed_runs)
        f["load_after"] = os.getloadavg()[0]
        f["cpu"] = dict(CPU)
        f["servers"] = dict(SERVERS)
        CPU.clear()
        SERVERS.clear()
        return f
    finally:
        lab.down()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,10000,50000", help="comma-separated numbers of people")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--parallelism", type=int, default=4)
    ap.add_argument("--profile", type=Path, help="a cProfile of each mailstate process, into this directory")
    args = ap.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        globals()["PROFILE"] = args.profile.resolve()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    results: dict[int, dict[str, Any]] = {}
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"mailstate-scale-{n}-", dir=shm))
        os.chmod(work, 0o755)  # the lab's unprivileged user must reach its directory
        try:
            f = results[n] = bench(n, args.seed, args.repeat, args.parallelism, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        full_ratio = f["noop_full_s"] / f["noop_ldap_s"]
        floor_ratio = f["noop_ldap_s"] / f["floor_s"]
        print(f"== {n} people, every provider (load {f['load_before']:.1f} -> {f['load_after']:.1f} on "
              f"{os.cpu_count()} cores; wall time)")
        print(f"  first apply (--parallelism {args.parallelism}): {f['apply_s']:.1f} s -> "
              f"{f['people_per_s']:.0f} people/s (target >= 500/s at 10,000), peak {f['apply_mib']:.0f} MiB")
        print(f"  floor: ldapsearch {f['ldapsearch_s']:.2f} s + tomllib {f['tomllib_s']:.2f} s = "
              f"{f['floor_s']:.2f} s")
        print(f"  no-op plan, LDAP only: {f['noop_ldap_s']:.2f} s = {floor_ratio:.1f}x the floor "
              "(target <= 5x)")
        print(f"  no-op plan, full: {f['noop_full_s']:.2f} s = {full_ratio:.2f}x the LDAP-only one "
              f"(target <= 1.5x)")
        print(f"  plan after 1 % changed ({f['changed']} people): {f['changed_plan_s']:.2f} s")
        c = f["cpu"]
        floor_cpu = c["ldapsearch"] + c["tomllib"]
        print(f"  CPU seconds (user+sys, least of the runs): apply {c['apply']:.1f} "
              f"({n / c['apply']:.0f} people per CPU-s); floor {c['ldapsearch']:.2f} + "
              f"{c['tomllib']:.2f} = {floor_cpu:.2f}; no-op LDAP only {c['noop_ldap']:.2f} = "
              f"{c['noop_ldap'] / floor_cpu:.1f}x the floor; full {c['noop_full']:.2f} = "
              f"{c['noop_full'] / c['noop_ldap']:.2f}x LDAP only; after 1 % changed {c['changed']:.2f}")
        v = f["servers"]
        print(f"  the lab's servers' CPU seconds meanwhile (slapd, Dovecot, sshd and what they ran; least of "
              f"the runs): apply {v['apply']:.1f}; no-op LDAP only {v['noop_ldap']:.2f}; full "
              f"{v['noop_full']:.2f} (with mailstate's: {c['noop_full'] + v['noop_full']:.2f} CPU-s on "
              f"{os.cpu_count()} cores)")
        print(f"  peak memory: apply {f['apply_mib']:.0f} MiB, plans {f['plan_mib']:.0f} MiB (target <= 600)")
        if len(results) > 1 and 10000 in results and n > 10000:
            b = results[10000]
            growth = {
                k: f[k] / b[k]
                for k in ("apply_s", "noop_ldap_s", "noop_full_s", "changed_plan_s", "apply_mib", "plan_mib")
            }
            growth.update({f"cpu_{k}": c[k] / b["cpu"][k] for k in ("apply", "noop_ldap", "noop_full")})
            print(f"  against 10,000 ({n / 10000:.0f}x the people; target <= 5.5x): "
                  + ", ".join(f"{k} {v:.2f}x" for k, v in growth.items()))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
