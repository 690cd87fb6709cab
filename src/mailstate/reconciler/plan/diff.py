"""The central diff (STYLE: one place, never in a provider): desired Records vs live Records → Changes. Pure.

``diff(desired, live, unmanaged=..., manage_unlisted=...) -> (changes, unlisted)``:
- attribute level: values are compared after normalisation (text NFC, addresses case-insensitive,
  multi-valued attributes as sets, "" / empty collections as None); attributes starting with ``_`` and
  ``why`` are carried but never compared; only the attributes the desired record names are compared;
- desired, not live → ``create`` (``grant`` for an ``acl``);
- both, differing → ``update`` with only the differing fields in ``before``/``after``/``fields`` (``grant``
  for an ``acl``); when ``locked`` differs the lock state is its own ``lock`` / ``unlock`` change;
- live, not desired → NOT deleted but returned as unlisted (docs/operations.md, unlisted objects), except:
  ``acl`` (rights not in the TOML are revoked), an ``alias`` past its expiry (deleted), anything in
  ``desired.absent`` (removed with its reasons), and kinds the organisation opted into managing
  (``manage_unlisted``: True for all, or a collection of kinds, or of the names the directory's provider
  gives them, ``aliases_of``).
  A ``shared_folder`` (it holds mail) is never removed by a plan: live and not desired, it is reported.
- removing a mailbox (person, unit_mailbox) is always lock (unless already locked) → archive (work
  ``mail_archive``) → delete of its mail (``mail_delete``, refused by the provider without a verified
  archive) → delete of its entry, linked by ``depends_on`` (docs/imap.md, archives).

Each change goes to the provider ``routes`` names for its ``routed_kind`` (the registry's routes: the
provider in use declaring that kind). A change no provider in use carries out is left out, and so is every
change depending on it (a mailbox is never removed when its mail cannot be archived first).

``depends_on`` links a change to the changes of the objects it needs (person → its unit, child unit →
parent unit, unit mailbox → its unit, group → its members, alias → its owner, acl / shared_folder → their
mailbox, acl → its folder): those come first when created or updated; when such an object is deleted,
the changes of the objects that name it come first (ACLs revoked before the mailbox goes).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from mailstate.desired_state.projection import MAILBOX_KINDS, Desired, Ref, record_ref_of
from mailstate.gcpause import with_gc_paused
from mailstate.model.change import MAIL_ARCHIVE, MAIL_DELETE, REMOVAL_ACTIONS, Action, Change
from mailstate.model.i18n import use
from mailstate.model.reason import Reason, as_reason, reason
from mailstate.model.records import Record
from mailstate.model.regulation import Regulation

ADDRESS_ATTRS = frozenset({"address", "aliases", "delivers_to", "target", "backup_email", "mail"})
"""Attributes holding e-mail addresses: compared case-insensitively."""

IGNORED_ATTRS = frozenset({"why"})
LOCK_ATTRS = ("locked", "lock_reason")
NOTIFY_CODE = "lifecycle.suspended.notify"
"""Reasons that name who must be told of a temporary lock (and the variant ``…notify_in_person``)."""
NEVER_DELETED = frozenset({"shared_folder"})
"""Kinds a plan never removes (a folder holds mail): live but not desired, they are only reported."""
SECRET_RE = re.compile(r"pass(word|wd|phrase)?|secret|credential|token|private[_-]?key", re.I)
REDACTED = "<redacted>"

# --------------------------------------------------------------------------------------------------
# Normalisation and scrubbing


def normalise(name: str, value: Any) -> Any:
    """The comparable form of an attribute value (hashable): NFC, addresses lower case, sets, "" → None."""
    if value is None:
        return None
    if isinstance(value, str):
        v = unicodedata.normalize("NFC", value.strip())
        if name in ADDRESS_ATTRS:
            v = v.lower()
        return v or None
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        items = tuple(sorted((str(k), normalise(str(k), v)) for k, v in value.items()))
        return items or None
    if isinstance(value, Iterable):
        s = frozenset(normalise(name, v) for v in value) - {None}
        return s or None
    return str(value)


@functools.lru_cache(maxsize=4096)
def is_secret(name: str) -> bool:
    """True for an attribute named like a password or a secret (never shown, never written to a plan)."""
    return bool(SECRET_RE.search(name))


def scrub(attrs: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy of ``attrs`` with every secret-like attribute redacted (recursively)."""
    if attrs is None:
        return None
    if not any(isinstance(v, Mapping) or is_secret(str(k)) for k, v in attrs.items()):
        return dict(attrs)
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if is_secret(str(k)):
            out[k] = REDACTED
        elif isinstance(v, Mapping):
            out[k] = scrub(v)
        else:
            out[k] = v
    return out


