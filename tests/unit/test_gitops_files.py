"""The CI pipelines of examples/ci against the SchemaStore schemas check-jsonschema vendors, and the systemd
units of examples/systemd through `systemd-analyze verify` where systemd is present."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = Path(sys.executable).with_name("check-jsonschema")


@pytest.mark.parametrize(
    ("path", "schema"),
    [("examples/ci/gitlab-ci.yml", "vendor.gitlab-ci"),
     ("examples/ci/github/mailstate.yml", "vendor.github-workflows")],
)
def test_ci_file_valid_against_its_schema(path: str, schema: str, tmp_path: Path) -> None:
    ok = subprocess.run([str(CHECK), "--builtin-schema", schema, str(ROOT / path)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the check can fail: a misspelt key is refused
    bad = tmp_path / "bad.yml"
    bad.write_text((ROOT / path).read_text().replace("script:", "scirpt:").replace("runs-on:", "run-on:"))
    refused = subprocess.run([str(CHECK), "--builtin-schema", schema, str(bad)],
                             capture_output=True, text=True)
    assert refused.returncode == 1


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    mailstate = Path(sys.executable).with_name("mailstate")
    for name in ("mailstate-apply.service", "mailstate-apply.timer"):
        text = (ROOT / "examples/systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/local/bin/mailstate", str(mailstate)))
    r = subprocess.run(["systemd-analyze", "verify", *(str(p) for p in sorted(tmp_path.iterdir()))],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "mailstate-apply" not in r.stderr, r.stderr
