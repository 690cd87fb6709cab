"""An LDAP add, encoded here instead of through ldap3's pyasn1 objects.

A first apply adds one entry per person: ldap3 builds each AddRequest as a tree of pyasn1 objects, copies
the attributes and encodes the tree — several times the work of the add itself in slapd, and all of it
holding the interpreter, which the other apply threads wait for. ``add`` writes the same bytes directly
(BER, definite lengths: RFC 4511 section 4.7 and X.690, as ldap3 sends them; tests/unit compares the two
encodings byte for byte) and leaves everything else to ldap3: the message id, the socket, reading and
decoding the response into ``connection.result``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ldap3 import Connection
from ldap3.core.exceptions import LDAPSocketOpenError, LDAPSocketSendError
from ldap3.strategy.sync import SyncStrategy
from ldap3.utils.dn import safe_dn

_SEQUENCE = 0x30
_SET = 0x31
_INTEGER = 0x02
_OCTET_STRING = 0x04
_ADD_REQUEST = 0x68
"""[APPLICATION 8], constructed."""


def _tlv(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes((tag, size)) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + body


def _integer(value: int) -> bytes:
    return _tlv(_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _raw(value: str | bytes | int) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def add_message(message_id: int, dn: str, attributes: Mapping[str, Iterable[str | bytes | int]]) -> bytes:
    """The LDAPMessage of an AddRequest: ``dn`` with ``attributes`` (name → values, in that order)."""
    attrs = b"".join(
        _tlv(_SEQUENCE, _tlv(_OCTET_STRING, _raw(name))
             + _tlv(_SET, b"".join(_tlv(_OCTET_STRING, _raw(v)) for v in values)))
        for name, values in attributes.items()
    )
    request = _tlv(_ADD_REQUEST, _tlv(_OCTET_STRING, _raw(dn)) + _tlv(_SEQUENCE, attrs))
    return _tlv(_SEQUENCE, _integer(message_id) + request)


def add(
    conn: Connection, dn: str, object_classes: Iterable[str], attributes: Mapping[str, list[str]]
) -> None:
    """``conn.add(dn, object_classes, attributes)`` on a synchronous ldap3 connection, without controls:
    the same request (the classes given first in ``objectClass``, which goes after the other attributes
    unless they name it), the result in ``conn.result`` as ldap3 leaves it."""
    strategy = conn.strategy
    if type(strategy) is not SyncStrategy or not isinstance(getattr(strategy, "_outstanding", None), dict):
        # only on the strategy this encoding was checked against (ldap3's SYNC, tests/unit); else ldap3's own
        conn.add(dn, list(object_classes), dict(attributes))
        return
    if not conn.listening:
        conn.last_error = "unable to send message, socket is not open"
        raise LDAPSocketOpenError(conn.last_error)
    attrs: dict[str, list[str]] = dict(attributes)
    name = next((k for k in attrs if k.lower() == "objectclass"), "objectClass")
    attrs[name] = list(dict.fromkeys([*object_classes, *attrs.get(name, [])]))
    dn = safe_dn(dn) if conn.check_names else dn
    with conn.connection_lock:
        conn.last_error = None
        message_id = conn.server.next_message_id()
        conn.request = {"type": "addRequest", "entry": dn, "attributes": attrs, "controls": None}
        strategy._outstanding[message_id] = conn.request
        try:
            conn.socket.sendall(add_message(message_id, dn, attrs))
        except OSError as exc:
            conn.last_error = f"socket sending error{exc}"
            raise LDAPSocketSendError(conn.last_error) from None
        strategy.post_send_single_response(message_id)
