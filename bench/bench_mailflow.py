"""Benchmark of mail delivery through the lab (by hand, as root; prints figures).

    python bench/bench_mailflow.py [--members 50] [--messages 10] [--repeat 3]

A fresh lab (slapd + Dovecot + sshd + Postfix in a temporary directory), --members people and one group
of all of them written straight into the directory, then, best of --repeat:
- group: --messages messages to the group address (members × messages deliveries);
- single: the same number of deliveries (members × messages messages) to one person's address;
each timed from the first SMTP connection until Postfix's queue is empty and every delivery is in its
INBOX (counted over IMAP). Prints deliveries per second of each and the cost per recipient of group
expansion relative to single delivery (the target: at most 2×).
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import sys
import tempfile
import time
from pathlib import Path

from mailstate.lab import Lab
from mailstate.lab.testing import imap_master_login, make_person

DOMAIN = "bench.example.gov.vn"
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


def settle(lab: Lab, want: dict[str, int]) -> None:
    queue = Path(lab.info["paths"]["postfix_conf"]).parent / "queue"
    while any(f.is_file() for q in QUEUES for f in (queue / q).rglob("*")):
        time.sleep(0.01)
    for uid, n in want.items():
        c = imap_master_login(lab, uid)
        got = c.select_folder("INBOX", readonly=True)[b"EXISTS"]
        c.logout()
        if got != n:
            raise SystemExit(f"{uid}: {got} messages, {n} expected (see {lab.info['paths']['postfix_log']})")


def send(port: int, to: str, count: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="localhost") as smtp:
        for i in range(count):
            smtp.sendmail("bench@example.org", [to], f"Subject: bench {i}\r\n\r\nbench\r\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=50)
    ap.add_argument("--messages", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("the lab runs Postfix only as root")
    root = Path(tempfile.mkdtemp(prefix="mailstate-bench-", dir="/dev/shm"))
    root.chmod(0o711)
    lab = Lab(root / "lab", die_with_parent=True)
    try:
        lab.up(domain=DOMAIN)
        port = lab.info["ports"]["smtp"]
        uids = [f"p{i:03d}" for i in range(args.members)]
        for uid in uids:
            make_person(lab, uid, "Bench-pass-1234")
        conn = lab.ldap(as_="root")
        classes = ["nisMailAlias", "inetLocalMailRecipient", "mailstateGroup"]
        conn.add(f"cn=all,ou=groups,{lab.base_dn}", classes,
                 {"cn": "all", "mail": f"all@{DOMAIN}", "mailLocalAddress": f"all@{DOMAIN}",
                  "rfc822MailMember": [f"{u}@{DOMAIN}" for u in uids]})
        conn.unbind()
        deliveries = args.members * args.messages
        best: dict[str, float] = {}
        have = dict.fromkeys(uids, 0)
        for _ in range(args.repeat):
            t = time.perf_counter()
            send(port, f"all@{DOMAIN}", args.messages)
            have = {u: n + args.messages for u, n in have.items()}
            settle(lab, have)
            best["group"] = min(best.get("group", 1e9), time.perf_counter() - t)
            t = time.perf_counter()
            send(port, f"{uids[0]}@{DOMAIN}", deliveries)
            have[uids[0]] += deliveries
            settle(lab, {uids[0]: have[uids[0]]})
            best["single"] = min(best.get("single", 1e9), time.perf_counter() - t)
        for name in ("group", "single"):
            print(f"{name:<7} {deliveries} deliveries in {best[name]:.2f} s: {deliveries / best[name]:.0f}/s")
        ratio = best["group"] / best["single"]
        print(f"group expansion costs {ratio:.2f}× per recipient of single delivery (target ≤ 2×)")
    finally:
        lab.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
