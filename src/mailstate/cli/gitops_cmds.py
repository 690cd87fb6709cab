"""The GitOps pieces of the CLI: `forge comment|fetch-plan|issue` (the CI pipelines' calls to the forge's
API), `apply --reviewed`'s planning step, `--no-color`, the confirmation prompt (in the language of the run:
``[organization] language``, overridden by ``--lang``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from mailstate.cli.common import errors_to_exit, resolve_state, state_option
from mailstate.cli.helptext import Group
from mailstate.errors import MailstateError
from mailstate.model.i18n import N_, _, ngettext


def use_color(stream: Any) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org) or --no-color."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _no_color(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        os.environ["NO_COLOR"] = "1"


no_color_option = click.option(
    "--no-color", is_flag=True, expose_value=False, is_eager=True, callback=_no_color,
    help=N_("No colour (as NO_COLOR=1 does)."),
)


def confirm_apply(n: int) -> bool:
    """Ask, in the language of the run, whether to apply ``n`` changes (no unless the answer is yes)."""
    question = ngettext("Apply this change?", "Apply these {n} changes?", n).format(n=n)
    return click.confirm(question, default=False)


def reviewed_plan(reviewed: Path, root: Path, as_of: str | None, provider_names: tuple[str, ...]) -> Any:
    """Plan afresh (the reviewed plan's scope, today) and return the fresh plan when it holds exactly the
    reviewed changes; None when they are all live already; StalePlan naming every difference otherwise."""
    from mailstate.reconciler.apply.reviewed import check_reviewed
    from mailstate.reconciler.pipeline import make_plan
    from mailstate.reconciler.plan.plan import load_plan, plan_meta

    old = load_plan(reviewed)
    meta = plan_meta(old)
    fresh = make_plan(root, scope=[f"unit:{u}" for u in meta.scope] if meta.scope else None, as_of=as_of,
                      providers=list(provider_names) or None)
    if plan_meta(fresh).domain != meta.domain:
        raise MailstateError(_("{file}: the plan was made for {domain}, the state directory {dir} is "
                               "{state_domain}").format(file=reviewed, domain=meta.domain, dir=root,
                                                        state_domain=plan_meta(fresh).domain))
    if not check_reviewed(old, fresh):
        return None
    click.echo(_("the fresh plan holds exactly the reviewed changes ({n}): applying").format(
        n=len(fresh.changes)), err=True)
    return fresh


# --------------------------------------------------------------------------------------------------
# forge

UPSERTED = {
    ("comment", "created"): N_("comment {ident} created on merge request {mr}"),
    ("comment", "updated"): N_("comment {ident} updated on merge request {mr}"),
    ("issue", "created"): N_("issue {ident} created"),
    ("issue", "updated"): N_("issue {ident} updated"),
}
"""What `forge comment` / `forge issue` did (the forge client says "created" or "updated")."""


forge_option = click.option("--forge", "kind", type=click.Choice(["gitlab", "github"]), required=True,
                            help=N_("The forge the CI job runs on."))
mr_option = click.option("--mr", default=None, help=N_("The merge request (default: the pipeline's own)."))


@click.group("forge", cls=Group, help=N_(
    "Talk to GitLab or GitHub from a CI job (token: $MAILSTATE_FORGE_TOKEN; API from the CI's "
    "variables)."))
def forge_group() -> None:
    pass


@forge_group.command("comment", help=N_(
    "Create or update the plan comment of a merge request (one per organisation and scope)."))
@forge_option
@mr_option
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=N_("A plan saved with `plan --out`: rendered as the Markdown comment (with its marker)."))
@click.option("--body-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=N_("Post this file's text instead (a new comment unless it starts with a marker)."))
@click.option("--merged", is_flag=True, help=N_("The merge request merged as this commit (after merge)."))
@state_option
@errors_to_exit
def comment_cmd(kind: str, mr: str | None, plan_file: Path | None, body_file: Path | None, merged: bool,
                state_dir: Path | None) -> None:
    from mailstate import forge

    if (plan_file is None) == (body_file is None):
        raise MailstateError(_("give exactly one of --plan and --body-file"))
    if plan_file is not None:
        body = render_markdown(plan_file, resolve_state(state_dir))
    else:
        assert body_file is not None
        try:
            body = body_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise MailstateError(f"--body-file {body_file}: {exc.strerror or exc}") from None
    f = forge.Forge.from_env(kind)
    if mr is None:
        mr = f.merged_request(forge.commit_sha(kind)) if merged else forge.current_request(kind)
    what, ident = f.upsert_comment(mr, body)
    click.echo(_(UPSERTED["comment", what]).format(ident=ident, mr=mr))


def render_markdown(plan_file: Path, root: Path) -> str:
    """The Markdown comment of a saved plan, with the CODEOWNERS approvals of the state in ``root``."""
    from mailstate.reconciler.plan.codeowners import plan_approvals
    from mailstate.reconciler.plan.plan import load_plan
    from mailstate.reconciler.plan.render import render

    plan = load_plan(plan_file)
    return render(plan, "markdown", approvals=plan_approvals(root, plan))


@forge_group.command("fetch-plan", help=N_(
    "Download the plan reviewed on the merge request merged as this commit (for `apply --reviewed`)."))
@forge_option
@mr_option
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help=N_("Where to save the plan (then: apply --reviewed FILE)."))
@click.option("--job", default="mailstate-plan", show_default=True, help=N_("GitLab: the job keeping it."))
@click.option("--artifact", default="plan.json", show_default=True,
              help=N_("GitLab: the artifact's path; GitHub: the artifact's name, suffixed -<number>."))
@errors_to_exit
def fetch_plan_cmd(kind: str, mr: str | None, out: Path, job: str, artifact: str) -> None:
    from mailstate import forge

    f = forge.Forge.from_env(kind)
    if mr is None:
        mr = f.merged_request(forge.commit_sha(kind))
    data = f.fetch_plan(mr, job, artifact)
    out.write_bytes(data)
    click.echo(_("plan of merge request {mr} saved to {file}").format(mr=mr, file=out), err=True)


@forge_group.command("issue", help=N_(
    "Open, or update, the one open issue labelled mailstate-drift with a drift report."))
@forge_option
@click.option("--body-file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help=N_("The drift report in Markdown (drift --format markdown)."))
@click.option("--title", default=None, help=N_("Default: the report's title (its first heading)."))
@errors_to_exit
def issue_cmd(kind: str, body_file: Path, title: str | None) -> None:
    from mailstate import forge

    try:
        body = body_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise MailstateError(f"--body-file {body_file}: {exc.strerror or exc}") from None
    if title is None:
        heading = next((line for line in body.splitlines() if line.startswith("## ")), "## mailstate drift")
        title = heading[3:].strip()[:200]
    what, ident = forge.Forge.from_env(kind).upsert_issue(title, body)
    click.echo(_(UPSERTED["issue", what]).format(ident=ident, mr=None))


def drift_output(plan: Any, fmt: str) -> str:
    from mailstate.reconciler.plan.render import drift

    rep = drift.report(plan)
    if fmt == "json":
        import json

        return json.dumps(rep, ensure_ascii=False, indent=2) + "\n"
    if fmt == "markdown":
        return drift.markdown(rep)
    return drift.text(rep)


def write(text: str) -> None:
    sys.stdout.write(text)


COMMANDS = [forge_group]
