"""The iRedMail layout's generated configuration (serverconfig.iredmail), checked as data: iRedMail's
tree and filters, the lab's changes to the default Dovecot snippet, the schema's conversion."""

from __future__ import annotations

import re

import pytest

from mailstate.serverconfig import dovecot as sc_dovecot
from mailstate.serverconfig import iredmail as irm
from mailstate.serverconfig.site import Site

SITE = Site(domain="sct.binhdinh.gov.vn", base_dn="dc=sct,dc=binhdinh,dc=gov,dc=vn",
            org_name="Sở Công Thương")
BASE = SITE.base_dn


def test_entries_are_the_bootstrap_dns() -> None:
    """05-entries.ldif makes exactly the entries a lab's reset keeps (the suffix exists already)."""
    made = re.findall(r"^dn: (.+)$", irm.entries_ldif(SITE), flags=re.M)
    assert made == irm.bootstrap_dns(BASE, SITE.domain)[1:]
    assert f"domainName=sct.binhdinh.gov.vn,o=domains,{BASE}" in made
    assert f"ou=Users,domainName=sct.binhdinh.gov.vn,o=domains,{BASE}" in made


@pytest.mark.parametrize(("table", "must_hold"), [
    ("virtual_mailbox_maps", ["(objectClass=mailUser)", "(shadowAddress=%s)", "(accountStatus=active)",
                              "(enabledService=deliver)"]),
    ("virtual_alias_maps", ["(objectClass=mailAlias)", "(enabledService=forward)"]),
    ("virtual_group_maps", ["(memberOfGroup=%s)", "(objectClass=mailList)", "(accountStatus=active)"]),
    ("virtual_group_members_maps", ["(objectClass=mailUser)", "(mail=%s)"]),
    ("virtual_mailbox_domains", ["(objectClass=mailDomain)", "(domainName=%s)"]),
])
def test_postfix_tables_use_iredmails_filters(table: str, must_hold: list[str]) -> None:
    text = irm.tables(SITE)[table]
    query = re.search(r"^query_filter = (.+)$", text, flags=re.M)
    assert query and query.group(1).count("(") == query.group(1).count(")")
    assert all(part in query.group(1) for part in must_hold), query.group(1)
    assert f"search_base = o=domains,{BASE}" in text and f"bind_dn = cn=vmail,{BASE}" in text
    assert f"{SITE.postfix_dir}/ldap/{table}.cf" in irm.main_cf(SITE)


def test_dovecot_iredmail_way() -> None:
    """Logins by address with the service enabled; home, mailbox and quota from the entry."""
    conf = irm.ldap_conf(SITE)
    assert "(enabledService=%Ls%Lc)" in conf and "(accountStatus=active)" in conf
    assert "=home=%{ldap:homeDirectory}" in conf and "mailQuota=quota_rule=*:bytes=%$" in conf
    assert "accountStatus=disabled" in irm.ldap_conf(SITE, irm.DISABLED_FILTER)


def test_snippet_changes_all_applied() -> None:
    """Every change to the default snippet found its line: home from the directory, Maildir, shared
    mailboxes by address, the disabled-account userdb; the rest (master user, ACL, LMTP) is kept."""
    text = irm.conf_snippet(SITE)
    assert "mail_home =" not in text and "mdbox" not in text
    assert "prefix = shared/%%u/" in text and "dovecot-ldap-disabled.conf.ext" in text
    assert "master = yes" in text and "acl = vfile" in text and "protocol lmtp" in text


def test_snippet_change_lost_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the default layout's snippet stops holding a line this layout rewrites, generation fails
    loudly instead of producing a half-iRedMail configuration."""
    monkeypatch.setattr(sc_dovecot, "conf_snippet", lambda site: "protocols = imap lmtp\n")
    with pytest.raises(AssertionError, match="_SNIPPET_CHANGES"):
        irm.conf_snippet(SITE)


def test_schema_restated_completely() -> None:
    """Every attribute an iRedMail object class names is defined here or in a standard schema; OIDs are
    iRedMail's enterprise arc (32349)."""
    ldif = irm.schema_ldif(irm.iredmail_schema().read_text(encoding="utf-8"), "iredmail")
    defined = {m.lower() for m in re.findall(r"^olcAttributeTypes: .* NAME '(\w+)'", ldif, flags=re.M)}
    standard = {"cn", "sn", "givenname", "description", "mail", "uid", "userpassword", "street",
                "telephonenumber", "facsimiletelephonenumber", "preferredlanguage", "title", "homedirectory",
                "shadowlastchange", "member", "uniquemember", "memberuid", "gidnumber"}
    classes = re.findall(r"^olcObjectClasses: .*$", ldif, flags=re.M)
    assert {re.search(r"NAME '(\w+)'", c).group(1) for c in classes} == {  # type: ignore[union-attr]
        "mailDomain", "mailAdmin", "mailUser", "mailAlias", "mailList", "mailExternalUser"}
    named = {a.lower() for c in classes
             for a in re.findall(r"\b([A-Za-z]\w+)\b", re.split(r"STRUCTURAL|AUXILIARY", c)[-1])}
    assert named - defined - standard - {"may", "must"} == set()
    assert "olcObjectIdentifier: irmRoot 1.3.6.1.4.1.32349.1.2" in ldif
