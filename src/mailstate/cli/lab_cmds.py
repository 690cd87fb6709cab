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
from mailstate.errors import LabError, ValidationError

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
    help="Lab directory (default: $MAILSTATE_LAB_DIR or ./.lab).",
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
        raise LabError(f"{path}: not found (give --state DIR of a state repository, or --domain)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LabError(f"{path}: cannot read: {exc}") from None
    org = data.get("organization")
    if not isinstance(org, dict) or not isinstance(org.get("domain"), str):
        raise LabError(f"{path}: organization.domain: missing (the lab's suffix comes from it)")
    domain = str(org["domain"]).strip().lower()
    name = str(org["name"]) if isinstance(org.get("name"), str) else domain
    base = str(org["base_dn"]) if isinstance(org.get("base_dn"), str) else None
    return domain, name, base


@click.group("lab")
def lab() -> None:
    """A throwaway OpenLDAP + Dovecot + sshd (+ Postfix as root) on 127.0.0.1, TLS with its own CA."""


@lab.command("up")
@dir_option
@state_option
@click.option("--domain", default=None, help="Organisation domain (instead of reading --state).")
@click.option("--org-name", default=None, help="Organisation name (with --domain; default: the domain).")
@click.option("--reset", is_flag=True,
              help="Wipe a lab that has run in DIR (its entries, mail, archives) and make a new one.")
@click.option("--layout", type=click.Choice(["default", "iredmail"]), default="default", show_default=True,
              help="Directory layout: mailstate's own, or an iRedMail server's (docs/iredmail.md).")
@errors_to_exit
def up(lab_dir: Path | None, state_dir: Path | None, domain: str | None, org_name: str | None,
       reset: bool, layout: str) -> None:
    """Make a new lab for the organisation of STATE (or --domain); returns when every server answers.

    A lab that has run in DIR is refused (its data would be wiped): `lab start` brings it back as it was,
    `lab up --reset` wipes it."""
    base_dn, password = None, None
    if domain is None:
        domain, name, base_dn = organisation_of(resolve_state(state_dir))
        org_name = org_name or name
        password = password_of(resolve_state(state_dir))
    the_lab = _lab(lab_dir)
    info = the_lab.up(domain=domain, org_name=org_name, base_dn=base_dn, reset=reset, layout=layout,
                      password=password)
    p = info["ports"]
    click.echo(f"lab up in {info['up_seconds']:.2f} s ({layout} layout): {info['base_dn']} — "
               f"ldaps://127.0.0.1:{p['ldaps']} "
               f"imaps://127.0.0.1:{p['imaps']} ssh://{info['user']}@127.0.0.1:{p['ssh']}")
    if info.get("delivery") == "available":
        click.echo(f"mail: smtp://127.0.0.1:{p['smtp']} (Postfix → LMTP → Dovecot; MAILSTATE_LAB_SMTP)")
    else:
        click.echo(info.get("delivery") or "mail delivery is not available")
    click.echo(f'point mailstate at it: eval "$(mailstate lab env --dir {shlex.quote(str(the_lab.dir))})"')


@lab.command("start")
@dir_option
@errors_to_exit
def start(lab_dir: Path | None) -> None:
    """Start again the servers of the lab that are down, with their data, ports and secrets."""
    the_lab = _lab(lab_dir)
    started = the_lab.start()
    click.echo(f"lab {the_lab.dir}: " + (f"started {', '.join(started)}" if started else "everything runs"))


@lab.command("restart")
@click.argument("server", required=False)
@dir_option
@errors_to_exit
def restart(server: str | None, lab_dir: Path | None) -> None:
    """Stop SERVER (slapd, dovecot, sshd; default: every server) and start it again, keeping its data."""
    the_lab = _lab(lab_dir)
    started = the_lab.restart((server,) if server else None)
    click.echo(f"lab {the_lab.dir}: restarted {', '.join(started)}")


@lab.command("down")
@dir_option
@errors_to_exit
def down(lab_dir: Path | None) -> None:
    """Stop exactly the processes this lab started (by pid) and wait until none is left."""
    the_lab = _lab(lab_dir)
    if not the_lab.state_file.exists():
        click.echo(f"no lab in {the_lab.dir}")
        return
    was_running = bool(the_lab.info.get("pids"))
    the_lab.down()
    click.echo(f"lab down: {the_lab.dir}" + ("" if was_running else " (nothing was running)"))


@lab.command("status")
@dir_option
@click.option("--json", "as_json", is_flag=True, help="Print lab.json and liveness as JSON.")
@errors_to_exit
def status(lab_dir: Path | None, as_json: bool) -> None:
    """What runs, where: each server's pid, ports and whether it is alive (exit 1 if one is down)."""
    the_lab = _lab(lab_dir)
    info, st = the_lab.info, the_lab.status()
    if as_json:
        click.echo(json.dumps({"info": info, "status": st}, indent=2, ensure_ascii=False))
    elif not info.get("pids"):
        when = f" since {info['stopped_at']}" if info.get("stopped_at") else ""
        click.echo(f"lab {the_lab.dir}: {info['domain']} ({info['base_dn']}): stopped{when}, nothing runs "
                   f"(start it again with: mailstate lab start --dir {the_lab.dir})")
    else:
        click.echo(f"lab {the_lab.dir}: {info['domain']} ({info['base_dn']}, {the_lab.layout} layout), "
                   f"servers run as {info['user']}")
        for name, s in st.items():
            ports = " ".join(f"{k}=127.0.0.1:{v}" for k, v in s["ports"].items())
            state = "up" if s["alive"] else "DOWN"
            click.echo(f"  {name:<8} {state:<5} pid={s['pid']} {ports}")
    if not all(s["alive"] for s in st.values()):
        raise SystemExit(1)


@lab.command("env")
@dir_option
@errors_to_exit
def env(lab_dir: Path | None) -> None:
    """Print `export` lines for every MAILSTATE_* connection variable of the running lab.

    The output includes the lab's own throwaway passwords (by design, for `eval "$(mailstate lab env)"`);
    they are random per lab and never used outside it.
    """
    the_lab = _lab(lab_dir)
    if not the_lab.is_running():
        raise LabError(f"the lab in {the_lab.dir} is not running (start it: mailstate lab start --dir "
                       f"{the_lab.dir})")
    down = [name for name, s in the_lab.status().items() if not s["alive"]]
    if down:  # still printed (the ports are right), but the operator should know before using them
        click.echo(f"warning: {', '.join(down)} of the lab in {the_lab.dir} is not running "
                   f"(mailstate lab status; start it again: mailstate lab start --dir {the_lab.dir})",
                   err=True)
    click.echo(the_lab.env_script(), nl=False)


COMMANDS = [lab]
