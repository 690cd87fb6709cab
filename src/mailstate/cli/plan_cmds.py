"""plan, apply, drift, import, directory: thin click wrappers over mailstate.reconciler.pipeline.

Heavy modules (ldap3, pydantic models, the engine) are imported inside the commands, so that
``mailstate --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click

from mailstate.cli.common import (
    Leaving,
    choose_language,
    errors_to_exit,
    lang_option,
    resolve_state,
    state_option,
    warn_of,
)
from mailstate.cli.gitops_cmds import confirm_apply, no_color_option, use_color
from mailstate.cli.helptext import Command
from mailstate.errors import MailstateError
from mailstate.model.i18n import N_, _, ngettext
from mailstate.text import visible

FORMATS = click.Choice(["text", "markdown", "json"])
PLAN_FORMATS = click.Choice(["text", "markdown", "json", "gitlab"])

scope_option = click.option(
    "--scope",
    "scope",
    multiple=True,
    metavar="unit:ID",
    help=N_("Limit reading and planning to these units (their people, mailbox, objects naming them)."),
)
provider_option = click.option(
    "--provider",
    "provider_names",
    multiple=True,
    metavar="NAME",
    help=N_("Use only these providers (ldap, imap, ssh; default: every configured one). Repeatable."),
)
as_of_option = click.option(
    "--as-of",
    "as_of",
    default=None,
    metavar="YYYY-MM-DD",
    help=N_("Evaluate the lifecycle rules on this date instead of today."),
)


def _use_language(lang: str | None, plan: Any = None) -> None:
    """The language of this run: --lang, else the organisation's (from the plan), else vi."""
    from mailstate.model.i18n import set_language

    set_language(lang or getattr(plan, "language", None) or "vi")


def _render(plan: Any, fmt: str, out: IO[str], lang: str | None = None) -> None:
    import json
    import os

    from mailstate.reconciler.plan.plan import plan_meta
    from mailstate.reconciler.plan.render import render_plan

    _use_language(lang, plan)
    if fmt == "gitlab":  # GitLab's merge-request widget (artifacts:reports:terraform)
        from mailstate.reconciler.plan.render.gitops import gitlab_report

        out.write(json.dumps(gitlab_report(plan)) + "\n")
    elif fmt == "markdown":
        from mailstate.reconciler.plan.codeowners import plan_approvals

        root = Path(plan_meta(plan).state_dir)
        render_plan(plan, fmt, out, approvals=plan_approvals(root, plan))
    else:
        render_plan(plan, fmt, out, color=use_color(out))
    if os.environ.get("MAILSTATE_TIMINGS"):
        timings = plan_meta(plan).timings
        click.echo(_("timings: ") + ", ".join(f"{k} {v:.3f}s" for k, v in timings.items()), err=True)


@click.command("plan", cls=Command, help=N_(
    "Read the live state and print what apply would change."))
@state_option
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=N_("Save the plan (JSON, with fingerprints) for a later `apply FILE`."),
)
@click.option("--format", "fmt", type=PLAN_FORMATS, default="text", show_default=True,
              help=N_("gitlab: the counts GitLab's merge-request widget reads (docs/gitops.md)."))
@no_color_option
@click.option(
    "--detailed-exitcode", is_flag=True, help=N_("Exit 2 when the plan has changes, 0 when it has none.")
)
@as_of_option
@scope_option
@provider_option
@lang_option
@errors_to_exit
def plan_cmd(
    state_dir: Path | None,
    out: Path | None,
    fmt: str,
    detailed_exitcode: bool,
    as_of: str | None,
    scope: tuple[str, ...],
    provider_names: tuple[str, ...],
    lang: str | None,
) -> None:
    from mailstate.reconciler.plan.plan import plan_changes, save_plan

    choose_language(lang, state_dir)
    plan = _plan_and_print(state_dir, fmt, as_of, scope, provider_names, lang)
    if out is not None:
        try:
            save_plan(plan, out)
        except OSError as exc:
            raise MailstateError(_("--out {file}: cannot write the plan: {error}").format(
                file=out, error=exc.strerror or exc)) from None
        click.echo(_("plan saved to {file}").format(file=out), err=True)
    if detailed_exitcode and plan_changes(plan):
        sys.exit(2)


@click.command("apply", cls=Command, help=N_(
    "Apply a saved plan (refused if stale), or plan and apply in one go."))
