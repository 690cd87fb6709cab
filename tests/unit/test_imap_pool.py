"""The IMAP connection pool (bound, LRU eviction with logout, reuse, broken connections) and apply's
grouping of one mailbox's changes onto one connection. The pool is exercised with plain objects standing
for connections: what is tested is its bookkeeping; tests/integration/test_imap_pool_lab.py runs it on
Dovecot."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mailstate.model.change import Action, Change
from mailstate.model.settings import ImapSettings
from mailstate.providers.imap.provider import ConnectionPool, ImapProvider
from mailstate.reconciler.apply.run import group_by_connection
from mailstate.reconciler.plan.plan import order


class Server:
    """Counts what a pool opens and closes; a connection is the tuple (login, serial)."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.live: set[tuple[str, int]] = set()
        self.closed: list[str] = []
        self.opened: list[str] = []
        self.peak = 0
        self.fail = fail or set()
        self.lock = threading.Lock()

    def connect(self, login: str) -> tuple[str, int]:
        if login in self.fail:
            raise ConnectionResetError(104, "Connection reset by peer")
        with self.lock:
            conn = (login, len(self.opened))
            self.opened.append(login)
            self.live.add(conn)
            self.peak = max(self.peak, len(self.live))
        return conn

    def close(self, conn: tuple[str, int]) -> None:
        with self.lock:
            self.live.remove(conn)
            self.closed.append(conn[0])


def pool(size: int, server: Server) -> ConnectionPool[tuple[str, int]]:
    return ConnectionPool(size, server.connect, server.close)


def use(p: ConnectionPool[Any], *logins: str) -> None:
    for login in logins:
        with p.connection(login):
            pass


def test_bound_holds_and_least_recently_used_is_logged_out() -> None:
    s = Server()
    p = pool(3, s)
    use(p, "a", "b", "c", "a", "d", "e", "a", "b")
    assert s.peak == 3 and len(s.live) == 3 == p.open
    # d evicts b (a was used again after b), e evicts c, b evicts d
    assert s.closed == ["b", "c", "d"]
    assert s.opened == ["a", "b", "c", "d", "e", "b"]
    assert p.opened == 6 and p.peak == 3
    p.close()
    assert s.live == set() and p.open == 0


def test_a_connection_is_reused_for_its_owner() -> None:
    s = Server()
    p = pool(8, s)
    use(p, *["a", "b"] * 50)
    assert s.opened == ["a", "b"] and s.closed == []


def test_many_owners_never_exceed_the_bound() -> None:
    s = Server()
    p = pool(8, s)
    use(p, *[f"dv{n:03d}" for n in range(333)])
    assert s.peak == 8 and len(s.closed) == 333 - 8


def test_broken_connection_is_closed_and_frees_its_slot() -> None:
    s = Server()
    p = pool(1, s)
    with pytest.raises(OSError), p.connection("a"):
        raise BrokenPipeError(32, "Broken pipe")
    assert s.live == set() and p.open == 0
    use(p, "b")
    assert s.opened == ["a", "b"]


def test_failed_login_frees_its_slot() -> None:
    s = Server(fail={"x"})
    p = pool(1, s)
    for _ in range(3):
        with pytest.raises(ConnectionResetError):
            p.acquire("x")
    assert p.open == 0
    use(p, "a")
    assert s.opened == ["a"]


def test_second_connection_of_one_owner_is_not_kept() -> None:
    s = Server()
    p = pool(4, s)
    first, second = p.acquire("a"), p.acquire("a")
    p.release("a", first)
    p.release("a", second)
    assert s.closed == ["a"] and p.open == 1