def public_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes shown in a change: no ``_private`` ones, secrets redacted."""
    return scrub({k: v for k, v in attrs.items() if not str(k).startswith("_")}) or {}


def compared(name: str) -> bool:
    return not name.startswith("_") and name not in IGNORED_ATTRS


def differing_fields(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """The attributes of ``desired`` whose normalised value differs in ``live``, in the desired order."""
    out: list[str] = []
    for k, v in desired.items():
        lv = live.get(k)
        if v == lv and type(v) is type(lv):  # the common case: already equal, no normalisation needed
            continue
        if compared(k) and normalise(k, v) != normalise(k, lv):
            out.append(k)
    return out


def change_id(action: Action, kind: str, key: str, provider: str) -> str:
    """A short stable id: the same change planned twice gets the same id (saved plans, journals)."""
    h = hashlib.sha256(f"{action.label}\0{kind}\0{key}\0{provider}".encode()).hexdigest()
    return "c" + h[:10]


def _field_change(
    action: Action, rec: Record, cur: Record, names: list[str], reasons: Iterable[Reason]
) -> Change:
    """A change of the attributes ``names`` only: their live values before, their desired values after."""
    return _change(
        action,
        rec,
        {f: cur.attrs.get(f) for f in names},
        {f: rec.attrs.get(f) for f in names},
        reasons,
        fields=names,
    )


def _change(
    action: Action,
    rec: Record,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    reasons: Iterable[Reason],
    *,
    work: str = "",
    fields: Iterable[str] = (),
) -> Change:
    """A change, its provider not yet chosen (``route`` sets it)."""
    return Change(
        id="",
        action=action,
        kind=rec.kind,
        key=rec.key,
        provider="",
        before=scrub(before),
        after=scrub(after),
        reasons=tuple(reasons),
        unit=rec.unit,
        fields=tuple(fields),
        work=work,
    )


def routed(change: Change, routes: Mapping[str, str]) -> Change | None:
    """``change`` given to the provider that declares its kind (with its stable id); None when none does."""
    prov = routes.get(change.routed_kind)
    if prov is None:
        return None
    return dataclasses.replace(
        change, provider=prov, id=change_id(change.action, change.kind, change.key, prov))


# --------------------------------------------------------------------------------------------------
# The diff


def _wants_managed(kind: str, manage_unlisted: bool | Collection[str]) -> bool:
    if isinstance(manage_unlisted, bool):
        return manage_unlisted
    return kind in manage_unlisted


def _norm_key(kind: str, key: str) -> str:
    return key.strip().lower() if kind == "alias" else key


@with_gc_paused
def diff(
    desired: Desired,
    live: Mapping[Ref, Record],
    *,
    unmanaged: Iterable[Record] = (),
    manage_unlisted: bool | Collection[str] = False,
    routes: Mapping[str, str] | None = None,
) -> tuple[list[Change], list[Record]]:
    """Compare ``desired`` with ``live``: the changes (unordered, depends_on set) and the unlisted records.

    ``routes`` (kind → provider, registry.routes of the providers in use; default: every registered
    provider's, less those standing in for another) chooses each change's provider; a change no provider
    carries out is left out, with the changes that depend on it."""
    if routes is None:
        from mailstate.providers.registry import routes as routes_of
        from mailstate.providers.registry import standalone_providers

        routes = routes_of(standalone_providers())
    live_n: dict[Ref, Record] = {(k, _norm_key(k, key)): r for (k, key), r in live.items()}
    want: dict[Ref, Record] = {(k, _norm_key(k, key)): r for (k, key), r in desired.records.items()}
    absent: dict[Ref, list[Reason]] = {(k, _norm_key(k, key)): rs for (k, key), rs in desired.absent.items()}
    reg = desired.regulation
    as_of = desired.as_of.isoformat() if desired.as_of else None

    changes: list[Change] = []
    by_ref: dict[Ref, list[Change]] = {}
    unlisted: list[Record] = []

    def emit(ref: Ref, change: Change) -> Change | None:
        """Keep ``change``, given to its provider (already given: as is); None when no provider in use
        carries it out."""
        if not change.provider:
            found = routed(change, routes)
            if found is None:
                return None
            change = found
        changes.append(change)
        by_ref.setdefault(ref, []).append(change)
        return change

    # desired side: create / update / lock / unlock
    for ref in sorted(want):
        rec = want[ref]
        reasons = desired.reasons.get(ref, ())
        cur = live_n.get(ref)
        if cur is None:
            action = Action.GRANT if rec.kind == "acl" else Action.CREATE
            emit(ref, _change(action, rec, None, public_attrs(rec.attrs), reasons))
            continue
        if rec.kind == "person" and cur.attrs.get("_no_password"):
            # created by an apply that stopped before the initial password was set: nobody can log in
            # and no password was handed over; the create completes the entry and sets one
            why = [*reasons, reason("password.missing", reg)]
            emit(ref, _change(Action.CREATE, rec, None, public_attrs(rec.attrs), why))
            continue
        if rec.kind in MAILBOX_KINDS and cur.attrs.get("_other_uids"):
            # another uid value is another login name for the same mailbox (Dovecot finds the entry by
            # uid): the create rewrites the entry to exactly what is wanted, its id the only uid
            others = ", ".join(cur.attrs["_other_uids"])
            why = [*reasons, reason("naming.login_names", reg, others=others, id=rec.key)]
            emit(ref, _change(Action.CREATE, rec, None, public_attrs(rec.attrs), why))
            continue
        fields = differing_fields(rec.attrs, cur.attrs)
        if not fields:
            continue
        lock_fields = [f for f in fields if f in LOCK_ATTRS]
        other = [f for f in fields if f not in LOCK_ATTRS]
        if "locked" in lock_fields and rec.kind in MAILBOX_KINDS:
            action = Action.LOCK if rec.attrs.get("locked") else Action.UNLOCK
            emit(ref, _field_change(action, rec, cur, [f for f in LOCK_ATTRS if f in rec.attrs], reasons))
        else:
            other = fields
        if other:
            action = Action.GRANT if rec.kind == "acl" else Action.UPDATE
            # who must be told of a lock belongs to the lock, not to an update beside it
            why = [r for r in reasons if not r.code.startswith(NOTIFY_CODE)]
            emit(ref, _field_change(action, rec, cur, other, why))

    # live side: what is not desired
    for ref in sorted(live_n):
        if ref in want:
            continue
        cur = live_n[ref]
        kind = ref[0]
        if kind in NEVER_DELETED:
            if record_ref_of(cur.key.split("/", 1)[0]) in absent:
                continue  # goes with its mailbox, archived first: the mailbox's removal names it
            unlisted.append(cur)  # holds mail: reported, never removed by a plan (docs/imap.md, archives)
        elif ref in absent:
            _remove(cur, absent[ref], desired, ref, emit, routes)
        elif kind == "acl":
            _remove(cur, _acl_revoke_reasons(cur, live_n, want, reg), desired, ref, emit, routes)
        elif kind == "alias" and as_of and (cur.attrs.get("expires") or "9999") <= as_of:
            _remove(
                cur,
                [reason("naming.old_address_expired.live", reg, address=cur.key,
                        expires=cur.attrs.get("expires"), as_of=as_of)],
                desired,
                ref,
                emit,
                routes,
            )
        elif _wants_managed(kind, manage_unlisted):
            _remove(
                cur,
                [reason("unlisted.managed", reg, kind=kind, key=cur.key)],
                desired,
                ref,
                emit,
                routes,
            )
        else:
            unlisted.append(cur)
    unlisted.extend(unmanaged)

    _link(changes, by_ref, want, live_n)
    return changes, unlisted


def _acl_revoke_reasons(
    cur: Record, live: Mapping[Ref, Record], want: Mapping[Ref, Record], reg: Regulation | None
) -> list[Reason]:
    """Why a live right the TOML does not give is revoked: on a unit mailbox, a head or delegate the TOML no
    longer names as such (the live unit still does) is told so; otherwise the general rule."""
    mailbox, _, login = cur.key.rpartition("#")
    if mailbox.startswith("unit:"):
        uid = mailbox[5:].split("/", 1)[0]
        old, new = live.get(("unit", _norm_key("unit", uid))), want.get(("unit", _norm_key("unit", uid)))
        if old is not None and new is not None:
            new_head = new.attrs.get("head")
            if old.attrs.get("head") == login and new_head != login:
                return [reason("handover.head_changed", reg, login=login, unit=uid, head=new_head or "-")]
            was, now = old.attrs.get("delegates") or (), new.attrs.get("delegates") or ()
            if login in was and login not in now:
                return [reason("delegation.revoked", reg, login=login, unit=uid)]
    return [reason("acl.not_listed", reg)]


def _remove(
    cur: Record, reasons: list[Reason], desired: Desired, ref: Ref, emit: Any, routes: Mapping[str, str]
) -> None:
    """The removal of a live object: revoke (acl, grant), delete, or lock → archive → delete for a mailbox."""
    if cur.kind in ("acl", "grant"):
        emit(ref, _change(Action.REVOKE, cur, public_attrs(cur.attrs), None, reasons))
        return
    if cur.kind not in MAILBOX_KINDS:
        emit(ref, _change(Action.DELETE, cur, public_attrs(cur.attrs), None, reasons))
        return
    chain: list[Change] = []
    if not cur.attrs.get("locked"):
        decision = desired.decisions.get(ref)
        lock_reason = (decision.lock_reason if decision else None) or (
            _stored_text(reasons[0], desired) if reasons else None)
        chain.append(
            _change(
                Action.LOCK,
                cur,
                {"locked": False, "lock_reason": cur.attrs.get("lock_reason")},
                {"locked": True, "lock_reason": lock_reason},
                reasons,
                fields=LOCK_ATTRS,
            )
        )
    decision = desired.decisions.get(ref)
    refuse = decision.refuse_mail if decision else None
    if refuse and cur.attrs.get("refuse_mail") != refuse:
        # no mail may arrive between the archive and the removal: refused at RCPT first (docs/mailflow.md)
        chain.append(
            _change(
                Action.UPDATE,
                cur,
                {"refuse_mail": cur.attrs.get("refuse_mail")},
                {"refuse_mail": refuse},
                [*reasons, reason("archive.before_removal.mail_refused", desired.regulation)],
                fields=("refuse_mail",),
            )
        )
    address = cur.attrs.get("address")
    chain.append(
        _change(
            Action.ARCHIVE,
            cur,
            {"address": address},
            {"archived": True},
            [*reasons, reason("archive.before_removal", desired.regulation)],
            work=MAIL_ARCHIVE,
        )
    )
    chain.append(
        _change(
            Action.DELETE,
            cur,
            {"address": address, "mail": "kept in the verified archive"},
            None,
            [*reasons, reason("archive.verified_before_delete", desired.regulation)],
            work=MAIL_DELETE,
        )
    )
    chain.append(_change(Action.DELETE, cur, public_attrs(cur.attrs), None, reasons))
    prev: Change | None = None
    for c in chain:
        link = emit(ref, c if prev is None else _with_deps(routed(c, routes) or c, (prev.id,)))
        if link is None:
            return  # no provider in use makes this link: nothing after it (mail goes only once archived)
        prev = link


def _stored_text(r: Reason, desired: Desired) -> str:
    """A reason as stored in the directory: in the organisation's language, never --lang's."""
    with use(desired.language):
        return as_reason(r).text()


def _with_deps(change: Change, deps: Iterable[str]) -> Change:
    return dataclasses.replace(change, depends_on=tuple(sorted(set(change.depends_on) | set(deps))))


# --------------------------------------------------------------------------------------------------
# Dependencies


def prerequisites(rec: Record, address_owner: Mapping[str, Ref]) -> list[Ref]:
    """The objects ``rec`` needs to exist first (docs/records.md): unit, parent, members, owner, mailbox
    (a right: its mailbox, its folder and the mailbox it is for)."""
    a = rec.attrs
    out: list[Ref] = []
    if rec.kind == "person" and a.get("unit"):
        out.append(("unit", str(a["unit"])))
    elif rec.kind == "unit" and a.get("parent"):
        out.append(("unit", str(a["parent"])))
    elif rec.kind == "unit_mailbox":
        out.append(("unit", rec.key))
    elif rec.kind == "group":
        out.extend(record_ref_of(str(m)) for m in (a.get("members") or ()))
    elif rec.kind == "alias":
        owner = a.get("_owner")
        if owner:
            out.append(record_ref_of(str(owner)))
        elif a.get("target"):
            t = address_owner.get(str(a["target"]).lower())
            if t:
                out.append(t)
    elif rec.kind in ("acl", "shared_folder", "grant"):
        mailbox = rec.key.split("/", 1)[0]
        if mailbox:
            out.append(record_ref_of(mailbox))
        if rec.kind == "acl" and "#" in rec.key:
            out.append(("shared_folder", rec.key.rsplit("#", 1)[0]))
            # whom the right is for, when it names a mailbox (not anyone, a $group, a global entry)
            who = rec.key.rsplit("#", 1)[1].removeprefix("-")
            if who and who[0] not in "$!#" and who not in ("anyone", "authenticated", "owner"):
                out.extend((("person", who), ("unit_mailbox", who)))
    for d in a.get("_depends_on") or ():
        if isinstance(d, tuple | list) and len(d) == 2:
            out.append((str(d[0]), str(d[1])))
        elif isinstance(d, str) and ":" in d:
            k, _, key = d.partition(":")
            out.append((k, key))
    return [r for r in out if r != rec.ref]


def _link(
    changes: list[Change],
    by_ref: dict[Ref, list[Change]],
    want: Mapping[Ref, Record],
    live: Mapping[Ref, Record],
) -> None:
    """Set depends_on: builds after their prerequisites' builds; deletes after their dependents' changes."""
    address_owner: dict[str, Ref] = {}
    for side in (live, want):
        for ref, rec in side.items():
            address = rec.attrs.get("address")  # live: a tuple when the entry holds several `mail` values
            if ref[0] in ("person", "unit_mailbox", "group") and address:
                for a in address if isinstance(address, tuple) else (address,):
                    address_owner[str(a).lower()] = ref
    extra: dict[str, set[str]] = {}
    for ref, cs in by_ref.items():
        found = want.get(ref) or live.get(ref)
        if found is None:
            continue
        for pre in prerequisites(found, address_owner):
            pcs = by_ref.get(pre)
            if not pcs:
                continue
            for c in cs:
                for p in pcs:
                    if found.kind == "alias" and c.action is Action.CREATE and p.action is Action.UPDATE:
                        # an old address's alias entry exists before its owner's address changes, so
                        # an apply stopped in between still knows the old address (desired.py)
                        extra.setdefault(p.id, set()).add(c.id)
                    elif c.action not in REMOVAL_ACTIONS and p.action not in REMOVAL_ACTIONS:
                        extra.setdefault(c.id, set()).add(p.id)
                    elif p.action in (Action.DELETE, Action.ARCHIVE) and c.action not in (
                        Action.LOCK, Action.UNLOCK
                    ):
                        extra.setdefault(p.id, set()).add(c.id)
    if not extra:
        return
    for i, c in enumerate(changes):
        if c.id in extra:
            changes[i] = _with_deps(c, extra[c.id] - {c.id})
