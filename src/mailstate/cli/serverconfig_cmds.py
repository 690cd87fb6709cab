"""`mailstate server-config --out DIR`: what an agency installs on its servers, generated from the state."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from mailstate.cli.common import errors_to_exit, resolve_state, state_option
from mailstate.cli.helptext import Command
from mailstate.errors import MailstateError
from mailstate.model.i18n import N_, _, ngettext


@click.command("server-config", cls=Command, help=N_(
    "Write LDIF for slapd, Dovecot and Postfix configuration and the sshd set-up "
    "(docs/production.md)."))
@state_option
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help=N_("Directory to write the files into (created; files of the same name are replaced)."))
@click.option("--ldap-uri", default=None, help=N_("slapd as Dovecot and Postfix reach it "
              "(default: [providers.ldap].url of the state)."))
@click.option("--ldap-ca-file", default=None, help=N_("CA bundle verifying slapd's certificate "
              "(default: the system bundle)."))
@click.option("--mail-root", default=None, help=N_("Where the mail store is (default: /var/vmail)."))
@click.option("--password-check-module", "check_module", default=None,
              help=N_("A check_password() module installed on the slapd host (e.g. ppm.so built from "
                      "OpenLDAP's contrib): slapd then also refuses passwords breaking [password] "
                      "min_classes and forbid_account_name. Debian 12 ships none (docs/ldap.md)."))
@errors_to_exit
def server_config(state_dir: Path | None, out: Path, ldap_uri: str | None, ldap_ca_file: str | None,
                  mail_root: str | None, check_module: str | None) -> None:
    from mailstate.desired_state.loader import load_state
    from mailstate.serverconfig.generate import generate
    from mailstate.serverconfig.site import Site, password_rules

    state = load_state(resolve_state(state_dir))
    values: dict[str, Any] = {}
    uri = ldap_uri or state.providers.ldap.url
    if uri:
        values["ldap_uri"] = uri
    if ldap_ca_file:
        values["ldap_ca_file"] = ldap_ca_file
    if mail_root:
        values["mail_root"] = mail_root.rstrip("/")
    if check_module:
        values["password_check_module"] = check_module
    for name, value in values.items():
        if any(not c.isprintable() or c.isspace() for c in value):
            raise MailstateError(_("{option}: {value} must be one word without control characters (it is "
                                   "written into configuration files)").format(
                option=f"--{name.replace('_', '-')}", value=repr(value)))
    rules = password_rules(state.password, check_module=values.pop("password_check_module", ""))
    site = Site(domain=state.domain, base_dn=state.base_dn, org_name=state.organization.name,
                password=rules, **values)
    files = generate(site)
    for rel, f in files.items():
        path = out / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, f.mode)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(f.text)
            os.chmod(path, f.mode)
        except OSError as exc:
            raise MailstateError(_("cannot write {file}: {error}").format(
                file=path, error=exc.strerror)) from None
    click.echo(ngettext("wrote {n} file for {domain} into {dir} (see {readme})",
                        "wrote {n} files for {domain} into {dir} (see {readme})", len(files)).format(
        n=len(files), domain=state.domain, dir=out, readme=out / "README.txt"))


COMMANDS = [server_config]