@click.argument("planfile", required=False, type=click.Path(dir_okay=False, path_type=Path))
@state_option
@click.option("--yes", is_flag=True, help=N_("Do not ask for confirmation (jobs, CI)."))
@click.option(
    "--reviewed",
    "reviewed",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="PLANFILE",
    help=N_("Plan afresh; apply only if the new plan holds exactly this reviewed plan's changes (CI, "
    "after merge)."),
)
@no_color_option
@click.option(
    "--allow-destructive", is_flag=True,
    help=N_("Allow a plan that locks or removes more than [safety] allows."),
)
@as_of_option
@scope_option
@click.option(
    "--journal-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=N_("Where journal.jsonl and the lock file go (default: $MAILSTATE_HOME/<domain>)."),
)
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=N_("The append-only audit log (default: $MAILSTATE_HOME/<domain>/audit.jsonl)."),
)
@click.option(
    "--passwords-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=N_("File (mode 0600) for generated initial passwords (default: a new file beside the journal)."),
)
@click.option(
    "--break-lock",
    is_flag=True,
    help=N_("Break the apply lock of a dead apply (held longer than the provider's limit)."),
)
@click.option(
    "--parallelism",
    type=click.IntRange(1, 32),
    default=None,
    help=N_("Changes in progress at once per provider, for changes that do not depend on each other "
    "(default 4: well inside a default slapd's threads and Dovecot's connections; 1: one after another)."),
)
@provider_option
@lang_option
@errors_to_exit
def apply_cmd(
    planfile: Path | None,
    state_dir: Path | None,
    yes: bool,
    reviewed: Path | None,
    allow_destructive: bool,
    as_of: str | None,
    scope: tuple[str, ...],
    journal_dir: Path | None,
    audit_log: Path | None,
    passwords_out: Path | None,
    break_lock: bool,
    parallelism: int | None,
    provider_names: tuple[str, ...],
    lang: str | None,
) -> None:
    from mailstate.reconciler.apply.run import DEFAULT_PARALLELISM, refuse_future
    from mailstate.reconciler.pipeline import apply_plan, make_plan
    from mailstate.reconciler.plan.plan import load_plan, plan_changes, plan_meta

    root = resolve_state(state_dir)
    choose_language(lang, root)
    refuse_future(as_of, "--as-of")  # before anything is read: a lifecycle date is never applied early
    if reviewed is not None:
        from mailstate.cli.gitops_cmds import reviewed_plan

        if planfile is not None or scope:
            raise MailstateError(_("--reviewed PLANFILE: give neither another PLANFILE nor --scope "
                                   "(the scope is the reviewed plan's)"))
        plan = reviewed_plan(reviewed, root, as_of, provider_names)
        if plan is None:
            click.echo(_("nothing to apply: every reviewed change is live already"))
            return
        _render(plan, "text", sys.stdout, lang)
        yes = True  # what was reviewed and merged is what is applied
    elif planfile is not None:
        if scope:
            raise MailstateError(_("--scope comes from the saved plan; do not give it with PLANFILE"))
        plan = load_plan(planfile)
        refuse_future(plan_meta(plan).as_of,
                      _("{file}: the plan applies the lifecycle rules as of").format(file=planfile))
        _use_language(lang, plan)
    elif yes:
        _apply_fresh(root, scope, as_of, provider_names, lang, allow_destructive, journal_dir, audit_log,
                     passwords_out, break_lock, parallelism or DEFAULT_PARALLELISM)
        return
    else:
        plan = make_plan(root, scope=list(scope) or None, as_of=as_of, providers=list(provider_names) or None)
        _render(plan, "text", sys.stdout, lang)
    changes = plan_changes(plan)
    if not changes:
        if planfile is not None:
            # an empty saved plan is still checked: another organisation's, or stale (the TOML or the
            # live state changed since: there may now be something to do), is refused like any other
            warnings = apply_plan(plan, root, journal_dir=journal_dir, audit_log=audit_log,
                                  break_lock=break_lock, as_of=as_of).warnings
        else:  # a notice to the owner of a lock that failed before is sent again (reconciler.apply.notify)
            from mailstate.reconciler.pipeline import retry_notices

            warnings = retry_notices(root, journal_dir, audit_log)
        for warning in warnings:
            click.echo(_("warning: {warning}").format(warning=warning), err=True)
        click.echo(_("nothing to apply: the live system matches the desired state"))
        return
    if planfile is None and not yes:
        if not sys.stdin.isatty():
            raise MailstateError(_("not a terminal: give --yes to apply without confirmation"))
        if not confirm_apply(len(changes)):
            raise MailstateError(_("cancelled: nothing was applied"))
    passwords_out = _passwords_file(passwords_out, journal_dir, plan_meta(plan).domain)
    progress = ApplyProgress(len(changes), bar=sys.stderr.isatty())
    with _stopping([progress]):
        result = apply_plan(
            plan,
            root,
            allow_destructive=allow_destructive,
            journal_dir=journal_dir,
            audit_log=audit_log,
            passwords_out=passwords_out,
            break_lock=break_lock,
            as_of=as_of,
            on_change=progress,
            parallelism=parallelism or DEFAULT_PARALLELISM,
        )
    _applied(result)


