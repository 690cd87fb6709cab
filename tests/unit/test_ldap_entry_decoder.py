"""ldapconn._entry_of, the one-pass decoder of search result entries, gives exactly what ldap3's general
decoder followed by the connection's entry decoding gives, and declines (None: ldap3 decodes it, as
before) every message of another shape. The messages are built here byte by byte (BER, RFC 4511)."""

from __future__ import annotations

from typing import Any

import pytest
from ldap3 import Connection, Server

from mailstate import ldapconn


def tlv(tag: int, content: bytes, long_form: int = 0) -> bytes:
    """One BER element; ``long_form`` > 0 writes the length on that many bytes even when short."""
    n = len(content)
    if long_form or n >= 0x80:
        size = long_form or (n.bit_length() + 7) // 8
        return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + content
    return bytes([tag, n]) + content


def entry(dn: bytes, attrs: list[tuple[bytes, list[bytes]]], message_id: int = 7, controls: bytes = b"",
          long_form: int = 0) -> bytes:
    partial = b"".join(
        tlv(0x30, tlv(0x04, name) + tlv(0x31, b"".join(tlv(0x04, v) for v in values), long_form), long_form)
        for name, values in attrs
    )
    op = tlv(0x64, tlv(0x04, dn) + tlv(0x30, partial, long_form), long_form)
    mid = tlv(0x02, message_id.to_bytes(max(1, (message_id.bit_length() + 8) // 8), "big"))
    return tlv(0x30, mid + op + controls, long_form)


@pytest.fixture(scope="module")
def general() -> Any:
    """ldap3's decoder and the connection's entry decoding: what _entry_of must equal."""
    conn = Connection(Server("ldap.invalid", get_info="NO_INFO"), raise_exceptions=False)
    ldapconn._decode_entries_lean(conn)

    def decode(message: bytes) -> tuple[int, dict[str, Any]]:
        decoded = ldapconn._ldap3_decode_message_fast(message)
        return decoded["messageID"], conn.strategy.decode_response_fast(decoded)

    return decode


CASES = {
    "a person": entry(b"uid=bangnv,ou=people,dc=x", [
        (b"objectClass", [b"top", b"inetOrgPerson", b"mailstateAccount"]),
        (b"cn", ["Nguyễn Văn Bằng".encode()]),
        (b"mail", [b"bangnv@x.vn"]),
    ]),
    "long lengths": entry("uid=dài,ou=people".encode(), [(b"description", [b"x" * 300, b"y" * 70000])]),
    "lengths in long form though short": entry(b"cn=a", [(b"cn", [b"a"])], long_form=2),
    "no attributes": entry(b"cn=empty", []),
    "an attribute without values": entry(b"cn=a", [(b"title", [])]),
    "empty value and a value not UTF-8": entry(b"cn=a", [(b"description", [b"", b"\xff\xfe", b"ok"])]),
    "a big message id": entry(b"cn=a", [(b"cn", [b"a"])], message_id=2**31 - 1),
    "an operational attribute": entry(b"cn=a", [(b"createTimestamp", [b"20260228230000Z"])]),
}


@pytest.mark.parametrize("name", CASES)
def test_an_entry_decodes_as_ldap3_decodes_it(name: str, general: Any) -> None:
    message = CASES[name]
    decoded = ldapconn._entry_of(message)
    assert decoded is not None and bytes(decoded) == message
    assert (decoded.message_id, decoded.entry) == general(message)
    assert ldapconn._decode_message_fast(decoded)["entry"] is decoded.entry


SIMPLE = entry(b"cn=a", [(b"cn", [b"a"])])
DECLINED = {
    "controls after the entry": entry(b"cn=a", [(b"cn", [b"a"])],
                                      controls=tlv(0xA0, tlv(0x30, tlv(0x04, b"1.2")))),
    "search result done": tlv(0x30, tlv(0x02, b"\x07") + tlv(0x65, tlv(0x0A, b"\x00") + tlv(0x04, b"") * 2)),
    "truncated": SIMPLE[:-1],
    "trailing bytes": SIMPLE + b"\x00",
    "indefinite length": b"\x30\x80" + SIMPLE[2:] + b"\x00\x00",
    "not a sequence": b"\x31" + SIMPLE[1:],
    "a value that is not an octet string": SIMPLE.replace(b"\x31\x03\x04\x01a", b"\x31\x03\x02\x01\x01"),
    "length on five bytes": b"\x30\x85\x00\x00\x00\x00\x05" + SIMPLE[2:],
    "empty": b"",
}


@pytest.mark.parametrize("name", DECLINED)
def test_any_other_shape_is_left_to_ldap3(name: str) -> None:
    assert ldapconn._entry_of(DECLINED[name]) is None


def test_ldap3s_decoder_still_decodes_every_other_message() -> None:
    done = DECLINED["search result done"]
    assert ldapconn._decode_message_fast(done) == ldapconn._ldap3_decode_message_fast(done)
    assert ldapconn._decode_message_fast(SIMPLE)["protocolOp"] == 4  # plain bytes: ldap3's own result


def test_one_wrapper_around_ldap3s_own_decoder() -> None:
    """The wrapper names ldap3's decoder, so that this module imported again wraps that, not itself."""
    from ldap3.strategy import sync
    from ldap3.utils import asn1

    assert sync.decode_message_fast is ldapconn._decode_message_fast
    assert ldapconn._ldap3_decode_message_fast is asn1.decode_message_fast
    assert getattr(sync.decode_message_fast, "ldap3_decoder") is asn1.decode_message_fast  # noqa: B009
