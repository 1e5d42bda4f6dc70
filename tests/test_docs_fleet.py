"""docs/fleet.md: the measured figures it cites are the ones in BENCHMARKS.md, and its disk
table is the arithmetic it states."""

from __future__ import annotations

import re

from conftest import REPO

FLEET = (REPO / "docs" / "fleet.md").read_text(encoding="utf-8")
BENCH = (REPO / "BENCHMARKS.md").read_text(encoding="utf-8")


def test_fleet_cites_figures_that_benchmarks_has():
    # (as docs/fleet.md writes it, as BENCHMARKS.md has it)
    cited = [("250,855", "250,855"), ("344,397", "344,397"), ("1,000,000 values/s on 17 %", "17 % of one core"),
             ("4.8 ms", "4.8 ms per poll"), ("248.6 ms", "248.6 ms per poll"), ("73,437", "73,437 rows/s"),
             ("68.8 s", "68.8 s"), ("0.33 s", "ring holds 0.33 s"),
             ("17 + 45 + 53 + 49", "supervisor 17 MiB, poller 45 MiB, writer 53 MiB, web 49 MiB"),
             ("0.8-1.3 M rows/s", "0.8-1.3 M rows/s"), ("p99 21-27 ms", "p99 21 ms"), ("p99 21-27 ms", "p99 27 ms"),
             ("3-4 k rows/s", "~3-4k rows/s")]
    for in_fleet, in_bench in cited:
        assert in_fleet in FLEET, in_fleet
        assert in_bench in BENCH, f"docs/fleet.md cites {in_fleet!r}; BENCHMARKS.md no longer has {in_bench!r}"
    # Each "BENCHMARKS, <part>" names a part BENCHMARKS.md has.
    parts = {m.lower() for m in re.findall(r"BENCHMARKS,\s+([a-z ]+?)[,)]", FLEET)}
    headings = " ".join(re.findall(r"^##+ (.+)$", BENCH, re.M)).lower()
    assert parts and all(p.split(" after")[0].strip() in headings for p in parts), (parts, headings)


def test_fleet_disk_table_is_hours_times_rate_times_100_bytes():
    table = re.search(r"\| outage \|.*?\n\n", FLEET, re.S).group(0)
    rows = [r for r in table.splitlines()[2:] if r.startswith("|")]
    assert len(rows) == 3
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        hours = float(re.match(r"(\d+) h", cells[0]).group(1))
        gb = [float(re.match(r"([\d.]+) GB", c).group(1)) for c in cells[1:]]
        expected = [hours * 3600 * 2000 * 100 / 1e9, hours * 3600 * 2000 * 3 * 100 / 1e9, hours * 3600 * 10000 * 100 / 1e9]
        for got, want in zip(gb, expected):
            assert abs(got - want) <= max(0.05 * want, 0.01), (row, got, want)
