"""The notice to the owner of a temporarily locked mailbox (reconciler.apply.notify), its pure parts: what is
pending from the journal's lines (the key that sends a notice once), the relay's settings (no credential in
a URL, in a message or in a repr), the message (Vietnamese by default, headers that decode to what was
written). The sending itself is tested against the lab's Postfix (tests/integration/test_notify_lab.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from datetime import date
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailstate.desired_state.loader import load_state
from mailstate.desired_state.schema import State
from mailstate.errors import ProviderError, ValidationError
from mailstate.model import i18n
from mailstate.model.settings import NotifySettings
from mailstate.reconciler.apply.journal import read_lines
from mailstate.reconciler.apply.notify import (
    Pending,
    Relay,
    build_message,
    notice_key,
    pending_notices,
    relay_of,
    send_pending,
)

ROOT = Path(__file__).resolve().parents[2]
MOST = ROOT / "examples" / "most"
REASON = "Hộp thư gửi thư giả mạo ra ngoài ngày 17/11/2026, chờ kiểm tra an toàn thông tin"
BACKUP = "vudinhquan.backup@example.com"


@pytest.fixture(scope="module")
def most() -> State:
    return load_state(MOST)


def done(who: str, time: str, how: str = "backup_email") -> dict[str, Any]:
    return {"event": "done", "time": time, "action": "lock", "key": who,
            "notify": {"who": who, "how": how, "to": BACKUP if how == "backup_email" else None}}


def notified(p: Pending) -> dict[str, Any]:
    return {"event": "notified", "time": "2026-12-06T05:00:00Z", "notify": p.journal_fields()}


def with_person(state: State, who: str, **changes: Any) -> State:
    people = dict(state.people)
    people[who] = people[who].model_copy(update=changes)
    return dataclasses.replace(state, people=people)


# -- what is pending ---------------------------------------------------------------------------------

def test_a_lock_is_pending_until_a_notified_line_holds_its_key(most: State) -> None:
    lock = done("quan.vd", "2026-12-06T03:00:00Z")
    [p] = pending_notices(most, [lock])
    assert (p.who, p.to, p.reason) == ("quan.vd", BACKUP, REASON)
    assert p.key == notice_key("quan.vd", p.locked_on, REASON)
    failed = {"event": "notify-failed", "time": "2026-12-06T03:00:01Z", "notify": p.journal_fields()}
    assert pending_notices(most, [lock, failed]) == [p]  # a failure leaves it pending
    assert pending_notices(most, [lock, failed, notified(p)]) == []  # once sent, never again
    assert pending_notices(most, [lock, notified(p), lock]) == []  # the same lock journaled again


def test_a_new_lock_or_a_new_reason_is_a_new_notice(most: State) -> None:
    first = done("quan.vd", "2026-10-01T03:00:00Z")
    [p] = pending_notices(most, [first])
    later = done("quan.vd", "2026-12-06T03:00:00Z")
    [q] = pending_notices(most, [first, notified(p), later])
    assert q.key != p.key and q.locked_on > p.locked_on
    reworded = with_person(most, "quan.vd", suspended="Khóa tạm thời để điều tra sự cố")
    [r] = pending_notices(reworded, [first, notified(p)])
    assert r.key != p.key and r.reason == "Khóa tạm thời để điều tra sự cố"


def test_nothing_is_pending_for_an_unlocked_person_or_one_told_in_person(most: State) -> None:
    lock = done("quan.vd", "2026-12-06T03:00:00Z")
    assert pending_notices(with_person(most, "quan.vd", suspended=None), [lock]) == []
    assert pending_notices(with_person(most, "quan.vd", backup_email=None), [lock]) == []
    assert pending_notices(most, [done("nobody.here", "2026-12-06T03:00:00Z")]) == []
    assert pending_notices(most, [{"event": "done", "time": "garbage", "notify": {"who": "quan.vd"}}]) == []


# -- the relay's settings -------------------------------------------------------------------------

def test_no_relay_without_a_notify_table_or_the_variable(most: State) -> None:
    assert most.notify is None
    assert relay_of(most, env={}) is None
    relay = relay_of(most, env={"MAILSTATE_SMTP_URL": "smtps://relay.most.gov.vn"})
    assert relay is not None and (relay.host, relay.port, relay.tls) == ("relay.most.gov.vn", 465, True)
    assert relay.sender == "mailstate@most.gov.vn" and not relay.plain


@pytest.mark.parametrize("url", ["smtp://mailstate:Hunter2-S3cret@relay.most.gov.vn",
                                 "smtp://Hunter2-S3cret@relay.most.gov.vn"])
def test_a_url_carrying_credentials_is_refused_without_echoing_them(most: State, url: str) -> None:
    with pytest.raises(ProviderError) as info:
        relay_of(most, env={"MAILSTATE_SMTP_URL": url})
    assert "Hunter2-S3cret" not in str(info.value) and "MAILSTATE_SMTP_URL" in str(info.value)


@pytest.mark.parametrize("url", ["http://relay.most.gov.vn", "smtp://", "smtp://relay:port", "smtp://relay/x"])
def test_a_url_that_is_no_relay_is_refused(most: State, url: str, english: None) -> None:
    with pytest.raises(ProviderError, match="not smtp://host"):
        relay_of(most, env={"MAILSTATE_SMTP_URL": url})


def test_the_password_comes_by_name_and_never_shows(most: State, english: None) -> None:
    state = dataclasses.replace(most, notify=NotifySettings(url="smtp://relay.most.gov.vn:587", user="cntt"))
    with pytest.raises(ProviderError, match="MAILSTATE_SMTP_PASSWORD"):
        relay_of(state, env={})
    relay = relay_of(state, env={"MAILSTATE_SMTP_PASSWORD": "Hunter2-S3cret"})
    assert relay is not None and relay.password == "Hunter2-S3cret" and relay.port == 587
    assert "Hunter2-S3cret" not in repr(relay)


def test_the_notify_table_is_read_from_the_toml_and_checked(write_state: Any, org: str) -> None:
    root = write_state({"mailstate.toml": org + '\n[notify]\nurl = "smtp://relay.sct.binhdinh.gov.vn:587"\n'
                        'from_address = "cntt@sct.binhdinh.gov.vn"\ncontact = "Phòng CNTT, 0256 3822 123"\n'})
    state = load_state(root)
    assert state.notify is not None and state.notify.contact == "Phòng CNTT, 0256 3822 123"
    bad = write_state({"mailstate.toml": org + '\n[notify]\nurl = "smtp://cntt:Hunter2-S3cret@relay.x.vn"\n'})
    with pytest.raises(ValidationError) as info:
        load_state(bad)
    assert "Hunter2-S3cret" not in str(info.value)


@pytest.mark.parametrize(("line", "field", "why"), [
    ('url = "smtp://Hunter2-S3cret@relay.x.vn"', "notify.url", "user or password never"),
    ('url = "smtp://cntt:Hunter2-S3cret@relay.x.vn:587"', "notify.url", "password never"),
    ('url = "http://relay.x.vn"', "notify.url", "not smtp://host"),
    ('url = "smtp://relay.x.vn:99999"', "notify.url", "not smtp://host"),
    ('url = "smtps://relay.x.vn/Hunter2-S3cret"', "notify.url", "not smtp://host"),
    ('url = "smtp://"', "notify.url", "not smtp://host"),
    ('from_address = "not an address"', "notify.from_address", "not a valid e-mail address"),
    ('from_address = "cntt@x.vn>, Hunter2-S3cret@evil.example"', "notify.from_address", "not a valid"),
])
def test_a_notify_table_that_names_no_relay_is_refused_where_it_is_written(
        write_state: Any, org: str, english: None, line: str, field: str, why: str) -> None:
    """validate says FILE:LINE for a relay apply could not use (not first at apply, as a warning), and never
    repeats a secret the URL holds."""
    root = write_state({"mailstate.toml": org + f"\n[notify]\n{line}\n"})
    with pytest.raises(ValidationError) as info:
        load_state(root)
    text = str(info.value)
    assert "mailstate.toml:" in text and field in text and why in text
    assert field != "notify.url" or "Hunter2-S3cret" not in text


# -- the message ----------------------------------------------------------------------------------

RELAY = Relay(host="relay", port=25, tls=False, plain=False, sender="cntt@most.gov.vn", user=None,
              password=None, ca_file=None, timeout=5, contact="Trung tâm Công nghệ thông tin, 024 3943 9055")


def parsed(msg: EmailMessage) -> EmailMessage:
    return message_from_bytes(msg.as_bytes(), policy=policy.default)  # type: ignore[return-value]


def test_the_message_is_vietnamese_by_default_and_names_mailbox_reason_day_contact(most: State) -> None:
    p = Pending("quan.vd", BACKUP, date(2026, 12, 6), REASON)
    with i18n.use("en"):  # the run's language does not matter: the organisation's does
        msg = parsed(build_message(most, p, RELAY, "quan.vd@most.gov.vn"))
    assert msg["Subject"] == "Hộp thư quan.vd@most.gov.vn của Ông/Bà đã bị tạm khóa"
    assert msg["To"].addresses[0].display_name == "Vũ Đình Quân"  # type: ignore[attr-defined]
    assert msg["To"].addresses[0].addr_spec == BACKUP  # type: ignore[attr-defined]
    assert msg["From"].addresses[0].display_name == most.organization.name  # type: ignore[attr-defined]
    body = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Kính gửi Vũ Đình Quân," in body
    assert "đã bị tạm khóa từ ngày 06/12/2026" in body
    assert f"Lý do: {REASON}" in body
    assert "Mọi thắc mắc xin liên hệ: Trung tâm Công nghệ thông tin, 024 3943 9055" in body
    assert "Điều 18 khoản 4" in body  # the agency's article for the rule


def test_an_english_organisation_gets_an_english_message(most: State) -> None:
    state = dataclasses.replace(most, organization=most.organization.model_copy(update={"language": "en"}))
    msg = parsed(build_message(state, Pending("quan.vd", BACKUP, date(2026, 12, 6), REASON),
                               dataclasses.replace(RELAY, contact=None), "quan.vd@most.gov.vn"))
    assert msg["Subject"] == "Your mailbox quan.vd@most.gov.vn is temporarily locked"
    assert "contact the IT team of" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_every_vietnamese_header_decodes_to_what_was_written(most: State) -> None:
    """Python 3.11's default header folder loses the space at some folds between encoded words; the
    message's headers must come back exactly, whatever the names."""
    words = ("Hộp thư của Ông/Bà đã bị tạm khóa theo Quyết định số 12/QĐ-VP về việc kiểm tra an toàn "
             "thông tin Sở Khoa học và Công nghệ Nguyễn Thị Hương Giang").split()
    rnd = random.Random(7)
    for _ in range(200):
        name = " ".join(rnd.sample(words, rnd.randint(2, len(words))))
        state = dataclasses.replace(most, organization=most.organization.model_copy(update={"name": name}))
        state = with_person(state, "quan.vd", name=name)
        msg = parsed(build_message(state, Pending("quan.vd", BACKUP, date(2026, 12, 6), REASON), RELAY, name))
        assert msg["Subject"] == f"Hộp thư {name} của Ông/Bà đã bị tạm khóa"
        assert msg["From"].addresses[0].display_name == name  # type: ignore[attr-defined]
        assert msg["To"].addresses[0].display_name == name  # type: ignore[attr-defined]


