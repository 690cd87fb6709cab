"""The five example agencies under examples/: each is a complete, valid state repository that shows every
feature the brief asks for (namesakes, leavers, locks, nested groups, shared folders, grants)."""

from __future__ import annotations

import re
import shutil
import tomllib
import unicodedata
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from mailstate.cli import cli
from mailstate.desired_state.loader import load_state
from mailstate.desired_state.naming import PERSON_FIELDS, parse_template, person_values, render
from mailstate.desired_state.schema import State
from mailstate.model.records import parse_ref

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
EXAMPLES = ("binhdinh-sct", "mic", "most", "monre", "vinhlong")
DOMAINS = {
    "binhdinh-sct": "sct.binhdinh.gov.vn",
    "mic": "mic.gov.vn",
    "most": "most.gov.vn",
    "monre": "monre.gov.vn",
    "vinhlong": "vinhlong.gov.vn",
}
PINNED_BY_HAND = {"vinhlong": {"unit:ubnd"}, "most": {"unit:lanhdaobo", "unit:thanhtra", "unit:vp"}}
"""Addresses written by hand on purpose (not what the template gives); every other one is assign's output."""


def state_of(name: str) -> State:
    """The loaded and validated desired state of one example."""
    return load_state(EXAMPLES_DIR / name)


def addresses(state: State) -> dict[str, str | None]:
    """Every address of the state, by reference (bangnv, unit:qlcn, group:x)."""
    out: dict[str, str | None] = {pid: p.address for pid, p in state.people.items()}
    out.update({f"unit:{uid}": u.address for uid, u in state.units.items()})
    out.update({f"group:{gid}": g.address for gid, g in state.groups.items()})
    return out


def namesake_pairs(state: State) -> list[tuple[str, str]]:
    """(first, numbered) person ids whose names give the same address and whose addresses differ by the
    collision number alone: the base form (bangnv) and a numbered form (bangnv2) of the same template."""
    tpl = parse_template(state.naming.person, PERSON_FIELDS)
    by_base: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for pid, p in state.people.items():
        unit = state.units.get(p.unit) if p.unit else None
        values = person_values(p.name, unit, pid)
        by_base.setdefault(render(tpl, values), []).append((pid, values))
    pairs: list[tuple[str, str]] = []
    for base, people in by_base.items():
        for first, _ in people:
            if state.people[first].address != f"{base}@{state.domain}":
                continue
            for other, values in people:
                local = (state.people[other].address or "").partition("@")[0]
                numbered = {render(tpl, values, f"{state.naming.separator}{k}") for k in range(2, 10)}
                if other != first and local in numbered:
                    pairs.append((first, other))
    return pairs


def test_the_five_examples_are_there() -> None:
    """examples/ holds exactly the five agencies, each with mailstate.toml and one file per unit (besides the
    pipelines and units of docs/gitops.md: ci/, systemd/)."""
    found = sorted(p.name for p in EXAMPLES_DIR.iterdir() if p.is_dir() and p.name not in ("ci", "systemd"))
    assert found == sorted(EXAMPLES)
    for name in EXAMPLES:
        assert (EXAMPLES_DIR / name / "mailstate.toml").is_file()
        assert sorted((EXAMPLES_DIR / name / "units").glob("*.toml"))


@pytest.mark.parametrize("name", EXAMPLES)
def test_loads_and_validates(name: str) -> None:
    """Each example loads through load_state without a problem, on its agency's domain."""
    state = state_of(name)
    assert state.domain == DOMAINS[name]


@pytest.mark.parametrize("name", EXAMPLES)
def test_validate_command_prints_one_line(name: str) -> None:
    """`mailstate validate` exits 0 on each example and prints a one-line summary."""
    result = CliRunner().invoke(cli, ["validate", "--state", str(EXAMPLES_DIR / name)])
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("name", EXAMPLES)
def test_one_file_per_unit(name: str) -> None:
    """units/<id>.toml holds the unit <id>, so each unit can have its own reviewers."""
    state = state_of(name)
    for uid, unit in state.units.items():
        assert unit.source.file == f"units/{uid}.toml"
    assert len(list((EXAMPLES_DIR / name / "units").glob("*.toml"))) == len(state.units)


