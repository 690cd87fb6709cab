"""Naming policy: transliteration, templates, the agencies' examples and the collision policy."""

from __future__ import annotations

import random
import time
import unicodedata
from pathlib import Path

import pytest

from mailstate.desired_state.naming import (
    UNIT_FIELDS,
    NameParts,
    TemplateError,
    derive_addresses,
    parse_template,
    person_local_part,
    render,
    transliterate,
    unit_name_key,
    unit_values,
)
from mailstate.desired_state.schema import Group, Naming, Organization, Person, State, Unit
from mailstate.errors import ValidationError
from mailstate.model.settings import Source

BD = "{given}{initials}"
VL = "{initials}{given}.{unit}"
DOMAIN = "sct.binhdinh.gov.vn"
BANG = "Nguyễn Văn Bằng"
TIEN = "Nguyễn Văn Tiến"

# (full name, expected local part under the Bình Định rule, BĐ art.4.2)
BD_NAMES: list[tuple[str, str]] = [
    ("Nguyễn Văn Bằng", "bangnv"),  # the regulation's own example
    ("Trần Thị Thủy", "thuytt"),
    ("Lê Minh Tuấn", "tuanlm"),
    ("Phạm Thị Hồng Nhung", "nhungpth"),
    ("Đặng Văn Lâm", "lamdv"),
    ("Đỗ Thị Hà", "hadt"),
    ("Ưng Hoàng Phúc", "phucuh"),
    ("Ứng Văn Khiêm", "khiemuv"),
    ("Hồ Chí Minh", "minhhc"),
    ("Võ Nguyên Giáp", "giapvn"),
    ("Ngô Bảo Châu", "chaunb"),
    ("Âu Dương Lân", "lanad"),
    ("Ông Ích Khiêm", "khiemoi"),
    ("Ông Văn Dũng", "dungov"),
    ("Lê Ê Kiều", "kieule"),
    ("Phạm Ơn Tài", "taipo"),
    ("Đinh Ăng Khoa", "khoada"),
    ("Lò Văn Ăng", "anglv"),
    ("Âu Cơ", "coa"),
    ("Trịnh Công Sơn", "sontc"),
    ("Bùi Thị Xuân", "xuanbt"),
    ("Nguyễn Thị Minh Khai", "khaintm"),
    ("Tôn Nữ Thị Ninh", "ninhtnt"),
    ("Huỳnh Tấn Phát", "phatht"),
    ("Dương Văn Minh", "minhdv"),
    ("Đoàn Thị Điểm", "diemdt"),
    ("Đinh Bộ Lĩnh", "linhdb"),
    ("Lý Công Uẩn", "uanlc"),
    ("Mạc Đĩnh Chi", "chimd"),
    ("Cao Bá Quát", "quatcb"),
    ("Nguyễn Du", "dun"),
    ("Lê Lợi", "loil"),
    ("Phan Bội Châu", "chaupb"),
    ("Vũ Trọng Phụng", "phungvt"),
    ("Triệu Thị Trinh", "trinhtt"),
    ("Trần Hưng Đạo", "daoth"),
    ("Nguyễn Thị Ước", "uocnt"),
    ("Lương Thế Vinh", "vinhlt"),
    ("Kha Vạn Cân", "cankv"),
    ("Tạ Quang Bửu", "buutq"),
    ("Nguyễn Thị Ngọc Hương", "huongntn"),
    ("Đàm Vĩnh Hưng", "hungdv"),
    ("Nguyễn Ngọc Ánh", "anhnn"),
    ("Công Tằng Tôn Nữ Thị Phương", "phuongcttnt"),  # a multi-word family name counts as family + middles
    ("  Nguyễn   Văn\tBằng  ", "bangnv"),  # extra spaces
    (unicodedata.normalize("NFD", "Đặng Thùy Trâm"), "tramdt"),  # decomposed input
    (unicodedata.normalize("NFD", "Ưng Thị Ơn"), "onut"),
    ("nguyễn văn bằng", "bangnv"),  # lower-case input
    ("NGUYỄN VĂN BẰNG", "bangnv"),  # upper-case input
]

