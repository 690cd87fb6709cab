"""Fingerprints: what makes a saved plan stale.

- desired: sha256 over every state file (relative path, NUL, content), sorted by path; the per-file
  digests are kept so that a stale check says which file changed;
- live: sha256 over the canonical JSON of every live record read (within the scope); the per-record
  digests are kept so that a stale check says which live object changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailstate.desired_state.documents import iter_toml_files
from mailstate.model.i18n import _, kind_name
from mailstate.model.provider import Snapshot
from mailstate.model.records import Record
from mailstate.reconciler.plan.scope import ScopeFilter


@dataclass
class Fingerprint:
    """Digests of what a plan was made from; ``files`` and ``records`` say which object changed."""

    desired: str
    live: str
    files: dict[str, str] = field(default_factory=dict)
    records: dict[str, str] = field(default_factory=dict)

    @property
    def combined(self) -> str:
        return hashlib.sha256(f"{self.desired}:{self.live}".encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "desired": self.desired,
            "live": self.live,
            "combined": self.combined,
            "files": dict(self.files),
            "records": dict(self.records),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fingerprint:
        return cls(
            desired=str(data["desired"]),
            live=str(data["live"]),
            files=dict(data.get("files") or {}),
            records=dict(data.get("records") or {}),
        )


def state_files(state_dir: Path) -> list[Path]:
    """Every state file, exactly as the loader finds them (``*.toml``, hidden files and folders skipped)."""
    return list(iter_toml_files(Path(state_dir)))


def file_digests(state_dir: Path, files: Iterable[Path] | None = None) -> dict[str, str]:
    root = state_dir.resolve()
    digests: dict[str, str] = {}
    for path in files if files is not None else state_files(root):
        rel = Path(path).resolve().relative_to(root).as_posix()
        h = hashlib.sha256(rel.encode() + b"\0")
        h.update(Path(path).read_bytes())
        digests[rel] = h.hexdigest()
    return digests


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=str)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def record_id(record: Record) -> str:
    return f"{record.provider}:{record.kind}:{record.key}"


def record_digest(record: Record) -> str:
    """The digest of one live record: the provider's digest of the raw object when it gives one
    (``attrs["_digest"]``), else sha256 of the record's canonical JSON."""
    raw = record.attrs.get("_digest")
    if isinstance(raw, str) and raw:
        return hashlib.sha256(f"{record.kind}\0{record.key}\0{record.provider}\0{raw}".encode()).hexdigest()
    data = {
        "kind": record.kind,
        "key": record.key,
        "provider": record.provider,
        "unit": record.unit,
        "attrs": _canonical(record.attrs),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def combine(digests: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(digests):
        h.update(name.encode() + b"\0" + digests[name].encode() + b"\n")
    return h.hexdigest()


def live_digests(snapshots: Mapping[str, Snapshot], scope: ScopeFilter | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    for snap in snapshots.values():
        for rec in list(snap.records.values()) + list(snap.unmanaged):
            if scope is None or scope.covers(rec):
                out[record_id(rec)] = record_digest(rec)
    return out


def fingerprint(
    state_dir: Path,
    snapshots: Mapping[str, Snapshot],
    scope: ScopeFilter | None = None,
    files: Iterable[Path] | None = None,
) -> Fingerprint:
    fd = file_digests(state_dir, files)
    rd = live_digests(snapshots, scope)
    return Fingerprint(desired=combine(fd), live=combine(rd), files=fd, records=rd)


def stale_reasons(old: Fingerprint, new: Fingerprint) -> list[str]:
    """What differs between the fingerprint a plan was made from and the current one, object by object."""
    reasons: list[str] = []
    for name in sorted(set(old.files) | set(new.files)):
        a, b = old.files.get(name), new.files.get(name)
        if a == b:
            continue
        said = (_("{file} added") if a is None else _("{file} removed") if b is None else _("{file} changed"))
        reasons.append(said.format(file=name))
    for rid in sorted(set(old.records) | set(new.records)):
        a, b = old.records.get(rid), new.records.get(rid)
        if a == b:
            continue
        _provider, kind, key = rid.split(":", 2)
        said = (_("live {kind} {key} appeared") if a is None else _("live {kind} {key} disappeared")
                if b is None else _("live {kind} {key} changed"))
        reasons.append(said.format(kind=kind_name(kind), key=key))
    if not reasons and (old.desired != new.desired or old.live != new.live):
        reasons.append(_("the fingerprint differs"))
    return reasons
