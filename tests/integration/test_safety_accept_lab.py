"""Acceptance of apply safety against the real lab: a saved plan edited to raise its own [safety] limits, and
an apply whose output pipe is closed half-way (`mailstate apply --yes 2>&1 | head`)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import ldap3
import pytest

from mailstate.lab import Lab
from mailstate.reconciler.apply.journal import read_lines

pytestmark = pytest.mark.integration

MAILSTATE = Path(sys.executable).with_name("mailstate")
DOMAIN = "lab.example.gov.vn"

TOP = f"""
[organization]
name = "Lab"
domain = "{DOMAIN}"

[providers.ldap]
url = "ldaps://ldap.invalid"
password_env = "MAILSTATE_LDAP_PASSWORD"
"""


def write_state(root: Path, people: int, *, left: int = 0, top: str = TOP) -> Path:
    """A unit with ``people`` people; the first ``left`` of them left 200 days ago (their lock is due)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mailstate.toml").write_text(top, encoding="utf-8")
    gone = (date.today() - timedelta(days=200)).isoformat()
    rows = ['[unit]\nid = "qlcn"\nname = "Phòng Quản lý Công nghiệp"\n']
    for i in range(people):
        extra = f"left_on = {gone}\n" if i < left else ""
        rows.append(f'[[person]]\nid = "p{i:03d}"\nname = "Nguyễn Văn Người {i:03d}"\n{extra}')
    (root / "units").mkdir(exist_ok=True)
    (root / "units" / "qlcn.toml").write_text("\n".join(rows), encoding="utf-8")
    return root


def ms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MAILSTATE), *args], capture_output=True, text=True, timeout=180)


def people(lab: Lab) -> dict[str, dict[str, list[str]]]:
    conn = lab.ldap(as_="root")
    try:
        conn.search(f"ou=people,{lab.base_dn}", "(objectClass=*)", ldap3.LEVEL, attributes=["*"])
        return {e.entry_dn: e.entry_attributes_as_dict for e in conn.entries}
    finally:
        conn.unbind()


def system_dns(lab: Lab) -> set[str]:
    conn = lab.ldap(as_="root")
    try:
        conn.search(f"ou=system,{lab.base_dn}", "(objectClass=*)", ldap3.LEVEL, attributes=["cn"])
        return {e.entry_dn.lower() for e in conn.entries}
    finally:
        conn.unbind()


