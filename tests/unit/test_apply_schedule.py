"""The parallel apply's schedule (reconciler.apply.run.Schedule), as data: which changes may start when."""

from __future__ import annotations

import heapq
import random

import pytest

from mailstate.model.change import Action, Change
from mailstate.reconciler.apply.run import CROSS_PROVIDER_FREE, Schedule


def ch(cid: str, action: Action = Action.CREATE, provider: str = "ldap", deps: tuple[str, ...] = (),
       group: str | None = None) -> Change:
    return Change(cid, action, "person", group or cid, provider, None, {}, depends_on=deps)


def simulate(
    changes: list[Change], parallelism: int, seed: int, grouped: bool = True
) -> list[tuple[str, str]]:
    """Run the schedule to the end, finishing changes in progress in a random order; check at each start
    that every rule holds; return the (event, id) sequence."""
    rng = random.Random(seed)
    sched = Schedule(changes, lambda c: c.key if grouped and c.key.startswith("box") else None, parallelism)
    pos = {c.id: i for i, c in enumerate(changes)}
    running: list[int] = []
    over: set[int] = set()
    log: list[tuple[str, str]] = []
    while True:
        while sched.available:
            sched.place(heapq.heappop(sched.available))
        for i in sched.startable():
            c = changes[i]
            for d in c.depends_on:
                if d in pos and pos[d] < i:
                    assert pos[d] in over, f"{c.id} started before its dependency {d} was over"
            for j in range(i):
                free = (c.action is Action.GRANT and changes[j].provider != c.provider
                        and changes[j].action.phase in CROSS_PROVIDER_FREE)
                if changes[j].action.phase < c.action.phase and not free:
                    assert j in over, f"{c.id} started before the earlier, lower-phase {changes[j].id}"
            same_group = [
                k for k in running if sched.group[k] is not None and sched.group[k] == sched.group[i]
            ]
            assert not same_group, f"{c.id} started beside {changes[same_group[0]].id} on its connection"
            running.append(i)
            log.append(("started", c.id))
            per_provider = sum(1 for k in running if changes[k].provider == c.provider)
            assert per_provider <= parallelism
        if not running:
            break
        i = running.pop(rng.randrange(len(running)))
        over.add(i)
        log.append(("done", changes[i].id))
        sched.finish(i, started=True)
    assert sched.all_finished(), "the schedule stopped with changes never started"
    return log


PLAN = [
    ch("revoke-a", Action.REVOKE, "imap", group="boxA"),
    ch("unit", Action.CREATE),
    *[ch(f"p{i}", Action.CREATE, deps=("unit",)) for i in range(12)],
    ch("g1", Action.CREATE, deps=("p1", "p2")),
    ch("folderA", Action.CREATE, "imap", deps=("unit",), group="boxA"),
    ch("folderB", Action.CREATE, "imap", deps=("unit",), group="boxB"),
    *[ch(f"grantA{i}", Action.GRANT, "imap", deps=("folderA", f"p{i}"), group="boxA") for i in range(4)],
    *[ch(f"grantB{i}", Action.GRANT, "imap", deps=("folderB", f"p{i}"), group="boxB") for i in range(4)],
    ch("arch1", Action.ARCHIVE, "ssh"),
    ch("arch2", Action.ARCHIVE, "ssh"),
    ch("del1", Action.DELETE, "ldap", deps=("arch1",)),
]


@pytest.mark.parametrize("parallelism", [1, 2, 4, 16])
@pytest.mark.parametrize("seed", range(8))
def test_every_rule_holds_and_everything_runs(parallelism: int, seed: int) -> None:
    log = simulate(PLAN, parallelism, seed)
    assert sorted(cid for e, cid in log if e == "started") == sorted(c.id for c in PLAN)


def test_independent_changes_start_together_up_to_the_bound() -> None:
    sched = Schedule([ch(f"p{i}") for i in range(10)] + [ch(f"f{i}", provider="imap") for i in range(10)],
                     lambda c: None, 4)
    while sched.available:
        sched.place(heapq.heappop(sched.available))
    started = sched.startable()
    assert [i for i in started if i < 10] == [0, 1, 2, 3]  # the earliest in plan order, four per provider
    assert [i for i in started if i >= 10] == [10, 11, 12, 13]


def test_archives_go_one_at_a_time_and_one_connection_one_change() -> None:
    plan = [ch("a1", Action.ARCHIVE, "ssh"), ch("a2", Action.ARCHIVE, "ssh"),
            ch("g1", Action.GRANT, "imap", group="boxA"), ch("g2", Action.GRANT, "imap", group="boxA")]
    sched = Schedule(plan, lambda c: c.key if c.key.startswith("box") else None, 4)
    while sched.available:
        sched.place(heapq.heappop(sched.available))
    assert sched.startable() == [0, 2]
    sched.finish(0, started=True)
    assert sched.startable() == [1]
    sched.finish(2, started=True)
    assert sched.startable() == [3]


def test_a_dependency_on_a_later_change_does_not_deadlock() -> None:
    """A cycle the plan's order broke (a depends on b, b on a): only the earlier dependency counts."""
    plan = [ch("a", deps=("b",)), ch("b", deps=("a",))]
    log = simulate(plan, 4, 0)
    assert [cid for e, cid in log if e == "started"] == ["a", "b"]


def test_a_later_phase_waits_for_every_earlier_lower_phase_change() -> None:
    plan = [ch("c1", Action.CREATE), ch("l1", Action.LOCK, provider="imap"), ch("c2", Action.CREATE)]
    sched = Schedule(plan, lambda c: None, 4)
    while sched.available:
        sched.place(heapq.heappop(sched.available))
    assert sched.startable() == [0, 2]  # the lock waits for c1 (c2 comes after it in the plan)
    sched.finish(0, started=True)
    assert sched.startable() == [1]


def test_a_grant_waits_for_its_own_providers_creations_not_anothers() -> None:
    """A right waits for the creations its dependencies name and for every creation of its own provider
    (its mailbox's folders), not for the directory's thousands of other people."""
    plan = [ch("person", Action.CREATE), ch("folder", Action.CREATE, provider="imap"),
            ch("grant", Action.GRANT, provider="imap"), ch("other", Action.UPDATE)]
    sched = Schedule(plan, lambda c: None, 4)
    while sched.available:
        sched.place(heapq.heappop(sched.available))
    assert sched.startable() == [0, 1]  # the update waits for both creations, as every phase does
    sched.finish(1, started=True)
    assert sched.startable() == [2]  # person (ldap) still in progress: no matter for the grant


@pytest.mark.parametrize("first", [Action.REVOKE, Action.UNLOCK])
def test_a_grant_still_waits_for_anothers_revokes_and_unlocks(first: Action) -> None:
    """Rights are taken away (and a returning person unlocked) everywhere before any is given."""
    plan = [ch("first", first), ch("grant", Action.GRANT, provider="imap")]
    sched = Schedule(plan, lambda c: None, 4)
    while sched.available:
        sched.place(heapq.heappop(sched.available))
    assert sched.startable() == [0]
    sched.finish(0, started=True)
    assert sched.startable() == [1]
