"""Loading the desired state: read every TOML file (documents.py), merge and validate it (validate.py)."""

from __future__ import annotations

import gc
from pathlib import Path

from mailstate.desired_state.documents import read_documents
from mailstate.desired_state.schema import State
from mailstate.desired_state.validate import build_state
from mailstate.errors import ValidationError


def load_state(root: Path) -> State:
    """Read, merge and validate the whole desired state; raises ``ValidationError`` with every problem."""
    root = Path(root)
    collecting = gc.isenabled()
    gc.disable()  # tens of thousands of small objects, no cycles: the collector only slows this down
    try:
        docs, problems = read_documents(root)
        if not docs:
            raise ValidationError(problems)
        state, more = build_state(root, docs, complete=not problems)
    finally:
        if collecting:
            gc.enable()
    problems.extend(more)
    if problems or state is None:
        raise ValidationError(problems)
    return state
