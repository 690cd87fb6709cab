"""The import graph the redesign set (docs/architecture.md): no cycle in the core, providers that know only
the vocabulary. `make lint` checks the same with import-linter's contracts (pyproject.toml)."""

from __future__ import annotations

import grimp

CORE = ("mailstate.model", "mailstate.desired_state", "mailstate.reconciler", "mailstate.providers",
        "mailstate.adopt", "mailstate.cli")
PROVIDER_MAY_IMPORT = ("mailstate.model", "mailstate.providers", "mailstate.errors", "mailstate.text",
                       "mailstate.redact", "mailstate.gcpause", "mailstate.private_files",
                       "mailstate.ldapconn")


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("mailstate")


def _strongly_connected(graph: grimp.ImportGraph, modules: list[str]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in modules_set:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    modules_set = set(modules)
    for m in modules:
        if m not in index:
            visit(m)
    return found


def test_the_core_has_no_import_cycle() -> None:
    graph = _graph()
    core = sorted(m for m in graph.modules if m.startswith(CORE) or m.count(".") == 1)
    core = [m for m in core if not m.startswith(("mailstate.lab", "mailstate.serverconfig"))]
    assert _strongly_connected(graph, core) == []


def test_providers_import_only_the_vocabulary_and_the_errors() -> None:
    graph = _graph()
    wrong = sorted(
        f"{m} -> {d}"
        for m in graph.modules
        if m.startswith("mailstate.providers")
        for d in graph.find_modules_directly_imported_by(m)
        if d.startswith("mailstate") and not d.startswith(PROVIDER_MAY_IMPORT)
    )
    assert wrong == []


def test_no_provider_imports_another() -> None:
    graph = _graph()
    names = ("ldap", "imap", "doveadm", "iredmail")
    wrong = sorted(
        f"{m} -> {d}"
        for m in graph.modules
        for a in names
        if m.startswith(f"mailstate.providers.{a}")
        for d in graph.find_modules_directly_imported_by(m)
        for b in names
        if b != a and d.startswith(f"mailstate.providers.{b}")
    )
    assert wrong == []