# (full name, unit id, expected local part under the Vĩnh Long rule, VL art.4)
VL_NAMES: list[tuple[str, str, str]] = [
    ("Nguyễn Văn Tiến", "stc", "nvtien.stc"),  # the regulation's own example
    ("Trần Thị Thủy", "stc", "ttthuy.stc"),
    ("Ưng Hoàng Phúc", "stp", "uhphuc.stp"),
    ("Đặng Văn Lâm", "sxd", "dvlam.sxd"),
    ("Phạm Ơn Tài", "stc", "potai.stc"),
    ("Nguyễn Du", "stc", "ndu.stc"),
    ("Phạm Thị Hồng Nhung", "stc", "pthnhung.stc"),
    ("Âu Dương Lân", "stp", "adlan.stp"),
]

UNIT_NAMES: list[tuple[str, str]] = [
    ("Sở Tài chính", "staichinh"),  # VL art.4's own example
    ("Sở Tư pháp", "stuphap"),
    ("Sở Kế hoạch và Đầu tư", "skehoachvadautu"),
    ("Văn phòng Ủy ban nhân dân tỉnh", "vpubndtinh"),
    ("Thanh tra tỉnh", "thanhtratinh"),
    ("Sở", "so"),  # a kind-of-unit word alone stays whole
]


def make_state(
    people: list[tuple[str, str]] | None = None,
    *,
    naming: Naming | None = None,
    units: list[Unit] | None = None,
    groups: list[Group] | None = None,
    pinned: dict[str, str] | None = None,
    domain: str = DOMAIN,
) -> State:
    """A State built in memory; each person gets a Source on its own line of units/x.toml."""
    state = State(root=Path("."), organization=Organization(name="Sở Công Thương", domain=domain))
    if naming is not None:
        state.naming = naming
    for unit in units or []:
        state.units[unit.id] = unit
    for group in groups or []:
        state.groups[group.id] = group
    for i, (pid, name) in enumerate(people or []):
        unit = units[0].id if units else None
        person = Person(id=pid, name=name, unit=unit, address=(pinned or {}).get(pid))
        person.located(Source("units/x.toml", 10 * (i + 1), {"name": 10 * (i + 1) + 1}))
        state.people[pid] = person
    return state


@pytest.mark.parametrize(("name", "expected"), BD_NAMES)
def test_bd_rule(name: str, expected: str) -> None:
    """Each name gives the Bình Định address: given name, then the initials of family and middle names."""
    assert person_local_part(name, BD) == expected


def test_name_table_is_large_enough() -> None:
    """The table covers at least 40 real names, as the issue asks."""
    assert len(BD_NAMES) + len(VL_NAMES) >= 40 and len(BD_NAMES) >= 40


@pytest.mark.parametrize(("name", "unit", "expected"), VL_NAMES)
def test_vl_rule(name: str, unit: str, expected: str) -> None:
    """Each name gives the Vĩnh Long address: initials, given name, a dot and the unit's abbreviation."""
    assert person_local_part(name, VL, Unit(id=unit, name="Sở")) == expected


@pytest.mark.parametrize(("name", "expected"), UNIT_NAMES)
def test_unit_name(name: str, expected: str) -> None:
    """A unit name gives the Vĩnh Long unit address: kind-of-unit words as initials, the rest whole."""
    assert unit_name_key(name) == expected
    values = unit_values(Unit(id="x", name=name))
    assert render(parse_template("{unit_name}", UNIT_FIELDS), values) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Đặng", "dang"), ("Ưng", "ung"), ("Ơn", "on"), ("Âu", "au"), ("Ê", "e"), ("Ông", "ong"),
        ("Ăng", "ang"),
        ("đường", "duong"), ("Ð", "d"), ("Nguyễn Văn Bằng", "nguyen van bang"), ("ỹ ỵ ữ ặ", "y y u a"),
    ],
)
def test_transliterate(text: str, expected: str) -> None:
    """Marks are stripped and đ/Đ (which NFD leaves alone) become d, in lower case."""
    assert transliterate(text) == expected
    assert transliterate(unicodedata.normalize("NFD", text)) == expected


def test_name_parts() -> None:
    """A name splits into family (first word), middle words and given name (last word)."""
    assert NameParts.of("Nguyễn Thị Minh Khai") == NameParts("nguyen", ("thi", "minh"), "khai")
    assert NameParts.of("Bằng") == NameParts("", (), "bang")
    assert NameParts.of("  ") == NameParts("", (), "")


