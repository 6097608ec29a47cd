"""Retention: the pruned prefix is never young or held and always a prefix; the cutoff never
reaches rows younger than min_days; a chain pruned down to its anchor still verifies."""

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synapse_compliance.core.archive_chain import (
    BROKEN_LINK,
    MISSING_HEAD,
    MISSING_ROW,
    ChainAnchor,
    ChainedFields,
    ChainHead,
    ChainWalker,
    chain_rows,
)
from synapse_compliance.core.retention import (
    DAY_MS,
    FLOOR_DAYS,
    Holds,
    RetentionPolicy,
    RetentionRow,
    UnsafeRetention,
    holds_for,
    prunable_prefix,
    prune_cutoff,
)
from tests.unit.strategies import times

ROOM = "!room:example.org"
USERS = ["@a:example.org", "@b:example.org", "@c:example.org", "@d:remote.example"]
CUTOFF = 1_700_000_000_000


@st.composite
def room_rows(draw: st.DrawFn) -> list[RetentionRow]:
    """A room's rows in id order, archived around `CUTOFF`, from a few senders."""
    count = draw(st.integers(0, 30))
    ids = sorted(draw(st.sets(st.integers(1, 10_000), min_size=count, max_size=count)))
    return [
        RetentionRow(
            id=i,
            archived_ts=draw(st.integers(CUTOFF - 5 * DAY_MS, CUTOFF + 5 * DAY_MS)),
            sender=draw(st.sampled_from(USERS)),
            state_key=draw(st.none() | st.sampled_from(USERS)),
        )
        for i in ids
    ]


holds = st.builds(holds_for, st.booleans(), st.frozensets(st.sampled_from(USERS)))


@given(room_rows(), holds)
def test_never_prunes_a_young_or_held_row(rows: list[RetentionRow], h: Holds) -> None:
    count = prunable_prefix(rows, CUTOFF, h)
    for row in rows[:count]:
        assert row.archived_ts < CUTOFF
        assert row.sender not in h.users and row.state_key not in h.users
        assert not h.room_held


@given(room_rows(), holds)
def test_prunes_the_longest_prefix(rows: list[RetentionRow], h: Holds) -> None:
    count = prunable_prefix(rows, CUTOFF, h)
    assert 0 <= count <= len(rows)
    if count < len(rows) and not h.room_held:
        stopper = rows[count]  # the first row kept is young or held: that is why it stopped
        assert stopper.archived_ts >= CUTOFF or h.covers(stopper)


@given(room_rows(), holds, st.integers(0, 30))
def test_a_shorter_history_prunes_a_prefix_of_the_same_rows(
    rows: list[RetentionRow], h: Holds, cut: int
) -> None:
    # Reading a batch of the first rows only (bounded transactions) never prunes more.
    assert prunable_prefix(rows[:cut], CUTOFF, h) == min(cut, prunable_prefix(rows, CUTOFF, h))


@given(room_rows(), st.frozensets(st.sampled_from(USERS)))
def test_a_room_hold_keeps_everything(rows: list[RetentionRow], users: frozenset[str]) -> None:
    assert prunable_prefix(rows, CUTOFF, Holds(room_held=True, users=users)) == 0


def test_a_user_hold_keeps_its_row_and_everything_after_it() -> None:
    old = CUTOFF - DAY_MS
    rows = [
        RetentionRow(1, old, "@a:example.org", None),
        RetentionRow(2, old, "@b:example.org", None),
        RetentionRow(3, old, "@a:example.org", None),
        RetentionRow(4, old, "@a:example.org", "@c:example.org"),  # a membership event about c
    ]
    assert prunable_prefix(rows, CUTOFF, Holds()) == 4
    assert prunable_prefix(rows, CUTOFF, Holds(users=frozenset({"@b:example.org"}))) == 1
    assert prunable_prefix(rows, CUTOFF, Holds(users=frozenset({"@c:example.org"}))) == 3
    assert prunable_prefix(rows, old, Holds()) == 0  # archived exactly at the cutoff: kept


def test_no_max_days_means_no_pruning() -> None:
    assert prune_cutoff(RetentionPolicy(184, None), CUTOFF) is None


@given(st.integers(FLOOR_DAYS, 5000), st.integers(0, 5000), times)
def test_the_cutoff_never_reaches_rows_younger_than_min_days(min_days: int, extra: int, now: int) -> None:
    cutoff = prune_cutoff(RetentionPolicy(min_days, min_days + extra), now)
    assert cutoff is not None
    assert cutoff == now - (min_days + extra) * DAY_MS
    assert cutoff <= now - min_days * DAY_MS <= now - FLOOR_DAYS * DAY_MS


@pytest.mark.parametrize(
    "policy",
    [RetentionPolicy(183, 200), RetentionPolicy(0, 0), RetentionPolicy(200, 199), RetentionPolicy(184, -1)],
)
def test_an_unsafe_policy_is_refused_where_rows_are_deleted(policy: RetentionPolicy) -> None:
    # The config parser refuses these; the pruner's own check refuses them again.
    with pytest.raises(UnsafeRetention):
        prune_cutoff(policy, CUTOFF)


def _fields(n: int) -> ChainedFields:
    return ChainedFields(ROOM, f"$e{n}", n, "@a:example.org", "m.room.message", None, n, n, f'{{"n":{n}}}')


@given(st.integers(1, 12), st.data())
def test_a_chain_pruned_to_its_anchor_still_verifies(total: int, data: st.DataObject) -> None:
    rows = chain_rows(_fields(n) for n in range(total))
    head = ChainHead(ROOM, total, rows[-1].chain_hash)
    pruned = data.draw(st.integers(0, total))
    anchor = None
    if pruned:
        anchor = ChainAnchor(ROOM, rows[pruned - 1].id, rows[pruned - 1].chain_hash, pruned)
    walker = ChainWalker.after(anchor)
    assert walker.feed(rows[pruned:]) is None
    assert walker.finish(head) is None
    assert walker.rows == total - pruned  # rows checked; the pruned ones are counted by the anchor


def test_pruned_walk_detects_tampering_around_the_anchor() -> None:
    rows = chain_rows(_fields(n) for n in range(5))
    head = ChainHead(ROOM, 5, rows[-1].chain_hash)
    anchor = ChainAnchor(ROOM, rows[1].id, rows[1].chain_hash, 2)
    # The first row after the anchor deleted as well: the next one no longer links.
    found = ChainWalker.after(anchor).feed(rows[3:])
    assert found is not None and (found.event_id, found.reason) == ("$e3", BROKEN_LINK)
    # The anchor removed: the walk starts at GENESIS and the first row does not link.
    found = ChainWalker.after(None).feed(rows[2:])
    assert found is not None and found.reason == BROKEN_LINK
    # The anchor's count not matching the head: rows are missing.
    walker = ChainWalker.after(attrs.evolve(anchor, pruned_rows=1))
    assert walker.feed(rows[2:]) is None
    missing = walker.finish(head)
    assert missing is not None and missing.reason == MISSING_ROW
    # A fully pruned room whose head was deleted.
    walker = ChainWalker.after(ChainAnchor(ROOM, rows[4].id, rows[4].chain_hash, 5))
    no_head = walker.finish(ChainHead(ROOM, 0, "0" * 64))
    assert no_head is not None and no_head.reason == MISSING_HEAD