@pytest.mark.parametrize("name", EXAMPLES)
def test_size_and_unit_tree(name: str) -> None:
    """10–30 people; a root unit and 4–7 more; at least one unit nested two levels deep; heads everywhere."""
    state = state_of(name)
    assert 10 <= len(state.people) <= 30
    assert 5 <= len(state.units) <= 8
    roots = [u for u in state.units.values() if u.parent is None]
    assert roots
    nested = [u for u in state.units.values() if u.parent and state.units[u.parent].parent]
    assert nested, "no unit below a sub-unit"
    for unit in state.units.values():
        if unit.dissolved_on is None:
            assert unit.head, f"unit {unit.id} has no head"
    assert any(u.delegates for u in state.units.values())


@pytest.mark.parametrize("name", EXAMPLES)
def test_namesakes_differ_by_the_sequence_number(name: str) -> None:
    """At least one pair of people whose names give the same address get the base and a numbered form."""
    assert namesake_pairs(state_of(name)), "no namesake pair"


def test_namesake_pairs_are_the_documented_ones() -> None:
    """The pairs the README describes are the ones the examples hold (bangnv/bangnv2 is BĐ art.4.2's)."""
    assert ("bangnv", "bangnv2") in namesake_pairs(state_of("binhdinh-sct"))
    assert ("thuytt", "thuytt2") in namesake_pairs(state_of("binhdinh-sct"))
    assert ("nttha", "nttha2") in namesake_pairs(state_of("mic"))
    assert ("hung.pv", "hung.pv2") in namesake_pairs(state_of("most"))
    assert ("lan.nguyent", "lan.nguyent2") in namesake_pairs(state_of("monre"))
    assert ("nvtien.stc", "nvtien2.stc") in namesake_pairs(state_of("vinhlong"))


@pytest.mark.parametrize("name", EXAMPLES)
def test_lifecycle_cases(name: str) -> None:
    """Someone has left, someone is suspended with a reason, a former leader keeps the mailbox."""
    people = state_of(name).people.values()
    left = [p for p in people if p.left_on is not None and not p.keep_after_leaving]
    assert left, "nobody has left"
    assert any(p.left_on and p.left_on <= date(2026, 11, 23) for p in left), "no leaver in the past"
    suspended = [p for p in people if p.suspended]
    assert suspended and all(len(p.suspended or "") > 10 for p in suspended)
    kept = [p for p in people if p.keep_after_leaving]
    assert kept and all(p.left_on is not None for p in kept)


@pytest.mark.parametrize("name", EXAMPLES)
def test_groups_nest(name: str) -> None:
    """Some group holds both a unit mailbox and another group; leavers are in no group."""
    state = state_of(name)
    assert any(
        any(m.startswith("unit:") for m in g.members) and any(m.startswith("group:") for m in g.members)
        for g in state.groups.values()
    )
    gone = {pid for pid, p in state.people.items() if p.left_on and p.left_on <= date(2026, 11, 23)}
    for g in state.groups.values():
        assert not gone & set(g.members), f"group {g.id} holds a leaver"


@pytest.mark.parametrize("name", EXAMPLES)
def test_shared_folders_and_grants(name: str) -> None:
    """A shared folder with a Vietnamese path and read/write lists; a grant until 2027 with a reason."""
    state = state_of(name)
    assert state.shared_folders
    assert any(f.path != f.path.encode("ascii", "ignore").decode() for f in state.shared_folders)
    for f in state.shared_folders:
        assert f.read and f.write and f.purpose
    grants = state.access_grants
    assert any(g.until.year == 2027 for g in grants)
    assert any(re.search(r"\d+/QĐ-", g.reason) for g in grants)
    for g in grants:
        assert parse_ref(g.to)[0] == "person"


