"""The LDAP add encoded by mailstate (providers.ldap.ber) is the very request ldap3 encodes, byte for byte."""

from __future__ import annotations

import pytest
from ldap3.operation.add import add_operation
from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp
from ldap3.utils.asn1 import encode

from mailstate.providers.ldap.ber import add, add_message

PERSON = {
    "uid": ["bangnv"],
    "cn": ["Nguyễn Văn Bằng"],
    "sn": ["Bằng"],
    "mail": ["bangnv@sct.binhdinh.gov.vn"],
    "title": ["Chuyên viên " + "phòng " * 40],  # a value longer than 127 bytes: a long-form length
    "mailAlias": ["a@x.vn", "b@x.vn", "c@x.vn"],
    "objectClass": ["inetOrgPerson", "mailstatePerson"],
}


def _ldap3(message_id: int, dn: str, attributes: dict[str, list[str]]) -> bytes:
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName("addRequest", add_operation(dn, attributes, True))
    return bytes(encode(message))


@pytest.mark.parametrize("message_id", [1, 127, 128, 255, 256, 65_535, 65_536, 2**31 - 1])
@pytest.mark.parametrize(
    "attributes",
    [
        PERSON,
        {"ou": ["qlcn"], "objectClass": ["organizationalUnit"]},
        {"description": ["x" * 70_000], "objectClass": ["top"]},  # three length bytes
        {"member": ["uid=a,ou=people,dc=x", ""], "objectClass": ["groupOfNames"]},  # an empty value
    ],
)
def test_add_message_is_what_ldap3_sends(message_id: int, attributes: dict[str, list[str]]) -> None:
    """Message ids on every boundary of their length, short and long values, UTF-8, several values."""
    dn = "uid=bangnv,ou=people,dc=sct,dc=binhdinh,dc=gov,dc=vn"
    assert add_message(message_id, dn, attributes) == _ldap3(message_id, dn, attributes)


def test_another_strategy_than_the_one_checked_gets_ldap3s_own_add() -> None:
    """The hand encoding runs only on ldap3's SYNC strategy, whose request bookkeeping it was checked
    against; any other (here ldap3's offline one) is handed to ``Connection.add`` unchanged."""
    from ldap3 import MOCK_SYNC, Connection, Server

    conn = Connection(Server("offline"), user="cn=a,dc=x", password="p", client_strategy=MOCK_SYNC)
    conn.bind()
    add(conn, "uid=tp,dc=x", ["inetOrgPerson"], {"cn": ["Tạ Phương"], "sn": ["Tạ"]})
    assert conn.result["result"] == 0
    assert conn.search("dc=x", "(uid=tp)", attributes=["cn"]) and conn.entries[0].cn.value == "Tạ Phương"
