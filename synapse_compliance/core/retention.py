"""Retention: which archive rows may be pruned, and when (DESIGN §4.4, issue #6).

Theory of operation: a room's archive rows form a hash chain in id order, so only a *prefix* of
it can go; the last pruned row's hash becomes the room's anchor and the chain stays verifiable
from there. A row may be pruned when it was archived more than `retention.max_days` ago and no
active legal hold covers it. Pruning per room removes the longest prefix (by id) of rows that
are all prunable; it stops at the first row that is not, so a young or held row protects every
row after it in its room.

Precedence, strongest first:
1. nothing is pruned when `max_days` is unset (the default: keep for good);
2. nothing younger than `min_days` (at least 184 days) is ever pruned: the cutoff is checked
   against `min_days` again here, whatever the config parser allowed (defence in depth);
3. a hold on the room keeps all its rows; a hold on a user keeps the rows that user sent and
   the membership events about them (`state_key`), and so the rest of the chain after them;
4. otherwise rows archived before the cutoff go.

Age is measured by `archived_ts` — the module's own clock when the row was written — not by
`origin_server_ts`: the sender (a remote server, an appservice's `ts` override) chooses the
latter, so a forged old timestamp would let evidence be pruned early; and backfilled events,
which can be old when they arrive, are then still kept `max_days` after they were archived.
Rows are archived in id order with one clock reading per batch, so the old rows are exactly a
prefix of each chain.

Pure: no I/O, no clock (the caller passes `now_ms`).
"""

from collections.abc import Collection, Iterable

import attrs

DAY_MS = 86_400_000
# The shortest retention the group-chat rules allow (six months); config.MIN_RETENTION_DAYS.
FLOOR_DAYS = 184


@attrs.frozen
class RetentionPolicy:
    """How long rows are kept: at least `min_days`, pruned after `max_days` (None: never)."""

    min_days: int
    max_days: int | None


@attrs.frozen
class RetentionRow:
    """What prefix selection needs of an archive row."""

    id: int
    archived_ts: int
    sender: str
    state_key: str | None


@attrs.frozen
class Holds:
    """The active legal holds that matter for one room."""

    room_held: bool = False
    users: frozenset[str] = frozenset()

    def covers(self, row: RetentionRow) -> bool:
        """Whether a hold keeps `row` (its room, its sender, or the user it is about)."""
        return self.room_held or row.sender in self.users or (row.state_key in self.users)


class UnsafeRetention(Exception):
    """The policy would prune rows younger than the legal minimum (a programmer error)."""


def prune_cutoff(policy: RetentionPolicy, now_ms: int) -> int | None:
    """The archive time before which rows may be pruned, or None when pruning is off.

    Raises:
        UnsafeRetention: `min_days` is below 184 days or `max_days` below `min_days`, i.e. the
            cutoff would reach rows younger than the legal minimum. The config parser refuses
            such values; this refuses them again where the rows are deleted.
    """
    if policy.max_days is None:
        return None
    if policy.min_days < FLOOR_DAYS or policy.max_days < policy.min_days:
        raise UnsafeRetention(
            f"refusing to prune: max_days={policy.max_days}, min_days={policy.min_days} "
            f"(needs max_days >= min_days >= {FLOOR_DAYS})"
        )
    cutoff = now_ms - policy.max_days * DAY_MS
    if cutoff > now_ms - policy.min_days * DAY_MS:  # cannot happen after the check above
        raise UnsafeRetention("refusing to prune: the cutoff is younger than min_days")
    return cutoff


def prunable_prefix(rows: Iterable[RetentionRow], cutoff_ms: int, holds: Holds) -> int:
    """How many leading rows of a room's remaining chain may be pruned.

    Args:
        rows: the room's remaining rows in id order, starting with its first one.
        cutoff_ms: rows archived strictly before this may go (from `prune_cutoff`).
        holds: the active holds for this room.

    Returns:
        The length of the longest prefix whose rows are all older than the cutoff and unheld.
    """
    if holds.room_held:
        return 0
    count = 0
    for row in rows:
        if row.archived_ts >= cutoff_ms or holds.covers(row):
            break
        count += 1
    return count


def holds_for(room_held: bool, held_users: Collection[str]) -> Holds:
    """The holds for one room from its room hold and the set of held users."""
    return Holds(room_held=room_held, users=frozenset(held_users))
