"""Benchmark of the IMAP / SSH side on a generated agency (by hand; prints figures).

    python bench/bench_imap.py [--people 2000] [--seed 1] [--repeat 3] [--workers 1 4 8]

A fresh lab (slapd + Dovecot + sshd in a temporary directory), a generated agency (gen_agency.py: one
shared folder per unit, unit heads and delegates, access grants), its people and unit mailboxes written
straight into the directory, then:
- the first apply of the IMAP kinds (folders, delegation, shared-folder rights, grants), changes/s;
- the no-op read of the IMAP provider (every mailbox: LIST, GETACL per folder, GETMETADATA, GETQUOTAROOT,
  one master-user connection per mailbox, N at a time) — best of --repeat for each worker count — and a
  check that the plan after the apply is empty;
- the SSH provider's read (last-login facts through doveadm dict iter);
- the raw floors in the same run: one doveadm pass over SSH (``doveadm -f tab mailbox list -A`` +
  ``doveadm -f tab acl get -A INBOX``: what a doveadm-based read costs at the very least, before the
  per-folder ``acl get`` of the non-INBOX folders it would also need), and one IMAP connection doing as
  many GETACLs as the provider's read does (the protocol floor without logins).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen_agency import generate  # noqa: E402

from mailstate.desired_state.loader import load_state  # noqa: E402
from mailstate.desired_state.projection_imap import project_imap  # noqa: E402
from mailstate.desired_state.schema import State  # noqa: E402
from mailstate.lab import Lab  # noqa: E402
from mailstate.lab.testing import imap_master_login, person_dn  # noqa: E402
from mailstate.providers.doveadm.provider import SshProvider  # noqa: E402
from mailstate.providers.imap.provider import ImapProvider  # noqa: E402
from mailstate.reconciler.plan.diff import diff  # noqa: E402

DOMAIN = "bench.example.gov.vn"


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def add_mailboxes(lab: Lab, state: State) -> float:
    """Write every person and unit mailbox straight into the lab directory (no passwords: master logins)."""
    t0 = time.perf_counter()
    conn = lab.ldap("service")
    try:
        for pid, p in state.people.items():
            conn.add(
                person_dn(lab, pid),
                ["inetOrgPerson", "inetLocalMailRecipient", "mailstateAccount"],
                {
                    "uid": pid,
                    "cn": p.name,
                    "sn": p.name.split()[-1],
                    "mail": f"{pid}@{DOMAIN}",
                    "departmentNumber": p.unit or "",
                    "mailstateQuota": str(state.quota.person),
                },
            )
        for uid, u in state.units.items():
            conn.add(
                person_dn(lab, uid, "mailboxes"),
                ["account", "simpleSecurityObject", "inetLocalMailRecipient", "mailstateAccount"],
                {
                    "uid": uid,
                    "description": u.name,
                    "mail": f"{uid}@{DOMAIN}",
                    "userPassword": "{SSHA}!",
                    "mailstateQuota": str(state.quota.unit),
                },
            )
    finally:
        conn.unbind()
    return time.perf_counter() - t0


def plan(provider: ImapProvider, state: State) -> tuple[list[Any], int]:
    snap = provider.read()
    changes, _ = diff(project_imap(state, state_today()), snap.records, unmanaged=snap.unmanaged)
    return sorted(changes, key=lambda c: (c.action.phase, c.kind != "shared_folder", c.key)), len(
        snap.records
    )


def state_today() -> Any:
    from datetime import date

    return date.today()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--keep", action="store_true", help="keep the lab running and its directory")
    args = ap.parse_args()

    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="mailstate-bench-imap-", dir=shm))
    root.chmod(0o711)
    lab = Lab(root / "lab")
    try:
        t0 = time.perf_counter()
        lab.up(domain=DOMAIN, org_name="Bench")
        print(f"lab up: {time.perf_counter() - t0:.2f} s")
        generate(root / "state", args.people, seed=args.seed, domain=DOMAIN)
        state = load_state(root / "state")
        print(f"agency: {state.summary()}")
        print(f"directory entries written: {add_mailboxes(lab, state):.2f} s")
        os.environ.update(lab.env())

        imap = ImapProvider.from_state(state, workers=max(args.workers), bulk=False)
        t0 = time.perf_counter()
        changes, _ = plan(imap, state)
        t_plan = time.perf_counter() - t0
        t0 = time.perf_counter()
        for c in changes:
            imap.apply(c)
        t_apply = time.perf_counter() - t0
        imap.close()
        print(
            f"first plan (mailboxes created on first login): {t_plan:.2f} s; "
            f"apply of {len(changes)} IMAP changes: {t_apply:.2f} s ({len(changes) / t_apply:.0f} changes/s)"
        )
        again, n_records = plan(imap, state)
        print(f"plan after apply: {len(again)} changes (must be 0); live IMAP records: {n_records}")

        results: dict[str, float] = {}
        folders_read = 0.0
        n_mailboxes = len(imap.mailboxes)
        for w in args.workers:
            p = ImapProvider.from_state(state, workers=w, bulk=False)
            t, _snap = best(p.read, args.repeat)
            results[f"imap-only/{w}"] = t
            folders_read = p.timings["folders_read"]
            print(
                f"no-op read, IMAP only: {n_mailboxes} mailboxes, {w} connection(s) at a time: {t:.2f} s "
                f"({n_mailboxes / t:.0f} mailboxes/s)"
            )
            p.close()
            p = ImapProvider.from_state(state, workers=w)
            t, snap = best(p.read, args.repeat)
            results[f"bulk/{w}"] = t
            print(
                f"no-op read, doveadm discovery + IMAP: {p.timings['mailboxes_read']} mailboxes over IMAP, "
                f"{w} at a time: {t:.2f} s (doveadm part {p.timings['bulk']:.2f} s, of which shared dict "
                f"{p.timings['bulk_owners']:.2f} s and quota get -A the rest); "
                f"{len(snap.records)} records, {len(snap.facts['quota'])} quotas"
            )
            p.close()
        p = ImapProvider.from_state(state, workers=max(args.workers), quota_facts=False)
        t, _snap = best(p.read, args.repeat)
        p.close()
        print(f"no-op read, doveadm discovery + IMAP, without the quota facts: {t:.2f} s")
        best_read = min(results.values())
        print(f"fastest no-op read: {min(results, key=lambda k: results[k])} = {best_read:.2f} s")

        ssh = SshProvider.from_state(state)
        ssh.connect()
        t_ssh, facts = best(ssh.read, args.repeat)
        print(f"ssh read (last_login facts, {len(facts.facts['last_login'])} users): {t_ssh:.2f} s")

        def doveadm_pass() -> int:
            listing = ssh.doveadm("-f", "tab", "mailbox", "list", "-A")
            acls = ssh.doveadm("-f", "tab", "acl", "get", "-A", "INBOX")
            return len(listing.splitlines()) + len(acls.splitlines())

        t_dove, lines = best(doveadm_pass, args.repeat)
        print(
            f"floor: one doveadm pass over SSH (mailbox list -A + acl get -A INBOX, {lines} lines): "
            f"{t_dove:.2f} s"
        )

        folders = int(folders_read)  # as many GETACLs as the IMAP-only read sends
        client = imap_master_login(lab, next(iter(state.units)))

        def getacls() -> None:
            for _ in range(folders):
                client.getacl("INBOX")

        t_getacl, _ = best(getacls, args.repeat)
        client.logout()
        print(f"floor: one IMAP connection, {folders} GETACLs: {t_getacl:.2f} s")
        t_login = best(lambda: imap_master_login(lab, next(iter(state.people))).logout(), args.repeat)[0]
        print(f"one master-user login + logout (TLS, LDAP lookup): {t_login * 1000:.1f} ms")
        print(
            f"ratio: no-op IMAP read / doveadm pass = {best_read / t_dove:.1f}x; "
            f"/ single-connection GETACLs = {best_read / t_getacl:.1f}x"
        )
        ssh.close()
    finally:
        if not args.keep:
            lab.down()
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept: {root}")


if __name__ == "__main__":
    main()
