"""The LDAP provider (ldap3): units, people, unit mailboxes, groups, aliases and their locks (docs/ldap.md).

- ``LdapProvider.from_state(state, passwords_out=...)``: settings from ``[providers.ldap]``, overridden by
  ``MAILSTATE_LDAP_URL``, ``MAILSTATE_LDAP_BIND_DN``, ``MAILSTATE_LDAP_PASSWORD`` (else the variable named
  by ``password_env``, else ``password_file``), ``MAILSTATE_LDAP_CA_FILE``. TLS always (``ldaps://``, or
  ``ldap://`` + StartTLS with ``start_tls``), certificate verified against the CA file or the system
  store; plain ``ldap://`` only with ``allow_plain = true``.
- ``read(scope)``: one paged search per subtree; truncation (sizeLimitExceeded, timeLimitExceeded, a
  page that ends early) and any failure raise ``ProviderError`` — a failed read is never "absent".
- ``apply(change)``: idempotent create/update/delete/lock/unlock/rename. New people get a generated
  initial password (providers.passwords), set in the add itself with ``pwdReset`` (ppolicy checks its
  quality and hashes it; a person found without one gets it through Password Modify), appended to the
  operator's 0600 file and nowhere else.
- ``apply_lock(holder)``: one apply at a time, held in the directory.

The translation between entries and Records is pure and lives in providers.ldap_parse.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from contextlib import suppress
from typing import Any, ClassVar

from ldap3 import BASE, HASHED_SALTED_SHA, MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, safe_dn
from ldap3.utils.hashed import hashed

from mailstate.errors import ProviderError
from mailstate.gcpause import with_gc_paused
from mailstate.ldapconn import ALREADY_EXISTS, NO_SUCH_OBJECT, SUCCESS, LdapSession
from mailstate.ldapconn import resolve_settings as resolve_settings  # the name tests and callers use
from mailstate.model.change import Action, Change
from mailstate.model.i18n import _
from mailstate.model.provider import DesiredState, Snapshot
from mailstate.model.records import MAILBOX_KINDS, Record
from mailstate.model.settings import LdapSettings
from mailstate.providers.ldap import ber
from mailstate.providers.ldap.parse import (
    CONTAINERS,
    KINDS,
    LOCKED_TIME,
    PARSERS,
    READ_ATTRS,
    addresses_of,
    build_entry,
    created_of,
    direct_values,
    dn_of,
    lock_values,
    missing_classes,
    modifications,
    owner_ref,
    parse_entry,
    rdn_value,
)
from mailstate.providers.ldap.passwords import append_password, generate_password

READ_ORDER = ("unit", "unit_mailbox", "person", "group", "alias")
_FACT_ATTRS = frozenset({"pwdchangedtime", "createtimestamp"})
"""Read with the entries, kept apart from the records: whether a password was ever set, when created."""

def _lock_reason(attrs: Mapping[str, Any], reasons: Iterable[object]) -> str | None:
    """The reason stored with a lock: the record's ``lock_reason`` when it names one (even None, so the
    next plan converges), else the change's reasons (for auditors)."""
    if "lock_reason" in attrs:
        value = attrs["lock_reason"]
        return str(value) if value else None
    return "; ".join(str(r) for r in reasons) or None


