"""dovecot for the lab (being written: not started by default yet)."""

from __future__ import annotations

from typing import Any

from mailstate.errors import LabError


def start(*args: Any) -> None:
    raise LabError("dovecot is not part of the lab yet")


def ready(*args: Any) -> None:
    raise LabError("dovecot is not part of the lab yet")


def reset(*args: Any) -> None:
    return None
