"""`mailstate server-config`: what an agency installs on its servers, generated from the state. Pure.

``generate(site)`` returns ``{relative path: GeneratedFile}`` — LDIF for slapd (schema, ppolicy, access
rules, bootstrap entries), Dovecot snippets, Postfix `main.cf` lines and `ldap_table` files, the sshd set-up
of the archive account. The lab (mailstate.lab) is built from this very output with its loopback
addresses, ports and paths substituted (a ``Site`` of its own), so what the tests exercise is what
production gets. docs/production.md walks through installing it.
"""

from mailstate.serverconfig.site import READONLY_PASSWORD, Site

__all__ = ["READONLY_PASSWORD", "Site"]