@contextlib.contextmanager
def _stopping(progress: list[ApplyProgress]) -> Iterator[None]:
    """The apply's progress bars stopped when it ends; an incomplete apply's notes printed below them."""
    from mailstate.reconciler.apply.run import ApplyIncomplete

    try:
        yield
    except ApplyIncomplete as exc:
        for bar in progress:
            bar.stop()
        for notice in exc.notices:
            click.echo(_("note: {notice}").format(notice=notice))
        raise
    finally:
        for bar in progress:
            bar.stop()


def _applied(result: Any) -> None:
    """What an apply that went through says: the providers' notes, the warnings, the journal's place."""
    for notice in result.notices:
        click.echo(_("note: {notice}").format(notice=notice))
    for warning in result.warnings:
        click.echo(_("warning: {warning}").format(warning=warning), err=True)
    click.echo(
        ngettext("applied {n} change; journal: {journal}; audit log: {audit}",
                 "applied {n} changes; journal: {journal}; audit log: {audit}", len(result.done)).format(
            n=len(result.done), journal=result.journal, audit=result.audit_log)
    )
    if result.passwords_file is not None:
        click.echo(_("initial passwords written to {file} (mode 0600): hand over, then delete").format(
            file=result.passwords_file))


def _passwords_file(
    passwords_out: Path | None, journal_dir: Path | None, domain: str, make: bool = True
) -> Path:
    """Where the initial passwords go: --passwords-out, else a new file beside the journal; with ``make``,
    its directory made (private)."""
    from mailstate.private_files import home_dir, private_dir

    base_is_home = passwords_out is None and journal_dir is None
    if passwords_out is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        base = journal_dir if journal_dir is not None else home_dir(domain)
        passwords_out = base / f"initial-passwords-{stamp}.tsv"
    if make:
        private_dir(passwords_out.parent, tighten=base_is_home)
    return passwords_out


def _apply_fresh(
    root: Path,
    scope: tuple[str, ...],
    as_of: str | None,
    provider_names: tuple[str, ...],
    lang: str | None,
    allow_destructive: bool,
    journal_dir: Path | None,
    audit_log: Path | None,
    passwords_out: Path | None,
    break_lock: bool,
    parallelism: int,
) -> None:
    """``apply --yes`` without a saved plan: plan and apply in one go (pipeline.apply_fresh: one load, one
    read, under the apply lock), printing the plan, then the progress, as ``apply`` does."""
    from mailstate.desired_state.loader import load_state
    from mailstate.private_files import private_dir
    from mailstate.reconciler.pipeline import apply_fresh, retry_notices
    from mailstate.reconciler.plan.plan import plan_changes

    state = load_state(root)
    base_is_home = passwords_out is None and journal_dir is None
    passwords_out = _passwords_file(passwords_out, journal_dir, state.domain, make=False)
    progress: list[ApplyProgress] = []

    def show(plan: Any) -> None:
        _render(plan, "text", sys.stdout, lang)
        if plan_changes(plan):
            private_dir(passwords_out.parent, tighten=base_is_home)  # before any change
            progress.append(ApplyProgress(len(plan_changes(plan)), bar=sys.stderr.isatty()))

    def tell(change: Any, event: str) -> None:
        progress[0](change, event)

    with _stopping(progress):  # the bar is made by show(), once the plan is known
        result = apply_fresh(
            root, show=show, state=state, scope=list(scope) or None, as_of=as_of,
            providers=list(provider_names) or None, allow_destructive=allow_destructive,
            journal_dir=journal_dir, audit_log=audit_log, passwords_out=passwords_out, on_change=tell,
            break_lock=break_lock, parallelism=parallelism,
        )
    if result is None:  # a notice to the owner of a lock that failed before is sent again
        for warning in retry_notices(root, journal_dir, audit_log):
            click.echo(_("warning: {warning}").format(warning=warning), err=True)
        click.echo(_("nothing to apply: the live system matches the desired state"))
        return
    _applied(result)


