"""Benchmark of the reconcile loop on a generated agency (by hand; prints figures).

    python bench/bench_plan.py [--people 2000 10000] [--seed 1] [--repeat 3]

For each size: a fresh lab (slapd only, in a temporary directory), a generated agency (gen_agency.py),
then
- the first apply (plan + apply in-process, from an empty directory): people/s (target ≥ 200/s);
- a no-op `mailstate plan --provider ldap --detailed-exitcode` *process* (start-up and imports count),
  best of --repeat, against the floor measured in the same run: a raw paged `ldapsearch` of the whole
  directory (a process too) + a bare ``tomllib`` parse of every state file; the ratio (target ≤ 4× at
  2,000, aim 2× at 10,000);
- peak memory (max RSS) of the apply (this process) and of the plan process (os.wait4);
- what is out of mailstate's hands: the same directory read by ldap3 alone (a bare paged search of the
  whole base, in this process: BER decoding in pure Python) next to ldapsearch, and the interpreter
  start-up + imports of a plan (a process importing what `plan` imports, doing nothing).

The plan processes run with .pyc files (PYTHONDONTWRITEBYTECODE is dropped from their environment, as
for an installed package); CPU time (user + sys) is printed next to wall time, because on a shared
2-core machine the wall time also counts slapd's work and other people's load.
IMAP/SSH side: bench/bench_imap.py (needs the full lab).
"""

from __future__ import annotations

import argparse
import os
import resource
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