# -- without a relay -----------------------------------------------------------------------------

def test_without_a_relay_a_lock_made_now_is_warned_and_nothing_is_journaled(
    most: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAILSTATE_SMTP_URL", raising=False)
    journal = tmp_path / "journal.jsonl"
    journal.write_text(__import__("json").dumps(done("quan.vd", "2026-12-06T03:00:00Z")) + "\n")
    with i18n.use("vi"):
        [warning] = send_pending(most, journal, tmp_path / "audit.jsonl", who="t", commit=None,
                                 addresses=lambda: {}, told_now=["quan.vd"])
    assert "chưa gửi thông báo tạm khóa hộp thư quan.vd" in warning and "[notify]" in warning
    assert send_pending(most, journal, tmp_path / "audit.jsonl", who="t", commit=None,
                        addresses=lambda: {}) == []  # an earlier lock: not warned at every apply
    assert len(read_lines(journal)) == 1


@pytest.mark.parametrize("example", ["most", "mic", "vinhlong", "binhdinh-sct", "monre"])
def test_an_examples_notice_reads_as_a_notice(example: str) -> None:
    """The owner reads the lock's reason in the notice, which cites the article itself: a reason that
    cites its own article in shorthand ("MOST art.18.4") or says the owner was already told reads wrong
    (in the plan too: "… theo MOST art.18.4, đã thông báo (Điều 18 khoản 4, …)")."""
    state = load_state(ROOT / "examples" / example)
    for person in state.people.values():
        if not person.suspension:
            continue
        p = Pending(person.id, person.backup_email or "x@example.com", date(2026, 12, 6), person.suspension)
        body = parsed(build_message(state, p, RELAY, person.address or person.id)).get_content()
        assert " art." not in body and "đã thông báo" not in body, body


def test_a_relay_that_hangs_is_waited_for_once_per_apply_not_once_per_notice(
    most: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay that accepts the connection and never answers: the first notice waits its timeout, the others
    are journaled failed with the same error (and stay pending) without a connection of their own."""
    import json
    import socket

    monkeypatch.delenv("MAILSTATE_SMTP_URL", raising=False)
    state = most
    who = ["quan.vd", "thao.ltp", "hung.pv"]
    for uid in who:
        state = with_person(state, uid, suspended=REASON, backup_email=f"{uid}.backup@example.com")
    journal = tmp_path / "journal.jsonl"
    journal.write_text("".join(json.dumps(done(uid, "2026-12-06T03:00:00Z")) + "\n" for uid in who))
    with socket.socket() as hung:  # listens, never accepts: the client connects, then waits for a greeting
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        port = hung.getsockname()[1]
        state = dataclasses.replace(state, notify=NotifySettings(url=f"smtp://127.0.0.1:{port}",
                                                                 allow_plain=True, timeout=0.2))
        warnings = send_pending(state, journal, tmp_path / "audit.jsonl", who="t", commit=None,
                                addresses=lambda: {})
        hung.setblocking(False)
        connections = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                hung.accept()[0].close()
                connections += 1
    assert connections == 1
    failed = [x for x in read_lines(journal) if x.get("event") == "notify-failed"]
    assert sorted(x["notify"]["who"] for x in failed) == sorted(who) and len(warnings) == 3
    assert len({x["error"] for x in failed}) == 1
    assert len(pending_notices(state, read_lines(journal))) == 3


def test_a_url_in_the_variable_is_refused_in_the_organisations_language(most: State) -> None:
    """MAILSTATE_SMTP_URL is checked at apply, where its refusal becomes a warning in Vietnamese: it must
    read Vietnamese and speak of the relay's login, not of a bind DN."""
    with i18n.use("vi"), pytest.raises(ProviderError) as info:
        relay_of(most, env={"MAILSTATE_SMTP_URL": "smtp://cntt:Hunter2-S3cret@relay.most.gov.vn"})
    text = str(info.value)
    assert text.startswith("MAILSTATE_SMTP_URL: không bao giờ ghi tên đăng nhập hay mật khẩu"), text
    assert "Hunter2-S3cret" not in text and "bind DN" not in text