def change_words(change: Any) -> str:
    """A change as an operator reads it: action and kind in words, the key (an id) as written."""
    from mailstate.model.i18n import change_title

    return change_title(change.action.label, change.kind, visible(change.key))


class ApplyProgress:
    """What apply shows while it runs, on stderr: on a terminal a progress bar (rich; no colour with
    NO_COLOR), otherwise every change of a small plan (up to 200) and one line per 10 % of a large one. A
    failure or a refusal is always a line of its own."""

    def __init__(self, total: int, bar: bool) -> None:
        self.total = total
        self.step = max(1, total // 10)
        self.done = 0
        self.over = 0
        self._bar: Any = None
        self._task: Any = None
        if bar:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")))
            self._bar = Progress(
                TextColumn(_("applying")), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=console, transient=False,
            )
            self._task = self._bar.add_task("apply", total=total)
            self._bar.start()

    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            click.echo(text, err=True)

    def __call__(self, change: Any, event: str) -> None:
        if event in ("done", "failed", "refused", "skipped"):
            self.over += 1
            if self._bar is not None:
                self._bar.update(self._task, completed=self.over)
        if event == "done":
            self.done += 1
            if self._bar is not None:
                return
            if self.total <= 200:
                self._line("  " + _("done: {change}").format(change=change_words(change)))
            elif self.done % self.step == 0 or self.done == self.total:
                self._line("  " + _("applied {count}/{total}").format(count=self.done, total=self.total))
        elif event == "failed":
            self._line("  " + _("FAILED: {change}").format(change=change_words(change)))
        elif event == "refused":
            said = _("REFUSED: {change} (going on without it)").format(change=change_words(change))
            self._line("  " + said)
        elif event == "skipped" and self.total <= 200 and self._bar is None:
            self._line("  " + _("skipped: {change} (depends on a refused change)").format(
                change=change_words(change)))

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _prepare(state: Any) -> None:
    """Read the catalogues (the run's language, the organisation's) and import the renderers now."""
    from mailstate.model.i18n import current, prepare
    from mailstate.reconciler.plan import render  # noqa: F401

    prepare(current(), state.language)


def _plan_and_print(
    state_dir: Path | None,
    fmt: str,
    as_of: str | None,
    scope: tuple[str, ...],
    provider_names: tuple[str, ...],
    lang: str | None = None,
) -> Any:
    """Plan the state in ``state_dir`` (the shared options of plan and drift) and print it as ``fmt``; the
    state's warnings (a duration longer than its article allows …) go to stderr first, as validate's."""
    from mailstate.desired_state.loader import load_state
    from mailstate.providers.registry import close_providers
    from mailstate.reconciler.pipeline import make_plan
    from mailstate.reconciler.read_ahead import prefetching, read_ahead

    root = resolve_state(state_dir)
    with read_ahead(root, list(provider_names) or None) as ahead:  # the live read, while the TOML loads
        early = prefetching(root, list(provider_names) or None) if ahead is not None else {}
        try:
            state = load_state(root)
            warn_of(state)
            if ahead is not None:  # while the child still reads: what planning and printing will need
                _prepare(state)
        except BaseException:
            close_providers(early)
            raise
        plan = make_plan(
            root,
            scope=list(scope) or None,
            as_of=as_of,
            providers=list(provider_names) or None,
            state=state,
            read_ahead=ahead.snapshots if ahead is not None else None,
            directory_ahead=ahead.directory if ahead is not None else None,
            preopened=early,
        )
    Leaving.fast = True  # a plan of every person: not worth freeing object by object at exit
    _render(plan, fmt, sys.stdout, lang)
    return plan


@click.command("drift", cls=Command, help=N_(
    "The nightly check: print what differs (changes, unlisted live objects); exit 2 if anything does."))
@state_option
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True,
              help=N_("The drift report: changed by hand, lifecycle due, not in the TOML (json: nightly "
                      "issue)."))
