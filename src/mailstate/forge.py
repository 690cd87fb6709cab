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


class ForgeError(MailstateError):
    """The forge's API refused or failed (the message names the variable or the request to check)."""


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
            return cls(kind, _need(env, "CI_API_V4_URL").rstrip("/"),
                       urllib.parse.quote(_need(env, "CI_PROJECT_ID"), safe=""), token)
        if kind == "github":
            return cls(kind, (env.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/"),
                       _need(env, "GITHUB_REPOSITORY"), token)
        raise ForgeError(f"--forge {kind!r}: choose gitlab or github")

    # ------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, raw: bool = False) -> tuple[Any, Any]:
        """(decoded JSON or bytes, headers). ``path`` is relative to the API base (or a full URL)."""
        url = path if path.startswith(("http://", "https://")) else self.api + path
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
            hint = f" (check {TOKEN_ENV}: its scope and expiry)" if exc.code in (401, 403) else ""
            raise ForgeError(f"{where}: HTTP {exc.code} {exc.reason}{hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ForgeError(f"{where}: cannot reach the forge API ({reason})") from None
        if raw:
            return payload, headers
        return (json.loads(payload) if payload.strip() else None), headers

    def pages(self, path: str) -> Iterator[Any]:
        """Every item of a paginated list (GitLab ``X-Next-Page``, GitHub ``Link: rel="next"``)."""
        sep = "&" if "?" in path else "?"
        url: str | None = f"{path}{sep}per_page=100"
        while url:
            items, headers = self.request("GET", url)
            yield from items or []
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
        """("updated" | "created", the comment's id)."""
        first = body.split("\n", 1)[0]
        existing = None
        if first.startswith("<!-- mailstate-"):
            path = self._notes_path(mr) + ("?sort=asc" if self.kind == "gitlab" else "")
            for note in self.pages(path):
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
        return "created", (created or {}).get("id")

    def merged_request(self, sha: str) -> str:
        """The number (iid) of the merge request merged as commit ``sha``."""
        if self.kind == "gitlab":
            path = f"/projects/{self.project}/repository/commits/{sha}/merge_requests"
            items, _ = self.request("GET", path)
            merged = [m for m in items or [] if m.get("state") == "merged"]
            if merged:
                return str(merged[0]["iid"])
        else:
            items, _ = self.request("GET", f"/repos/{self.project}/commits/{sha}/pulls")
            merged = [p for p in items or [] if p.get("merged_at")]
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
        arts = sorted((a for a in (found or {}).get("artifacts", []) if not a.get("expired")),
                      key=lambda a: a.get("created_at") or "", reverse=True)
        if not arts:
            raise ForgeError(f"no artifact {name} (the merge request's plan job keeps it; expired?)")
        data, _ = self.request("GET", arts[0]["archive_download_url"], raw=True)
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = [n for n in zf.namelist() if n.endswith(".json")]
            if not names:
                raise ForgeError(f"artifact {name} holds no .json plan file")
            return zf.read(names[0])

    def upsert_issue(self, title: str, body: str) -> tuple[str, Any]:
        """Update the one open issue labelled mailstate-drift, or open one."""
        if self.kind == "gitlab":
            base = f"/projects/{self.project}/issues"
            for issue in self.pages(f"{base}?state=opened&labels={DRIFT_LABEL}"):
                self.request("PUT", f"{base}/{issue['iid']}", {"title": title, "description": body})
                return "updated", issue["iid"]
            made, _ = self.request("POST", base, {"title": title, "description": body, "labels": DRIFT_LABEL})
            return "created", (made or {}).get("iid")
        base = f"/repos/{self.project}/issues"
        for issue in self.pages(f"{base}?state=open&labels={DRIFT_LABEL}"):
            self.request("PATCH", f"{base}/{issue['number']}", {"title": title, "body": body})
            return "updated", issue["number"]
        made, _ = self.request("POST", base, {"title": title, "body": body, "labels": [DRIFT_LABEL]})
        return "created", (made or {}).get("number")


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


def commit_sha(kind: str, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return _need(env, "CI_COMMIT_SHA" if kind == "gitlab" else "GITHUB_SHA")
