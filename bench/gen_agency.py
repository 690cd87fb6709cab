"""Generate the state repository of a synthetic agency with N people (for benchmarks and load tests).

    python bench/gen_agency.py --people 10000 --out DIR [--seed 1] [--domain sct.binhdinh.gov.vn]
                               [--no-addresses]

Layout (DESIGN §2): ``mailstate.toml`` (organisation, policies, the top unit), ``units/<id>.toml`` (one
per unit: ``[unit]``, its ``[[person]]`` entries and its shared folders), ``groups.toml`` and
``grants.toml``. Names are realistic Vietnamese names (NFC); ids and addresses follow Bình Định's rule
(given name + initials, numbered on collision: bangnv, bangnv2 …). The output is deterministic for a seed.
Reuse it from code with ``generate(root, people, seed)``.
"""

from __future__ import annotations

import argparse
import json
import random
import unicodedata
from datetime import date, timedelta
from pathlib import Path

FAMILY = [
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ",
    "Ngô", "Dương", "Lý", "Đinh", "Đoàn", "Lâm", "Mai", "Trương", "Cao", "Tô", "Lưu", "Châu", "Tạ",
]
FAMILY_WEIGHTS = [38, 11, 9, 7, 5, 4, 4, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
MIDDLE_MALE = ["Văn", "Hữu", "Đức", "Minh", "Quốc", "Thanh", "Công", "Xuân", "Ngọc", "Hoàng", "Đình", "Trọng",
               "Anh", "Tuấn", "Quang", "Thế", "Duy", "Bá"]
MIDDLE_FEMALE = ["Thị", "Ngọc", "Thu", "Thanh", "Kim", "Minh", "Hồng", "Bích", "Thúy", "Mỹ", "Phương",
                 "Hoài", "Diệu", "Khánh", "Quỳnh"]
GIVEN_MALE = ["Bằng", "An", "Bình", "Cường", "Dũng", "Đạt", "Hải", "Hùng", "Huy", "Khang", "Khoa", "Long",
              "Lộc", "Minh", "Nam", "Nghĩa", "Phong", "Phúc", "Quân", "Quang", "Sơn", "Tài", "Thắng", "Thành",
              "Tiến", "Toàn", "Trung", "Tuấn", "Việt", "Vinh", "Hiếu", "Đông", "Hòa", "Kiên", "Tùng"]
GIVEN_FEMALE = ["Anh", "Chi", "Dung", "Giang", "Hà", "Hạnh", "Hằng", "Hoa", "Hương", "Lan", "Liên", "Linh",
                "Loan", "Mai", "Ngân", "Nga", "Nhung", "Oanh", "Phương", "Quyên", "Tâm", "Thảo", "Thủy",
                "Trang", "Tuyết", "Uyên", "Vân", "Yến", "Hiền", "Ly"]
TITLES = ["Chuyên viên", "Chuyên viên chính", "Cán sự", "Kế toán viên", "Thanh tra viên", "Nhân viên"]
UNIT_KINDS = [
    ("Văn phòng", ["Hành chính", "Tổng hợp", "Quản trị", "Văn thư Lưu trữ"]),
    ("Phòng", ["Kế hoạch Tài chính", "Quản lý Công nghiệp", "Quản lý Thương mại",
               "Kỹ thuật An toàn Môi trường", "Quản lý Năng lượng", "Xuất nhập khẩu", "Tổ chức Cán bộ",
               "Pháp chế", "Hợp tác Quốc tế",
               "Công nghệ Thông tin", "Thống kê", "Quản lý Xây dựng", "Đầu tư", "Kiểm soát Thủ tục"]),
    ("Thanh tra", ["Sở", "Chuyên ngành", "Hành chính"]),
    ("Chi cục", ["Quản lý Thị trường", "Tiêu chuẩn Đo lường", "Phát triển Nông thôn"]),
    ("Trung tâm", ["Khuyến công", "Xúc tiến Thương mại", "Tư vấn Phát triển", "Dữ liệu"]),
]
UNIT_SUFFIX = ["", "1", "2", "3", "4", "5", "6", "7", "8", "9"]


def ascii_fold(text: str) -> str:
    """Strip Vietnamese marks (đ → d), lower case, keep letters and digits only."""
    text = text.replace("đ", "d").replace("Đ", "D")
    text = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
    return "".join(c for c in text.lower() if c.isascii() and c.isalnum())


def q(value: str) -> str:
    """A TOML basic string (JSON escapes are valid TOML escapes)."""
    return json.dumps(value, ensure_ascii=False)


def qlist(values: list[str]) -> str:
    return "[" + ", ".join(q(v) for v in values) + "]"


class _Ids:
    """Ids unique across people, units and groups, numbered on collision (bangnv, bangnv2 …)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, base: str) -> str:
        base = base if base and base[0].isalpha() else "x" + base
        candidate, n = base, 2
        while candidate in self.used:
            candidate, n = f"{base}{n}", n + 1
        self.used.add(candidate)
        return candidate


def _person_name(rng: random.Random) -> str:
    family = rng.choices(FAMILY, FAMILY_WEIGHTS)[0]
    if rng.random() < 0.5:
        middle, given = rng.choice(MIDDLE_MALE), rng.choice(GIVEN_MALE)
    else:
        middle, given = rng.choice(MIDDLE_FEMALE), rng.choice(GIVEN_FEMALE)
    if rng.random() < 0.15:
        middle += " " + rng.choice(MIDDLE_MALE + MIDDLE_FEMALE)
    return unicodedata.normalize("NFC", f"{family} {middle} {given}")


def _person_id(name: str) -> str:
    words = name.split()
    return ascii_fold(words[-1]) + "".join(ascii_fold(w)[:1] for w in words[:-1])


def generate(root: Path, people: int, seed: int = 1, domain: str = "sct.binhdinh.gov.vn",
             addresses: bool = True) -> None:
    """Write an agency of ``people`` people into ``root`` (created; its TOML files are overwritten)."""
    rng = random.Random(seed)
    root = Path(root)
    (root / "units").mkdir(parents=True, exist_ok=True)
    ids = _Ids()
    top = ids.take(ascii_fold(domain.split(".")[0]) or "so")

    # Units: departments under the top unit, and sections under the larger departments (about 40 people each).
    n_units = max(1, people // 40)
    units: list[dict[str, object]] = []
    seen_names: set[str] = set()
    for i in range(n_units):
        kind, names = UNIT_KINDS[i % len(UNIT_KINDS)]
        base_name = f"{kind} {rng.choice(names)}"
        name = base_name
        k = 1
        while name in seen_names:
            k += 1
            name = f"{base_name} số {k}"
        seen_names.add(name)
        abbrev = "".join(ascii_fold(w)[:1] for w in name.replace(" số ", " ").split() if not w.isdigit())
        uid = ids.take(abbrev + (str(k) if k > 1 else ""))
        parent = top if i < 12 or not units else str(units[rng.randrange(min(len(units), 12))]["id"])
        units.append({"id": uid, "name": name, "parent": parent, "people": []})

    # People, spread over the units (the first few go to the top unit: the direction).
    everyone: list[dict[str, object]] = []
    top_people: list[dict[str, object]] = []
    for i in range(people):
        name = _person_name(rng)
        pid = ids.take(_person_id(name))
        person: dict[str, object] = {"id": pid, "name": name}
        if i < 4 or not units:
            person["unit"] = top
            top_people.append(person)
        else:
            u = units[i % len(units)]
            person["unit"] = u["id"]
            u["people"].append(person)  # type: ignore[attr-defined]
        everyone.append(person)

    today = date(2026, 11, 1)
    lines_top = [
        "# Generated by bench/gen_agency.py: a synthetic agency for benchmarks.",
        "[organization]",
        f"name   = {q('Sở Công Thương tỉnh Bình Định')}",
        f"domain = {q(domain)}",
        "",
        "[naming]                          # BĐ art.4",
        'person    = "{given}{initials}"',
        'unit      = "{unit}"',
        'collision = "number"',
        "",
        "[lifecycle]",
        'lock_after_leaving      = "3 months"    # MIC art.5.3',
        'remove_after_leaving    = "12 months"   # MOST art.13.2b',
        'lock_after_inactivity   = "6 months"    # MOST art.13.3',
        'remove_after_inactivity = "12 months"',
        "",
        "[password]                        # MOST art.17.4",
        "min_length = 8",
        "min_classes = 3",
        "",
        "[quota]",
        'person = "2 GiB"',
        'unit   = "10 GiB"',
        "",
        "[providers.ldap]",
        'url = "ldaps://127.0.0.1:6360"',
        'password_env = "MAILSTATE_LDAP_PASSWORD"',
        "",
        "[unit]",
        f"id   = {q(top)}",
        f"name = {q('Sở Công Thương')}",
    ]
    if top_people:
        lines_top.append(f"head = {q(str(top_people[0]['id']))}")
    lines_top.append("")
    lines_top += _people_lines(top_people, rng, domain, today, addresses, top)
    (root / "mailstate.toml").write_text("\n".join(lines_top) + "\n", encoding="utf-8")

    for u in units:
        members: list[dict[str, object]] = u["people"]  # type: ignore[assignment]
        lines = [f"# {u['name']}", "[unit]", f"id        = {q(str(u['id']))}",
                 f"name      = {q(str(u['name']))}", f"parent    = {q(str(u['parent']))}"]
        active = [p for p in members if "left_on" not in p]
        if members:
            lines.append(f"head      = {q(str(members[0]['id']))}        # manages the unit mailbox")
            delegates = [str(p["id"]) for p in members[1:3]]
            if delegates:
                lines.append(f"delegates = {qlist(delegates)}   # MIC art.6")
        if addresses:
            lines.append(f"address   = {q(str(u['id']) + '@' + domain)}")
        lines.append("")
        lines += _people_lines(members, rng, domain, today, addresses, str(u["id"]))
        if members:
            writers = [str(p["id"]) for p in (active or members)[:3]]
            lines += [
                "[[shared_folder]]                  # MIC art.7",
                f"mailbox = {q('unit:' + str(u['id']))}",
                f"path    = {q('Văn bản đến/' + str(today.year))}",
                f"purpose = {q('Văn bản đến của ' + str(u['name']))}",
                f"read    = {qlist(['unit:' + str(u['id'])])}",
                "write   = [",
                *[f"    {q(w)}," for w in writers],
                "]",
                "",
            ]
        (root / "units" / f"{u['id']}.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    # Groups: the leadership, every unit mailbox, and one group per ~100 people (nested into a few parents).
    glines = ["# Group mailboxes (MOST art.12.5c)"]
    heads = [str(top_people[0]["id"])] if top_people else []
    heads += [str(u["people"][0]["id"]) for u in units if u["people"]]  # type: ignore[index]
    gid = ids.take("lanhdao")
    glines += _group_lines(gid, "Lãnh đạo các đơn vị", heads, domain, addresses)
    all_units = ids.take("toanso")
    glines += _group_lines(all_units, "Toàn Sở", [f"unit:{top}"] + [f"unit:{u['id']}" for u in units],
                           domain, addresses)
    n_groups = max(0, people // 100)
    made: list[str] = []
    for i in range(n_groups):
        g = ids.take(f"nhom{i + 1}")
        size = rng.randint(3, 12)
        picked = [str(p["id"]) for p in rng.sample(everyone, min(size, len(everyone)))]
        if made and rng.random() < 0.2:
            picked.append(f"group:{made[rng.randrange(len(made))]}")
        glines += _group_lines(g, f"Nhóm công tác số {i + 1}", picked, domain, addresses)
        made.append(g)
    (root / "groups.toml").write_text("\n".join(glines) + "\n", encoding="utf-8")

    alines = ["# Time-boxed access (MOST art.18.9)"]
    for i in range(max(1, people // 1000) if len(everyone) > 1 else 0):
        a, b = rng.sample(everyone, 2)
        alines += [
            "[[access_grant]]",
            f"mailbox = {q(str(a['id']))}",
            f"to      = {q(str(b['id']))}",
            f"rights  = {q(rng.choice(['read', 'read', 'write']))}",
            f"until   = {today + timedelta(days=30 + 7 * i)}",
            f"reason  = {q(f'Quyết định {i + 1}/QĐ-TTr')}",
            "",
        ]
    (root / "grants.toml").write_text("\n".join(alines) + "\n", encoding="utf-8")


def _people_lines(members: list[dict[str, object]], rng: random.Random, domain: str, today: date,
                  addresses: bool, unit: str) -> list[str]:
    lines: list[str] = []
    for n, p in enumerate(members):
        pid = str(p["id"])
        lines += ["[[person]]", f"id     = {q(pid)}", f"name   = {q(str(p['name']))}"]
        if n % 7 == 3:
            lines.append(f"unit   = {q(unit)}                 # written out, same as the file's unit")
        lines.append(f"title  = {q('Trưởng phòng' if n == 0 else rng.choice(TITLES))}")
        lines.append(f"phone  = {q(f'0256 38{rng.randrange(10000, 99999)}')}")
        if rng.random() < 0.8:
            mobile = f"09{rng.randrange(10, 99)} {rng.randrange(100, 999)} {rng.randrange(100, 999)}"
            lines.append(f"mobile = {q(mobile)}")
        if rng.random() < 0.5:
            lines.append(f"backup_email = {q(pid + '@example.com')}")
        if addresses:
            lines.append(f"address = {q(pid + '@' + domain)}")
        if n > 3 and rng.random() < 0.02:
            left = today - timedelta(days=rng.randrange(1, 400))
            lines.append(f"left_on = {left}             # retirement / transfer out")
            p["left_on"] = left
        if n > 3 and rng.random() < 0.01:
            lines.append(f"suspended = {q('Nghi vấn lộ mật khẩu')}   # MOST art.18.4")
        lines.append("")
    return lines


def _group_lines(gid: str, name: str, members: list[str], domain: str, addresses: bool) -> list[str]:
    lines = ["[[group]]", f"id      = {q(gid)}", f"name    = {q(name)}"]
    if addresses:
        lines.append(f"address = {q(gid + '@' + domain)}")
    if len(members) <= 6:
        lines.append(f"members = {qlist(members)}")
    else:
        lines.append("members = [   # one per line")
        lines += [f"    {q(m)}," for m in members]
        lines.append("]")
    lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=10000, help="number of people (default 10000)")
    ap.add_argument("--out", type=Path, required=True, help="state directory to write")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--domain", default="sct.binhdinh.gov.vn")
    ap.add_argument("--no-addresses", action="store_true", help="leave addresses to `mailstate assign`")
    args = ap.parse_args()
    generate(args.out, args.people, args.seed, domain=args.domain, addresses=not args.no_addresses)
    print(f"wrote an agency of {args.people} people to {args.out}")


if __name__ == "__main__":
    main()