def run_timed(argv: list[str], env: dict[str, str]) -> tuple[float, int, int, float]:
    """(wall seconds, exit code, max RSS in KiB, CPU seconds user + sys) of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.stderr is not None:
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        if proc.returncode not in (0, 2):
            print(f"  {argv[0]} failed ({proc.returncode}): {err.strip()[:500]}")
    return elapsed, proc.returncode, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


IMPORTS = (
    "import mailstate.cli, mailstate.cli.plan_cmds, mailstate.reconciler.pipeline, "
    "mailstate.desired_state.loader, mailstate.desired_state.validate, mailstate.providers.ldap.provider, "
    "mailstate.desired_state.projection, mailstate.reconciler.plan.diff"
)


def ldap3_bare_read(lab: Any) -> float:
    """Seconds for ldap3 alone to page through the whole directory (user attributes, as ldapsearch)."""
    import ssl

    from ldap3 import NONE, SUBTREE, Connection, Server, Tls

    info = lab.info
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(lab.ca_file), version=ssl.PROTOCOL_TLS_CLIENT)
    server = Server("127.0.0.1", port=info["ports"]["ldaps"], use_ssl=True, tls=tls, get_info=NONE)
    conn = Connection(server, info["dns"]["service"], lab.secret("ldap_service"), auto_bind=True)
    try:
        t0 = time.perf_counter()
        n = sum(
            1
            for _ in conn.extend.standard.paged_search(
                lab.base_dn,
                "(objectClass=*)",
                search_scope=SUBTREE,
                attributes=["*"],
                paged_size=1000,
                generator=True,
            )
        )
        elapsed = time.perf_counter() - t0
    finally:
        conn.unbind()
    if n == 0:
        raise SystemExit("the bare ldap3 search read nothing")
    return elapsed


def tomllib_floor(state: Path) -> float:
    t0 = time.perf_counter()
    for path in sorted(state.rglob("*.toml")):
        with path.open("rb") as fh:
            tomllib.load(fh)
    return time.perf_counter() - t0


def bench(people: int, seed: int, repeat: int, workdir: Path) -> dict[str, Any]:
    from mailstate.lab import Lab
    from mailstate.reconciler.pipeline import apply_plan, make_plan
    from mailstate.reconciler.plan.plan import plan_changes, plan_meta

    lab = Lab(workdir / "lab")
    state = workdir / "state"
    home = workdir / "home"
    t0 = time.perf_counter()
    generate(state, people, seed, domain=DOMAIN)
    gen_s = time.perf_counter() - t0
    lab.up(DOMAIN, services=("slapd",))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSTATE_")}
        env.update({k: v for k, v in lab.env().items() if k.startswith("MAILSTATE_LDAP_")})
        env["MAILSTATE_HOME"] = str(home)
        os.environ.update(env)

        # first apply, in-process: plan + apply from an empty directory
        t0 = time.perf_counter()
        plan = make_plan(state, providers=["ldap"])
        plan_s = time.perf_counter() - t0
        n_changes = len(plan_changes(plan))
        t1 = time.perf_counter()
        apply_plan(
            plan,
            state,
            journal_dir=home,
            audit_log=home / "audit.jsonl",
            passwords_out=home / "passwords.tsv",
        )
        apply_s = time.perf_counter() - t1
        first_s = time.perf_counter() - t0
        apply_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        # no-op plan as a process, best of `repeat`
        plan_env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        plan_runs = []
        plan_cpu = []
        plan_rss = 0
        for _ in range(repeat):
            s, code, rss, cpu = run_timed(
                [str(MAILSTATE), "plan", "--state", str(state), "--provider", "ldap", "--detailed-exitcode"],
                plan_env,
            )
            if code != 0:
                raise SystemExit(f"the no-op plan exited {code}: it is not a no-op")
            plan_runs.append(s)
            plan_cpu.append(cpu)
            plan_rss = max(plan_rss, rss)
        imports_s = min(run_timed([sys.executable, "-c", IMPORTS], plan_env)[0] for _ in range(repeat))

        # where the time of a no-op plan goes (in-process, best of `repeat`)
        phases: dict[str, float] = {}
        for _ in range(repeat):
            p = make_plan(state, providers=["ldap"])
            for k, v in plan_meta(p).timings.items():
                phases[k] = min(phases.get(k, v), v)

        # floor: raw paged ldapsearch (a process) + bare tomllib parse
        info = lab.info
        search_env = dict(env, LDAPTLS_CACERT=str(lab.ca_file))
        argv = [
            "ldapsearch",
            "-LLL",
            "-x",
            "-H",
            f"ldaps://127.0.0.1:{info['ports']['ldaps']}",
            "-D",
            info["dns"]["service"],
            "-y",
            str(workdir / "pw"),
            "-b",
            lab.base_dn,
            "-E",
            "pr=1000/noprompt",
            "(objectClass=*)",
        ]
        pw = workdir / "pw"
        fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, lab.secret("ldap_service").encode())
        os.close(fd)
        search_runs = [run_timed(argv, search_env)[0] for _ in range(repeat)]
        bare_runs = [ldap3_bare_read(lab) for _ in range(repeat)]
        toml_runs = [tomllib_floor(state) for _ in range(repeat)]
        floor = min(search_runs) + min(toml_runs)
        best_plan = min(plan_runs)
        figures: dict[str, Any] = {
            "phases": phases,
            "people": people,
            "changes": n_changes,
            "generate_s": gen_s,
            "first_plan_s": plan_s,
            "first_apply_s": apply_s,
            "first_total_s": first_s,
            "people_per_s": people / first_s,
            "noop_plan_s": best_plan,
            "noop_plan_cpu_s": min(plan_cpu),
            "imports_s": imports_s,
            "ldap3_bare_s": min(bare_runs),
            "ldapsearch_s": min(search_runs),
            "tomllib_s": min(toml_runs),
            "floor_s": floor,
            "ratio": best_plan / floor,
            "apply_peak_mib": apply_rss / 1024,
            "plan_peak_mib": plan_rss / 1024,
        }
        return figures
    finally:
        lab.down()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    targets = {2000: 4.0, 10000: 2.0}
    for n in args.people:
        work = Path(
            tempfile.mkdtemp(
                prefix=f"mailstate-bench-{n}-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None
            )
        )
        os.chmod(work, 0o755)  # the lab's unprivileged user must reach its directory
        try:
            f = bench(n, args.seed, args.repeat, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        target = targets.get(n, 4.0)
        print(f"== {n} people ({f['changes']:.0f} changes in the first plan)")
        print(
            f"  first apply: plan {f['first_plan_s']:.2f} s + apply {f['first_apply_s']:.2f} s = "
            f"{f['first_total_s']:.2f} s -> {f['people_per_s']:.0f} people/s (target >= 200/s) "
            f"{'OK' if f['people_per_s'] >= 200 else 'BELOW TARGET'}"
        )
        print(
            f"  no-op plan process: {f['noop_plan_s']:.2f} s; floor = ldapsearch {f['ldapsearch_s']:.2f} s "
            f"+ tomllib {f['tomllib_s']:.2f} s = {f['floor_s']:.2f} s; ratio {f['ratio']:.1f}x "
            f"(target <= {target:g}x) {'OK' if f['ratio'] <= target else 'ABOVE TARGET'}"
        )
        print(
            f"  plan process CPU (user+sys) {f['noop_plan_cpu_s']:.2f} s; of it, start-up + imports "
            f"{f['imports_s']:.2f} s (a process that only imports)"
        )
        print(
            f"  out of mailstate's hands: ldap3 alone pages through the directory in "
            f"{f['ldap3_bare_s']:.2f} s "
            f"(ldapsearch {f['ldapsearch_s']:.2f} s): ldap3 + tomllib + imports = "
            f"{f['ldap3_bare_s'] + f['tomllib_s'] + f['imports_s']:.2f} s = "
            f"{(f['ldap3_bare_s'] + f['tomllib_s'] + f['imports_s']) / f['floor_s']:.1f}x the floor"
        )
        print(
            "  no-op plan in-process, per phase: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in f["phases"].items())
        )
        print(f"  load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (figures are wall time)")
        print(
            f"  peak memory: apply (in-process) {f['apply_peak_mib']:.0f} MiB, plan process "
            f"{f['plan_peak_mib']:.0f} MiB"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
