"""server-config (pure): what an IT centre installs, and that the lab runs on the same text."""

from __future__ import annotations

from pathlib import Path

from mailstate.lab import dovecot as lab_dovecot
from mailstate.lab import slapd as lab_slapd
from mailstate.serverconfig import ldap, postfix
from mailstate.serverconfig.generate import generate
from mailstate.serverconfig.site import READONLY_PASSWORD, Site

SITE = Site(domain="vinhlong.gov.vn", base_dn="dc=vinhlong,dc=gov,dc=vn", org_name="UBND tỉnh Vĩnh Long")


def test_every_file_is_generated_with_placeholders_not_secrets() -> None:
    files = generate(SITE)
    assert {p.split("/")[0] for p in files} == {"ldap", "dovecot", "postfix", "ssh", "README.txt"}
    assert READONLY_PASSWORD in files["dovecot/dovecot-ldap.conf.ext"].text
    for name in postfix.TABLES:
        f = files[f"postfix/mailstate/{name}.cf"]
        assert f.mode == 0o640 and f"bind_pw = {READONLY_PASSWORD}" in f.text and "version = 3" in f.text
    assert files["dovecot/dovecot-ldap.conf.ext"].mode == 0o600
    assert "127.0.0.1" not in files["postfix/mailstate/mailboxes.cf"].text  # production host, not loopback


def test_postfix_rules_name_the_directory_data() -> None:
    t = postfix.tables(SITE)
    assert "(&(objectClass=mailstateAccount)(mailLocalAddress=%s))" in t["mailboxes"]
    assert "result_attribute = rfc822MailMember" in t["groups"]
    assert "(pwdAccountLockedTime=000001010000Z)(mailstateRefuseMail=*)" in t["refused"]
    assert "result_format = 550 5.1.6 %s" in t["refused"]
    main = postfix.main_cf(SITE)
    assert "virtual_transport = lmtp:inet:127.0.0.1:24" in main
    assert main.index("check_recipient_access") < main.index("    reject_unlisted_recipient")


def test_schema_ldif_carries_every_definition_of_mailstate_schema() -> None:
    text = lab_slapd.mailstate_schema().read_text()
    ldif = ldap.schema_ldif(text)
    assert ldif.count("olcAttributeTypes:") == text.count("attributetype (")
    assert ldif.count("olcObjectClasses:") == text.count("objectclass (")
    assert "mailstateRefuseMail" in ldif and "#" not in ldif.split("\n", 1)[1]


def test_lab_runs_on_the_generated_access_rules_and_ldap_file(tmp_path: Path) -> None:
    base = "dc=lab,dc=example,dc=gov,dc=vn"
    conf = lab_slapd.slapd_conf(base=base, root_pw_hash="{SSHA}x", slapd_dir=tmp_path, tls_dir=tmp_path)
    for rule in ldap.access_rules(base):
        assert f"access {rule}\n" in conf
    lab_file = lab_dovecot.ldap_conf(ldaps_port=636, ca_file=Path("/ca.pem"), base=base,
                                     dovecot_dn="cn=dovecot,ou=system," + base, dovecot_pw="pw",
                                     mail=Path("/m"))
    assert "user_filter = (&(objectClass=mailstateAccount)(|(uid=%u)(mailLocalAddress=%u)))" in lab_file
