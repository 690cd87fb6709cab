"""Acceptance findings on the GitOps loop, pure: CODEOWNERS as GitHub and GitLab read it (escaped spaces,
`dir/*`, GitLab sections and their default owners, optional sections), the reviewed-plan comparison with
repeated changes, the forge client's answers to a hostile or misconfigured forge (a local HTTP server: the
one stand-in), the size of what is posted, and the drift report's terminal text."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mailstate.forge import Forge, ForgeError
from mailstate.model.change import Action, Change
from mailstate.model.records import Record
from mailstate.reconciler.apply.reviewed import compare
from mailstate.reconciler.plan.codeowners import CodeOwners
from mailstate.reconciler.plan.plan import Plan
from mailstate.reconciler.plan.render import drift

# ------------------------------------------------------------------------------------------------
# CODEOWNERS


@pytest.mark.parametrize(
    ("text", "path", "owners"),
    [
        # a space in a path is written `\ ` (GitHub, GitLab); the owners are the words after it
        ("units/Phòng\\ A.toml @a a@x.gov.vn", "units/Phòng A.toml", ("@a", "a@x.gov.vn")),
        ("units/Phòng\\ A.toml @a", "units/Phòng", ()),
        # `dir/*`: the files directly in dir/, not deeper; `dir/` and `dir/**`: everything below
        ("/units/* @u", "units/qlcn.toml", ("@u",)),
        ("/units/* @u", "units/old/qlcn.toml", ()),
        ("/units/ @u", "units/old/qlcn.toml", ("@u",)),
        ("/units/** @u", "units/old/qlcn.toml", ("@u",)),
        ("units/**/*.toml @u", "units/a/b/qlcn.toml", ("@u",)),
        # `\#` is a `#` in a pattern; `#` after a space starts a comment
        ("\\#units @h # not an owner", "#units", ("@h",)),
        # GitLab: an entry without owners takes its section's default owners
        ("[Đơn vị] @it @vp\n/units/\n/units/vp.toml @vp-head", "units/qlcn.toml", ("@it", "@vp")),
        ("[Đơn vị] @it @vp\n/units/\n/units/vp.toml @vp-head", "units/vp.toml", ("@vp-head",)),
        # GitLab: every section that matches must approve (the last match of each), no repeats
        ("* @all\n[A]\n/units/ @a\n[B][2]\n*.toml @b @all", "units/qlcn.toml", ("@all", "@a", "@b")),
        # GitLab: sections of one name (any case) are one section; an optional section needs no approval
        ("[A]\n/units/ @a\n[a]\n/units/vp.toml @v", "units/vp.toml", ("@v",)),
        ("* @all\n^[Optional] @opt\n/units/", "units/qlcn.toml", ("@all",)),
        # no matching rule: nobody
        ("/mailstate.toml @it", "units/qlcn.toml", ()),
    ],
)
def test_codeowners_as_the_forges_read_it(text: str, path: str, owners: tuple[str, ...]) -> None:
    assert CodeOwners.parse(text).owners(path) == owners


# ------------------------------------------------------------------------------------------------
# apply --reviewed: a change repeated in the reviewed plan (a hand-edited file) is not the fresh plan


def _ch(key: str, after: Any = None) -> Change:
    return Change(id=key, action=Action.CREATE, kind="person", key=key, provider="ldap", before=None,
                  after=after or {"name": key})


def test_reviewed_comparison_counts_repeated_changes() -> None:
    cmp = compare([_ch("a"), _ch("a")], [_ch("a")])
    assert not cmp.same and [c.key for c in cmp.missing] == ["a"]
    cmp = compare([_ch("a")], [_ch("a"), _ch("a")])
    assert not cmp.same and [c.key for c in cmp.added] == ["a"]
    assert compare([_ch("a"), _ch("b")], [_ch("b"), _ch("a")]).same


# ------------------------------------------------------------------------------------------------
# The forge client against a hostile or misconfigured forge (a local HTTP server)

TOKEN = "glpat-accept-SECRET-0123"


@pytest.fixture
def hostile() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    """/<mode>/… answers: r401 (echoes the token in its reason and body), r500, html (200, not JSON),
    dict (200, JSON without ids), elsewhere (a pagination link to another host), ok (a small GitLab)."""
    seen: list[tuple[str, str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, data: bytes, reason: str | None = None, **headers: str) -> None:
            self.send_response(code, reason)
            for k, v in headers.items():
                self.send_header(k.replace("_", "-"), v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n)) if n else None
            seen.append((self.command, self.path, body))
            token = self.headers.get("PRIVATE-TOKEN") or ""
            mode = self.path.split("/")[1]
            if mode == "r401":
                self._send(401, f"bad token {token}".encode(), f"Unauthorized {token}")
            elif mode == "r500":
                self._send(500, f"<html>{token}</html>".encode())
            elif mode == "html":
                self._send(200, b"<html>sign in</html>")
            elif mode == "dict":
                self._send(200, b'{"message": "404 Project Not Found"}')
            elif mode == "elsewhere":
                more = {} if "page=" in self.path else {"X_Next_Page": "2"}
                self._send(200, b"[]", **more)
            elif self.path.endswith("/user"):
                self._send(200, b'{"id": 7}')
            elif self.command == "GET":
                self._send(200, b"[]")
            else:
                self._send(201, b'{"id": 5, "iid": 5}')

        do_GET = do_POST = do_PUT = _handle  # noqa: N815

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _forge(api: str) -> Forge:
    env = {"MAILSTATE_FORGE_TOKEN": TOKEN, "CI_API_V4_URL": api, "CI_PROJECT_ID": "4"}
    return Forge.from_env("gitlab", env)


_FAILURES = [
    ("r401", "HTTP 401 Unauthorized (check MAILSTATE_FORGE_TOKEN"),
    ("r500", "HTTP 500 Internal Server Error"),
    ("html", "not JSON (is CI_API_V4_URL the forge's API address?)"),
    ("dict", "check CI_API_V4_URL"),
]


@pytest.mark.parametrize(
    ("mode", "expect", "call"),
    [(m, e, c) for m, e in _FAILURES for c in ("comment", "new_comment", "issue", "merged")]
    # the artifact is the file itself: any bytes are its answer (apply --reviewed checks them)
    + [(m, e, "fetch") for m, e in _FAILURES[:2]],
)
def test_a_failing_forge_names_the_variable_never_the_token(
    hostile: tuple[str, list[Any]], mode: str, expect: str, call: str
) -> None:
    f = _forge(f"{hostile[0]}/{mode}")
    with pytest.raises(ForgeError) as exc:
        if call == "comment":
            f.upsert_comment("3", "<!-- mailstate-plan org=x scope=all -->\nplan")
        elif call == "new_comment":
            f.upsert_comment("3", "applied")
        elif call == "issue":
            f.upsert_issue("drift", "<!-- mailstate-drift -->")
        elif call == "merged":
            f.merged_request("abc")
        else:
            f.fetch_plan("3", "mailstate-plan", "plan.json")
    message = str(exc.value)
    assert TOKEN not in message and expect in message


@pytest.mark.parametrize(
    "api", ["gitlab.example/api/v4", f"https://ci:{TOKEN}@gitlab.example/api/v4", "https://[::1/api",
            "http://127.0.0.1:99999/api", "ftp://gitlab.example/api"],
)
def test_a_wrong_api_address_is_named_and_not_shown(api: str) -> None:
    with pytest.raises(ForgeError) as exc:
        _forge(api)
    assert str(exc.value).startswith("CI_API_V4_URL: not an API address") and TOKEN not in str(exc.value)


def test_the_token_goes_only_to_the_api_host(hostile: tuple[str, list[Any]]) -> None:
    f = _forge(f"{hostile[0]}/ok")
    with pytest.raises(ForgeError, match="another host"):
        f.request("GET", "http://attacker.invalid/x")
    f = Forge.from_env("github", {"MAILSTATE_FORGE_TOKEN": TOKEN, "GITHUB_API_URL": f"{hostile[0]}/ok",
                                  "GITHUB_REPOSITORY": "o/r"})
    with pytest.raises(ForgeError, match="another host"):
        f.request("GET", hostile[0].replace("127.0.0.1", "localhost") + "/ok/x")


def test_what_is_posted_fits_the_forge(hostile: tuple[str, list[Any]]) -> None:
    url, seen = hostile
    f = _forge(f"{url}/ok")
    marker = "<!-- mailstate-plan org=x scope=all -->"
    f.upsert_comment("3", marker + "\n" + "x" * 200_000)
    f.upsert_issue("drift", "<!-- mailstate-drift -->\n" + "é" * 100_000)
    posted = [body for method, _, body in seen if method == "POST"]
    assert len(posted) == 2
    assert len(posted[0]["body"]) <= 65_536 and posted[0]["body"].startswith(marker + "\n")
    assert len(posted[1]["description"]) <= 65_536 and "cut at 65,536" in posted[1]["description"]


# ------------------------------------------------------------------------------------------------
# The drift report in a terminal: live values are hostile


def test_drift_text_shows_no_control_characters_from_the_live_side() -> None:
    change = Change(id="u", action=Action.UPDATE, kind="person", key="anhld", provider="ldap", unit="qlcn",
                    before={"title": "\x1b[2J\x1b]0;owned\x07Chuyên viên\r"}, after={"title": "Chuyên viên"},
                    fields=("title",))
    unlisted = Record(kind="person", key="x\x1b[31m", provider="ldap",
                      attrs={"name": "A\x1b[0m\nB", "address": "x@y\x07"})
    plan = Plan.build([change], [unlisted], as_of=date(2026, 11, 23), organization="sct.binhdinh.gov.vn")
    for lang in ("vi", "en"):
        out = drift.text(drift.report(plan), lang)
        assert not any(ord(ch) < 32 and ch != "\n" for ch in out), repr(out)
        assert "\x7f" not in out


# ------------------------------------------------------------------------------------------------
# Every error names the variable to fix, once


def test_missing_imap_password_names_the_variable_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailstate.model.settings import ImapSettings
    from mailstate.providers.imap.provider import password_of

    monkeypatch.delenv("MAILSTATE_IMAP_PASSWORD", raising=False)
    monkeypatch.delenv("SCT_IMAP_PASSWORD", raising=False)
    with pytest.raises(Exception) as exc:
        password_of(ImapSettings(url="imaps://mail.x.gov.vn", admin_user="mailstate"))
    assert str(exc.value).count("MAILSTATE_IMAP_PASSWORD") == 1
    with pytest.raises(Exception) as exc:
        password_of(ImapSettings(url="imaps://mail.x.gov.vn", admin_user="m",
                                 password_env="SCT_IMAP_PASSWORD"))
    assert "MAILSTATE_IMAP_PASSWORD or SCT_IMAP_PASSWORD" in str(exc.value)
