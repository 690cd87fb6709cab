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
from mailstate.reconciler import drift
from mailstate.reconciler.change import Action, Change, Record
from mailstate.reconciler.codeowners import CodeOwners
from mailstate.reconciler.plan import Plan
from mailstate.reconciler.reviewed import compare

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
