"""The forge's REST API, for the CI pipelines (examples/ci): GitLab v4 and GitHub, through urllib (stdlib).

- ``upsert_comment``: the one merge-request comment whose first line is the body's first line (the
  ``<!-- mailstate-plan … -->`` marker) is updated; without one a comment is added. A body without a marker
  is always a new comment (the result of an apply).
- ``merged_request`` / ``fetch_plan``: the merge request merged into this commit, and the plan file its
  pipeline kept as an artifact.
- ``upsert_issue``: the one open issue labelled ``mailstate-drift`` is updated, or one is opened.

Where everything comes from: the API base URL and project from the CI's own variables (GitLab:
``CI_API_V4_URL``, ``CI_PROJECT_ID``, ``CI_MERGE_REQUEST_IID``, ``CI_COMMIT_SHA``; GitHub: ``GITHUB_API_URL``,
``GITHUB_REPOSITORY``, ``GITHUB_EVENT_PATH``, ``GITHUB_SHA``), the token from ``MAILSTATE_FORGE_TOKEN``
(a masked CI variable). The token goes in a header only: never in a URL, a message or a log line.
"""

from __future__ import annotations

import http
import http.client
import io
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mailstate.errors import MailstateError

TOKEN_ENV = "MAILSTATE_FORGE_TOKEN"
DRIFT_LABEL = "mailstate-drift"
TIMEOUT = 30
MAX_BODY = 65_536
"""The longest comment or issue GitHub takes (GitLab more): a longer body is cut, its first line kept."""
GITHUB_ACTIONS_LOGIN = "github-actions[bot]"
"""Who GITHUB_TOKEN is (it may not read /user)."""