def test_other_placeholders() -> None:
    """Other agencies' placeholders render as documented (docs/naming.md)."""
    name = "Nguyễn Thị Minh Khai"
    assert person_local_part(name, "{family_initial}{middle_initials}{given}") == "ntmkhai"
    assert person_local_part(name, "{given}.{family}{middle_initials}") == "khai.nguyentm"
    assert person_local_part(name, "{family}{middle}{given}") == "nguyenthiminhkhai"
    assert person_local_part(name, "{given_initial}{family}") == "knguyen"


def test_output_restricted() -> None:
    """Literal text outside [a-z0-9.-] is dropped, dots collapse, no dot at either end."""
    assert person_local_part("Nguyễn Văn Bằng", ".{given}..{initials}_+!.") == "bang.nv"
    assert person_local_part("Nguyễn Văn Bằng", "{middle}.{given}", n="2") == "van.bang2"
    assert person_local_part("Nguyễn Văn Bằng", "Cán-bộ.{given}") == "can-bo.bang"


@pytest.mark.parametrize(
    "template",
    [
        "{given", "given}", "{bogus}", "{given}{}", "{given!r}", "{given:3}", "...", "", "{n}{n}{given}",
        "{group}",
    ],
)
def test_bad_templates(template: str) -> None:
    """A template with unbalanced braces, an unknown placeholder or nothing to produce is refused."""
    with pytest.raises(TemplateError):
        parse_template(template)


def test_template_error_points_at_naming_table() -> None:
    """A bad [naming] template is a ValidationError naming the [naming] table's file, line and field."""
    naming = Naming(person="{given}{initial}")
    naming.located(Source("mailstate.toml", 7, {"person": 8}))
    state = make_state([("a", "Nguyễn Văn Bằng")], naming=naming)
    with pytest.raises(ValidationError) as info:
        derive_addresses(state)
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.field) == ("mailstate.toml", 8, "naming.person")
    assert "{initial}" in problem.message


def test_empty_result_is_reported() -> None:
    """A template that gives nothing for one person is an error pointing at that person and the template."""
    naming = Naming(person="{middle}")
    naming.located(Source("mailstate.toml", 7, {"person": 8}))
    state = make_state([("a", "Nguyễn Văn Bằng"), ("b", "Lê Lợi")], naming=naming)
    with pytest.raises(ValidationError) as info:
        derive_addresses(state)
    (problem,) = info.value.problems
    assert (problem.file, problem.line) == ("units/x.toml", 20)
    assert "mailstate.toml:8" in problem.message


def test_regulation_examples_end_to_end() -> None:
    """Nguyễn Văn Bằng twice gives bangnv and bangnv2 (BĐ art.4.2); VL gives nvtien.stc and staichinh."""
    bd = derive_addresses(make_state([("p1", "Nguyễn Văn Bằng"), ("p2", "Nguyễn Văn Bằng")]))
    assert bd.people == {"p1": f"bangnv@{DOMAIN}", "p2": f"bangnv2@{DOMAIN}"}
    vl = derive_addresses(
        make_state(
            [("tiennv", "Nguyễn Văn Tiến")],
            naming=Naming(person=VL, unit="{unit_name}"),
            units=[Unit(id="stc", name="Sở Tài chính")],
            domain="vinhlong.gov.vn",
        )
    )
    assert vl.people == {"tiennv": "nvtien.stc@vinhlong.gov.vn"}
    assert vl.units == {"stc": "staichinh@vinhlong.gov.vn"}


def test_unit_abbreviation_and_groups() -> None:
    """{unit} is the abbreviation when given; groups take [naming].group, and none when it is empty."""
    units = [Unit(id="phong-tc", name="Sở Tài chính", abbreviation="STC")]
    groups = [Group(id="lanhdao", name="Lãnh đạo Sở"), Group(id="toanso", name="Toàn Sở", address="all@x.vn")]
    state = make_state([("a", "Nguyễn Văn Tiến")], naming=Naming(person=VL), units=units, groups=groups)
    got = derive_addresses(state)
    assert got.people["a"] == f"nvtien.stc@{DOMAIN}"
    assert got.units["phong-tc"] == f"stc@{DOMAIN}"
    assert got.groups == {"lanhdao": f"lanhdao@{DOMAIN}", "toanso": "all@x.vn"}
    assert got.origin[("group", "toanso")] == "pinned"
    state.naming = Naming(group="")
    assert derive_addresses(state).groups == {"toanso": "all@x.vn"}


