"""``Desired``: what the projection of the TOML gives — the records that must exist (and why), those that
must not (and by which rule), where each was written, and every mailbox's lifecycle decision."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from mailstate.desired_state.lifecycle import Decision
from mailstate.model.i18n import DEFAULT_LANGUAGE
from mailstate.model.reason import Reason, as_reason
from mailstate.model.records import Record
from mailstate.model.regulation import Regulation
from mailstate.model.settings import Source

Ref = tuple[str, str]
"""(kind, key) of a record."""

@dataclass
class Desired:
    """What must exist (records), why (reasons), what must not (absent, with its rule), and where."""

    records: dict[Ref, Record] = field(default_factory=dict)
    reasons: dict[Ref, list[Reason]] = field(default_factory=dict)
    absent: dict[Ref, list[Reason]] = field(default_factory=dict)
    sources: dict[Ref, Source] = field(default_factory=dict)
    as_of: date | None = None
    decisions: dict[Ref, Decision] = field(default_factory=dict)
    """The lifecycle decision of every mailbox (person / unit_mailbox), for renderings and the directory."""
    regulation: Regulation | None = None
    """The organisation's regulation: the diff's own reasons cite it."""
    language: str = DEFAULT_LANGUAGE
    """The organisation's language: texts stored on the live side (lock reasons) are written in it."""

    def add(self, record: Record, reasons: Iterable[Reason | str] = (), source: Source | None = None) -> None:
        self.records[record.ref] = record
        self.reasons.setdefault(record.ref, []).extend(as_reason(r) for r in reasons)
        if source is not None:
            self.sources[record.ref] = source

    def remove(self, ref: Ref, reasons: Iterable[Reason | str], source: Source | None = None) -> None:
        """Mark ``ref`` as an object that must not exist, with the rule(s) that say so."""
        self.absent.setdefault(ref, []).extend(as_reason(r) for r in reasons)
        if source is not None:
            self.sources.setdefault(ref, source)

    def merge(self, other: Desired) -> None:
        """Add another projection's records, reasons, absent objects and sources (theirs win on a clash)."""
        self.records.update(other.records)
        for ref, rs in other.reasons.items():
            self.reasons.setdefault(ref, []).extend(rs)
        for ref, rs in other.absent.items():
            self.absent.setdefault(ref, []).extend(rs)
        self.sources.update(other.sources)
        self.decisions.update(other.decisions)
        self.regulation = self.regulation or other.regulation


# --------------------------------------------------------------------------------------------------
# Helpers
