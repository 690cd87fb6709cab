"""`[password]` → slapd's default policy, Dovecot's refusal of a password to change, the README's words."""

from __future__ import annotations

import base64

import pytest

from mailstate.lab import slapd as lab_slapd  # noqa: F401  (imports the lab before generate: import order)
from mailstate.model.settings import PasswordPolicy
from mailstate.serverconfig import dovecot, ldap
from mailstate.serverconfig.generate import generate
from mailstate.serverconfig.site import PasswordRules, Site, password_rules

BASE = "dc=sct,dc=binhdinh,dc=gov,dc=vn"


def _site(**rules: object) -> Site:
    return Site(domain="sct.binhdinh.gov.vn", base_dn=BASE, org_name="Sở", password=PasswordRules(**rules))


def _policy_block(site: Site) -> dict[str, list[str]]:
    text = generate(site)["ldap/05-entries.ldif"].text
    block = next(b for b in text.split("\n\n") if f"dn: cn=default,ou=policies,{BASE}" in b)
    out: dict[str, list[str]] = {}
    for line in block.splitlines():
        if line.startswith("#") or line.startswith("dn:"):
            continue
        key, sep, value = line.partition(":: ")
        if sep:
            value = base64.b64decode(value).decode()
        else:
            key, _, value = line.partition(": ")
        out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize(("table", "expected"), [
    ({}, {"pwdMinLength": "8", "pwdInHistory": "0", "pwdMaxAge": "0", "pwdMaxFailure": "0",
          "pwdMustChange": "TRUE"}),
    ({"min_length": 12, "history": 5}, {"pwdMinLength": "12", "pwdInHistory": "5"}),
    ({"max_age": "180 days"}, {"pwdMaxAge": str(180 * 86400)}),
    ({"max_age": "3 months"}, {"pwdMaxAge": str(90 * 86400)}),
    ({"max_age": "1 year"}, {"pwdMaxAge": str(365 * 86400)}),
    ({"max_failures": 5}, {"pwdMaxFailure": "5", "pwdLockoutDuration": str(15 * 60)}),
    ({"max_failures": 5, "lockout_minutes": 0}, {"pwdLockoutDuration": "0"}),
    ({"change_at_first_login": False}, {"pwdMustChange": "FALSE"}),
])
def test_policy_entry_from_password(table: dict[str, object], expected: dict[str, str]) -> None:
    rules = password_rules(PasswordPolicy.model_validate(table))
    pol = _policy_block(Site(domain="x.gov.vn", base_dn=BASE, org_name="X", password=rules))
    for key, value in expected.items():
        assert pol[key] == [value], key
    # always: checked (a hash slapd cannot check is refused), current password needed, locks honoured
    assert (pol["pwdCheckQuality"], pol["pwdSafeModify"], pol["pwdLockout"]) == (["2"], ["TRUE"], ["TRUE"])
    assert ("pwdLockoutDuration" in pol) == bool(table.get("max_failures"))
    assert "pwdCheckModule" not in pol and "pwdPolicyChecker" not in pol["objectClass"]


def test_without_a_check_module_the_output_says_what_is_not_enforced() -> None:
    files = generate(_site(min_classes=4))
    for text in (files["ldap/05-entries.ldif"].text, files["README.txt"].text):
        assert "NOT ENFORCED" in text and "min_classes = 4" in text and "account name" in text
    assert ldap.not_enforced(PasswordRules(forbid_account_name=False)) == [
        "min_classes = 3: at least 3 of upper case, lower case, digit, special"]


def test_a_check_module_is_configured_with_ppm_settings() -> None:
    site = _site(min_classes=4, check_module="/usr/lib/ldap/ppm.so")
    pol = _policy_block(site)
    assert "pwdPolicyChecker" in pol["objectClass"] and pol["pwdCheckModule"] == ["/usr/lib/ldap/ppm.so"]
    arg = pol["pwdCheckModuleArg"][0].splitlines()
    assert "minQuality 4" in arg and "checkRDN 1" in arg
    assert "NOT ENFORCED" not in generate(site)["README.txt"].text


def test_dovecot_refuses_a_password_to_change_before_the_ordinary_passdb() -> None:
    files = generate(_site(change_url="https://mail.sct.binhdinh.gov.vn/doimk"))
    reset = files["dovecot/dovecot-ldap-reset.conf.ext"]
    assert reset.mode == 0o600
    assert "pass_filter = (&(objectClass=mailstateAccount)(uid=%n)(pwdReset=TRUE))" in reset.text
    assert "=nologin=y, =reason=Can doi mat khau ban dau truoc khi dang nhap: " \
           "https://mail.sct.binhdinh.gov.vn/doimk" in reset.text
    conf = files["dovecot/conf.d/90-mailstate.conf"].text
    assert conf.index("dovecot-ldap-reset.conf.ext") < conf.index("dovecot-ldap.conf.ext")
    block = conf[conf.index("dovecot-ldap-reset.conf.ext"):].split("}", 1)[0]
    assert "skip = authenticated" in block and "result_internalfail = return-fail" in block


@pytest.mark.parametrize("url", ["http://mail.x/", "https://x/a,b", "https://x/%{ldap:uid}", "https://x/ a",
                                 'https://x/"', "javascript:alert(1)"])
def test_change_url_that_would_break_the_configuration_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        PasswordPolicy.model_validate({"change_url": url})
    if url.startswith("https://") and any(c in url for c in ',%"'):
        with pytest.raises(ValueError):
            dovecot.ldap_reset_conf(uri="ldaps://x", ca_file="/c", base=BASE, password="p", change_url=url)


@pytest.mark.parametrize("change_url", ["", "https://mail.sct.binhdinh.gov.vn/doimk"])
def test_the_reason_reaches_imap_whole(change_url: str) -> None:
    """pass_attrs is a comma-separated list: the reason is the last attribute and must hold no comma, or
    Dovecot cuts it there (the default said "(ldappasswd" and dropped the rest)."""
    text = dovecot.ldap_reset_conf(uri="ldaps://x", ca_file="/c", base=BASE, password="p",
                                   change_url=change_url)
    attrs = next(line for line in text.splitlines() if line.startswith("pass_attrs = ")).split(" = ", 1)[1]
    reason = [a.strip() for a in attrs.split(",")][-1]
    assert reason == "=reason=" + dovecot.reset_reason(change_url)
    assert reason.count("(") == reason.count(")") and "ldappasswd" in reason or change_url in reason
