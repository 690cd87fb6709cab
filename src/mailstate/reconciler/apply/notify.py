"""Telling the owner of a temporarily locked mailbox (MOST art.18.4; docs/regulation.md): apply sends the
notice to the person's ``backup_email`` through the SMTP relay of ``[notify]`` (or ``MAILSTATE_SMTP_URL``).

- **What is pending.** A lock change carries the notice (``"notify"`` on its journal lines,
  desired_state.lifecycle.notice_of). A notice is pending while the journal holds a ``done`` lock line of a
  person who is still suspended in the TOML, with a ``backup_email``, and no ``notified`` line with its key.
  Only the latest such lock of a person counts.
- **The key** of a notice is ``<person>/<day of the lock>/<sha256 of the lock reason, 16 hex>``: the day
  is the local date of the ``done`` line. Once a ``notified`` line holds a key, that notice is never sent
  again; a new lock (another day) or a new reason (a ``lock_reason`` change) is a new notice.
- **When.** After the plan's changes were carried out (a lock is told only once it is made), under the
  apply lock, and also by an apply that finds nothing to change, so a notice that failed is retried by the
  next apply. ``plan`` and ``apply --dry-run`` never send.
- **A failure** (relay unreachable, refused, TLS) never fails or undoes the lock: it is journaled
  (``notify-failed``, the error without any secret), returned as a warning, and stays pending.

The message is in the organisation's language (the catalogue; Vietnamese by default), UTF-8, with the
mailbox, the reason, the day of the lock and whom to contact (``[notify] contact``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from email import policy
from email.contentmanager import raw_data_manager
from email.header import Header
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mailstate.desired_state.schema import State
from mailstate.errors import MailstateError, ProviderError
from mailstate.model.i18n import _, fmt_date, use
from mailstate.model.settings import NotifySettings, check_relay_url
from mailstate.private_files import open_private
from mailstate.reconciler.apply.journal import Journal
from mailstate.redact import hide_secrets, remember_secret

PASSWORD_ENV = "MAILSTATE_SMTP_PASSWORD"


@dataclass(frozen=True)
class Pending:
    """A notice still to send: the owner (a person id), the backup mailbox, the lock's day and reason."""

    who: str
    to: str
    locked_on: date
    reason: str

    @property
    def key(self) -> str:
        return notice_key(self.who, self.locked_on, self.reason)

    def journal_fields(self) -> dict[str, Any]:
        return {"who": self.who, "how": "backup_email", "to": self.to, "key": self.key,
                "locked_on": self.locked_on.isoformat()}


def notice_key(who: str, locked_on: date, reason: str) -> str:
    """The key that makes a notice idempotent (module doc): person, day of the lock, digest of the reason."""
    digest = hashlib.sha256(reason.encode("utf-8")).hexdigest()[:16]
    return f"{who}/{locked_on.isoformat()}/{digest}"


def journal_entries(path: Path) -> Iterator[dict[str, Any]]:
    """The journal's lines that concern a notice (a lock's ``done`` with ``notify``, ``notified``);
    a line cut short by a crash is skipped."""
    try:
        fh = path.open(encoding="utf-8")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            if '"notify"' not in line:
                continue
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and isinstance(entry.get("notify"), dict):
                    yield entry


def _local_day(stamp: Any) -> date | None:
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).astimezone().date()
    except ValueError:
        return None


def pending_notices(state: State, entries: Iterable[Mapping[str, Any]]) -> list[Pending]:
    """The notices still to send (module doc), in the order of their locks."""
    latest: dict[str, date] = {}
    sent: set[str] = set()
    for entry in entries:
        notice = entry["notify"]
        if entry.get("event") == "done" and isinstance(notice.get("who"), str):
            day = _local_day(entry.get("time"))
            if day is not None:
                latest.pop(notice["who"], None)
                latest[notice["who"]] = day
        elif entry.get("event") == "notified" and isinstance(notice.get("key"), str):
            sent.add(notice["key"])
    out: list[Pending] = []
    for who, day in latest.items():
        person = state.people.get(who)
        if person is None or not person.suspension or not person.backup_email:
            continue  # unlocked since, or told in person (the journal's "in_person" stays the record)
        p = Pending(who, person.backup_email, day, person.suspension)
        if p.key not in sent:
            out.append(p)
    return out


