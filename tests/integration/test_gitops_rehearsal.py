"""A pipeline rehearsal: the example agency in a real git repository, the `script` lines of
examples/ci/gitlab-ci.yml run in order against the lab (merge-request plan → merge → `apply --reviewed` →
nightly), GitLab's API answered by a small local HTTP server that records the requests (the one stand-in:
no forge runs here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from ruamel.yaml import YAML

from mailstate.lab import Lab

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "binhdinh-sct"
BIN = Path(sys.executable).parent
TOKEN = "glpat-rehearsal-token-0123456789"
PIPELINE = YAML(typ="safe").load((ROOT / "examples/ci/gitlab-ci.yml").read_text())


class GitLab:
    """What the rehearsal's GitLab knows: notes per merge request, merge commits, artifacts, issues."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.notes: dict[str, list[dict[str, Any]]] = {}
        self.merged: dict[str, str] = {}  # commit sha → iid
        self.artifacts: dict[str, bytes] = {}  # iid → plan.json
        self.issues: list[dict[str, Any]] = []
        self.next_id = 1


@pytest.fixture
def gitlab() -> Iterator[tuple[str, GitLab]]:
    g = GitLab()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, payload: Any, raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n)) if n else None
            g.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            if self.headers.get("PRIVATE-TOKEN") != TOKEN:
                return self._send(401, {"message": "401 Unauthorized"})
            path = self.path.split("?", 1)[0]
            if path == "/api/v4/user":  # the project access token's bot user
                return self._send(200, {"id": 1, "username": "project_42_bot"})
            if m := re.fullmatch(r"/api/v4/projects/42/merge_requests/(\d+)/notes(?:/(\d+))?", path):
                notes = g.notes.setdefault(m.group(1), [])
                if self.command == "GET":
                    return self._send(200, notes)
                if self.command == "POST":
                    notes.append({"id": g.next_id, "body": body["body"], "author": {"id": 1}})
                    g.next_id += 1
                    return self._send(201, notes[-1])
                for note in notes:
                    if note["id"] == int(m.group(2)):
                        note["body"] = body["body"]
                return self._send(200, {})
            if m := re.fullmatch(r"/api/v4/projects/42/repository/commits/(\w+)/merge_requests", path):
                iid = g.merged.get(m.group(1))
                return self._send(200, [{"iid": int(iid), "state": "merged"}] if iid else [])
            if m := re.fullmatch(r"/api/v4/projects/42/jobs/artifacts/([^/]+)/raw/plan.json", path):
                iid = re.fullmatch(r"refs/merge-requests/(\d+)/head", unquote(m.group(1)))
                assert iid and "job=mailstate-plan" in self.path
                return self._send(200, None, raw=g.artifacts[iid.group(1)])
            if path == "/api/v4/projects/42/issues":
                if self.command == "GET":
                    return self._send(200, [])
                g.issues.append(body)
                return self._send(201, {"iid": len(g.issues)})
            return self._send(404, {"message": "404 Not Found"})

        do_GET = do_POST = do_PUT = _handle  # noqa: N815

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v4", g
    finally:
        server.shutdown()
        server.server_close()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}).stdout.strip()


PROTECTED = ("MAILSTATE_LDAP_PASSWORD", "MAILSTATE_IMAP_PASSWORD")
"""The writing accounts' passwords (docs/gitops.md: protected variables, main only)."""