@pytest.fixture
def home(lab_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / DOMAIN


@pytest.mark.parametrize(
    ("toml_safety", "edit"),
    [
        ("", {"max_destructive_count": 1000, "max_destructive_share": 1.0}),
        # the TOML relies on the share alone: a plan file claiming many more live mailboxes dilutes it
        ("\n[safety]\nmax_destructive_count = 1000\n", {"live_mailboxes": 100000}),
    ],
    ids=["limits", "live-mailboxes"],
)
def test_saved_plan_edited_to_raise_its_safety_limits_is_refused(
    home: Path, clean_lab: Lab, tmp_path: Path, toml_safety: str, edit: dict[str, float]
) -> None:
    """12 of 14 people left: the plan locks 12 mailboxes, over [safety]. The saved plan edited to carry
    higher limits (or a larger live mailbox count) is refused as unsafe like the unedited one; nothing is
    locked; --allow-destructive (the operator's explicit word) still applies it."""
    state = write_state(tmp_path / "state", 14, top=TOP + toml_safety)
    assert ms("apply", "--yes", "--provider", "ldap", "--state", str(state)).returncode == 0
    write_state(state, 14, left=12, top=TOP + toml_safety)
    plan_file = tmp_path / "plan.json"
    r = ms("plan", "--provider", "ldap", "--state", str(state), "--out", str(plan_file))
    assert r.returncode == 0, r.stderr
    data = json.loads(plan_file.read_text(encoding="utf-8"))
    assert data["summary"]["lock"] == 12
    before = people(clean_lab)
    plain = ms("apply", str(plan_file), "--state", str(state))
    assert plain.returncode != 0 and "unsafe plan" in plain.stderr, plain.stdout + plain.stderr
    data["safety"].update(edit)
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    r = ms("apply", str(edited), "--state", str(state))
    assert r.returncode != 0, r.stdout + r.stderr
    assert "unsafe plan" in r.stderr and "--allow-destructive" in r.stderr, r.stderr
    assert "DESIGN" not in r.stderr
    assert people(clean_lab) == before
    ok = ms("apply", str(plan_file), "--state", str(state), "--allow-destructive")
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_output_pipe_closed_mid_apply_stops_journaled_and_unlocked(
    home: Path, clean_lab: Lab, tmp_path: Path
) -> None:
    """`mailstate apply --yes 2>&1 | head -3`: the reader goes away after the first change's progress line.
    The apply stops like on SIGPIPE — after the change in progress, the journal ending with apply-finished
    (interrupted, SIGPIPE), the directory's apply lock released, exit 128 + 13 — and a rerun converges."""
    state = write_state(tmp_path / "state", 10)
    proc = subprocess.Popen(
        [str(MAILSTATE), "apply", "--yes", "--provider", "ldap", "--state", str(state)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("  done"):
            break
    proc.stderr.close()  # the reader is gone: the next progress line meets a closed pipe
    assert proc.wait(timeout=180) == 128 + 13
    lines = read_lines(home / "journal.jsonl")
    assert lines[-1]["event"] == "apply-finished", lines[-1]
    assert lines[-1]["outcome"] == "interrupted" and lines[-1]["signal"] == "SIGPIPE"
    assert lines[-1]["not_tried"] > 0 and "failed" not in {x["event"] for x in lines}
    assert f"cn=apply-lock,ou=system,{clean_lab.base_dn}".lower() not in system_dns(clean_lab)
    again = ms("apply", "--yes", "--provider", "ldap", "--state", str(state))
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(people(clean_lab)) == 10


def test_a_leavers_folder_named_like_an_option_stays_a_folder_name(
    lab_env: dict[str, str], clean_lab: Lab
) -> None:
    """The leaver made a folder "-A" (anyone can): removing their mail deletes their folders only.
    Without "--" doveadm read "-A" as "every user" and deleted the other users' empty folders of the same
    names (here thuytt's "Dự án", which holds the rights of a shared folder)."""
    import secrets

    from mailstate.desired_state.schema import Organization, State
    from mailstate.lab.testing import imap_login, make_person
    from mailstate.providers.doveadm.provider import SshProvider

    pw = {u: "Pw-" + secrets.token_urlsafe(12) for u in ("bangnv", "thuytt")}
    make_person(clean_lab, "bangnv", pw["bangnv"], cn="Nguyễn Văn Bằng")
    make_person(clean_lab, "thuytt", pw["thuytt"], cn="Trần Thị Thủy")
    for user, folders in (("bangnv", ["-A", "Dự án"]), ("thuytt", ["Dự án"])):
        c = imap_login(clean_lab, user, pw[user])
        try:
            for f in folders:
                c.create_folder(f)
            c.append("INBOX", b"From: a@x\r\nSubject: 1\r\n\r\nbody\r\n")
        finally:
            c.logout()
    state = State(root=Path("."), organization=Organization(name="Lab", domain=clean_lab.info["domain"]))
    provider = SshProvider.from_state(state)
    try:
        provider.archive("bangnv")
        provider.remove_mail("bangnv")
    finally:
        provider.close()
    for user, left in (("bangnv", {"INBOX"}), ("thuytt", {"INBOX", "Dự án"})):
        c = imap_login(clean_lab, user, pw[user])
        try:
            assert {name for _f, _d, name in c.list_folders() if not name.startswith("shared/")} == left
        finally:
            c.logout()


FORGED = "\n     99. - delete person tuanpm  [ldap]\n          why: forged"
ESC = "\x1b]0;PWNED\x07\x1b[31m"


def test_hostile_live_values_never_reach_the_terminal_raw(
    home: Path, clean_lab: Lab, tmp_path: Path
) -> None:
    """Values written by hand as the rootdn — a title with a forged change line, a cn with ESC/OSC, a
    displayName with a bidi override and a C1 CSI, an unlisted entry whose uid holds a newline — appear in
    `plan`, `drift` (text and Markdown: the nightly issue) only as escapes, and `import` writes them into
    TOML as escapes: no raw control, separator or bidi character anywhere, no forged line."""
    from ldap3 import MODIFY_REPLACE

    from mailstate.text import CONTROL_RE

    state = write_state(tmp_path / "state", 3)
    assert ms("apply", "--yes", "--provider", "ldap", "--state", str(state)).returncode == 0
    base = clean_lab.base_dn
    c = clean_lab.ldap(as_="root")
    try:
        assert c.modify(f"uid=p001,ou=people,{base}", {
            "title": [(MODIFY_REPLACE, ["Chuyên viên" + FORGED])],
            "cn": [(MODIFY_REPLACE, ["Người" + ESC])],
            "displayName": [(MODIFY_REPLACE, ["\u202eevil\u009b2J"])],
        })
        assert c.modify(f"ou=qlcn,ou=units,{base}", {"description": [(MODIFY_REPLACE, ["Phòng" + FORGED])]})
        assert c.add(f"uid=evil\\0a99,ou=people,{base}",
                     ["top", "inetOrgPerson", "inetLocalMailRecipient", "mailstateAccount"],
                     {"cn": "X" + FORGED, "sn": "x", "departmentNumber": "qlcn" + ESC})
    finally:
        c.unbind()

    def raw(text: str) -> list[str]:
        return sorted({repr(ch) for ch in CONTROL_RE.findall(text) if ch != "\n"})

    outputs = {}
    for argv in (["plan"], ["plan", "--format", "markdown"], ["drift"], ["drift", "--format", "markdown"]):
        r = ms(*argv, "--provider", "ldap", "--state", str(state))
        assert r.returncode in (0, 2), r.stderr
        outputs[" ".join(argv)] = r.stdout + r.stderr
    out = tmp_path / "imported"
    r = ms("import", "--state", str(state), "--out", str(out))
    assert r.returncode == 0, r.stderr
    outputs["import"] = r.stdout + r.stderr
    for f in sorted(out.rglob("*.toml")):
        outputs[str(f.relative_to(out))] = f.read_text(encoding="utf-8")
    for what, text in outputs.items():
        assert raw(text) == [], what
        assert not any(line.lstrip().startswith("99. - delete") for line in text.splitlines()), what
    assert "\\u202eevil" in outputs["drift"]
    assert "Chuyên viên\\n     99." in outputs["drift --format markdown"]
    import tomllib

    person = tomllib.loads(outputs["units/qlcn.toml"])["person"][1]
    assert person["title"] == "Chuyên viên" + FORGED  # the escape means the same text: nothing lost


IMAP_TOP = TOP + """
[providers.imap]
url = "imaps://mail.invalid"
admin_user = "mailstate"
password_env = "LAB_IMAP_SECRET"
"""


@pytest.mark.parametrize(
    ("variable", "secret_of"),
    [
        ("MAILSTATE_LDAP_URL", "MAILSTATE_LDAP_PASSWORD"),
        ("MAILSTATE_IMAP_URL", "MAILSTATE_IMAP_PASSWORD"),
        ("MAILSTATE_IMAP_USER", "MAILSTATE_IMAP_PASSWORD"),
        ("MAILSTATE_IMAP_USER", "LAB_IMAP_SECRET"),  # a password_env the TOML names
        ("MAILSTATE_SSH_HOST", "MAILSTATE_LDAP_PASSWORD"),
        ("MAILSTATE_SSH_USER", "MAILSTATE_IMAP_PASSWORD"),
    ],
)
def test_a_password_set_where_a_setting_belongs_is_never_printed(
    lab_env: dict[str, str], clean_lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    variable: str, secret_of: str,
) -> None:
    """Variables shifted in a CI job: a password given as the URL, the user or the host. The error names
    what failed, never the password (it went to the terminal and the CI log)."""
    import os

    state = write_state(tmp_path / "state", 1, top=IMAP_TOP + "\n[providers.ssh]\nhost = \"x.invalid\"\n")
    with (state / "units" / "qlcn.toml").open("a", encoding="utf-8") as f:
        f.write('\n[[shared_folder]]\nmailbox = "unit:qlcn"\npath = "Văn bản đến"\npurpose = "Văn bản"\n'
                'read = ["p000"]\n')
    monkeypatch.setenv("MAILSTATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LAB_IMAP_SECRET", os.environ["MAILSTATE_IMAP_PASSWORD"])
    first = ms("apply", "--yes", "--state", str(state))  # the unit mailbox and its folder exist live
    assert first.returncode == 0, first.stdout + first.stderr
    if secret_of == "LAB_IMAP_SECRET":
        monkeypatch.delenv("MAILSTATE_IMAP_PASSWORD")
    secret = os.environ[secret_of]
    monkeypatch.setenv(variable, secret)
    r = ms("plan", "--state", str(state))
    assert r.returncode != 0
    assert secret not in r.stdout + r.stderr, r.stderr
    assert "<redacted>" in r.stderr or variable in r.stderr, r.stderr


@pytest.mark.parametrize("trap", ["symlink", "hardlink", "theirs"])
@pytest.mark.parametrize("target", ["passwords", "journal", "audit"])
def test_a_planted_link_never_receives_passwords_or_the_journal(
    home: Path, clean_lab: Lab, tmp_path: Path, trap: str, target: str
) -> None:
    """A directory others can write (a shared --journal-dir / --passwords-out place, mode 0777): someone
    plants the file's name as a link to a file they read (or as their own file). apply refuses before any
    change, names the file, and writes nothing into theirs (before: the new person's initial password, or
    the journal, went into the attacker's file and it was chmod-ed)."""
    import os
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs a second user (runs as root in CI and here)")
    nobody = pwd.getpwnam("nobody")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("")
    theirs.chmod(0o644)
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    names = {"passwords": "pw.tsv", "journal": "journal.jsonl", "audit": "audit.jsonl"}
    planted = shared / names[target]
    if trap == "symlink":
        planted.symlink_to(theirs)
    elif trap == "hardlink":
        os.link(theirs, planted)
    else:
        planted.write_text("")
        os.chown(planted, nobody.pw_uid, nobody.pw_gid)
        theirs = planted
    state = write_state(tmp_path / "state", 2)
    r = ms("apply", "--yes", "--provider", "ldap", "--state", str(state), "--journal-dir", str(shared),
           "--audit-log", str(shared / "audit.jsonl"), "--passwords-out", str(shared / "pw.tsv"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert str(planted) in r.stderr and "refused" in r.stderr and "internal error" not in r.stderr, r.stderr
    assert theirs.read_text() == "" and theirs.stat().st_mode & 0o777 == 0o644
    assert people(clean_lab) == {}