def test_collisions_numbered_by_id_whatever_the_order() -> None:
    """Namesakes are numbered by id, so the order of files and tables does not matter."""
    people = [("c", "Nguyễn Văn Bằng"), ("a", "Nguyễn Văn Bằng"), ("b", "Nguyễn Văn Bằng")]
    expected = {"a": f"bangnv@{DOMAIN}", "b": f"bangnv2@{DOMAIN}", "c": f"bangnv3@{DOMAIN}"}
    for seed in range(5):
        random.Random(seed).shuffle(people)
        assert derive_addresses(make_state(people)).people == expected


def test_alike_names_collide() -> None:
    """Names that differ only in marks (Văn / Vân) transliterate alike and so collide."""
    people = [("a", "Nguyễn Văn Bằng"), ("b", "Nguyễn Vân Bằng"), ("c", "Nguyên Văn Băng")]
    got = derive_addresses(make_state(people))
    assert got.people == {"a": f"bangnv@{DOMAIN}", "b": f"bangnv2@{DOMAIN}", "c": f"bangnv3@{DOMAIN}"}


def test_namesake_added_later_with_pinned_addresses() -> None:
    """A namesake with a smaller id added after the others were pinned gets the next number; nobody moves."""
    pinned = {"m1": f"bangnv@{DOMAIN}", "m2": f"bangnv2@{DOMAIN}"}
    state = make_state([("m1", BANG), ("m2", BANG), ("a0", BANG)], pinned=pinned)
    got = derive_addresses(state)
    assert got.people == {"a0": f"bangnv3@{DOMAIN}", **pinned}
    assert got.origin[("person", "m1")] == "pinned" and got.origin[("person", "a0")] == "derived"


def test_namesake_added_later_with_live_addresses() -> None:
    """Unpinned people keep their live addresses when a namesake with a smaller id appears."""
    live = {"bangnv": "m1", f"bangnv2@{DOMAIN}": "m2"}
    state = make_state([("m1", BANG), ("m2", BANG), ("a0", BANG)])
    got = derive_addresses(state, live)
    assert got.people == {"a0": f"bangnv3@{DOMAIN}", "m1": f"bangnv@{DOMAIN}", "m2": f"bangnv2@{DOMAIN}"}
    assert got.origin[("person", "m2")] == "live"


def test_live_address_of_someone_else_is_skipped() -> None:
    """An address taken in the live directory by someone the TOML does not know is never handed out."""
    got = derive_addresses(make_state([("a", "Nguyễn Văn Bằng")]), {f"BANGNV@{DOMAIN}": "bangnv-old"})
    assert got.people == {"a": f"bangnv2@{DOMAIN}"}


def test_old_addresses_are_taken() -> None:
    """An old address kept as an alias belongs to its owner and is not given to a namesake."""
    state = make_state([("a", BANG), ("b", BANG)], pinned={"a": f"bangnv.qlcn@{DOMAIN}"})
    state.people["a"].old_addresses.append(f"bangnv@{DOMAIN}")
    assert derive_addresses(state).people["b"] == f"bangnv2@{DOMAIN}"


def test_live_address_no_longer_a_form_changes() -> None:
    """After a transfer (VL rule) the live address is not kept: a new one is derived, the old stays taken."""
    units = [Unit(id="sxd", name="Sở Xây dựng"), Unit(id="stc", name="Sở Tài chính")]
    state = make_state([("a", TIEN), ("b", TIEN)], naming=Naming(person=VL), units=units)
    state.people["b"].unit = "stc"
    got = derive_addresses(state, {"nvtien.stc": "a"})
    assert got.people == {"a": f"nvtien.sxd@{DOMAIN}", "b": f"nvtien.stc2@{DOMAIN}"}


