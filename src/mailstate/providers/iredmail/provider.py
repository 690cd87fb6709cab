"""The iredmail provider: the directory's kinds (people, unit mailboxes, groups, aliases, units) on an
iRedMail server's own layout, so that its Postfix, Dovecot and admin panel keep working (docs/iredmail.md).

Configured by ``[providers.iredmail]`` (the settings of ``[providers.ldap]``, and the same MAILSTATE_LDAP_*
variables; it replaces the ldap provider). ``read`` is one paged subtree search per container of the
domain; the mapping is pure (providers/iredmail/parse.py). ``apply`` carries out one change idempotently:
an entry is made as iRedMail's admin panel makes it (object classes, services, mailbox path), a list's
membership written on its members (``memberOfGroup``), an address change is iRedMail's rename (``modrdn``
to ``mail=<new>``, the mailbox does not move, lists naming the old address rewritten).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from ldap3 import BASE, HASHED_SALTED_SHA, MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, SUBTREE
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn
from ldap3.utils.hashed import hashed

from mailstate.errors import ChangeRefused, ProviderError
from mailstate.ldapconn import (
    ALREADY_EXISTS,
    NO_SUCH_ATTRIBUTE,
    NO_SUCH_OBJECT,
    SUCCESS,
    TYPE_OR_VALUE_EXISTS,
    LdapSession,
)
from mailstate.model.change import Action, Change
from mailstate.model.passwords import append_password, generate_password
from mailstate.model.provider import DesiredState, Snapshot
from mailstate.model.settings import IredmailSettings
from mailstate.providers.iredmail import parse as p


class IredmailProvider(LdapSession):
    """Reads and changes one domain of an iRedMail directory (docs/iredmail.md)."""

    name: ClassVar[str] = "iredmail"
    section = "iredmail"
    kinds: ClassVar[frozenset[str]] = p.KINDS
    settings_model: ClassVar[type[IredmailSettings]] = IredmailSettings
    writes_passwords: ClassVar[bool] = True
    """``from_state`` takes ``passwords_out``: the file the initial passwords of new people go to."""

    def __init__(self, settings: IredmailSettings, *, domain: str, **options: Any) -> None:
        """``options``: base_dn, password, password_policy, passwords_out (LdapSession)."""
        super().__init__(settings, **options)
        self.settings: IredmailSettings = settings
        self.domain = domain.lower()

    @classmethod
    def _state_options(cls, state: DesiredState) -> dict[str, Any]:
        return {"domain": state.domain}

    # ----------------------------------------------------------------------------------------------
    # Tree

    @property
    def domain_dn(self) -> str:
        return f"domainName={escape_rdn(self.domain)},o=domains,{self.base_dn}"

    def container(self, ou: str) -> str:
        """``Users``, ``Groups``, ``Aliases`` (iRedMail's) or ``units``, ``aliases`` (under ou=mailstate)."""
        if ou in ("units", "aliases"):
            return f"ou={ou},ou=mailstate,{self.domain_dn}"
        return f"ou={ou},{self.domain_dn}"

    @property
    def lock_dn(self) -> str:
        """The apply lock: an entry in mailstate's own branch of the domain, which iRedMail never reads."""
        return f"cn=apply-lock,ou=mailstate,{self.domain_dn}"

    def _make_lock_parent(self) -> bool:
        self._ensure_ou(f"ou=mailstate,{self.domain_dn}")
        return True

    def _mail_dn(self, ou: str, address: str) -> str:
        return f"mail={escape_rdn(address)},{self.container(ou)}"

    # ----------------------------------------------------------------------------------------------
    # Connection

    def _op(self, what: str, func: Any, *args: Any, ok: Iterable[int] = (SUCCESS,), **kw: Any) -> int:
        result = self._call(what, func, *args, **kw)
        code = int(result.get("result", -1))
        if code not in ok:
            raise self._fail(what, result)
        return code

    def search(
        self, base: str, filt: str, attributes: list[str], *, scope: Any = SUBTREE
    ) -> list[tuple[str, dict[str, list[str]]]]:
        """Every entry under ``base`` matching ``filt`` (paged, normalised); a missing base is no entries,
        any other shortfall raises: a failed read is never "absent"."""
        return [(dn, p.normalize(e)) for dn, e in self.search_all(base, filt, attributes, scope=scope)]

    # ----------------------------------------------------------------------------------------------
    # Reading

    def _entries(self) -> p.DomainEntries:
        if not self.search(self.domain_dn, "(objectClass=mailDomain)", ["domainName"], scope=BASE):
            raise ProviderError(
                f"iredmail: no domain {self.domain} under o=domains,{self.base_dn}: is this "
                "an iRedMail directory, and the organisation's domain right?"
            )
        found = p.DomainEntries()
        for attr, ou, filt, names in (
            ("users", "Users", "(objectClass=mailUser)", p.USER_ATTRS),
            ("lists", "Groups", "(objectClass=mailList)", p.LIST_ATTRS),
            ("aliases", "Aliases", "(objectClass=mailAlias)", p.ALIAS_ATTRS),
            ("units", "units", "(objectClass=mailstateUnit)", p.UNIT_ATTRS),
            ("expiries", "aliases", "(objectClass=mailstateAlias)", p.EXPIRY_ATTRS),
        ):
            getattr(found, attr).update(dict(self.search(self.container(ou), filt, list(names))))
        return found

    def read(self, scope: Iterable[str] | None = None) -> Snapshot:
        parsed = p.parse_domain(self._entries())
        snap = Snapshot(self.name)
        for rec in parsed.records:
            if rec.ref in snap.records and rec.kind == "alias":
                continue  # the same old address on two entries: the first one read stands
            snap.add(rec)
        snap.unmanaged.extend(parsed.unmanaged)
        return snap

    def _user(self, key: str) -> tuple[str, dict[str, list[str]]] | None:
        found = self.search(
            self.container("Users"),
            f"(&(objectClass=mailUser)(uid={escape_filter_chars(key)}))",
            p.USER_ATTRS,
        )
        if len(found) > 1:
            raise ChangeRefused(f"iredmail: {len(found)} mail users have uid {key}: fix the directory first")
        return found[0] if found else None

    def _by_mail(self, ou: str, address: str, names: list[str]) -> tuple[str, dict[str, list[str]]] | None:
        f = escape_filter_chars(address)
        found = self.search(self.container(ou), f"(|(mail={f})(shadowAddress={f}))", names)
        return found[0] if found else None

    # ----------------------------------------------------------------------------------------------
    # Applying

    def apply(self, change: Change) -> None:
        if change.kind not in p.KINDS:
            raise ProviderError(f"the iredmail provider does not manage {change.kind!r} ({change.id})")
        handler = {
            "person": self._mailbox,
            "unit_mailbox": self._mailbox,
            "group": self._group,
            "alias": self._alias,
            "unit": self._unit,
        }[change.kind]
        handler(change)

    def _modify(self, dn: str, values: Mapping[str, list[str]]) -> None:
        if values:
            self._op(
                f"modify {dn} ({', '.join(values)})",
                self.conn.modify,
                dn,
                {k: [(MODIFY_REPLACE, list(v))] for k, v in values.items()},
            )

    def _add(self, dn: str, classes: Iterable[str], attrs: Mapping[str, list[str]]) -> int:
        body = {k: v for k, v in attrs.items() if v}
        return self._op(f"add {dn}", self.conn.add, dn, list(classes), body, ok=(SUCCESS, ALREADY_EXISTS))

    def _ensure_ou(self, dn: str) -> None:
        ou = dn.split(",", 1)[0].split("=", 1)[1]
        self._op(
            f"add {dn}", self.conn.add, dn, ["organizationalUnit"], {"ou": ou}, ok=(SUCCESS, ALREADY_EXISTS)
        )

    # people and unit mailboxes ----------------------------------------------------------------------

    def _mailbox(self, change: Change) -> None:
        found = self._user(change.key)
        if change.action is Action.DELETE:
            if found is not None:
                # its lists keep naming it (as the TOML does until it is taken out), on the list itself
                ref = f"unit:{change.key}" if change.kind == "unit_mailbox" else change.key
                for group in p.addrs(found[1].get("memberofgroup", [])):
                    listed = self._by_mail("Groups", group, ["objectClass", "mailstateMember"])
                    if listed is not None:
                        self._keep_members(listed[0], sorted({*listed[1].get("mailstatemember", []), ref}))
                self._op(f"delete {found[0]}", self.conn.delete, found[0], ok=(SUCCESS, NO_SUCH_OBJECT))
            return
        if found is None:
            if change.action is not Action.CREATE:
                raise ProviderError(
                    f"{change.id}: {change.kind} {change.key} is not in the directory "
                    "(the live state changed since the plan: plan again)"
                )
            self._create_mailbox(change)
            return
        dn, entry = found
        kind = change.kind
        live = next(
            (r for r in p.parse_domain(p.DomainEntries(users={dn: entry})).records if r.kind == kind), None
        )
        merged = {k: v for k, v in (live.attrs if live else {}).items() if not k.startswith("_")}
        merged.update({k: v for k, v in (change.after or {}).items() if not k.startswith("_")})
        if kind == "person" and "name" in (change.after or {}):
            for part in ("given", "family"):
                if part not in (change.after or {}):
                    merged[part] = None
        if change.action is Action.LOCK:
            merged["locked"] = True
        elif change.action is Action.UNLOCK:
            merged["locked"] = False
        if (change.after or {}).get("refuse_mail"):
            # mail is refused only to a locked leaver: the plan may apply this before or after the lock
            # change itself (two changes of one entry), and either order must end disabled
            merged["locked"] = True
        address = p.addr(merged.get("address"))
        old = p.addr(p._one(entry, "mail"))
        if address and old and address != old:
            dn = self._rename_mail(dn, "Users", old, address)
        wanted = p.user_attrs(kind, change.key, merged)
        wanted["shadowAddress"] = self._shadow_values(merged.get("aliases") or (), address)
        if any(
            f in (change.after or {}) for f in ("locked", "lock_reason", "refuse_mail")
        ) or change.action in (Action.LOCK, Action.UNLOCK):
            reason = merged.get("lock_reason") or "; ".join(str(r) for r in change.reasons) or None
            wanted.update(
                p.lock_attrs(
                    bool(merged.get("locked")),
                    merged.get("refuse_mail"),
                    reason,
                    entry.get("enabledservice", []),
                    p.is_active(entry),
                )
            )
        missing = [
            c for c in p.USER_CLASSES if c.lower() not in {x.lower() for x in entry.get("objectclass", [])}
        ]
        if missing:
            self._op(f"modify {dn}", self.conn.modify, dn, {"objectClass": [(MODIFY_ADD, missing)]})
        self._modify(dn, p.changed(entry, wanted))

    def _shadow_values(self, aliases: Iterable[str], address: str | None) -> list[str]:
        """A mailbox's kept old addresses as ``shadowAddress``, minus those a ``mailAlias`` entry holds."""
        own_entries = {
            p.addr(p._one(e, "mail"))
            for _, e in self.search(self.container("Aliases"), "(objectClass=mailAlias)", ["mail"])
        }
        return sorted({a for a in p.addrs(aliases) if a != address and a not in own_entries})

    def _create_mailbox(self, change: Change) -> None:
        a = dict(change.after or {})
        address = p.addr(a.get("address"))
        if not address:
            raise ChangeRefused(f"{change.id}: {change.kind} {change.key} has no address")
        local = p.local_part(address)
        store = f"{self.settings.storage_node}/" + p.maildir_path(
            self.domain, local, time.strftime("%Y.%m.%d.%H.%M.%S")
        )
        attrs = p.user_attrs(change.kind, change.key, a)
        attrs.update(
            {
                "storageBaseDirectory": [self.settings.storage_base],
                "mailMessageStore": [store],
                "homeDirectory": [f"{self.settings.storage_base}/{store}"],
                "enabledService": list(p.USER_SERVICES),
                "accountStatus": ["active"],
                "shadowLastChange": [str(int(time.time()) // 86400)],
                "shadowAddress": sorted(x for x in p.addrs(a.get("aliases") or ()) if x != address),
            }
        )
        if "locked" in a:
            reason = a.get("lock_reason") or "; ".join(str(r) for r in change.reasons) or None
            attrs.update(p.lock_attrs(bool(a["locked"]), a.get("refuse_mail"), reason, p.USER_SERVICES))
        if change.kind == "unit_mailbox":  # used through delegation only: a random password nobody keeps
            attrs["userPassword"] = [hashed(HASHED_SALTED_SHA, secrets.token_urlsafe(32))]
        dn = self._mail_dn("Users", address)
        code = self._add(dn, p.USER_CLASSES, attrs)
        if code == ALREADY_EXISTS:
            raise ChangeRefused(f"{change.id}: {dn} exists with another uid: the address is taken")
        if change.kind == "person":
            self._initial_password(change.key, dn, address)

    def _initial_password(self, key: str, dn: str, address: str) -> None:
        if self.passwords_out is None:
            self.notices.append(
                f"person {key}: created without a password (no initial-password file was given)"
            )
            return
        password = generate_password(self.password_policy, [key, p.local_part(address)])
        append_password(self.passwords_out, key, address, password)
        try:
            self.conn.extend.standard.modify_password(user=dn, new_password=password)
        except LDAPException as exc:
            self._conn = None
            raise self._fail(f"cannot set the initial password of {dn}", type(exc).__name__) from None
        if (self.conn.result or {}).get("result") != SUCCESS:
            raise self._fail(f"cannot set the initial password of {dn}", self.conn.result or {})

    def _rename_mail(self, dn: str, ou: str, old: str, new: str) -> str:
        """iRedMail's rename of an address: the entry moves to ``mail=<new>`` (its mailbox stays where it
        is), ``mail`` follows, and every ``memberOfGroup`` naming the old address names the new one."""
        new_dn = self._mail_dn(ou, new)
        self._op(
            f"rename {dn}",
            self.conn.modify_dn,
            dn,
            f"mail={escape_rdn(new)}",
            delete_old_dn=True,
            ok=(SUCCESS, ALREADY_EXISTS),
        )
        self._modify(new_dn, {"mail": [new]})
        f = escape_filter_chars(old)
        for member_dn, _ in self.search(f"o=domains,{self.base_dn}", f"(memberOfGroup={f})", ["1.1"]):
            self._op(
                f"modify {member_dn}",
                self.conn.modify,
                member_dn,
                {"memberOfGroup": [(MODIFY_DELETE, [old]), (MODIFY_ADD, [new])]},
                ok=(SUCCESS, TYPE_OR_VALUE_EXISTS, NO_SUCH_ATTRIBUTE),
            )
        return new_dn

    # groups -----------------------------------------------------------------------------------------

    def _member_dn(self, ref: str) -> str | None:
        if ref.startswith("group:"):
            found = self.search(self.container("Groups"), f"(mail={escape_filter_chars(ref[6:])}@*)", ["1.1"])
            return found[0][0] if found else None
        user = self._user(ref.removeprefix("unit:"))
        return user[0] if user else None

    def _set_membership(self, address: str, members: Iterable[str], list_dn: str | None = None) -> None:
        """Exactly ``members`` carry ``memberOfGroup: <address>``; those without an entry of their own (a
        person removed while the TOML still lists them) are kept on the list entry (``mailstateMember``)."""
        f = escape_filter_chars(address)
        have = {
            dn.lower(): dn
            for dn, _ in self.search(f"o=domains,{self.base_dn}", f"(memberOfGroup={f})", ["1.1"])
        }
        want: dict[str, str] = {}
        kept: list[str] = []
        for ref in members:
            dn = self._member_dn(ref)
            if dn is None:
                if list_dn is None:
                    raise ChangeRefused(f"group {address}: member {ref} is not in the directory")
                kept.append(ref)
                continue
            want[dn.lower()] = dn
        if list_dn is not None:
            self._keep_members(list_dn, sorted(kept))
        for low, dn in have.items():
            if low not in want:
                self._op(
                    f"modify {dn}",
                    self.conn.modify,
                    dn,
                    {"memberOfGroup": [(MODIFY_DELETE, [address])]},
                    ok=(SUCCESS, NO_SUCH_ATTRIBUTE),
                )
        for low, dn in want.items():
            if low not in have:
                self._op(
                    f"modify {dn}",
                    self.conn.modify,
                    dn,
                    {"memberOfGroup": [(MODIFY_ADD, [address])]},
                    ok=(SUCCESS, TYPE_OR_VALUE_EXISTS),
                )

    def _keep_members(self, list_dn: str, kept: list[str]) -> None:
        found = self.search(list_dn, "(objectClass=*)", ["objectClass", "mailstateMember"], scope=BASE)
        entry = found[0][1] if found else {}
        if sorted(entry.get("mailstatemember", [])) == kept:
            return
        if kept and "mailstategroup" not in {c.lower() for c in entry.get("objectclass", [])}:
            self._op(f"modify {list_dn}", self.conn.modify, list_dn,
                     {"objectClass": [(MODIFY_ADD, ["mailstateGroup"])]})
        self._modify(list_dn, {"mailstateMember": kept})

    def _group(self, change: Change) -> None:
        before, after = dict(change.before or {}), dict(change.after or {})
        old = p.addr(before.get("address")) or f"{change.key}@{self.domain}"
        found = self._by_mail("Groups", old, p.LIST_ATTRS)
        if change.action is Action.DELETE:
            if found is not None:
                self._set_membership(p.addr(p._one(found[1], "mail")) or old, ())
                self._op(f"delete {found[0]}", self.conn.delete, found[0], ok=(SUCCESS, NO_SUCH_OBJECT))
            return
        address = p.addr(after.get("address")) or old
        if found is None:
            found = self._by_mail("Groups", address, p.LIST_ATTRS)
        if found is None:
            attrs = {
                **p.list_attrs(change.key, after),
                "accountStatus": ["active"],
                "enabledService": ["mail", "deliver"],
                "accessPolicy": ["public"],
            }
            dn = self._mail_dn("Groups", address)
            self._add(dn, p.LIST_CLASSES, attrs)
        else:
            dn, entry = found
            live = p.addr(p._one(entry, "mail")) or old
            if live != address:
                dn = self._rename_mail(dn, "Groups", live, address)
            if "name" in after:
                self._modify(dn, p.changed(entry, {"cn": p._v(after.get("name") or change.key)}))
        if "members" in after or change.action is Action.CREATE:
            self._set_membership(address, after.get("members") or (), dn)

    # aliases (kept old addresses) -----------------------------------------------------------------

    def _alias(self, change: Change) -> None:
        key = change.key.lower()
        expiry_dn = f"cn={escape_rdn(key)},{self.container('aliases')}"
        f = escape_filter_chars(key)
        holders = self.search(self.container("Users"), f"(shadowAddress={f})", ["1.1"])
        entry = self.search(self.container("Aliases"), f"(&(objectClass=mailAlias)(mail={f}))", ["1.1"])
        if change.action is Action.DELETE:
            for dn, _ in holders:
                self._op(
                    f"modify {dn}",
                    self.conn.modify,
                    dn,
                    {"shadowAddress": [(MODIFY_DELETE, [key])]},
                    ok=(SUCCESS, NO_SUCH_ATTRIBUTE),
                )
            for dn, _ in entry:
                self._op(f"delete {dn}", self.conn.delete, dn, ok=(SUCCESS, NO_SUCH_OBJECT))
            self._op(f"delete {expiry_dn}", self.conn.delete, expiry_dn, ok=(SUCCESS, NO_SUCH_OBJECT))
            return
        after = dict(change.after or {})
        target = p.addr(after.get("target"))
        if "target" in after and target:
            if entry:
                self._modify(entry[0][0], {"mailForwardingAddress": [target]})
            else:
                owner = self._by_mail("Users", target, ["mail"])
                for dn, _ in holders:
                    if owner is None or dn.lower() != owner[0].lower():
                        self._op(
                            f"modify {dn}",
                            self.conn.modify,
                            dn,
                            {"shadowAddress": [(MODIFY_DELETE, [key])]},
                            ok=(SUCCESS, NO_SUCH_ATTRIBUTE),
                        )
                if owner is not None:  # else the owner is renamed later in this apply and takes it then
                    self._op(
                        f"modify {owner[0]}",
                        self.conn.modify,
                        owner[0],
                        {"shadowAddress": [(MODIFY_ADD, [key])]},
                        ok=(SUCCESS, TYPE_OR_VALUE_EXISTS),
                    )
        if "expires" in after:
            expires = p.iso_to_generalized(after.get("expires"))
            if expires is None:
                self._op(f"delete {expiry_dn}", self.conn.delete, expiry_dn, ok=(SUCCESS, NO_SUCH_OBJECT))
            else:
                self._ensure_ou(f"ou=mailstate,{self.domain_dn}")
                self._ensure_ou(self.container("aliases"))
                code = self._add(expiry_dn, p.EXPIRY_CLASSES, {"cn": [key], "mailstateExpires": [expires]})
                if code == ALREADY_EXISTS:
                    self._modify(expiry_dn, {"mailstateExpires": [expires]})

    # units ------------------------------------------------------------------------------------------

    def _unit(self, change: Change) -> None:
        dn = f"ou={escape_rdn(change.key)},{self.container('units')}"
        if change.action is Action.DELETE:
            self._op(f"delete {dn}", self.conn.delete, dn, ok=(SUCCESS, NO_SUCH_OBJECT))
            return
        found = self.search(dn, "(objectClass=*)", p.UNIT_ATTRS, scope=BASE)
        if not found:
            self._ensure_ou(f"ou=mailstate,{self.domain_dn}")
            self._ensure_ou(self.container("units"))
            self._add(dn, p.UNIT_CLASSES, p.unit_attrs(change.key, dict(change.after or {})))
            return
        live = p.parse_domain(p.DomainEntries(units={dn: found[0][1]})).records[0]
        merged = {k: v for k, v in live.attrs.items() if not k.startswith("_")}
        merged.update(change.after or {})
        wanted = p.unit_attrs(change.key, merged)
        wanted.pop("ou")
        self._modify(dn, p.changed(found[0][1], wanted))