# --------------------------------------------------------------------------------------------------
# The relay


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    tls: bool
    """Implicit TLS (smtps://); else STARTTLS unless ``plain``."""
    plain: bool
    sender: str
    user: str | None
    password: str | None
    ca_file: str | None
    timeout: float
    contact: str | None

    def __repr__(self) -> str:  # never the password
        return f"Relay({self.host}:{self.port}, tls={self.tls}, plain={self.plain})"


def relay_of(state: State, env: Mapping[str, str] | None = None) -> Relay | None:
    """The relay ``[notify]`` and ``MAILSTATE_SMTP_URL`` configure, or None when neither does. A URL with a
    user or password is refused naming the setting, never repeating the value; the password comes only from
    ``MAILSTATE_SMTP_PASSWORD``, the variable ``password_env`` names or ``password_file``."""
    env = os.environ if env is None else env
    url_env = env.get(NotifySettings.ENV_SWITCH) or None
    if state.notify is None and url_env is None:
        return None
    settings = state.notify or NotifySettings()
    where = NotifySettings.ENV_SWITCH if url_env else "notify.url"
    url = url_env or settings.url
    try:  # the same check as validate's, in the run's language, never repeating the value
        check_relay_url(url)
    except ValueError as exc:
        raise ProviderError(f"{where}: {exc}") from None
    parts = urlsplit(url)
    port = parts.port
    password = env.get(PASSWORD_ENV) or None
    if password is None and settings.password_env:
        password = env.get(settings.password_env) or None
    if password is None and settings.password_file:
        path = Path(settings.password_file).expanduser()
        path = path if path.is_absolute() else state.root / path
        try:
            password = (path.read_text(encoding="utf-8").splitlines() or [""])[0] or None
        except OSError as exc:
            raise ProviderError(_("cannot read notify.password_file {file}: {error}").format(
                file=path, error=exc.strerror)) from None
    remember_secret(password)
    if settings.user and not password:
        raise ProviderError(_("notify.user is set but no password: set {env} (or password_env or "
                              "password_file in [notify])").format(env=PASSWORD_ENV))
    return Relay(
        host=parts.hostname or "", port=port or (465 if parts.scheme == "smtps" else 25),
        tls=parts.scheme == "smtps", plain=settings.allow_plain and parts.scheme == "smtp",
        sender=settings.from_address or f"mailstate@{state.domain}", user=settings.user,
        password=password if settings.user else None, ca_file=settings.ca_file,
        timeout=settings.timeout, contact=settings.contact,
    )


def send(relay: Relay, msg: EmailMessage) -> None:
    """Send ``msg`` through the relay: TLS (implicit or STARTTLS, the certificate verified) unless
    ``allow_plain``; SMTP AUTH when a user is set. Raises on any refusal."""
    context = ssl.create_default_context(cafile=relay.ca_file)
    helo = socket.gethostname() or "localhost"
    smtp: smtplib.SMTP
    if relay.tls:
        smtp = smtplib.SMTP_SSL(relay.host, relay.port, local_hostname=helo, timeout=relay.timeout,
                                context=context)
    else:
        smtp = smtplib.SMTP(relay.host, relay.port, local_hostname=helo, timeout=relay.timeout)
    with smtp:
        smtp.ehlo()
        if not relay.tls and not relay.plain:
            if not smtp.has_extn("starttls"):
                raise smtplib.SMTPNotSupportedError(
                    _("the relay offers no STARTTLS (allow_plain = true only for a relay on this host)"))
            smtp.starttls(context=context)
            smtp.ehlo()
        if relay.user and relay.password:
            smtp.login(relay.user, relay.password)
        smtp.send_message(msg)


# --------------------------------------------------------------------------------------------------
# The message