def run_job(name: str, repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The job's `script` lines, in one bash with errexit (as GitLab's shell runner does), its variables
    expanded from the environment."""
    job = PIPELINE[name]
    job_env = dict(env)
    if any("merge_request_event" in str(rule.get("if")) for rule in job.get("rules", [])):
        # GitLab gives protected variables only to protected branches: not to a merge request's jobs
        for key in PROTECTED:
            job_env.pop(key, None)
    for key, value in {**PIPELINE.get("variables", {}), **job.get("variables", {})}.items():
        if key == "MAILSTATE_HOME":
            continue  # the test's own home instead of /var/lib/mailstate
        job_env[key] = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), str(value))
    script = "\n".join(job["script"])
    return subprocess.run(["bash", "-e", "-c", script], cwd=repo, env=job_env, capture_output=True, text=True,
                          timeout=600)


def test_pipeline_rehearsal(sct_all: Lab, gitlab: tuple[str, GitLab], tmp_path: Path) -> None:
    url, g = gitlab
    origin = tmp_path / "origin"
    shutil.copytree(EXAMPLE, origin)
    git(origin, "init", "-q", "-b", "main")
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "base")
    env = {k: v for k, v in os.environ.items()}
    env.update({
        "PATH": f"{BIN}:{env.get('PATH', '')}", "CI_API_V4_URL": url, "CI_PROJECT_ID": "42",
        "MAILSTATE_FORGE_TOKEN": TOKEN,
        "MAILSTATE_LDAP_READ_BIND_DN": os.environ["MAILSTATE_LDAP_BIND_DN"],
        "MAILSTATE_LDAP_READ_PASSWORD": os.environ["MAILSTATE_LDAP_PASSWORD"],
        # the lab has one master user; a real server gives plans their own (docs/gitops.md)
        "MAILSTATE_IMAP_READ_USER": os.environ["MAILSTATE_IMAP_USER"],
        "MAILSTATE_IMAP_READ_PASSWORD": os.environ["MAILSTATE_IMAP_PASSWORD"],
    })
    base = subprocess.run(["mailstate", "apply", "--yes"], cwd=origin, env=env, capture_output=True,
                          text=True)
    assert base.returncode == 0, base.stdout + base.stderr

    def merge_request(iid: str, branch: str, file: str, old: str, new: str) -> Path:
        """A clone on a new branch from main with one edit, and its merge-request pipeline."""
        work = tmp_path / f"mr{iid}"
        git(tmp_path, "clone", "-q", str(origin), str(work))
        git(work, "checkout", "-q", "-b", branch)
        text = (work / file).read_text()
        assert old in text
        (work / file).write_text(text.replace(old, new, 1))
        git(work, "commit", "-qam", f"MR {iid}")
        r = run_job("mailstate-plan", work, {**env, "CI_MERGE_REQUEST_IID": iid})
        assert r.returncode == 0, r.stdout + r.stderr
        g.artifacts[iid] = (work / "plan.json").read_bytes()
        assert json.loads((work / "gitlab-plan-report.json").read_text()) == {"create": 0, "update": 1,
                                                                               "delete": 0}
        return work

    def merge(iid: str, work: Path, branch: str) -> subprocess.CompletedProcess[str]:
        git(origin, "fetch", "-q", str(work), f"{branch}:{branch}")
        git(origin, "merge", "-q", "--no-ff", "-m", f"Merge !{iid}", branch)
        sha = git(origin, "rev-parse", "HEAD")
        g.merged[sha] = iid
        return run_job("mailstate-apply", origin, {**env, "CI_COMMIT_SHA": sha})

    # two merge requests from one base
    mr1 = merge_request("1", "b1", "units/qlcn.toml", 'title        = "Trưởng phòng"', 'title = "Giám đốc"')
    mr2 = merge_request("2", "b2", "units/qltm.toml", 'title     = "Chuyên viên"',
                        'title = "Chuyên viên chính"')
    [comment] = g.notes["1"]
    first, rest = comment["body"].split("\n", 1)
    assert first == "<!-- mailstate-plan org=sct.binhdinh.gov.vn scope=all -->"
    approvals = rest.split("### Cần duyệt", 1)[1].split("###", 1)[0]
    assert "`units/qlcn.toml`): @sct-binhdinh/qlcn, @sct-binhdinh/vp" in approvals
    assert "qltm" not in approvals
    # a second push updates the one comment
    r = run_job("mailstate-plan", mr1, {**env, "CI_MERGE_REQUEST_IID": "1"})
    assert r.returncode == 0 and len(g.notes["1"]) == 1, r.stderr

    applied1 = merge("1", mr1, "b1")
    assert applied1.returncode == 0, applied1.stdout + applied1.stderr
    # main moved: the plain saved plan of the second is refused, --reviewed applies it
    plain = subprocess.run(["mailstate", "apply", str(mr2 / "plan.json")], cwd=origin, env=env,
                           capture_output=True, text=True)
    assert plain.returncode == 1 and "stale" in plain.stderr, plain.stdout + plain.stderr
    applied2 = merge("2", mr2, "b2")
    assert applied2.returncode == 0, applied2.stdout + applied2.stderr
    assert "đã áp dụng 1 thay đổi" in applied2.stdout  # the pipeline speaks the agency's language (vi)
    assert g.notes["2"][-1]["body"].startswith("### mailstate apply (exit 0)")
    check = subprocess.run(["mailstate", "plan", "--detailed-exitcode"], cwd=origin, env=env,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    # a live change between review and merge stops --reviewed with nothing applied
    mr3 = merge_request("3", "b3", "units/qlcn.toml", 'title     = "Phó Trưởng phòng"',
                        'title = "Trưởng phòng"')
    conn = sct_all.ldap(as_="root")
    dn = f"uid=sonbt,ou=people,{sct_all.base_dn}"
    assert conn.modify(dn, {"title": [("MODIFY_REPLACE", ["Sửa tay"])]}), conn.result
    applied3 = merge("3", mr3, "b3")
    assert applied3.returncode == 1, applied3.stdout + applied3.stderr
    assert "thêm (chưa được duyệt): sửa cán bộ sonbt" in applied3.stdout
    assert "chưa áp dụng gì" in applied3.stdout
    assert g.notes["3"][-1]["body"].startswith("### mailstate apply (exit 1)")
    conn.search(f"uid=thuytt,ou=people,{sct_all.base_dn}", "(objectClass=*)", attributes=["title"])
    assert conn.entries[0].title.value == "Phó Trưởng phòng"  # MR 3's change was not applied

    # the nightly job: the drift report as an issue (exit 2), then apply within the limits
    nightly = run_job("mailstate-nightly", origin, env)
    assert nightly.returncode == 0, nightly.stdout + nightly.stderr
    [issue] = g.issues
    assert issue["description"].startswith("<!-- mailstate-drift org=sct.binhdinh.gov.vn")
    assert "sonbt" in issue["description"]
    assert "trên hệ thống Sửa tay → TOML Trưởng phòng" in issue["description"]
    assert issue["labels"] == "mailstate-drift"
    conn.search(f"uid=thuytt,ou=people,{sct_all.base_dn}", "(objectClass=*)", attributes=["title"])
    assert conn.entries[0].title.value == "Trưởng phòng"

    # the token went in a header only, on every request
    assert g.requests and all(h.get("private-token") == TOKEN and TOKEN not in p for _, p, h in g.requests)
    for out in (applied1, applied2, applied3, nightly):
        assert TOKEN not in out.stdout + out.stderr
