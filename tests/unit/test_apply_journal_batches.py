"""The journal of a parallel apply, written in batches (reconciler.apply.journal ``Journal.held``,
reconciler.apply.run ``run_parallel``): what the file holds at each moment a crash could come."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mailstate import redact
from mailstate.errors import ChangeRefused, ProviderError
from mailstate.model.change import Action, Change
from mailstate.reconciler.apply.journal import Journal, json_line, read_lines, scrub
from mailstate.reconciler.apply.run import ApplyFailed, StopSignals, run_parallel
from mailstate.redact import remember_secret


def ch(cid: str, provider: str = "ldap", deps: tuple[str, ...] = (), **after: Any) -> Change:
    return Change(cid, Action.CREATE, "person", cid, provider, None, {"name": cid, **after},
                  fields=("name",), depends_on=deps)


def events(path: Path) -> list[tuple[str, str | None]]:
    return [(r["event"], r.get("change")) for r in read_lines(path)]


def test_held_lines_reach_the_file_at_flush_in_order(tmp_path: Path) -> None:
    """While held, nothing is written until ``flush``; then every line, in the order written, and the audit
    log's too; leaving ``held`` writes what is left."""
    j = Journal(tmp_path / "j.jsonl", tmp_path / "a.jsonl", who="t", commit=None)
    with j.held():
        j.started(ch("a"))
        j.started(ch("b"))
        j.done(ch("a"))
        assert read_lines(tmp_path / "j.jsonl") == [] and read_lines(tmp_path / "a.jsonl") == []
        j.flush()
        assert events(tmp_path / "j.jsonl") == [("started", "a"), ("started", "b"), ("done", "a")]
        assert events(tmp_path / "a.jsonl") == [("applied", "a")]
        j.done(ch("b"))
    assert events(tmp_path / "j.jsonl")[-1] == ("done", "b")
    assert len(read_lines(tmp_path / "a.jsonl")) == 2
    j.close()


def test_a_failed_change_is_on_disk_with_every_line_before_it(tmp_path: Path) -> None:
    """A failure is never only in memory: its line — and every line kept before it, in both files — is
    written and synced at once, held or not."""
    j = Journal(tmp_path / "j.jsonl", tmp_path / "a.jsonl", who="t", commit=None)
    with j.held():
        j.started(ch("a"))
        j.started(ch("b"))
        j.done(ch("a"))
        j.failed(ch("b"), "slapd went away")
        assert events(tmp_path / "j.jsonl") == [
            ("started", "a"), ("started", "b"), ("done", "a"), ("failed", "b")]
        assert events(tmp_path / "a.jsonl") == [("applied", "a")]
    j.close()


SECRET = 'pa"ss\\wörd'
"""A secret JSON escapes (a quote, a backslash) and that is not ASCII."""


@pytest.mark.parametrize(
    "record",
    [
        {"event": "done", "after": {"name": "Nguyễn Văn Bằng", "aliases": ["a@x.vn"], "quota": 5}},
        {"event": "done", "after": {"password": "x", "name": "n"}},
        {"event": "failed", "error": f"bind failed: {SECRET}"},
        {"event": "failed", "error": "imaps://u:s3cr3t-Pw@h refused"},
        {"event": "done", "before": None, "after": {"title": ["a", {"secret": None, "userPassword": "p"}]}},
        {"event": "done", "after": {"title": "https://sct.binhdinh.gov.vn/van-ban"}},
    ],
)
def test_a_line_is_what_scrubbing_every_value_gives(record: dict[str, Any]) -> None:
    """Whether a line is walked value by value or not, it is the line of the scrubbed record: a secret
    value (also one JSON escapes), a secret-named key, a URL's user and password never reach the file."""
    line = json_line(record, [SECRET])
    assert line == json.dumps(scrub(record, [SECRET]), ensure_ascii=False, sort_keys=True) + "\n"
    assert SECRET not in line and json.dumps(SECRET, ensure_ascii=False)[1:-1] not in line
    assert "s3cr3t-Pw" not in line and '"p"' not in line


