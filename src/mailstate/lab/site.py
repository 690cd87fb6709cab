"""The lab's `Site`: `mailstate server-config`'s production output is generated for it, so every server of
the lab runs on that very text with only loopback addresses, ports, paths, the lab user and the lab's
throwaway secrets substituted (docs/lab.md, docs/production.md)."""

from __future__ import annotations

import grp
from pathlib import Path
from typing import Any

from mailstate.lab._proc import LabUser
from mailstate.serverconfig.generate import GeneratedFile, generate
from mailstate.serverconfig.site import PasswordRules, Site


def lab_rules(info: dict[str, Any]) -> PasswordRules:
    """The `[password]` the lab was made with (lab.json; a lab made before it was recorded: defaults)."""
    return PasswordRules(**info.get("password", {}))


def group_name(user: LabUser) -> str:
    """The name of the lab user's primary group (`nogroup` for nobody: not always the user's name)."""
    try:
        return grp.getgrgid(user.gid).gr_name
    except KeyError:
        return str(user.gid)


def lab_site(lab_dir: Path, info: dict[str, Any], user: LabUser, readonly_password: str) -> Site:
    """The production Site with the lab's loopback addresses, ports, paths, user and read-only password."""
    d = Path(lab_dir)
    return Site(domain=info["domain"], base_dn=info["base_dn"], org_name=info["org_name"],
                ldap_uri=f"ldaps://127.0.0.1:{info['ports']['ldaps']}",
                ldap_ca_file=str(d / "tls" / "ca.pem"),
                readonly_password=readonly_password,
                postfix_dir=str(d / "postfix" / "etc"), smtp_interfaces="127.0.0.1",
                myhostname=f"mail.{info['domain']}",
                dovecot_dir=str(d / "dovecot"), mail_root=str(d / "mail"), vmail_user=user.name,
                vmail_group=group_name(user),
                dict_dir=str(d / "dovecot"), lmtp_host="127.0.0.1", lmtp_port=info["ports"]["lmtp"],
                ssl_cert=str(d / "tls" / "server.pem"), ssl_key=str(d / "tls" / "server.key"),
                archive_dir=str(d / "archive"), doveadm="doveadm",
                ssh_authorized_keys=str(d / "ssh" / "authorized_keys"), password=lab_rules(info))


def lab_files(lab_dir: Path, info: dict[str, Any], user: LabUser, readonly_password: str
              ) -> dict[str, GeneratedFile]:
    """`mailstate server-config`'s files for the lab (relative path in its output → file)."""
    return generate(lab_site(lab_dir, info, user, readonly_password))