@no_color_option
@as_of_option
@scope_option
@provider_option
@lang_option
@errors_to_exit
def drift_cmd(
    state_dir: Path | None,
    fmt: str,
    as_of: str | None,
    scope: tuple[str, ...],
    provider_names: tuple[str, ...],
    lang: str | None,
) -> None:
    from mailstate.cli.gitops_cmds import drift_output
    from mailstate.reconciler.pipeline import make_plan
    from mailstate.reconciler.plan.plan import plan_changes, plan_unlisted
    from mailstate.reconciler.read_ahead import read_ahead

    choose_language(lang, state_dir)
    root = resolve_state(state_dir)
    with read_ahead(root, list(provider_names) or None) as ahead:  # the live read, while the TOML loads
        plan = make_plan(root, scope=list(scope) or None, as_of=as_of, providers=list(provider_names) or None,
                         read_ahead=ahead.snapshots if ahead is not None else None,
                         directory_ahead=ahead.directory if ahead is not None else None)
    Leaving.fast = True
    _use_language(lang, plan)
    click.echo(drift_output(plan, fmt), nl=False)
    if plan_changes(plan) or plan_unlisted(plan):
        sys.exit(2)


@click.command("import", cls=Command, help=N_(
    "Write a state repository (mailstate.toml + units/<id>.toml) from the live directory; every entry "
    "not written is listed, with the reason, on stderr and in import-report.txt."))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help=N_("Directory to write the new state repository into (must be empty or absent)."),
)
@click.option(
    "--domain", default=None, help=N_("The organisation's domain (default: from --state's mailstate.toml).")
)
@click.option(
    "--name", "org_name", default=None, help=N_("The organisation's name (default: the directory's o).")
)
@click.option(
    "--layout", type=click.Choice(["default", "iredmail", "plain"]), default="default", show_default=True,
    help=N_("The directory's layout with --domain: mailstate's (docs/ldap.md), iRedMail's (docs/iredmail.md) "
    "or a tree made by hand (plain, with --people-base); with --state, its [providers] decide."),
)
@click.option(
    "--people-base", default=None, metavar="DN",
    help=N_("With --layout plain: where the people are (the whole subtree; units from the ou under it)."),
)
@state_option
@errors_to_exit
def import_cmd(
    out: Path, domain: str | None, org_name: str | None, layout: str, people_base: str | None,
    state_dir: Path | None,
) -> None:
    from mailstate.adopt.importer import import_state

    result = import_state(out, domain=domain, name=org_name, state_dir=state_dir, layout=layout,
                          people_base=people_base)
    for why in result.skipped:
        click.echo(_("warning: {message}").format(message=visible(why)), err=True)
    click.echo(ngettext("wrote {n} file to {dir}", "wrote {n} files to {dir}", len(result.files)).format(
        n=len(result.files), dir=out))
    w = result.written
    click.echo(_("written: {people} people, {units} units, {groups} groups, {rights} shared folders and "
                 "access grants").format(people=w["person"], units=w["unit"], groups=w["group"],
                                         rights=w["shared_folder"] + w["access_grant"]))
    if result.report is not None:
        click.echo(ngettext("{n} entry to review, each with why: {path}",
                            "{n} entries to review, each with why: {path}", len(result.skipped)).format(
                                n=len(result.skipped), path=result.report))


@click.command("directory", cls=Command, help=N_(
    "The public directory of units and people, from the desired state."))
@state_option
@click.option(
    "--format", "fmt", type=click.Choice(["html", "csv", "vcard"]), default="html", show_default=True,
    help=N_("html: a page to publish; csv: a spreadsheet; vcard: contacts for a mail client."),
)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=N_("Write the directory to FILE instead of stdout."))
@click.option("--as-of", "as_of", default=None, metavar="YYYY-MM-DD", help=N_("Who is listed on this date."))
@lang_option
@errors_to_exit
def directory_cmd(state_dir: Path | None, fmt: str, out: Path | None, as_of: str | None,
                  lang: str | None) -> None:
    from mailstate.adopt.directory import render_directory

    lang = choose_language(lang, state_dir)
    text = render_directory(resolve_state(state_dir), fmt, as_of=as_of, lang=lang)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(_("directory written to {file}").format(file=out), err=True)


COMMANDS = [plan_cmd, apply_cmd, drift_cmd, import_cmd, directory_cmd]