class LdapProvider(LdapSession):
    """Reads and changes the directory entries mailstate manages (docs/ldap.md)."""

    name: ClassVar[str] = "ldap"
    kinds: ClassVar[frozenset[str]] = frozenset(KINDS)
    settings_model: ClassVar[type[LdapSettings]] = LdapSettings
    writes_passwords: ClassVar[bool] = True
    """``from_state`` takes ``passwords_out``: the file the initial passwords it sets are written to."""

    @classmethod
    def unlisted_kinds(cls, state: DesiredState) -> frozenset[str]:
        """The kinds whose live objects absent from the TOML are removed: ``manage_unlisted`` names
        subtrees (``groups``) or kinds (``group``)."""
        by_subtree = {ou: kind for kind, (ou, _attr) in CONTAINERS.items()}
        return frozenset(by_subtree.get(x, x) for x in state.providers.ldap.manage_unlisted)

    def __init__(self, settings: LdapSettings, *, size_limit: int = 0, **options: Any) -> None:
        """``options``: base_dn, password, password_policy, passwords_out (LdapSession)."""
        super().__init__(settings, **options)
        self.settings: LdapSettings = settings
        self.size_limit = size_limit
        """A client-side size limit on each read search (0: none); the read must then fail, not shorten."""
        self.password_in_add: bool | None = None
        """Whether the directory hashes a password given in an add (ppolicy's olcPPolicyHashCleartext):
        None until the first person of the run shows it, False from then on if it keeps it as sent."""

    # ----------------------------------------------------------------------------------------------
    # Connection

    # ----------------------------------------------------------------------------------------------
    # Reading

    def container(self, kind: str) -> str:
        return safe_dn(f"ou={CONTAINERS[kind][0]},{self.base_dn}")

    def _check_base(self) -> None:
        if self.read_entry(self.base_dn, ["1.1"])[0] == NO_SUCH_OBJECT:
            raise self._fail(
                "base DN not found", f"{self.base_dn} does not exist (is the directory bootstrapped?)"
            )

    @staticmethod
    def scope_filter(kind: str, units: list[str] | None) -> str:
        """The search filter of a subtree for a scope of unit ids (None: everything)."""
        if units is None or kind in ("group", "alias"):
            return "(objectClass=*)"
        attr = {"person": "departmentNumber", "unit_mailbox": "uid", "unit": "ou"}[kind]
        if not units:
            return "(!(objectClass=*))"
        parts = "".join(f"({attr}={escape_filter_chars(u)})" for u in units)
        return parts if len(units) == 1 else f"(|{parts})"

    @with_gc_paused  # tens of thousands of decoded entries: the collector only slows the read down
    def read(self, scope: Iterable[str] | None = None) -> Snapshot:
        """The live records in the managed subtrees (limited to ``scope`` unit ids); failures raise."""
        units = None if scope is None else sorted({s.removeprefix("unit:") for s in scope})
        snap = Snapshot(provider=self.name)
        self._check_base()
        digests: dict[str, str] = {}
        addresses: dict[str, str] = {}
        lockouts: dict[str, str] = {}
        dns: dict[str, str] = {}
        created: dict[str, str] = {}  # mailbox login -> when its entry was created (lifecycle's "created")
        # people with no pwdChangedTime: ppolicy sets it with every password change and removes it with
        # the password, so only they (and those given their initial password in the add) can be without
        # one (not part of the record or its digest: a person changing their password never makes a plan
        # stale)
        unchanged_password: set[str] = set()
        for kind in READ_ORDER:
            attributes = READ_ATTRS[kind] + (["pwdChangedTime"] if kind == "person" else [])
            if kind in MAILBOX_KINDS:  # operational: returned only when asked for by name
                attributes = [*attributes, "createTimestamp"]
            for dn, raw in self.search_all(
                self.container(kind),
                self.scope_filter(kind, units),
                attributes,
                size_limit=self.size_limit,
            ):
                # pwdChangedTime and createTimestamp are facts, never part of the record (nor its digest)
                facts: dict[str, Any] = {}
                lock: Any = None
                for name in list(raw):
                    low = name.lower()
                    if low in _FACT_ATTRS:
                        facts.setdefault(low, raw.pop(name))
                    elif low == "pwdaccountlockedtime" and lock is None:
                        lock = raw[name]
                if kind == "person" and not facts.get("pwdchangedtime"):
                    unchanged_password.add(dn.lower())
                stamp = facts.get("createtimestamp")
                when = created_of(stamp) if stamp is not None else None
                record, managed = parse_entry(kind, dn, raw)
                if not managed:
                    snap.unmanaged.append(record)
                    continue
                snap.add(record)
                if when is not None:
                    created[record.key] = when
                ref = f"{kind}/{record.key}"
                digests[ref] = record.attrs["_digest"]
                dns[ref] = dn
                for address in addresses_of(record):
                    addresses.setdefault(address, owner_ref(record))
                lock = lock[0] if isinstance(lock, list) and lock else lock
                if lock and str(lock) != LOCKED_TIME:
                    lockouts[record.key] = str(lock)
        # people without any password (an apply stopped between the add and the initial password): a
        # presence filter, so no password hash is ever read; only asked when someone may be one of them
        no_password: list[str] = []
        people_filter = self.scope_filter("person", units)
        candidates = unchanged_password & {dn.lower() for ref, dn in dns.items() if ref.startswith("person/")}
        for dn, _raw in self.search_all(
            self.container("person"),
            f"(&(objectClass=mailstateAccount)(!(userPassword=*)){people_filter})",
            ["1.1"],
            size_limit=self.size_limit,
        ) if candidates else []:
            found = snap.records.get(("person", rdn_value(dn)))
            if found is not None:
                snap.records[("person", found.key)] = Record(
                    found.kind, found.key, {**found.attrs, "_no_password": True}, found.provider, found.unit
                )
                no_password.append(found.key)
        # an alias's old address belongs to whoever it delivers to
        for (kind, key), record in snap.records.items():
            if kind == "alias":
                target = record.attrs.get("target")
                if target and target in addresses:
                    addresses[key] = addresses[target]
        snap.facts.update(
            {"digests": digests, "addresses": addresses, "lockouts": lockouts, "dns": dns,
             "no_password": sorted(no_password), "created": created}
        )
        return snap

    def get(self, kind: str, key: str) -> tuple[str, dict[str, Any]] | None:
        """(dn, attributes) of one entry, or None when it does not exist."""
        return self.read_entry(dn_of(kind, key, self.base_dn), READ_ATTRS[kind])[1]

    def read_one(self, kind: str, key: str) -> Record | None:
        """One live record (parsed like ``read``), or None."""
        found = self.get(kind, key)
        return PARSERS[kind](found[1], found[0]) if found else None

    # ----------------------------------------------------------------------------------------------
    # Applying

    def apply(self, change: Change) -> None:
        """Carry out one change; re-applying a change already done is a no-op."""
        if change.kind not in KINDS:
            raise ProviderError(f"the ldap provider does not manage {change.kind!r} ({change.id})")
        action = change.action
        if action is Action.CREATE:
            self._ensure(change.kind, change.key, dict(change.after or {}), reasons=change.reasons)
        elif action is Action.UPDATE:
            self._update(change)
        elif action is Action.DELETE:
            self._delete(change.kind, change.key)
        elif action in (Action.LOCK, Action.UNLOCK):
            self._lock(change, locked=action is Action.LOCK)
        elif action is Action.RENAME:
            self._rename(change)
        else:
            raise ProviderError(f"the ldap provider cannot {action.label} a {change.kind} ({change.id})")

    def _modify(self, dn: str, changes: dict[str, list[tuple[Any, list[str]]]]) -> None:
        if not changes:
            return
        result = self._call(f"modify {dn}", self.conn.modify, dn, changes)
        if result.get("result") != SUCCESS:
            raise self._fail(
                f"cannot modify {dn} ({', '.join(changes)})", result.get("description") or result
            )

    def _add(self, dn: str, classes: tuple[str, ...], attrs: dict[str, list[str]]) -> int:
        body = {k: v for k, v in attrs.items() if v}
        result = self._call(f"add {dn}", ber.add, self.conn, dn, classes, body)
        code = int(result.get("result", -1))
        if code == NO_SUCH_OBJECT:
            self._ensure_container(dn)
            result = self._call(f"add {dn}", ber.add, self.conn, dn, classes, body)
            code = int(result.get("result", -1))
        if code not in (SUCCESS, ALREADY_EXISTS):
            raise self._fail(f"cannot add {dn}", result)
        return code

    def _ensure_container(self, dn: str) -> None:
        parent = dn.split(",", 1)[1] if "," in dn else ""
        for kind in KINDS:
            if parent.lower() == self.container(kind).lower():
                ou = CONTAINERS[kind][0]
                self._call(f"add {parent}", self.conn.add, parent, ["organizationalUnit"], {"ou": ou})
                return

    def _ensure(self, kind: str, key: str, attrs: dict[str, Any], *, reasons: Iterable[object] = ()) -> None:
        """Make the entry exist with exactly these attributes (create, or compare and modify)."""
        spec = build_entry(kind, key, attrs, self.base_dn)
        extra: dict[str, list[str]] = {}
        if kind == "unit_mailbox":
            # a unit mailbox is used through delegation (IMAP ACL), never through its own password:
            # simpleSecurityObject needs one, so it gets a random one that nobody knows.
            extra["userPassword"] = [hashed(HASHED_SALTED_SHA, secrets.token_urlsafe(32))]
        lock: dict[str, list[str]] = {}
        if kind in ("person", "unit_mailbox") and "locked" in attrs:
            reason = _lock_reason(attrs, reasons)
            lock = lock_values(bool(attrs["locked"]), reason)
        in_add = kind == "person" and self.password_in_add is not False
        initial = self._new_password(key, attrs.get("address")) if in_add else None
        if initial is not None:
            # one add carries the password (in clear over TLS: ppolicy checks its quality and hashes it
            # with olcPasswordHash, as it does for Password Modify) and pwdReset, beside any lock
            extra["userPassword"] = [initial]
            if self.password_policy.change_at_first_login:
                extra["pwdReset"] = ["TRUE"]
        code = self._add(spec.dn, spec.object_classes, {**spec.attrs, **extra, **lock})
        if code == SUCCESS and in_add:
            if initial is None:
                self._no_password_notice(key)
                return
            self._record_password(key, spec.dn, attrs.get("address"), initial)
            known = self.password_in_add  # (another thread's first add may have answered meanwhile)
            if known is True or (known is None and self._stored_hashed(spec.dn)):
                return
            # not seen hashed (kept as sent, or not readable by the service account): never leave it so —
            # slapd hashes it through Password Modify, as it does for every person of this run from now on
            self.password_in_add = False
            notice = _("a password given in an add was not read back hashed (ppolicy's "
                       "olcPPolicyHashCleartext off, or userPassword not readable by the service account): "
                       "initial passwords are set through Password Modify")
            if notice not in self.notices:
                self.notices.append(notice)
            self._set_password(spec.dn, initial)
            if lock.get("pwdAccountLockedTime"):
                self._set_lock(spec.dn, True, lock["mailstateLockReason"][0])
            return
        if code == ALREADY_EXISTS:
            found = self.get(kind, key)
            if found is None:  # pragma: no cover - deleted between the two calls
                raise self._fail(f"cannot add {spec.dn}", "it exists and does not")
            classes = missing_classes(found[1], spec.object_classes)
            if classes:
                self._modify(spec.dn, {"objectClass": [(MODIFY_ADD, classes)]})
            self._modify(spec.dn, modifications(found[1], {**spec.attrs, **lock}))
        if kind == "person" and not self._has_password(spec.dn):
            # setting a password clears ppolicy's pwdAccountLockedTime: lock again afterwards
            if self._initial_password(key, spec.dn, attrs.get("address")) and lock.get(
                "pwdAccountLockedTime"
            ):
                self._set_lock(spec.dn, True, lock["mailstateLockReason"][0])

    def _has_password(self, dn: str) -> bool:
        result = self._call(
            f"read {dn}", self.conn.search, dn, "(userPassword=*)", search_scope=BASE, attributes=["1.1"]
        )
        return result.get("result") == SUCCESS and any(
            r.get("type") == "searchResEntry" for r in self.conn.response or []
        )

    def _new_password(self, key: str, address: str | None) -> str | None:
        """A generated initial password for a new person (None when there is no file to record it in)."""
        if self.passwords_out is None:
            return None
        accounts = [key] + ([address.split("@", 1)[0]] if address else [])
        return generate_password(self.password_policy, accounts)

    def _no_password_notice(self, key: str) -> None:
        self.notices.append(f"person {key}: created without a password (no initial-password file was given)")

    def _record_password(self, key: str, dn: str, address: str | None, password: str) -> None:
        """Append the password just set by the add to the operator's file; when that fails, take the
        password away again (the person is then one without a password, given one by the next apply)."""
        assert self.passwords_out is not None
        try:
            append_password(self.passwords_out, key, address, password)
        except ProviderError:
            with suppress(ProviderError):
                self._modify_operational(dn, {"userPassword": [(MODIFY_DELETE, [])]})
            raise

    def _initial_password(self, key: str, dn: str, address: str | None) -> bool:
        """Generate, record (0600 file) and set the password of a person found without one (an apply
        stopped after the add); False when there is no file."""
        password = self._new_password(key, address)
        if password is None or self.passwords_out is None:
            self._no_password_notice(key)
            return False
        append_password(self.passwords_out, key, address, password)
        self._set_password(dn, password)
        return True

    def _stored_hashed(self, dn: str) -> bool:
        """Whether the entry's userPassword is stored hashed ("{SSHA}…"); records the answer for the run."""
        self._call(f"read {dn}", self.conn.search, dn, "(objectClass=*)", search_scope=BASE,
                   attributes=["userPassword"])
        values: list[Any] = []
        for r in self.conn.response or []:
            if r.get("type") == "searchResEntry":
                got = (r.get("raw_attributes") or {}).get("userPassword") or (r.get("attributes") or {}).get(
                    "userPassword") or []
                values = [v if isinstance(v, bytes) else str(v).encode() for v in got]
        hashed_ = bool(values) and all(v.startswith(b"{") for v in values)
        self.password_in_add = hashed_
        return hashed_

    def _set_password(self, dn: str, password: str) -> None:
        """Set a password through Password Modify (slapd hashes it), and pwdReset as the policy says."""
        try:
            self.conn.extend.standard.modify_password(user=dn, new_password=password)
        except LDAPException as exc:
            self._conn = None
            raise self._fail(f"cannot set the initial password of {dn}", type(exc).__name__) from None
        result = dict(self.conn.result or {})
        if result.get("result") != SUCCESS:
            raise self._fail(
                f"cannot set the initial password of {dn}", result.get("description") or "failed"
            )
        want_reset = self.password_policy.change_at_first_login
        self._modify_operational(dn, {"pwdReset": [(MODIFY_REPLACE, ["TRUE"] if want_reset else [])]})

    def _modify_operational(self, dn: str, changes: dict[str, list[tuple[Any, list[str]]]]) -> None:
        result = self._call(f"modify {dn}", self.conn.modify, dn, changes)
        code = result.get("result")
        if code == 16 and all(
            v == [] for ops in changes.values() for _, v in ops
        ):  # noSuchAttribute on removal
            return
        if code != SUCCESS:
            raise self._fail(
                f"cannot modify {dn} ({', '.join(changes)})", result.get("description") or result
            )

    def _set_lock(self, dn: str, locked: bool, reason: str | None) -> None:
        """Lock or unlock in one modify (replacing with the same value or with nothing is idempotent)."""
        wanted = lock_values(locked, reason)
        changes = {name: [(MODIFY_REPLACE, values)] for name, values in wanted.items()}
        result = self._call(f"modify {dn}", self.conn.modify, dn, changes)
        if result.get("result") == NO_SUCH_OBJECT:
            raise self._fail(f"cannot {'lock' if locked else 'unlock'} {dn}", "no such entry")
        if result.get("result") != SUCCESS:
            raise self._fail(f"cannot {'lock' if locked else 'unlock'} {dn}", result)

    def _update(self, change: Change) -> None:
        kind, key = change.kind, change.key
        after = dict(change.after or {})
        dn = dn_of(kind, key, self.base_dn)
        gone = ProviderError(
            f"{change.id}: cannot update {kind} {key}: {dn} no longer exists "
            "(the live state changed since the plan: plan again)"
        )
        # a reason-only change needs the live lock state: read first
        reason_only = "lock_reason" in after and "locked" not in after
        direct = None if reason_only else direct_values(kind, after)
        if direct is not None:
            # every field maps to its own attribute: replace them, no read needed
            if direct:
                changes = {name: [(MODIFY_REPLACE, values)] for name, values in direct.items()}
                result = self._call(f"modify {dn}", self.conn.modify, dn, changes)
                if result.get("result") == NO_SUCH_OBJECT:
                    raise gone
                if result.get("result") != SUCCESS:
                    raise self._fail(f"cannot modify {dn} ({', '.join(changes)})", result)
            locked: bool | None = after.get("locked") if "locked" in after else None
        else:
            found = self.get(kind, key)
            if found is None:
                raise gone
            live = PARSERS[kind](found[1], found[0])
            merged = {k: v for k, v in live.attrs.items() if not k.startswith("_")}
            merged.update(after)
            # a changed full name re-derives given/family unless the change names them
            if kind == "person" and "name" in after:
                for part in ("given", "family"):
                    if part not in after:
                        merged[part] = None
            spec = build_entry(kind, key, merged, self.base_dn)
            classes = missing_classes(found[1], spec.object_classes)
            if classes:
                self._modify(spec.dn, {"objectClass": [(MODIFY_ADD, classes)]})
            self._modify(spec.dn, modifications(found[1], spec.attrs))
            locked = bool(merged.get("locked"))
        if kind in ("person", "unit_mailbox") and ("locked" in after or "lock_reason" in after):
            self._set_lock(dn, bool(locked), _lock_reason(after, change.reasons) if locked else None)

    def _lock(self, change: Change, *, locked: bool) -> None:
        if change.kind not in ("person", "unit_mailbox"):
            raise ProviderError(
                f"{change.id}: only people and unit mailboxes can be locked, not a {change.kind}"
            )
        after = change.after or {}
        reason = _lock_reason(after, change.reasons)
        self._set_lock(dn_of(change.kind, change.key, self.base_dn), locked, reason)

    def _delete(self, kind: str, key: str) -> None:
        dn = dn_of(kind, key, self.base_dn)
        result = self._call(f"delete {dn}", self.conn.delete, dn)
        if result.get("result") not in (SUCCESS, NO_SUCH_OBJECT):
            raise self._fail(f"cannot delete {dn}", result)

    def _rename(self, change: Change) -> None:
        """A record whose key changes (e.g. an alias's address): move the entry, then set its attributes."""
        old_key = (change.before or {}).get("key")
        new_key = (change.after or {}).get("key") or change.key
        if old_key and old_key != new_key:
            old_dn = dn_of(change.kind, old_key, self.base_dn)
            rdn_attr = CONTAINERS[change.kind][1]
            result = self._call(
                f"rename {old_dn}",
                self.conn.modify_dn,
                old_dn,
                f"{rdn_attr}={escape_rdn(new_key)}",
                delete_old_dn=True,
            )
            code = result.get("result")
            if code == NO_SUCH_OBJECT and self.get(change.kind, new_key) is not None:
                pass  # already renamed
            elif code != SUCCESS:
                raise self._fail(f"cannot rename {old_dn}", result)
        attrs = {k: v for k, v in (change.after or {}).items() if k != "key"}
        if attrs:
            self._update(
                Change(
                    change.id,
                    Action.UPDATE,
                    change.kind,
                    new_key,
                    change.provider,
                    None,
                    attrs,
                    change.reasons,
                )
            )

    # ----------------------------------------------------------------------------------------------
    # The apply lock (docs/operations.md, apply lock)

    @property
    def lock_dn(self) -> str:
        return safe_dn(f"cn=apply-lock,ou=system,{self.base_dn}")