def build_message(state: State, p: Pending, relay: Relay, address: str) -> EmailMessage:
    """The notice, in the organisation's language: the mailbox, the reason, the day, whom to contact."""
    person = state.people[p.who]
    org = state.organization.name
    with use(state.language):
        citation = state.rules.citation("lifecycle.suspended")
        lines = [
            _("Dear {name},").format(name=person.name),
            "",
            _("Your mailbox {address} at {organization} was temporarily locked on {date}.").format(
                address=address, organization=org, date=fmt_date(p.locked_on)),
            _("Reason: {reason}").format(reason=p.reason),
            _("While it is locked you cannot log in to it; mail sent to it is still delivered and kept."),
            "",
            (_("For any question, contact: {contact}").format(contact=relay.contact) if relay.contact
             else _("For any question, contact the IT team of {organization}.").format(organization=org)),
            "",
        ]
        if citation is not None:
            lines.append(_("This notice is sent under {citation}.").format(citation=citation.text()))
        lines.append(_("This message was sent automatically; please do not reply to it."))
        subject = _("Your mailbox {address} is temporarily locked").format(address=address)
    # The headers are encoded by email.header (RFC 2047), not by the default policy's folder: on Python
    # 3.11 that one drops the space at a fold between two encoded words ("của Ông" arrives "củaÔng"),
    # which tests/unit/test_notify.py measured on a third of random Vietnamese subjects.
    msg = EmailMessage(policy=policy.compat32)
    msg["Subject"] = Header(subject, "utf-8")
    msg["From"] = formataddr((org, relay.sender), charset="utf-8")
    msg["To"] = formataddr((person.name, p.to), charset="utf-8")
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=state.domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-reply comes back
    msg.set_content("\n".join(lines) + "\n", charset="utf-8", cte="quoted-printable",
                    content_manager=raw_data_manager)
    return msg


# --------------------------------------------------------------------------------------------------
# Sending what is pending


@contextlib.contextmanager
def _exclusive(journal_path: Path) -> Iterator[None]:
    """One sender at a time per journal (an apply holds its own lock; an apply with nothing to change
    does not): a notice is never sent twice by two runs at once."""
    fd = open_private(journal_path.with_name("notify.lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def send_pending(state: State, journal_path: Path, audit_path: Path, *, who: str, commit: str | None,
                 addresses: Callable[[], Mapping[str, str]], told_now: Iterable[str] = ()) -> list[str]:
    """Send every pending notice (module doc); return the warnings, in the run's language. ``addresses``:
    every person's address as the plan gives it (called only when a notice is to be sent: it reads the
    directory). ``told_now``: the people locked by this run: without a relay, each is warned once that
    nothing was sent."""
    relay_error: str | None = None
    try:
        relay = relay_of(state)
    except MailstateError as exc:
        relay, relay_error = None, hide_secrets(str(exc))
    warnings: list[str] = []
    if relay is None:
        told = set(told_now)
        if not told:
            return warnings
        for p in pending_notices(state, journal_entries(journal_path)):
            if p.who in told:
                warnings.append(
                    _("the notice of the temporary lock of {who} was not sent to {to}: {error}").format(
                        who=p.who, to=p.to, error=relay_error) if relay_error else
                     _("the notice of the temporary lock of {who} was not sent to {to}: no relay is "
                       "configured ([notify] or MAILSTATE_SMTP_URL); tell the owner yourself").format(
                        who=p.who, to=p.to))
        return warnings
    with _exclusive(journal_path):
        pending = pending_notices(state, journal_entries(journal_path))
        if not pending:
            return warnings
        try:
            address_of = dict(addresses())
        except MailstateError:  # the notice still goes out, naming the mailbox by its pinned address or id
            address_of = {}
        journal = Journal(journal_path, audit_path, who=who, commit=commit)
        down: str | None = None  # the relay itself failed (unreachable, hangs, TLS, login): not tried again
        try:
            for p in pending:
                try:
                    if down is not None:
                        raise _RelayDown(down)
                    address = address_of.get(p.who) or state.people[p.who].address or p.who
                    send(relay, build_message(state, p, relay, address))
                except (OSError, smtplib.SMTPException, ValueError, _RelayDown) as exc:
                    error = down or hide_secrets(_describe(exc), [relay.password or ""])
                    if not isinstance(exc, _ONE_MESSAGE):
                        down = error  # a relay that hangs costs one timeout per apply, not one per notice
                    journal.notice("notify-failed", p.journal_fields(), error=error)
                    warnings.append(_("the notice of the temporary lock of {who} to {to} was not sent: "
                                      "{error}; the lock stays, and the next apply sends the notice "
                                      "again").format(who=p.who, to=p.to, error=error))
                else:
                    journal.notice("notified", p.journal_fields())
        finally:
            journal.close()
    return warnings


class _RelayDown(Exception):
    """The relay failed for an earlier notice of this run: the others are journaled failed without a try."""


_ONE_MESSAGE = (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, ValueError)
"""Failures of one message (its recipient refused, its content): the relay is tried for the next one."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"{rcpt}: {code} {msg.decode(errors='replace')}"
                         for rcpt, (code, msg) in exc.recipients.items())
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error
        return f"{exc.smtp_code} {text.decode(errors='replace') if isinstance(text, bytes) else text}"
    return f"{type(exc).__name__}: {exc}"

