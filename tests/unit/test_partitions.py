"""Month partitions of the archive: ranges, names, bounds as PostgreSQL prints them, expiry."""

import datetime
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synapse_compliance.core.partitions import (
    BEFORE,
    Partition,
    before_bound,
    covering,
    expired_oldest_first,
    is_month_name,
    missing_month,
    month_partition,
    month_start,
    next_month,
    parse_bound,
)

# 1970 to 2200, in ms.
TIMES = st.integers(min_value=0, max_value=7_258_118_400_000)


def utc_ms(*args: int) -> int:
    return int(datetime.datetime(*args, tzinfo=datetime.UTC).timestamp()) * 1000


def test_months_are_calendar_months_in_utc() -> None:
    ts = utc_ms(2026, 12, 31, 23, 59, 59)
    assert month_start(ts) == utc_ms(2026, 12, 1)
    assert next_month(ts) == utc_ms(2027, 1, 1)
    p = month_partition(ts)
    assert (p.name, p.lower, p.upper) == (
        "compliance_archive_y2026m12",
        utc_ms(2026, 12, 1),
        utc_ms(2027, 1, 1),
    )
    assert month_partition(utc_ms(2027, 1, 1)).name == "compliance_archive_y2027m01"
    assert month_partition(utc_ms(2024, 2, 29, 12)).upper == utc_ms(2024, 3, 1)  # leap February


@given(TIMES)
def test_a_month_partition_covers_its_time_and_its_neighbours_meet(ts: int) -> None:
    p = month_partition(ts)
    assert p.covers(ts) and is_month_name(p.name)
    assert p.lower is not None and p.upper is not None
    assert month_partition(p.upper).lower == p.upper  # the next month starts where this one ends
    assert month_partition(p.lower - 1).upper == p.lower
    assert 28 * 86_400_000 <= p.upper - p.lower <= 31 * 86_400_000


def test_bounds_read_as_postgresql_prints_them() -> None:
    assert parse_bound(BEFORE, "FOR VALUES FROM (MINVALUE) TO ('1764547200000')") == Partition(
        BEFORE, None, 1764547200000
    )
    assert parse_bound("p", "FOR VALUES FROM ('-5') TO ('10')") == Partition("p", -5, 10)
    assert parse_bound("p", "FOR VALUES FROM (5) TO (MAXVALUE)") == Partition("p", 5, None)
    with pytest.raises(ValueError, match="unexpected bound"):
        parse_bound("p", "FOR VALUES IN ('a')")
    with pytest.raises(ValueError, match="unexpected bound"):
        parse_bound("p", "DEFAULT")


def test_before_ends_after_the_newest_row_or_at_this_month() -> None:
    now = utc_ms(2026, 12, 2, 10)
    assert before_bound(None, now) == utc_ms(2026, 12, 1)
    assert before_bound(utc_ms(2026, 12, 1, 9), now) == utc_ms(2027, 1, 1)  # rows this month
    assert before_bound(utc_ms(2025, 3, 4), now) == utc_ms(2025, 4, 1)


@given(st.lists(TIMES, max_size=12), TIMES)
def test_missing_month_makes_every_time_covered_without_overlap(made: list[int], ts: int) -> None:
    partitions: list[Partition] = [Partition(BEFORE, None, utc_ms(1990, 1, 1))]
    for t in [*made, ts]:
        new = missing_month(partitions, t)
        if new is not None:
            assert new.covers(t) and is_month_name(new.name)
            partitions.append(new)
        found = covering(partitions, t)
        assert found is not None and found.covers(t)
        assert missing_month(partitions, t) is None  # once covered, nothing more to make
    # No two partitions overlap, and each time is covered by exactly one.
    ordered = sorted(partitions, key=lambda p: p.low)
    assert all(a.high <= b.low for a, b in itertools.pairwise(ordered))
    assert sum(p.covers(ts) for p in partitions) == 1


def test_a_foreign_partition_overlapping_a_month_is_refused() -> None:
    odd = Partition("compliance_archive_odd", utc_ms(2026, 12, 10), utc_ms(2026, 12, 20))
    with pytest.raises(ValueError, match="overlaps month compliance_archive_y2026m12"):
        missing_month([odd], utc_ms(2026, 12, 2))


@given(st.lists(TIMES, max_size=12, unique_by=month_start), TIMES)
def test_expired_partitions_are_wholly_before_the_cutoff_oldest_first(times: list[int], cutoff: int) -> None:
    partitions = [month_partition(t) for t in times] + [Partition(BEFORE, None, utc_ms(1970, 2, 1))]
    expired = expired_oldest_first(partitions, cutoff)
    assert expired == sorted(expired, key=lambda p: p.low)
    for p in partitions:
        assert (p in expired) == (p.upper is not None and p.upper <= cutoff)
        if p in expired:  # every row it can hold is older than the cutoff
            assert not p.covers(cutoff) and p.high <= cutoff
    assert Partition("open", 5, None).expired(2**62) is False  # an open end never expires
