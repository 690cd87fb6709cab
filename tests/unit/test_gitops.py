"""GitOps pieces, pure: CODEOWNERS, the comment marker and approvals, GitLab's report, the reviewed-plan
comparison, the drift report, colour and prompt language, and the forge client against a local HTTP server
(the one stand-in: no forge runs here)."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from mailstate.cli.gitops_cmds import confirm_apply, use_color
from mailstate.desired_state.loader import load_state
from mailstate.model import i18n
from mailstate.model.change import Action, Change
from mailstate.model.records import Record
from mailstate.reconciler.apply.reviewed import check_reviewed, compare
from mailstate.reconciler.plan.codeowners import CodeOwners, approvals, find, plan_approvals, unit_files
from mailstate.reconciler.plan.plan import Plan
from mailstate.reconciler.plan.render import MAX_MARKDOWN, MarkdownRenderer, drift
from mailstate.reconciler.plan.render.gitops import GITLAB_COUNTS, gitlab_report, marker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def ch(action: str, kind: str, key: str, after: Any = None, unit: str | None = None, **kw: Any) -> Change:
    return Change(id=kw.pop("id", f"{action}:{kind}:{key}"), action=Action.from_label(action), kind=kind,
                  key=key, provider=kw.pop("provider", "ldap"), before=kw.pop("before", None), after=after,
                  unit=unit, **kw)


def plan_of(*changes: Change, unlisted: tuple[Record, ...] = (), scope: list[str] | None = None) -> Plan:
    return Plan.build(changes, unlisted, as_of=date(2026, 11, 23), organization="sct.binhdinh.gov.vn",
                      scope=scope, unit_names={"qlcn": "Phòng Quản lý Công nghiệp"})


# ------------------------------------------------------------------------------------------------
# CODEOWNERS


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/units/qlcn.toml", "units/qlcn.toml", True),
        ("/units/qlcn.toml", "x/units/qlcn.toml", False),
        ("qlcn.toml", "units/qlcn.toml", True),        # no slash: any depth
        ("units/*.toml", "units/qlcn.toml", True),      # a slash inside: anchored
        ("units/*.toml", "a/units/qlcn.toml", False),
        ("/units/", "units/qlcn.toml", True),           # a folder: everything below
        ("*.toml", "units/qlcn.toml", True),
        ("/*.toml", "units/qlcn.toml", False),          # * stays inside one folder
        ("/**/qlcn.toml", "units/deep/qlcn.toml", True),
        ("*", "mailstate.toml", True),
    ],
)
def test_codeowners_patterns(pattern: str, path: str, matches: bool) -> None:
    assert bool(CodeOwners.parse(f"{pattern} @o").owners(path)) is matches


def test_codeowners_last_match_wins_comments_and_sections_skipped() -> None:
    co = CodeOwners.parse("# c\n* @all\n/units/ @units # trailing\n/units/vp.toml @vp @it\n")
    assert co.owners("units/vp.toml") == ("@vp", "@it")
    assert co.owners("units/qlcn.toml") == ("@units",)
    assert co.owners("mailstate.toml") == ("@all",)


@pytest.mark.parametrize(
    "where", ["CODEOWNERS", ".github/CODEOWNERS", ".gitlab/CODEOWNERS", "docs/CODEOWNERS"]
)
def test_codeowners_found_in_each_forge_location(tmp_path: Path, where: str) -> None:
    assert find(tmp_path) is None
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text("* @x\n")
    assert find(tmp_path) == tmp_path / where


def test_approvals_per_unit_file_of_the_example(tmp_path: Path) -> None:
    """Each unit a plan touches lists its file's owners; an organisation-wide change those of the file its
    reason cites; units not touched are not listed."""
    state = tmp_path / "s"
    shutil.copytree(EXAMPLES / "binhdinh-sct", state)
    st = load_state(state)
    files = unit_files(st)
    assert files["qlcn"] == "units/qlcn.toml"
    plan = plan_of(
        ch("update", "person", "bangnv", {"title": "x"}, unit="qlcn"),
        ch("create", "group", "toanso", {"address": "toanso@x"},
           reasons=("mailstate.toml:40: group toanso",)),
    )
    rows = plan_approvals(state, plan, st)
    assert rows == [
        ("qlcn", "units/qlcn.toml", ("@sct-binhdinh/qlcn", "@sct-binhdinh/vp")),
        ("", "mailstate.toml", ("@sct-binhdinh/vp", "@sct-binhdinh/sct")),
    ]
    out = MarkdownRenderer(approvals=rows).render(plan)
    section = out.split("### Cần duyệt", 1)[1]
    assert ("**qlcn** — Phòng Quản lý Công nghiệp (`units/qlcn.toml`): "
            "@sct-binhdinh/qlcn, @sct-binhdinh/vp") in section
    assert "@sct-binhdinh/qltm" not in out


def test_approvals_skip_files_without_owner() -> None:
    co = CodeOwners.parse("/units/a.toml @a\n")
    rows = approvals(co, [ch("create", "person", "p", unit="a"), ch("create", "person", "q", unit="b")],
                     {"a": "units/a.toml", "b": "units/b.toml"})
    assert rows == [("a", "units/a.toml", ("@a",))]


# ------------------------------------------------------------------------------------------------
# Marker, size, GitLab


def test_marker_is_the_first_line_and_names_org_and_scope() -> None:
    assert MarkdownRenderer().render(plan_of()).split("\n", 1)[0] == (
        "<!-- mailstate-plan org=sct.binhdinh.gov.vn scope=all -->")
    scoped = plan_of(ch("create", "person", "p", unit="qlcn"), scope=["unit:qlcn", "unit:vp"])
    assert MarkdownRenderer().render(scoped).startswith(
        "<!-- mailstate-plan org=sct.binhdinh.gov.vn scope=unit:qlcn,unit:vp -->\n")


def test_marker_cannot_be_closed_by_a_hostile_org() -> None:
    p = plan_of()
    p.organization = "x --> <script>\n"
    m = marker(p)
    assert m.count("-->") == 1 and m.endswith(" -->") and "\n" not in m and "<script" not in m


def test_markdown_with_many_approvals_stays_under_the_limit() -> None:
    changes = [ch("create", "person", f"p{u:03d}x{i}", {"title": "Chuyên viên " * 8}, unit=f"u{u:03d}")
               for u in range(150) for i in range(30)]
    rows = [(f"u{u:03d}", f"units/u{u:03d}.toml", ("@org/team-" + "x" * 20, "@org/vp")) for u in range(150)]
    out = MarkdownRenderer(approvals=rows).render(plan_of(*changes))
    assert len(out) <= MAX_MARKDOWN
    assert out.startswith("<!-- mailstate-plan ") and "u149" in out.split("### Chi tiết", 1)[0]


def test_gitlab_report_counts_every_action() -> None:
    assert set(GITLAB_COUNTS) == {a.label for a in Action}
    plan = plan_of(*(ch(a.label, "person", f"k{a.label}") for a in Action))
    assert gitlab_report(plan) == {"create": 2, "update": 5, "delete": 2}
    assert gitlab_report(plan_of()) == {"create": 0, "update": 0, "delete": 0}


# ------------------------------------------------------------------------------------------------
# apply --reviewed: the comparison


def test_reviewed_ignores_order_ids_reasons_before() -> None:
    a = [ch("create", "person", "p", {"name": "P"}, reasons=("units/a.toml:3: person p",)),
         ch("update", "person", "q", {"title": "T"}, before={"title": "old"})]
    b = [ch("update", "person", "q", {"title": "T"}, before={"title": "by hand"}, id="other"),
         ch("create", "person", "p", {"name": "P"}, reasons=("units/a.toml:9: person p",))]
    assert compare(a, b).same
    assert check_reviewed(plan_of(*a), plan_of(*b)) is True


def test_reviewed_names_added_missing_and_different() -> None:
    from mailstate.errors import StalePlan

    reviewed = plan_of(ch("create", "person", "p", {"name": "P"}),
                       ch("update", "person", "q", {"title": "T"}),
                       ch("lock", "person", "r", {"locked": True}))
    fresh = plan_of(ch("create", "person", "p", {"name": "P2"}), ch("lock", "person", "r", {"locked": True}),
                    ch("update", "unit", "vp", {"name": "V"}))
    with pytest.raises(StalePlan) as exc, i18n.use("en"):
        check_reviewed(reviewed, fresh)
    msg = str(exc.value)
    assert "added (not reviewed): update unit vp [ldap]" in msg
    assert "missing (reviewed, no longer planned): update person q [ldap]" in msg
    assert "different: create person p [ldap] (name differ" in msg
    assert "lock person r" not in msg and "nothing was applied" in msg
    assert exc.value.exit_code == 1
    with pytest.raises(StalePlan) as exc:  # the default language: actions, kinds and fields in words
        check_reviewed(reviewed, fresh)
    assert "thêm (chưa được duyệt): sửa đơn vị vp [ldap]" in str(exc.value)
    assert "added" not in str(exc.value) and "update" not in str(exc.value)


def test_reviewed_all_live_already_is_nothing_to_do() -> None:
    assert check_reviewed(plan_of(ch("create", "person", "p", {"name": "P"})), plan_of()) is False


# ------------------------------------------------------------------------------------------------
# Drift report


def drift_plan() -> Plan:
    return plan_of(
        ch("update", "person", "bangnv", {"title": "Trưởng phòng"}, before={"title": "Phó phòng"},
           unit="qlcn", fields=("title",)),
        ch("lock", "person", "old", {"locked": True}, unit="qlcn",
           reasons=("MIC art.5.3: left on 2026-01-01",)),
        unlisted=(Record("person", "stranger", {"name": "Người Lạ", "address": "stranger@x.vn", "unit": "vp"},
                         "ldap", "vp"),),
    )


def test_drift_report_sections() -> None:
    rep = drift.report(drift_plan())
    assert rep["report"] == "drift" and rep["drift"] is True
    assert rep["counts"] == {"by_hand": 1, "lifecycle": 1, "unlisted": 1}
    assert rep["by_hand"][0]["fields"] == [{"field": "title", "live": "Phó phòng", "toml": "Trưởng phòng"}]
    assert rep["lifecycle"][0]["action"] == "lock"
    assert rep["unlisted"][0] == {"kind": "person", "key": "stranger", "provider": "ldap", "name": "Người Lạ",
                                  "unit": "vp", "address": "stranger@x.vn"}
    json.dumps(rep)  # JSON-able
    md = drift.markdown(rep)
    assert md.startswith("<!-- mailstate-drift org=sct.binhdinh.gov.vn scope=all -->\n## Báo cáo sai lệch")
    assert "mailstate plan" not in md
    sections = [line for line in md.splitlines() if line.startswith("### ")]
    assert len(sections) == 3
    assert ": trên hệ thống Phó phòng → TOML Trưởng phòng" in md
    assert "cán bộ `stranger` — Người Lạ; đơn vị vp; stranger@x.vn" in md
    en = drift.markdown(rep, "en")
    assert "title: live Phó phòng → TOML Trưởng phòng" in en
    assert "person `stranger` — Người Lạ; unit vp; stranger@x.vn" in en
    assert "Drift report: sct" in drift.text(rep, "en")


def test_drift_report_without_drift() -> None:
    rep = drift.report(plan_of())
    assert rep["drift"] is False and "Không có sai lệch" in drift.markdown(rep)


# ------------------------------------------------------------------------------------------------
# Terminal manners


class Tty:
    def isatty(self) -> bool:
        return True


def test_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(Tty()) is True
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_color(Tty()) is False


def test_no_color_flag_on_plan_apply_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailstate.cli import cli

    for cmd in ("plan", "apply", "drift"):
        assert "--no-color" in CliRunner().invoke(cli, [cmd, "--help"]).output


@pytest.mark.parametrize(
    ("lang", "question"), [("vi", "Áp dụng 3 thay đổi này?"), ("en", "Apply these 3 changes?")]
)
def test_prompt_in_the_chosen_language(lang: str, question: str) -> None:
    @click.command()
    def ask() -> None:
        with i18n.use(lang):
            click.echo("yes" if confirm_apply(3) else "no")

    out = CliRunner().invoke(ask, input="n\n").output
    assert question in out and out.strip().endswith("no")


# ------------------------------------------------------------------------------------------------
# The forge client against a local HTTP server


class FakeForge:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.notes: list[dict[str, Any]] = [{"id": i, "body": f"other {i}"} for i in range(150)]


@pytest.fixture
def fake_forge() -> Iterator[tuple[str, FakeForge]]:
    state = FakeForge()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n)) if n else None
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.requests.append((self.command, self.path, headers, body))
            path, _, query = self.path.partition("?")
            if self.command == "GET" and path.endswith("/user"):
                self._send({"id": 7, "username": "project_42_bot"})
            elif self.command == "GET" and path.endswith("/notes"):
                page = int(dict(q.split("=") for q in query.split("&")).get("page", "1"))
                chunk = state.notes[(page - 1) * 100: page * 100]
                nxt = {"X-Next-Page": str(page + 1)} if page * 100 < len(state.notes) else {}
                self._send(chunk, nxt)
            elif self.command == "POST":
                note = {"id": 1000 + len(state.notes), "body": body["body"], "author": {"id": 7}}
                state.notes.append(note)
                self._send(note)
            elif self.command == "PUT":
                nid = int(path.rsplit("/", 1)[1])
                for note in state.notes:
                    if note["id"] == nid:
                        note["body"] = body["body"]
                self._send({"id": nid})
            else:
                self._send([])

        do_GET = do_POST = do_PUT = _handle  # noqa: N815

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v4", state
    finally:
        server.shutdown()
        server.server_close()


def test_forge_comment_created_then_updated(fake_forge: tuple[str, FakeForge]) -> None:
    from mailstate.forge import Forge

    url, state = fake_forge
    token = "glpat-secret-token-123"
    env = {"MAILSTATE_FORGE_TOKEN": token, "CI_API_V4_URL": url, "CI_PROJECT_ID": "group/state"}
    f = Forge.from_env("gitlab", env)
    body = "<!-- mailstate-plan org=x scope=all -->\n## plan 1"
    # another participant's comment that starts with the marker is not the pipeline's: never updated
    state.notes.insert(0, {"id": 999, "body": body + "\nfake plan", "author": {"id": 99}})
    assert f.upsert_comment("7", body)[0] == "created"
    assert f.upsert_comment("7", body.replace("plan 1", "plan 2"))[0] == "updated"  # found on page 2
    marked = [n["body"] for n in state.notes if n["body"].startswith("<!--")]
    assert marked == [body + "\nfake plan", body.replace("plan 1", "plan 2")]
    assert f.upsert_comment("7", "applied 3 changes")[0] == "created"  # no marker: a new comment
    notes = "/api/v4/projects/group%2Fstate/merge_requests/7/notes"
    assert all(path.startswith(notes) or path == "/api/v4/user"
               for _, path, _, _ in state.requests)
    assert all(h.get("private-token") == token and token not in p for _, p, h, _ in state.requests)


def test_forge_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailstate.forge import Forge, ForgeError

    with pytest.raises(ForgeError, match="MAILSTATE_FORGE_TOKEN is not set"):
        Forge.from_env("gitlab", {})
    with pytest.raises(ForgeError, match="CI_API_V4_URL is not set"):
        Forge.from_env("gitlab", {"MAILSTATE_FORGE_TOKEN": "t"})
    f = Forge.from_env("gitlab", {"MAILSTATE_FORGE_TOKEN": "tok-xyz", "CI_API_V4_URL": "http://127.0.0.1:9/x",
                                  "CI_PROJECT_ID": "1"})
    with pytest.raises(ForgeError) as exc:
        f.upsert_comment("1", "<!-- mailstate-plan -->")
    assert "tok-xyz" not in str(exc.value) and "cannot reach" in str(exc.value)