@pytest.mark.parametrize("name", EXAMPLES)
def test_assign_check_writes_nothing(name: str) -> None:
    """`mailstate assign --check` exits 0 on each example: every address is already written."""
    result = CliRunner().invoke(cli, ["assign", "--check", "--state", str(EXAMPLES_DIR / name)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", EXAMPLES)
def test_addresses_are_what_assign_derives(name: str, tmp_path: Path) -> None:
    """With the addresses taken out of a copy, `mailstate assign` writes back exactly the committed ones."""
    copy = tmp_path / name
    shutil.copytree(EXAMPLES_DIR / name, copy)
    committed = addresses(state_of(name))
    keep = {committed[ref] for ref in PINNED_BY_HAND.get(name, set())}
    keep |= {p.address for p in state_of(name).people.values() if p.old_addresses}
    for path in copy.rglob("*.toml"):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [
            line for line in lines
            if not (m := re.match(r'^address\s*=\s*"([^"]*)"', line)) or m.group(1) in keep
        ]
        path.write_text("".join(kept), encoding="utf-8")
    result = CliRunner().invoke(cli, ["assign", "--lang", "en", "--state", str(copy)])
    assert result.exit_code == 0, result.output
    assert "assigned" in result.output
    assert addresses(load_state(copy)) == committed


@pytest.mark.parametrize("name", EXAMPLES)
def test_text_is_nfc_and_ids_are_ascii(name: str) -> None:
    """Every file is UTF-8 in Unicode NFC (VL art.9, BĐ art.7.2); ids are lower-case ASCII login names."""
    for path in (EXAMPLES_DIR / name).rglob("*.toml"):
        text = path.read_text(encoding="utf-8")
        assert unicodedata.normalize("NFC", text) == text, path.name
    for ref in addresses(state_of(name)):
        assert re.fullmatch(r"[a-z][a-z0-9._-]*", parse_ref(ref)[1])


@pytest.mark.parametrize("name", EXAMPLES)
def test_providers_point_at_production_without_secrets(name: str) -> None:
    """Providers name a real-looking .gov.vn host over TLS and a password variable, never a password."""
    raw = tomllib.loads((EXAMPLES_DIR / name / "mailstate.toml").read_text(encoding="utf-8"))
    providers = raw["providers"]
    for kind in ("ldap", "imap"):
        settings = providers[kind]
        url = urlsplit(settings["url"])
        assert url.scheme in ("ldaps", "imaps")
        assert (url.hostname or "").endswith(".gov.vn")
        assert settings["password_env"].startswith("MAILSTATE_")
        assert not {k for k in settings if k in ("password", "secret", "token")}
    assert providers["ssh"]["host"].endswith(".gov.vn")
    assert raw["organization"]["domain"] == DOMAINS[name]


@pytest.mark.parametrize("name", EXAMPLES)
def test_policies_cite_their_articles(name: str) -> None:
    """mailstate.toml explains its policies with the regulation's articles in comments."""
    text = (EXAMPLES_DIR / name / "mailstate.toml").read_text(encoding="utf-8")
    assert len(re.findall(r"\b(MIC|MOST|VL|BĐ) art\.\d+", text)) >= 3


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_unit_file_has_reviewers(name: str) -> None:
    """CODEOWNERS gives each units/<id>.toml to its own team and the IT team, and mailstate.toml to IT."""
    owners: dict[str, list[str]] = {}
    for line in (EXAMPLES_DIR / name / "CODEOWNERS").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            pattern, *teams = line.split()
            owners[pattern] = teams
    it_team = owners["*"][0]
    assert it_team in owners["/mailstate.toml"]
    for path in sorted((EXAMPLES_DIR / name / "units").glob("*.toml")):
        teams = owners[f"/units/{path.name}"]
        assert it_team in teams and any(t.endswith(f"/{path.stem}") for t in teams)


def test_readme_describes_every_example() -> None:
    """examples/README.md has a section for each agency's folder."""
    text = (EXAMPLES_DIR / "README.md").read_text(encoding="utf-8")
    for name in EXAMPLES:
        assert f"examples/{name}" in text or f"`{name}/`" in text
