"""The README.txt that `mailstate server-config` writes lists the files "in this order": the order of
docs/production.md (directory, Dovecot, Postfix, SSH), not the alphabetical one that put Dovecot — which
looks every user up in the directory — before the directory was loaded."""

from __future__ import annotations

from mailstate.serverconfig.generate import generate
from mailstate.serverconfig.site import Site


def test_readme_lists_the_files_in_the_install_order() -> None:
    site = Site(domain="sct.binhdinh.gov.vn", base_dn="dc=sct,dc=binhdinh,dc=gov,dc=vn", org_name="Sở")
    text = generate(site)["README.txt"].text
    assert "in this order" in text
    listed = [ln.split()[0] for ln in text.splitlines() if ln.startswith("  ") and "→" in ln]
    kinds = [p.split("/")[0] for p in listed]
    assert kinds == sorted(kinds, key=["ldap", "dovecot", "postfix", "ssh"].index), listed
    ldif = [p for p in listed if p.startswith("ldap/")]
    assert ldif == sorted(ldif) and len(ldif) == 5