class ForgeError(MailstateError):
    """The forge's API refused or failed (the message names the variable or the request to check)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def fit(body: str, limit: int = MAX_BODY) -> str:
    """``body`` cut to ``limit`` characters with a note; its first line (a marker) is kept."""
    if len(body) <= limit:
        return body
    note = f"\n\n> ⚠ cut at {limit:,} characters (the forge's limit); the full text is in the job's log.\n"
    return body[: limit - len(note)] + note


def _need(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if not value:
        raise ForgeError(f"{name} is not set (a CI variable the forge sets in its jobs)")
    return value


@dataclass
class Forge:
    kind: str  # gitlab | github
    api: str
    project: str
    token: str

    @classmethod
    def from_env(cls, kind: str, env: Mapping[str, str] | None = None) -> Forge:
        env = os.environ if env is None else env
        token = env.get(TOKEN_ENV)
        if not token:
            raise ForgeError(f"{TOKEN_ENV} is not set: give the job a masked CI variable holding a token")
        if kind == "gitlab":
            return cls(kind, _api_url(env, "CI_API_V4_URL"),
                       urllib.parse.quote(_need(env, "CI_PROJECT_ID"), safe=""), token)
        if kind == "github":
            return cls(kind, _api_url(env, "GITHUB_API_URL", "https://api.github.com"),
                       _need(env, "GITHUB_REPOSITORY"), token)
        raise ForgeError(f"--forge {kind!r}: choose gitlab or github")

    @property
    def api_env(self) -> str:
        return "CI_API_V4_URL" if self.kind == "gitlab" else "GITHUB_API_URL"

    def _error(self, message: str, status: int | None = None) -> ForgeError:
        """A ForgeError whose text never holds the token (a forge, or a wrong host, may echo it back)."""
        return ForgeError(message.replace(self.token, "***"), status)

    # ------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, raw: bool = False) -> tuple[Any, Any]:
        """(decoded JSON or bytes, headers). ``path`` is relative to the API base (or a full URL)."""
        url = path if path.startswith(("http://", "https://")) else self.api + path
        api = urllib.parse.urlsplit(self.api)
        there = urllib.parse.urlsplit(url)
        if (there.scheme, there.netloc) != (api.scheme, api.netloc):  # a link the forge gave: never elsewhere
            raise self._error(f"{method} {there.path}: the forge API named another host; the token is sent "
                              f"only to {self.api_env}'s host")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        if self.kind == "gitlab":
            req.add_unredirected_header("PRIVATE-TOKEN", self.token)
        else:
            req.add_unredirected_header("Authorization", f"Bearer {self.token}")
            req.add_header("Accept", "application/vnd.github+json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        where = f"{method} {urllib.parse.urlsplit(url).path}"
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                payload = resp.read()
                headers = resp.headers
        except urllib.error.HTTPError as exc:
            # the standard phrase, never the server's own words (which could echo the token back)
            known = exc.code in http.HTTPStatus._value2member_map_
            phrase = http.HTTPStatus(exc.code).phrase if known else ""
            hint = (f" (check {TOKEN_ENV}: its scope and expiry)" if exc.code in (401, 403)
                    else f" (check {self.api_env} and the project)" if exc.code == 404 else "")
            raise self._error(f"{where}: HTTP {exc.code} {phrase}{hint}", exc.code) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise self._error(f"{where}: cannot reach the forge API ({reason}; check {self.api_env})"
                              ) from None
        if raw:
            return payload, headers
        try:
            return (json.loads(payload) if payload.strip() else None), headers
        except ValueError:
            raise self._error(f"{where}: the answer is not JSON (is {self.api_env} the forge's API address?)"
                              ) from None

    def _expect(self, value: Any, kind: type, where: str) -> Any:
        if not isinstance(value, kind):
            raise self._error(f"{where}: unexpected answer from the forge API (check {self.api_env})")
        return value

    def me(self) -> tuple[str, Any]:
        """("id", number) on GitLab, ("login", name) on GitHub: who the token is, to touch only its own
        comments and issues (another participant's comment that starts with the marker is not ours)."""
        if self.kind == "gitlab":
            user, _ = self.request("GET", "/user")
            return "id", self._expect(user, dict, "GET /user").get("id")
        try:
            user, _ = self.request("GET", "/user")
        except ForgeError as exc:
            if exc.status in (401, 403):  # GITHUB_TOKEN may not read /user
                return "login", GITHUB_ACTIONS_LOGIN
            raise
        return "login", self._expect(user, dict, "GET /user").get("login")

    def _mine(self, item: Any, me: tuple[str, Any]) -> bool:
        who = item.get("author" if self.kind == "gitlab" else "user") if isinstance(item, dict) else None
        return isinstance(who, dict) and me[1] is not None and who.get(me[0]) == me[1]

    def pages(self, path: str) -> Iterator[Any]:
        """Every item of a paginated list (GitLab ``X-Next-Page``, GitHub ``Link: rel="next"``)."""
        sep = "&" if "?" in path else "?"
        url: str | None = f"{path}{sep}per_page=100"
        while url:
            items, headers = self.request("GET", url)
            yield from self._expect(items if items is not None else [], list, f"GET {path}")
            url = None
            if self.kind == "gitlab" and headers.get("X-Next-Page"):
                url = f"{path}{sep}per_page=100&page={headers['X-Next-Page']}"
            elif self.kind == "github":
                m = re.search(r'<([^>]+)>;\s*rel="next"', headers.get("Link") or "")
                url = m.group(1) if m else None

    # ------------------------------------------------------------------------------------------
    def _notes_path(self, mr: str) -> str:
        if self.kind == "gitlab":
            return f"/projects/{self.project}/merge_requests/{mr}/notes"
        return f"/repos/{self.project}/issues/{mr}/comments"

    def upsert_comment(self, mr: str, body: str) -> tuple[str, Any]:
        """("updated" | "created", the comment's id). Only a comment of the token's own user is updated."""
        body = fit(body)
        first = body.split("\n", 1)[0]
        existing = None
        if first.startswith("<!-- mailstate-"):
            me = self.me()
            path = self._notes_path(mr) + ("?sort=asc" if self.kind == "gitlab" else "")
            for note in self.pages(path):
                if not self._mine(note, me):
                    continue
                if str(note.get("body") or "").split("\n", 1)[0].strip() == first.strip():
                    existing = note["id"]
                    break
        if existing is not None:
            if self.kind == "gitlab":
                self.request("PUT", f"{self._notes_path(mr)}/{existing}", {"body": body})
            else:
                self.request("PATCH", f"/repos/{self.project}/issues/comments/{existing}", {"body": body})
            return "updated", existing
        created, _ = self.request("POST", self._notes_path(mr), {"body": body})
        return "created", self._id(created, "id", f"POST {self._notes_path(mr)}")

    def _id(self, answer: Any, key: str, where: str) -> Any:
        ident = self._expect(answer, dict, where).get(key)
        if ident is None:
            raise self._error(f"{where}: the forge API answered without an id (check {self.api_env})")
        return ident

    def merged_request(self, sha: str) -> str:
        """The number (iid) of the merge request merged as commit ``sha``."""
        if self.kind == "gitlab":
            path = f"/projects/{self.project}/repository/commits/{sha}/merge_requests"
            items, _ = self.request("GET", path)
            items = self._expect(items or [], list, f"GET {path}")
            merged = [m for m in items if isinstance(m, dict) and m.get("state") == "merged" and "iid" in m]
            if merged:
                return str(merged[0]["iid"])
        else:
            path = f"/repos/{self.project}/commits/{sha}/pulls"
            items, _ = self.request("GET", path)
            items = self._expect(items or [], list, f"GET {path}")
            merged = [p for p in items if isinstance(p, dict) and p.get("merged_at") and "number" in p]
            if merged:
                return str(merged[0]["number"])
        raise ForgeError(f"no merged merge request for commit {sha}: a push to the default branch "
                         "without a reviewed merge request (apply it with a plan reviewed by hand)")

    def fetch_plan(self, mr: str, job: str, artifact: str) -> bytes:
        """The plan file kept by the merge request's pipeline (GitLab: job ``job``'s ``artifact`` path;
        GitHub: the newest artifact named ``artifact``-<mr>, a zip holding plan.json)."""
        if self.kind == "gitlab":
            ref = urllib.parse.quote(f"refs/merge-requests/{mr}/head", safe="")
            path = urllib.parse.quote(artifact)
            q = urllib.parse.urlencode({"job": job})
            data, _ = self.request("GET", f"/projects/{self.project}/jobs/artifacts/{ref}/raw/{path}?{q}",
                                   raw=True)
            return bytes(data)
        name = f"{artifact}-{mr}"
        found, _ = self.request("GET", f"/repos/{self.project}/actions/artifacts?"
                                + urllib.parse.urlencode({"name": name, "per_page": 100}))
        listing = self._expect(found or {}, dict, "GET actions/artifacts").get("artifacts") or []
        arts = sorted((a for a in self._expect(listing, list, "GET actions/artifacts")
                       if isinstance(a, dict) and a.get("archive_download_url") and not a.get("expired")),
                      key=lambda a: a.get("created_at") or "", reverse=True)
        if not arts:
            raise ForgeError(f"no artifact {name} (the merge request's plan job keeps it; expired?)")
        data, _ = self.request("GET", arts[0]["archive_download_url"], raw=True)
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = [n for n in zf.namelist() if n.endswith(".json")]
                if not names:
                    raise ForgeError(f"artifact {name} holds no .json plan file")
                return zf.read(names[0])
        except zipfile.BadZipFile:
            raise ForgeError(f"artifact {name}: not a zip archive (check {self.api_env})") from None

    def upsert_issue(self, title: str, body: str) -> tuple[str, Any]:
        """Update the one open issue labelled mailstate-drift that the token's user opened, or open one."""
        body = fit(body)
        me = self.me()
        if self.kind == "gitlab":
            base = f"/projects/{self.project}/issues"
            for issue in self.pages(f"{base}?state=opened&labels={DRIFT_LABEL}"):
                if self._mine(issue, me) and issue.get("iid") is not None:
                    self.request("PUT", f"{base}/{issue['iid']}", {"title": title, "description": body})
                    return "updated", issue["iid"]
            made, _ = self.request("POST", base, {"title": title, "description": body, "labels": DRIFT_LABEL})
            return "created", self._id(made, "iid", f"POST {base}")
        base = f"/repos/{self.project}/issues"
        for issue in self.pages(f"{base}?state=open&labels={DRIFT_LABEL}"):
            if self._mine(issue, me) and issue.get("number") is not None:
                self.request("PATCH", f"{base}/{issue['number']}", {"title": title, "body": body})
                return "updated", issue["number"]
        made, _ = self.request("POST", base, {"title": title, "body": body, "labels": [DRIFT_LABEL]})
        return "created", self._id(made, "number", f"POST {base}")


def current_request(kind: str, env: Mapping[str, str] | None = None) -> str:
    """The merge request this pipeline runs for (GitLab ``CI_MERGE_REQUEST_IID``; GitHub: the event's
    pull request number)."""
    env = os.environ if env is None else env
    if kind == "gitlab":
        return _need(env, "CI_MERGE_REQUEST_IID")
    path = _need(env, "GITHUB_EVENT_PATH")
    try:
        event = json.loads(open(path, encoding="utf-8").read())
        return str(event["pull_request"]["number"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ForgeError(f"GITHUB_EVENT_PATH {path}: no pull request number ({type(exc).__name__}); "
                         "give --mr") from None


def _api_url(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    """The forge's API address from ``name``: http(s), a host, no user or password in it."""
    value = env.get(name) or default
    if not value:
        raise ForgeError(f"{name} is not set (a CI variable the forge sets in its jobs)")
    try:
        parts = urllib.parse.urlsplit(value)
        _ = parts.port  # a port that is not a number raises here
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and "@" not in parts.netloc
    except ValueError:
        ok = False
    if not ok:
        raise ForgeError(f"{name}: not an API address (https://host/…, without a user or password; the token "
                         f"comes from {TOKEN_ENV}); the value is not shown")
    return value.rstrip("/")


def commit_sha(kind: str, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return _need(env, "CI_COMMIT_SHA" if kind == "gitlab" else "GITHUB_SHA")
