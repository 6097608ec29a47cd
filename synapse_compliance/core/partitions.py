"""Month partitions of the archive on PostgreSQL: their ranges, names, and which may be dropped.

Theory of operation: on PostgreSQL `compliance_archive` is partitioned by range of
`archived_ts` (the module's own clock when a row was written; pruning goes by it too, see
`core.retention`), one partition per calendar month in UTC, so a month whose every row is past
`retention.max_days` goes by dropping its table instead of deleting its rows one by one.

There is at most one partition with an open lower end: `before`, which holds every row archived
before partitioning began (the whole unpartitioned table of an older install, attached as it is)
and anything stamped earlier. Every other partition covers exactly one month. Ranges never
overlap, and months nobody wrote in have no partition.

A partition is *expired* when its upper bound is at or before the prune cutoff: then every row
in it was archived before the cutoff. Whether an expired partition may actually be dropped
(no hold keeps a row of it, and each room's rows in it are the start of what is left of that
room's chain) is for the pruner to find out; this module only orders and names.

Pure: no I/O, no clock.
"""

import datetime
import re
from collections.abc import Iterable, Sequence

import attrs

PARENT = "compliance_archive"
BEFORE = f"{PARENT}_before"  # the open-ended partition of rows archived before partitioning
_MONTH_NAME = re.compile(rf"^{PARENT}_y(\d{{4}})m(\d{{2}})$")
# `pg_get_expr(relpartbound, oid)` of a range partition on one BIGINT column.
_BOUND = re.compile(r"^FOR VALUES FROM \((MINVALUE|'?(-?\d+)'?)\) TO \((MAXVALUE|'?(-?\d+)'?)\)$")


_LOWEST = -(2**63)
_HIGHEST = 2**63


@attrs.frozen
class Partition:
    """One partition: rows with `lower <= archived_ts < upper` (None: open at that end)."""

    name: str
    lower: int | None
    upper: int | None

    @property
    def low(self) -> int:
        """The lower bound, with an open end as the lowest value."""
        return self.lower if self.lower is not None else _LOWEST

    @property
    def high(self) -> int:
        """The upper bound (exclusive), with an open end as beyond the highest value."""
        return self.upper if self.upper is not None else _HIGHEST

    def covers(self, ts: int) -> bool:
        """Whether a row archived at `ts` belongs here."""
        return (self.lower is None or self.lower <= ts) and (self.upper is None or ts < self.upper)

    def expired(self, cutoff_ms: int) -> bool:
        """Whether every row here was archived before `cutoff_ms`."""
        return self.upper is not None and self.upper <= cutoff_ms


def _utc(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


def _ms(moment: datetime.datetime) -> int:
    return int(moment.timestamp()) * 1000


def month_start(ts: int) -> int:
    """The start (ms, UTC) of the calendar month `ts` falls in."""
    moment = _utc(ts)
    return _ms(datetime.datetime(moment.year, moment.month, 1, tzinfo=datetime.UTC))


def next_month(ts: int) -> int:
    """The start (ms, UTC) of the calendar month after the one `ts` falls in."""
    moment = _utc(ts)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return _ms(datetime.datetime(year, month, 1, tzinfo=datetime.UTC))


def month_partition(ts: int) -> Partition:
    """The month partition a row archived at `ts` belongs in, when nothing else covers it."""
    moment = _utc(ts)
    return Partition(f"{PARENT}_y{moment.year:04d}m{moment.month:02d}", month_start(ts), next_month(ts))


def before_bound(max_archived_ts: int | None, now_ms: int) -> int:
    """Where the `before` partition ends when an install is partitioned.

    After the month of its newest row when the table has rows (so every existing row fits
    without being moved), else at the start of the current month.
    """
    return next_month(max_archived_ts) if max_archived_ts is not None else month_start(now_ms)


def parse_bound(name: str, expression: str) -> Partition:
    """A partition from its name and PostgreSQL's text for its bound.

    Raises:
        ValueError: the expression is not a range on one integer column.
    """
    match = _BOUND.match(expression.strip())
    if match is None:
        raise ValueError(f"partition {name}: unexpected bound {expression!r}")
    lower = None if match.group(1) == "MINVALUE" else int(match.group(2))
    upper = None if match.group(3) == "MAXVALUE" else int(match.group(4))
    return Partition(name, lower, upper)


def covering(partitions: Iterable[Partition], ts: int) -> Partition | None:
    """The partition a row archived at `ts` goes to, or None when none covers it."""
    return next((p for p in partitions if p.covers(ts)), None)


def missing_month(partitions: Sequence[Partition], ts: int) -> Partition | None:
    """The partition to create so that `ts` is covered, or None when it already is.

    Raises:
        ValueError: `ts`'s month overlaps an existing partition without that partition
            covering `ts` (partitions are month-aligned, so this means a foreign one).
    """
    if covering(partitions, ts) is not None:
        return None
    month = month_partition(ts)
    for p in partitions:
        if _overlap(p, month):
            raise ValueError(f"partition {p.name} overlaps month {month.name} without covering it")
    return month


def _overlap(a: Partition, b: Partition) -> bool:
    return a.low < b.high and b.low < a.high


def expired_oldest_first(partitions: Iterable[Partition], cutoff_ms: int) -> list[Partition]:
    """The partitions whose every row was archived before `cutoff_ms`, oldest first."""
    return sorted((p for p in partitions if p.expired(cutoff_ms)), key=lambda p: p.low)


def is_month_name(name: str) -> bool:
    """Whether `name` is a month partition's name as `month_partition` gives it."""
    return _MONTH_NAME.match(name) is not None
