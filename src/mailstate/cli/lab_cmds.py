"""`mailstate lab up|start|restart|down|status|env`: OpenLDAP + Dovecot + sshd on loopback, unprivileged."""

from __future__ import annotations

import json
import os
import shlex
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailstate.cli.common import errors_to_exit, resolve_state, state_option
from mailstate.cli.helptext import Group
from mailstate.errors import LabError, ValidationError
from mailstate.model.i18n import N_, _

if TYPE_CHECKING:
    from mailstate.lab import Lab
    from mailstate.serverconfig.site import PasswordRules


def _lab(lab_dir: Path | None) -> Lab:
    """The lab in ``lab_dir``; imported here so that other commands do not pay for the lab's imports."""
    from mailstate.lab import Lab

    return Lab(lab_dir or default_lab_dir())


def default_lab_dir() -> Path:
    return Path(os.environ.get("MAILSTATE_LAB_DIR") or ".lab")


dir_option = click.option(
    "--dir", "lab_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help=N_("Lab directory (default: $MAILSTATE_LAB_DIR or ./.lab)."),
)


def password_of(state_dir: Path) -> PasswordRules | None:
    """The state's `[password]` as the servers enforce it (None — the defaults — if the state does not
    validate yet: the lab then starts with the default policy)."""
    from mailstate.serverconfig.site import password_rules

    try:
        from mailstate.desired_state.loader import load_state

        return password_rules(load_state(state_dir).password)
    except (ImportError, ValidationError):
        return None


def organisation_of(state_dir: Path) -> tuple[str, str, str | None]:
    """(domain, name, base_dn) of the state repository: from the loader, or — if the state does not
    validate yet — from [organization] in mailstate.toml, which is all the lab needs."""
    try:
        from mailstate.desired_state.loader import load_state

        organization = load_state(state_dir).organization
        return organization.domain, organization.name, organization.base_dn
    except (ImportError, ValidationError):
        pass
    path = state_dir / "mailstate.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabError(_("{file}: not found (give --state DIR of a state repository, or --domain)").format(
            file=path)) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LabError(_("{file}: cannot read: {error}").format(file=path, error=exc)) from None
    org = data.get("organization")
    if not isinstance(org, dict) or not isinstance(org.get("domain"), str):
        raise LabError(_("{file}: organization.domain: missing (the lab's suffix comes from it)").format(
            file=path))
    domain = str(org["domain"]).strip().lower()
    name = str(org["name"]) if isinstance(org.get("name"), str) else domain
    base = str(org["base_dn"]) if isinstance(org.get("base_dn"), str) else None
    return domain, name, base


@click.group("lab", cls=Group, help=N_(
    "A throwaway OpenLDAP + Dovecot + sshd (+ Postfix as root) on 127.0.0.1, TLS with its own CA."))
def lab() -> None:
    pass


@lab.command("up", help=N_(
    "Make a new lab for the organisation of STATE (or --domain); returns when every server answers.\n"
    "\n"
    "A lab that has run in DIR is refused (its data would be wiped): `lab start` brings it back as it "
    "was, `lab up --reset` wipes it."))
@dir_option
@state_option
@click.option("--domain", default=None, help=N_("Organisation domain (instead of reading --state)."))
@click.option("--org-name", default=None, help=N_("Organisation name (with --domain; default: the domain)."))
@click.option("--reset", is_flag=True,
              help=N_("Wipe a lab that has run in DIR (its entries, mail, archives) and make a new one."))
@click.option("--layout", type=click.Choice(["default", "iredmail"]), default="default", show_default=True,
              help=N_("Directory layout: mailstate's own, or an iRedMail server's (docs/iredmail.md)."))
@errors_to_exit
def up(lab_dir: Path | None, state_dir: Path | None, domain: str | None, org_name: str | None,
       reset: bool, layout: str) -> None:
    base_dn, password = None, None
    if domain is None:
        domain, name, base_dn = organisation_of(resolve_state(state_dir))
        org_name = org_name or name
        password = password_of(resolve_state(state_dir))
    the_lab = _lab(lab_dir)
    info = the_lab.up(domain=domain, org_name=org_name, base_dn=base_dn, reset=reset, layout=layout,
                      password=password)
    p = info["ports"]
    click.echo(_("lab up in {seconds} s ({layout} layout): {base_dn} — {urls}").format(
        seconds=f"{info['up_seconds']:.2f}", layout=layout, base_dn=info["base_dn"],
        urls=f"ldaps://127.0.0.1:{p['ldaps']} imaps://127.0.0.1:{p['imaps']} "
             f"ssh://{info['user']}@127.0.0.1:{p['ssh']}"))
    if info.get("delivery") == "available":
        click.echo(_("mail: {url} (Postfix → LMTP → Dovecot; MAILSTATE_LAB_SMTP)").format(
            url=f"smtp://127.0.0.1:{p['smtp']}"))
    else:
        click.echo(info.get("delivery") or _("mail delivery is not available"))
    click.echo(_("point mailstate at it: {command}").format(
        command=f'eval "$(mailstate lab env --dir {shlex.quote(str(the_lab.dir))})"'))


