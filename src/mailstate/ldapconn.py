"""The LDAP mechanics the directory providers share (``ldap`` and ``iredmail``; docs/architecture.md).

- ``resolve_settings``: a provider's LDAP settings with the ``MAILSTATE_LDAP_*`` environment applied, and
  the bind password (never logged).
- ``LdapSession``: the base of a directory provider: TLS always (``ldaps://``, or ``ldap://`` + StartTLS),
  one connection per thread that uses it, errors scrubbed of the password, paged reads that raise on any
  shortfall (a failed read is never "absent"), and the organisation's apply lock held as an entry added
  atomically (``lock_dn``, which each provider places in its own tree).

What the entries mean stays in each provider; this module knows connections, pages and result codes only.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

from ldap3 import BASE, LEVEL, NONE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.protocol.formatters.formatters import format_unicode
from ldap3.protocol.formatters.standard import find_attribute_helpers
from ldap3.strategy import sync as _sync
from ldap3.utils.conv import to_unicode
from ldap3.utils.log import EXTENDED, log_enabled

from mailstate.errors import ChangeRefused, ProviderError
from mailstate.model.i18n import _
from mailstate.model.provider import DesiredState
from mailstate.model.settings import LdapSettings, PasswordPolicy
from mailstate.redact import refuse_userinfo, remember_secret

PAGED_OID = "1.2.840.113556.1.4.319"

# LDAP result codes acted on
SUCCESS, TIME_LIMIT, SIZE_LIMIT, ADMIN_LIMIT = 0, 3, 4, 11
NO_SUCH_ATTRIBUTE, TYPE_OR_VALUE_EXISTS, NO_SUCH_OBJECT, ALREADY_EXISTS = 16, 20, 32, 68

REFUSED_RESULTS = frozenset({19, 20, 21, 34, 50, 53, 64, 65, 66, 67, 69})
"""Result codes by which the server refuses one operation on one entry (constraint, syntax, access, naming,
object class ...): the connection is fine and the other changes of an apply can go on (ChangeRefused)."""

STALE_LOCK_HOURS = 6.0
"""An apply lock older than this may be broken, and only with an explicit flag (break_stale=True)."""

S = TypeVar("S", bound=LdapSettings)


def entry_value(e: Mapping[str, list[str]], name: str) -> str | None:
    """The first value of attribute NAME of an entry read by ``search`` (names lower-cased), or None."""
    values = e.get(name.lower())
    return values[0] if values else None


def single_value(e: Mapping[str, list[str]], name: str) -> str | tuple[str, ...] | None:
    """A field mailstate keeps single-valued: its value, or every distinct value (sorted) when the entry
    holds several (the schema allows it; mailstate never writes it), so the diff sees the extra value
    and the update replaces them with the one wanted."""
    values = e.get(name.lower())
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    distinct = sorted(set(values))
    return tuple(distinct) if len(distinct) > 1 else distinct[0]


def _truthy(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def resolve_settings(
    settings: S, env: Mapping[str, str] | None = None, root: Path | None = None, *, section: str = "ldap"
) -> tuple[S, str | None]:
    """Settings with the MAILSTATE_LDAP_* environment applied, and the bind password (never logged).

    The password is MAILSTATE_LDAP_PASSWORD, else ``password_env``'s variable, else the first line of
    ``password_file`` (relative to ``root``, the state directory). ``section`` names the TOML table
    (``providers.<section>``) in messages.
    """
    env = os.environ if env is None else env
    overrides: dict[str, Any] = {}
    for var, field in (
        ("MAILSTATE_LDAP_URL", "url"),
        ("MAILSTATE_LDAP_BIND_DN", "bind_dn"),
        ("MAILSTATE_LDAP_CA_FILE", "ca_file"),
    ):
        if env.get(var):
            overrides[field] = env[var]
    if "url" in overrides:
        refuse_userinfo("MAILSTATE_LDAP_URL", overrides["url"])
    else:
        refuse_userinfo(f"providers.{section}.url", settings.url)
    for var, field in (
        ("MAILSTATE_LDAP_START_TLS", "start_tls"),
        ("MAILSTATE_LDAP_ALLOW_PLAIN", "allow_plain"),
    ):
        flag = _truthy(env.get(var))
        if flag is not None:
            overrides[field] = flag
    resolved = settings.model_copy(update=overrides)
    password: str | None = env.get("MAILSTATE_LDAP_PASSWORD") or None
    if password is None and resolved.password_env:
        password = env.get(resolved.password_env) or None
    if password is None and resolved.password_file:
        path = Path(resolved.password_file).expanduser()
        if not path.is_absolute() and root is not None:
            path = root / path
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ProviderError(f"cannot read the LDAP password file {path}: {exc.strerror}") from None
        password = lines[0] if lines and lines[0] else None
        if password is None:
            raise ProviderError(f"the LDAP password file {path} is empty")
    remember_secret(password)
    return resolved, password


class LdapSession:
    """Connections, paged reads and the apply lock of one directory provider (see the module)."""

    section: str = "ldap"
    """The provider's TOML table (``providers.<section>``): its settings, and its name in messages."""

    def __init__(
        self,
        settings: LdapSettings,
        *,
        base_dn: str,
        password: str | None,
        password_policy: PasswordPolicy | None = None,
        passwords_out: Path | None = None,
    ) -> None:
        self.settings = settings
        self.base_dn = base_dn
        self._password = password
        self.password_policy = password_policy or PasswordPolicy()
        self.passwords_out = passwords_out
        """The operator's 0600 file the initial passwords of new people go to (None: none are set)."""
        self.notices: list[str] = []
        """Things an operator should know about applied changes (never secrets)."""
        self._local = threading.local()
        self._opened: list[Connection] = []
        """Every connection opened (one per thread that used the provider: apply runs changes on a few
        threads, and an ldap3 connection's last result is per connection), unbound by ``close``."""
        self._opened_lock = threading.Lock()
        self._check_transport()

    @classmethod
    def from_state(
        cls, state: DesiredState, *, passwords_out: Path | None = None, env: Mapping[str, str] | None = None
    ) -> Self:
        settings, password = resolve_settings(
            getattr(state.providers, cls.section), env, root=state.root, section=cls.section
        )
        return cls(
            settings,
            base_dn=state.base_dn,
            password=password,
            password_policy=state.password,
            passwords_out=passwords_out,
            **cls._state_options(state),
        )

    @classmethod
    def _state_options(cls, state: DesiredState) -> dict[str, Any]:
        """What else a provider's constructor takes from the desired state."""
        return {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------------
    # Connection

    @property
    def url(self) -> str:
        return self.settings.url

    def _check_transport(self) -> None:
        parts = urlsplit(self.settings.url)
        if parts.scheme not in ("ldap", "ldaps"):
            raise ProviderError(f"LDAP url {self.settings.url!r}: the scheme must be ldaps:// or ldap://")
        if parts.scheme == "ldap" and not self.settings.start_tls and not self.settings.allow_plain:
            raise ProviderError(
                f"LDAP url {self.settings.url} is plain ldap:// without StartTLS: use ldaps://, set "
                f"start_tls = true, or (never in production) allow_plain = true in [providers.{self.section}]"
            )
        if not parts.hostname:
            raise ProviderError(f"LDAP url {self.settings.url!r} names no host")

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _fail(self, what: str, exc: object) -> ProviderError:
        if isinstance(exc, Mapping) and exc.get("result") in REFUSED_RESULTS:
            return ChangeRefused(self._fail(what, dict(exc, result=None)).args[0])
        if isinstance(exc, Mapping):
            desc = str(exc.get("description") or exc.get("result") or "failed")
            if exc.get("message"):
                desc += f" ({exc['message']})"
            exc = desc
        return ProviderError(self._scrub(f"LDAP {self.settings.url}: {what}: {exc}"))

    @property
    def _conn(self) -> Connection | None:
        """This thread's connection (None: not opened yet, or dropped after a failure)."""
        conn: Connection | None = getattr(self._local, "conn", None)
        return conn

    @_conn.setter
    def _conn(self, conn: Connection | None) -> None:
        self._local.conn = conn

    @property
    def conn(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
            with self._opened_lock:
                self._opened = [c for c in self._opened if not c.closed]
                self._opened.append(self._conn)
        return self._conn

    def _connect(self) -> Connection:
        s = self.settings
        parts = urlsplit(s.url)
        use_ssl = parts.scheme == "ldaps"
        port = parts.port or (636 if use_ssl else 389)
        tls = None
        if use_ssl or s.start_tls:
            ca_file = str(Path(s.ca_file).expanduser()) if s.ca_file else None
            if ca_file and not Path(ca_file).is_file():
                raise ProviderError(f"LDAP CA file {ca_file} does not exist")
            tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file, version=ssl.PROTOCOL_TLS_CLIENT)
        server = Server(
            parts.hostname or "",
            port=port,
            use_ssl=use_ssl,
            tls=tls,
            get_info=NONE,
            connect_timeout=max(1, int(s.timeout)),
        )
        conn = Connection(
            server,
            user=s.bind_dn,
            password=self._password,
            receive_timeout=max(1, int(s.timeout)),
            raise_exceptions=False,
            auto_referrals=False,
            return_empty_attributes=False,
        )
        _decode_entries_lean(conn)
        try:
            conn.open()
            if conn.closed:
                raise self._fail("cannot connect", conn.last_error or "connection closed")
            if s.start_tls and not use_ssl and not conn.start_tls():
                raise self._fail("StartTLS failed", conn.result.get("description") if conn.result else "")
            if s.bind_dn and not conn.bind():
                desc = (conn.result or {}).get("description", "bind failed")
                raise self._fail(f"cannot bind as {s.bind_dn}", desc)
        except ProviderError:
            raise
        except Exception as exc:  # ldap3 raises LDAPException, OSError, ssl errors alike here
            try:
                conn.unbind()
            except Exception:
                pass
            raise self._fail("cannot connect", exc) from None
        return conn

    def close(self) -> None:
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            try:
                conn.unbind()
            except LDAPException:
                pass
        self._conn = None

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Run one ldap3 operation; return its result dict; connection-level failures → ProviderError."""
        owner = getattr(func, "__self__", None)
        conn = owner if isinstance(owner, Connection) else self._conn
        try:
            func(*args, **kwargs)
        except (LDAPException, OSError) as exc:
            self._conn = None
            raise self._fail(what, exc) from None
        result = dict((conn.result if conn is not None else None) or {})
        if not result and conn is not None and conn.closed:
            self._conn = None
            raise self._fail(what, conn.last_error or "the server closed the connection")
        return result

    def read_entry(
        self, dn: str, attributes: list[str], filt: str = "(objectClass=*)"
    ) -> tuple[int, tuple[str, dict[str, Any]] | None]:
        """The result code of a base read of ``dn``, and the entry when it matches ``filt``."""
        result = self._call(
            f"read {dn}",
            self.conn.search,
            dn,
            filt,
            search_scope=BASE,
            attributes=attributes,
            time_limit=int(self.settings.timeout),
        )
        code = int(result.get("result", -1))
        for r in (self.conn.response or []) if code == SUCCESS else []:
            if r.get("type") == "searchResEntry":
                return code, (r["dn"], dict(r["attributes"]))
        if code not in (SUCCESS, NO_SUCH_OBJECT):
            raise self._fail(f"cannot read {dn}", result)
        return code, None

    def search_all(
        self, base: str, filt: str, attributes: list[str], *, scope: Any = LEVEL, size_limit: int = 0
    ) -> list[tuple[str, dict[str, Any]]]:
        """Every entry under ``base`` (one level, or ``scope``) matching ``filt``, page by page. A missing
        base is no entries; any shortfall (size, time or admin limit, a short page) raises."""
        conn = self.conn
        out: list[tuple[str, dict[str, Any]]] = []
        cookie: Any = None
        pages = 0
        while True:
            result = self._call(
                f"search {base}",
                conn.search,
                base,
                filt,
                search_scope=scope,
                attributes=attributes,
                paged_size=self.settings.page_size,
                paged_cookie=cookie,
                size_limit=size_limit,
                time_limit=int(self.settings.timeout),
            )
            code = result.get("result")
            entries = [
                (r["dn"], dict(r["attributes"]))
                for r in conn.response or []
                if r.get("type") == "searchResEntry"
            ]
            if code == SIZE_LIMIT:
                raise self._fail(
                    f"search of {base} truncated",
                    f"sizeLimitExceeded after {len(out) + len(entries)} entries "
                    "(raise the service account's size.pr/size.prtotal limits in slapd)",
                )
            if code == TIME_LIMIT:
                raise self._fail(f"search of {base} timed out", "timeLimitExceeded")
            if code == ADMIN_LIMIT:
                raise self._fail(
                    f"search of {base} refused",
                    f"adminLimitExceeded (is page_size {self.settings.page_size} above the size.pr limit?)",
                )
            if code == NO_SUCH_OBJECT:
                if pages == 0:
                    return []
                raise self._fail(f"search of {base} failed", "the base vanished during the read")
            if code != SUCCESS:
                raise self._fail(f"search of {base} failed", result.get("description") or code)
            pages += 1
            out.extend(entries)
            control = (result.get("controls") or {}).get(PAGED_OID) or {}
            cookie = (control.get("value") or {}).get("cookie")
            if not cookie:
                break
            if len(entries) < self.settings.page_size:
                # slapd sends a full page unless it is the last one: a short page with a cookie
                # means a limit cut the result short.
                raise self._fail(
                    f"search of {base} truncated", f"a page of {len(entries)} entries before the end"
                )
        return out

    # ----------------------------------------------------------------------------------------------
    # The apply lock (docs/operations.md, apply lock)

    @property
    def lock_dn(self) -> str:
        """Where the apply lock entry stands (each provider's own tree)."""
        raise NotImplementedError

    def _make_lock_parent(self) -> bool:
        """Create the lock entry's parent when the tree lacks it; False: it cannot be made here."""
        return False

    @contextmanager
    def apply_lock(
        self, holder: str, *, break_stale: bool = False, stale_after_hours: float = STALE_LOCK_HOURS
    ) -> Iterator[None]:
        """Hold the organisation's apply lock (an entry added atomically) for the ``with`` block."""
        since = datetime.now(UTC).replace(microsecond=0)
        description = f"{holder} since {since.isoformat()}"
        attrs = {"cn": "apply-lock", "description": description}
        made_parent = False
        attempt = 0
        while attempt < 2:
            result = self._call(
                f"add {self.lock_dn}", self.conn.add, self.lock_dn, ["applicationProcess"], attrs
            )
            code = result.get("result")
            if code == SUCCESS:
                break
            if code == NO_SUCH_OBJECT and not made_parent and self._make_lock_parent():
                made_parent = True
                continue
            if code != ALREADY_EXISTS:
                raise self._fail("cannot take the apply lock", result)
            other, age = self._lock_holder()
            if age is None and attempt == 0:
                attempt += 1
                continue  # the lock vanished between the add and the read: try once more
            stale = age is not None and age >= stale_after_hours * 3600
            if attempt == 0 and break_stale and stale:
                self._call(f"delete {self.lock_dn}", self.conn.delete, self.lock_dn)
                self.notices.append(_("broke a stale apply lock: {holder}").format(holder=other))
                attempt += 1
                continue
            hint = (
                _("it is older than {hours} hours: if that apply is dead, break the lock explicitly "
                  "(--break-lock)")
                if stale
                else _("wait for it to finish (a lock older than {hours} hours can be broken with "
                       "--break-lock)")
            ).format(hours=f"{stale_after_hours:g}")
            raise ProviderError(
                _("another apply is running: {holder}; {hint}").format(holder=other, hint=hint))
        else:
            raise self._fail("cannot take the apply lock", "it was taken and released twice meanwhile")
        try:
            yield
        except BaseException:
            with suppress(Exception):  # never hide the real error behind a failed release
                self._release_lock(description)
            raise
        self._release_lock(description)

    def _release_lock(self, description: str) -> None:
        other, _ = self._lock_holder()
        if other == description:
            self._call(f"delete {self.lock_dn}", self.conn.delete, self.lock_dn)

    def _lock_holder(self) -> tuple[str, float | None]:
        try:
            code, found = self.read_entry(self.lock_dn, ["description", "createTimestamp"])
        except ProviderError:
            code, found = -1, None
        if code != SUCCESS:
            return "(unknown holder: the lock entry vanished)", None
        if found is None:
            return "(unknown holder)", None
        e = {str(k).lower(): v for k, v in found[1].items()}
        desc = _first(e.get("description")) or "(no description)"
        created = _first(e.get("createtimestamp")) or ""
        age = None
        if created:
            try:
                when = datetime.strptime(created[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
                age = (datetime.now(UTC) - when).total_seconds()
            except ValueError:
                age = None
        return desc, age


_FORMATTERS: dict[str, Any] = {}
"""ldap3's formatter of each attribute name (looked up once, not once per value of every entry)."""

_NAMES: dict[bytes, tuple[str, Any]] = {}
"""Each attribute name as the server sends it → (its text, its formatter): decoded once, not per entry."""


def _formatter(name: str) -> Any:
    found = _FORMATTERS.get(name)
    if found is None:
        helpers = find_attribute_helpers(None, name, None)
        found = helpers if not isinstance(helpers, tuple) else (helpers[0] or format_unicode)
        _FORMATTERS[name] = found
    return found


def _attribute_name(raw: bytes) -> tuple[str, Any]:
    found = _NAMES.get(raw)
    if found is None:
        name = to_unicode(raw, from_server=True)
        found = _NAMES[bytes(raw)] = (name, _formatter(name))
    return found


def _text_values(fmt: Any, values: list[bytes]) -> list[Any]:
    """The values as ``fmt`` gives them; UTF-8 text (ldap3's format_unicode) decoded in one go, a value
    that is not UTF-8 kept as bytes as format_unicode keeps it."""
    if fmt is format_unicode:
        try:
            return [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            pass
    return [fmt(v) for v in values]


def _dn_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # ldap3's chain of other server encodings
        text: str = to_unicode(raw, from_server=True)
        return text


# --------------------------------------------------------------------------------------------------
# Search result entries decoded in one pass over their bytes


class _Decoded(bytes):
    """A search result entry message (its bytes, as ldap3 received it) already decoded by ``_entry_of``:
    ldap3's ``decode_message_fast``, wrapped below, hands ``entry`` over instead of decoding it again."""

    message_id: int
    entry: dict[str, Any]


def _length(data: bytes, i: int) -> tuple[int, int]:
    """A BER definite length at ``i``: (length, index after it)."""
    first = data[i]
    if first < 0x80:
        return first, i + 1
    n = first & 0x7F
    if not 0 < n <= 4:
        raise ValueError("unsupported BER length")
    return int.from_bytes(data[i + 1 : i + 1 + n], "big"), i + 1 + n


def _entry_of(data: bytes) -> _Decoded | None:
    """``data`` decoded when it is an LDAP message holding a SearchResultEntry and nothing else (RFC 4511
    4.5.2: messageID, [APPLICATION 4] {objectName, SEQUENCE OF {type, SET OF value}}, no controls), with
    the entry dict ``decode`` below gives; None for any other message or any byte out of that shape (ldap3
    then decodes it, and fails on it, as always). ldap3's general decoder walks every element through
    tables and slices; this one reads the one shape a directory read receives ten thousand times."""
    try:
        if data[0] != 0x30:
            return None
        length, i = _length(data, 1)
        end = i + length
        if end != len(data) or data[i] != 0x02:
            return None
        size, i = _length(data, i + 1)
        message_id = int.from_bytes(data[i : i + size], "big", signed=True)
        i += size
        if data[i] != 0x64:
            return None
        length, i = _length(data, i + 1)
        if i + length != end or data[i] != 0x04:  # controls after the entry: ldap3's way
            return None
        length, i = _length(data, i + 1)
        raw_dn = data[i : i + length]
        i += length
        if data[i] != 0x30:
            return None
        length, i = _length(data, i + 1)
        if i + length != end:
            return None
        raw: dict[str, list[bytes]] = {}
        attributes: dict[str, Any] = {}
        while i < end:
            if data[i] != 0x30:
                return None
            length, i = _length(data, i + 1)
            stop = i + length
            if data[i] != 0x04:
                return None
            length, i = _length(data, i + 1)
            name, fmt = _attribute_name(data[i : i + length])
            i += length
            if data[i] != 0x31:
                return None
            length, i = _length(data, i + 1)
            if i + length != stop:
                return None
            values: list[bytes] = []
            while i < stop:
                if data[i] != 0x04:
                    return None
                length, i = _length(data, i + 1)
                values.append(data[i : i + length])
                i += length
            if i != stop:
                return None
            raw[name] = values
            attributes[name] = _text_values(fmt, values)
        if i != end:
            return None
    except (IndexError, ValueError):
        return None
    decoded = _Decoded(data)
    decoded.message_id = message_id
    decoded.entry = {"raw_dn": raw_dn, "dn": _dn_text(raw_dn), "raw_attributes": raw,
                     "attributes": attributes, "type": "searchResEntry"}
    return decoded


_ldap3_decode_message_fast = getattr(_sync.decode_message_fast, "ldap3_decoder", _sync.decode_message_fast)
"""ldap3's own decoder (this module imported again never wraps its own wrapper)."""


def _decode_message_fast(message: bytes) -> dict[str, Any]:
    """ldap3's decoder of a received message, but for one ``_entry_of`` already decoded."""
    if type(message) is _Decoded:
        return {"messageID": message.message_id, "protocolOp": 4, "payload": None, "controls": None,
                "entry": message.entry}
    result: dict[str, Any] = _ldap3_decode_message_fast(message)
    return result


setattr(_decode_message_fast, "ldap3_decoder", _ldap3_decode_message_fast)  # noqa: B010
_sync.decode_message_fast = _decode_message_fast  # inert for every message not made by _entry_of


def _decode_entries_lean(conn: Connection) -> None:
    """Decode this connection's search entries in one pass: each value with the formatter ldap3 gives its
    attribute's name without a schema (get_info=NONE; UTF-8 text else bytes), looked up once per name.

    ldap3 builds every entry twice (raw, then formatted), looks the formatter up again for every attribute
    of every entry and decodes each name and value through its configurable codec chain (four settings
    looked up per string): most of the CPU of a no-op plan's read. What the entry dict holds stays the same
    (dn, raw_dn, raw_attributes, attributes, type); anything else (results, controls, entries with
    controls) goes through ldap3's own decoder."""
    full = conn.strategy.decode_response_fast
    receiving = conn.strategy.receiving

    def receive() -> list[bytes]:
        if log_enabled(EXTENDED):  # ldap3 logs each message as its decoder gives it
            return list(receiving())
        return [_entry_of(m) or m for m in receiving()]

    def decode(message: Any) -> dict[str, Any]:
        entry: dict[str, Any] | None = message.get("entry")
        if entry is not None:
            return entry
        if message["protocolOp"] != 4 or message["controls"]:
            result: dict[str, Any] = full(message)
            return result
        payload = message["payload"]
        raw: dict[str, list[bytes]] = {}
        attributes: dict[str, Any] = {}
        for attribute in payload[1][3]:
            parts = attribute[3]
            name, fmt = _attribute_name(parts[0][3])
            values = [bytes(v[3]) for v in parts[1][3]]
            raw[name] = values
            attributes[name] = _text_values(fmt, values)
        return {"raw_dn": payload[0][3], "dn": _dn_text(payload[0][3]),
                "raw_attributes": raw, "attributes": attributes, "type": "searchResEntry"}

    conn.strategy.decode_response_fast = decode
    conn.strategy.receiving = receive


def _first(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if isinstance(value, datetime):  # ldap3 may decode a timestamp it knows the syntax of
        return value.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")
    return None if value is None else str(value)