def test_sequence_placeholder_and_separator() -> None:
    """{n} puts the number where it says; the separator goes before the number."""
    units = [Unit(id="stc", name="Sở Tài chính")]
    people = [("a", "Nguyễn Văn Tiến"), ("b", "Nguyễn Văn Tiến")]
    naming = Naming(person="{initials}{given}{n}.{unit}")
    got = derive_addresses(make_state(people, naming=naming, units=units))
    assert got.people == {"a": f"nvtien.stc@{DOMAIN}", "b": f"nvtien2.stc@{DOMAIN}"}
    got = derive_addresses(make_state(people, naming=Naming(separator="-", collision_start=3)))
    assert got.people == {"a": f"tiennv@{DOMAIN}", "b": f"tiennv-3@{DOMAIN}"}


def test_id_that_is_a_form_claims_it() -> None:
    """A person whose id is a free form of their address (bangnv2) gets that form; the others go around it."""
    got = derive_addresses(make_state([("a", BANG), ("bangnv2", BANG), ("c", BANG)]))
    assert got.people == {"a": f"bangnv@{DOMAIN}", "bangnv2": f"bangnv2@{DOMAIN}", "c": f"bangnv3@{DOMAIN}"}


def test_duplicate_pinned_address_is_an_error() -> None:
    """Two objects pinned to one address is a ValidationError naming the second one's line."""
    pinned = {"a": f"bangnv@{DOMAIN}", "b": f"BangNV@{DOMAIN}"}
    with pytest.raises(ValidationError) as info:
        derive_addresses(make_state([("a", "Nguyễn Văn Bằng"), ("b", "Nguyễn Văn Bằng")], pinned=pinned))
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.field) == ("units/x.toml", 20, "address")


def test_unit_needed_but_missing() -> None:
    """A template using {unit} for a person without a unit is an error at that person, not a crash."""
    state = make_state([("a", "Nguyễn Văn Tiến")], naming=Naming(person=VL))
    with pytest.raises(ValidationError) as info:
        derive_addresses(state)
    assert info.value.problems[0].field == "unit"


def test_ten_thousand_people_fast() -> None:
    """Deriving 10,000 addresses with many namesakes takes well under 5 s of CPU time."""
    names = [BANG, "Trần Thị Thủy", "Lê Minh Tuấn"]
    people = [(f"p{i:05d}", names[i % 3]) for i in range(10_000)]
    state = make_state(people)
    t = time.process_time()
    got = derive_addresses(state)
    assert time.process_time() - t < 5
    assert len(set(got.people.values())) == 10_000
    assert got.people["p09999"] == f"bangnv3334@{DOMAIN}"


@pytest.mark.parametrize(
    ("name", "template", "expected"),
    [
        # MOST's support address phongktht@most.gov.vn
        ("Phòng Kỹ thuật hạ tầng", "{unit_kind}{unit_rest_initials}", "phongktht"),
        ("Sở Tài chính", "{unit_kind_initials}{unit_rest}", "staichinh"),
        ("Văn phòng Ủy ban nhân dân tỉnh", "{unit_kind_initials}", "vpubnd"),
        ("Trung tâm Khuyến công", "{unit_initials}", "ttkc"),
        ("Sở Tài chính", "{unit_name_full}", "sotaichinh"),
    ],
)
def test_unit_name_parts(name: str, template: str, expected: str) -> None:
    """The unit-name placeholders split the kind of unit (Phòng, Sở …) from the rest of the name."""
    values = unit_values(Unit(id="x", name=name))
    assert render(parse_template(template, UNIT_FIELDS), values) == expected


def test_taken_addresses_are_skipped() -> None:
    """Addresses passed as taken (owner unknown) are never handed out; local parts take the domain."""
    state = make_state([("a", BANG), ("b", BANG)])
    got = derive_addresses(state, taken=["bangnv", f"BANGNV3@{DOMAIN}"])
    assert got.people == {"a": f"bangnv2@{DOMAIN}", "b": f"bangnv4@{DOMAIN}"}


def test_pin_beats_someone_elses_live_address() -> None:
    """When the TOML pins an address that another person holds live, the pin wins and the other moves on."""
    state = make_state([("a", BANG), ("b", BANG)], pinned={"b": f"bangnv@{DOMAIN}"})
    got = derive_addresses(state, {"bangnv": "a"})
    assert got.people == {"a": f"bangnv2@{DOMAIN}", "b": f"bangnv@{DOMAIN}"}
