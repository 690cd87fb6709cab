"""The pure parts of `import --layout plain`: unit ids from ou names, the naming template guessed."""

from __future__ import annotations

import pytest

from mailstate.adopt.plain import guess_template, unit_id_from_name


@pytest.mark.parametrize(("name", "expected"), [
    ("Phòng Kế toán", "pketoan"),
    ("Văn phòng", "vanphong"),
    ("../../etc", "etc"),  # path tricks leave letters only (checked against the id pattern)
    ("\u202e", None),  # nothing usable: no id, the importer reports it
])
def test_unit_id_from_name(name: str, expected: str | None) -> None:
    assert unit_id_from_name(name) == expected


def test_guess_template_states_how_many_it_explains() -> None:
    pairs = [("Nguyễn Văn Bằng", "bangnv"), ("Trần Thị Hoa", "hoatt"), ("Lê Thọ", "tho")]
    assert guess_template(pairs) == ("{given}{initials}", 2, 3)
    assert guess_template([("Nguyễn Văn Bằng", "nvbang")])[0] == "{initials}{given}"
    assert guess_template([("Nguyễn Văn Bằng", "x123")]) == (None, 0, 1)