def test_threads_wait_for_a_free_connection() -> None:
    """Six threads, two connections: each thread holds its connection until all six have asked; the
    bound holds and every thread gets one in turn."""
    s = Server()
    p = pool(2, s)
    asked = threading.Barrier(2)
    done: list[str] = []

    def work(login: str) -> None:
        with p.connection(login):
            asked.wait(timeout=30)  # two hold connections at once: the bound is reached, not exceeded
            done.append(login)

    threads = [threading.Thread(target=work, args=(f"u{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(done) == [f"u{i}" for i in range(6)]
    assert s.peak == 2 and p.peak == 2


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        pool(0, Server())


def test_max_connections_setting_bounds_the_provider_pool() -> None:
    assert ImapProvider(ImapSettings(), "x").pool.size == 8
    assert ImapProvider(ImapSettings(max_connections=3), "x").pool.size == 3
    with pytest.raises(ValueError):
        ImapSettings(max_connections=101)  # a default Dovecot drops the 101st connection
    with pytest.raises(ValueError):
        ImapSettings(max_connections=0)


# --------------------------------------------------------------------------------------------------
# apply: one mailbox's changes together


def ch(action: Action, kind: str, key: str, provider: str = "imap", deps: tuple[str, ...] = ()) -> Change:
    return Change(f"{action.label} {kind} {key}", action, kind, key, provider, None, {"rights": "lr"},
                  depends_on=deps)


PROVIDERS: dict[str, Any] = {"imap": ImapProvider(ImapSettings(), "x"), "ldap": object()}


def ids(changes: list[Change]) -> list[str]:
    return [c.id for c in changes]


def test_head_swap_goes_mailbox_by_mailbox() -> None:
    """The plan revokes every old head, updates the units, then grants every new head; apply does both
    for one mailbox, then the next."""
    R, U, G = Action.REVOKE, Action.UPDATE, Action.GRANT
    plan = order(
        [ch(R, "acl", f"unit:{u}/INBOX#old{u}") for u in "ab"]
        + [ch(U, "unit", u, "ldap") for u in "ab"]
        + [ch(G, "acl", f"unit:{u}/INBOX#new{u}") for u in "ab"]
        + [ch(G, "acl", f"unit:{u}/Đến#new{u}") for u in "ab"]
    )
    assert ids(plan) == [
        "revoke acl unit:a/INBOX#olda", "revoke acl unit:b/INBOX#oldb",
        "update unit a", "update unit b",
        "grant acl unit:a/INBOX#newa", "grant acl unit:a/Đến#newa",
        "grant acl unit:b/INBOX#newb", "grant acl unit:b/Đến#newb",
    ]
    assert ids(group_by_connection(plan, PROVIDERS)) == [
        "revoke acl unit:a/INBOX#olda", "grant acl unit:a/INBOX#newa", "grant acl unit:a/Đến#newa",
        "revoke acl unit:b/INBOX#oldb", "grant acl unit:b/INBOX#newb", "grant acl unit:b/Đến#newb",
        "update unit a", "update unit b",
    ]


def test_a_change_never_moves_before_what_it_depends_on() -> None:
    """The folder of b is created after b's mailbox exists (ldap); b's first change stays after that."""
    C, G = Action.CREATE, Action.GRANT
    mbox_b = ch(C, "unit_mailbox", "b", "ldap")
    fold_a = ch(C, "shared_folder", "unit:a/F")
    fold_b = ch(C, "shared_folder", "unit:b/F", deps=(mbox_b.id,))
    changes = [
        ch(G, "acl", "unit:b/INBOX#x"),  # b's mailbox exists already: a first change of b
        fold_a,
        mbox_b,
        fold_b,
        ch(G, "acl", "unit:a/F#y", deps=(fold_a.id,)),
        ch(G, "acl", "unit:b/F#y", deps=(fold_b.id,)),
        ch(G, "acl", "unit:a/INBOX#y"),
    ]
    got = ids(group_by_connection(changes, PROVIDERS))
    assert got == [
        "grant acl unit:b/INBOX#x",
        "create shared_folder unit:a/F", "grant acl unit:a/F#y", "grant acl unit:a/INBOX#y",
        "create unit_mailbox b",
        "create shared_folder unit:b/F", "grant acl unit:b/F#y",
    ]
    # every change still comes after what it depends on, and nothing is lost or doubled
    where = {c: i for i, c in enumerate(got)}
    for c in changes:
        assert all(where[d] < where[c.id] for d in c.depends_on)
    assert sorted(got) == sorted(ids(changes))


def test_changes_without_a_connection_keep_their_order() -> None:
    changes = [ch(Action.CREATE, "person", p, "ldap") for p in ("c", "a", "b")]
    changes.append(ch(Action.CREATE, "person", "z", "ssh"))  # a provider that is not configured
    assert ids(group_by_connection(changes, PROVIDERS)) == ids(changes)
