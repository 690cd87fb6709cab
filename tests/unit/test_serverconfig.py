"""server-config (pure): what an IT centre installs, and that the lab runs on the same text."""

from __future__ import annotations

from pathlib import Path

from mailstate.lab import slapd as lab_slapd
from mailstate.lab.site import lab_site
from mailstate.serverconfig import dovecot, ldap, postfix, sshd
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


def test_database_ldif_sets_the_password_hash_on_the_frontend() -> None:
    """olcPasswordHash is refused on an mdb database (slapd: "attribute 'olcPasswordHash' not allowed")."""
    text = ldap.database_ldif(SITE)
    records = text.split("\n\n")
    assert "olcPasswordHash" not in records[0]
    assert records[1].startswith(f"# Passwords written in clear (ppolicy hashes them) are stored salted: a "
                                 f"setting of the frontend.\ndn: {ldap.FRONTEND}\n")


def test_ppolicy_module_and_overlay_are_separate_files() -> None:
    """Offline tools load modules when they start: the overlay's object class needs a later run."""
    files = generate(SITE)
    assert "olcOverlay" not in files["ldap/02-ppolicy-module.ldif"].text
    assert files["ldap/03-ppolicy-overlay.ldif"].text.count("dn: ") == 1


def test_sshd_snippet_quotes_paths_with_spaces_and_quotes() -> None:
    site = Site(domain="a.vn", base_dn="dc=a,dc=vn", org_name="A", dovecot_dir="/x y/it's",
                ssh_authorized_keys="/k k/keys")
    text = sshd.sshd_snippet(site)
    assert 'AuthorizedKeysFile "/k k/keys"' in text
    assert "SetEnv \"MAILSTATE_SSH_DOVEADM=doveadm -c \\'/x y/it\\'\\\"\\'\\\"\\'s/dovecot.conf\\'\"" in text


def test_dovecot_snippet_writes_out_dovecot_23_default_limits() -> None:
    text = dovecot.conf_snippet(SITE)
    for line in ("default_process_limit = 100", "default_client_limit = 1000",
                 "mail_max_userip_connections = 10",
                 "  service_count = 1\n  process_limit = 100\n  client_limit = 1000",
                 "  process_limit = 1024\n  client_limit = 1"):
        assert line in text
    assert "mail_gid = vmail" in text


def test_lab_dovecot_runs_as_the_users_own_group() -> None:
    """An ordinary user's group is not always named after them (nobody: nogroup); Dovecot refused to start
    ("Group doesn't exist: nobody") when the lab wrote the user's name as its group."""
    import grp

    from mailstate.lab import dovecot as lab_dovecot
    from mailstate.lab._proc import LabUser

    group = grp.getgrgid(65534).gr_name
    user = LabUser("nobody", 65534, 65534, switch=False)
    conf = lab_dovecot.dovecot_conf(d=Path("/d"), user=user, imaps_port=993, instance="i", generated="")
    assert f"default_internal_group = {group}\n" in conf and "default_internal_user = nobody\n" in conf
    files = generate(lab_site(Path("/l"), {"domain": "a.vn", "base_dn": "dc=a,dc=vn", "org_name": "A",
                                           "ports": {"ldaps": 1, "lmtp": 2}}, user, "pw"))
    assert f"mail_gid = {group}\n" in files["dovecot/conf.d/90-mailstate.conf"].text