@lab.command("start", help=N_(
    "Start again the servers of the lab that are down, with their data, ports and secrets."))
@dir_option
@errors_to_exit
def start(lab_dir: Path | None) -> None:
    the_lab = _lab(lab_dir)
    started = the_lab.start()
    if started:
        click.echo(_("lab {dir}: started {servers}").format(dir=the_lab.dir, servers=", ".join(started)))
    else:
        click.echo(_("lab {dir}: everything runs").format(dir=the_lab.dir))


@lab.command("restart", help=N_(
    "Stop SERVER (slapd, dovecot, sshd; default: every server) and start it again, keeping its data."))
@click.argument("server", required=False)
@dir_option
@errors_to_exit
def restart(server: str | None, lab_dir: Path | None) -> None:
    the_lab = _lab(lab_dir)
    started = the_lab.restart((server,) if server else None)
    click.echo(_("lab {dir}: restarted {servers}").format(dir=the_lab.dir, servers=", ".join(started)))


@lab.command("down", help=N_(
    "Stop exactly the processes this lab started (by pid) and wait until none is left."))
@dir_option
@errors_to_exit
def down(lab_dir: Path | None) -> None:
    the_lab = _lab(lab_dir)
    if not the_lab.state_file.exists():
        click.echo(_("no lab in {dir}").format(dir=the_lab.dir))
        return
    was_running = bool(the_lab.info.get("pids"))
    the_lab.down()
    if was_running:
        click.echo(_("lab down: {dir}").format(dir=the_lab.dir))
    else:
        click.echo(_("lab down: {dir} (nothing was running)").format(dir=the_lab.dir))


@lab.command("status", help=N_(
    "What runs, where: each server's pid, ports and whether it is alive (exit 1 if one is down)."))
@dir_option
@click.option("--json", "as_json", is_flag=True, help=N_("Print lab.json and liveness as JSON."))
@errors_to_exit
def status(lab_dir: Path | None, as_json: bool) -> None:
    the_lab = _lab(lab_dir)
    info, st = the_lab.info, the_lab.status()
    if as_json:
        click.echo(json.dumps({"info": info, "status": st}, indent=2, ensure_ascii=False))
    elif not info.get("pids"):
        again = f"mailstate lab start --dir {the_lab.dir}"
        if info.get("stopped_at"):
            line = _("lab {dir}: {domain} ({base_dn}): stopped since {when}, nothing runs (start it again "
                     "with: {command})")
        else:
            line = _("lab {dir}: {domain} ({base_dn}): stopped, nothing runs (start it again with: "
                     "{command})")
        click.echo(line.format(dir=the_lab.dir, domain=info["domain"], base_dn=info["base_dn"],
                               when=info.get("stopped_at"), command=again))
    else:
        click.echo(_("lab {dir}: {domain} ({base_dn}, {layout} layout), servers run as {user}").format(
            dir=the_lab.dir, domain=info["domain"], base_dn=info["base_dn"], layout=the_lab.layout,
            user=info["user"]))
        states = {name: _("up") if s["alive"] else _("DOWN") for name, s in st.items()}
        width = max([5, *(len(v) for v in states.values())])
        for name, s in st.items():
            ports = " ".join(f"{k}=127.0.0.1:{v}" for k, v in s["ports"].items())
            click.echo(f"  {name:<8} {states[name]:<{width}} pid={s['pid']} {ports}")
    if not all(s["alive"] for s in st.values()):
        raise SystemExit(1)


@lab.command("env", help=N_(
    "Print `export` lines for every MAILSTATE_* connection variable of the running lab.\n"
    "\n"
    "The output includes the lab's own throwaway passwords (by design, for `eval \"$(mailstate lab "
    "env)\"`); they are random per lab and never used outside it."))
@dir_option
@errors_to_exit
def env(lab_dir: Path | None) -> None:
    the_lab = _lab(lab_dir)
    if not the_lab.is_running():
        raise LabError(_("the lab in {dir} is not running (start it: {command})").format(
            dir=the_lab.dir, command=f"mailstate lab start --dir {the_lab.dir}"))
    down = [name for name, s in the_lab.status().items() if not s["alive"]]
    if down:  # still printed (the ports are right), but the operator should know before using them
        click.echo(_("warning: {message}").format(message=_(
            "{servers} of the lab in {dir} is not running (mailstate lab status; start it again: "
            "{command})").format(servers=", ".join(down), dir=the_lab.dir,
                                 command=f"mailstate lab start --dir {the_lab.dir}")), err=True)
    click.echo(the_lab.env_script(), nl=False)


COMMANDS = [lab]