class Recorder:
    """A provider that only records: what the journal file held when each change began, and which began
    while another was in progress. No server is involved: the file is what is tested."""

    kinds: ClassVar[frozenset[str]] = frozenset({"person"})

    def __init__(self, journal: Path, fail: str | None = None, refuse: str | None = None) -> None:
        self.journal = journal
        self.fail, self.refuse = fail, refuse
        self.seen: dict[str, list[tuple[str, str | None]]] = {}
        self.lock = threading.Lock()

    def apply(self, change: Change) -> None:
        with self.lock:
            self.seen[change.id] = events(self.journal)
        if change.id == self.fail:
            raise ProviderError("slapd went away")
        if change.id == self.refuse:
            raise ChangeRefused("objectClass violation")


def _run(tmp_path: Path, changes: list[Change], prov: Recorder) -> tuple[list[Change], list[Any]]:
    journal = Journal(prov.journal, tmp_path / "a.jsonl", who="t", commit=None)
    done: list[Change] = []
    refused: list[Any] = []
    try:
        run_parallel(changes, {"ldap": prov, "imap": prov}, journal, StopSignals(), [], lambda c, e: None,  # type: ignore[dict-item]
                     done, refused, [], prov.journal, lambda: None, "fp", 4)
    finally:
        journal.close()
    return done, refused


def test_every_change_is_journaled_started_before_it_begins(tmp_path: Path) -> None:
    """When a change begins, the file already holds its started line, and the done line of every change it
    depends on: a crash at that moment leaves a journal that says it may have been made."""
    changes = [ch(f"p{i}") for i in range(12)] + [ch("g", deps=("p0", "p5")), ch("m", "imap", deps=("g",))]
    prov = Recorder(tmp_path / "j.jsonl")
    done, _ = _run(tmp_path, changes, prov)
    assert len(done) == len(changes)
    for c in changes:
        seen = prov.seen[c.id]
        assert ("started", c.id) in seen
        for dep in c.depends_on:
            assert ("done", dep) in seen
    lines = events(tmp_path / "j.jsonl")
    assert lines[0][0] == "apply-started" and lines[-1][0] == "apply-finished"
    assert sorted(c for e, c in lines if e == "done") == sorted(c.id for c in changes)


def test_a_failure_in_a_batch_keeps_every_record(tmp_path: Path) -> None:
    """A failed change among changes in progress: its failed line, every done line of the others and of the
    changes before it, the refusal of another, the run's end — nothing is lost to the batching."""
    changes = [ch(f"p{i}") for i in range(10)] + [ch("later", deps=("p3",))]
    prov = Recorder(tmp_path / "j.jsonl", fail="p6", refuse="p2")
    with pytest.raises(ApplyFailed) as info:
        _run(tmp_path, changes, prov)
    lines = read_lines(tmp_path / "j.jsonl")
    by_change: dict[str, list[str]] = {}
    for r in lines[1:-1]:
        by_change.setdefault(r["change"], []).append(r["event"])
    assert by_change["p6"] == ["started", "failed"] and by_change["p2"] == ["started", "failed"]
    assert [r for r in lines if r.get("refused")] == [r for r in lines if r.get("change") == "p2"
                                                      and r["event"] == "failed"]
    assert {c.id for c in info.value.done} == {c for c, ev in by_change.items() if ev == ["started", "done"]}
    assert all(ev in (["started", "done"], ["started", "failed"]) for ev in by_change.values())
    assert lines[-1]["event"] == "apply-finished" and lines[-1]["outcome"] == "failed"
    audit = read_lines(tmp_path / "a.jsonl")
    assert sorted(r["change"] for r in audit) == sorted(c.id for c in info.value.done)


def test_a_secret_known_after_the_journal_opened_is_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secrets are looked up again when a new one is remembered or a secret variable changes: a line
    written after that never carries it."""
    monkeypatch.setattr(redact, "_SECRETS", set())
    j = Journal(tmp_path / "j.jsonl", tmp_path / "a.jsonl", who="t", commit=None)
    j.failed(ch("a"), "first")
    remember_secret("late-s3cr3t-one")
    j.failed(ch("b"), "bind failed: late-s3cr3t-one")
    monkeypatch.setenv("MAILSTATE_SMTP_PASSWORD", "late-s3cr3t-two")
    j.failed(ch("c"), "relay refused late-s3cr3t-two")
    j.close()
    text = (tmp_path / "j.jsonl").read_text()
    assert "late-s3cr3t" not in text and text.count("<redacted>") == 2
