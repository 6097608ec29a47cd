"""The archive's hash chain: an untouched chain holds; any single change or deletion is caught."""

import hashlib
import itertools
import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synapse_compliance.core.archive_chain import (
    BROKEN_LINK,
    GENESIS,
    HASH_MISMATCH,
    MISSING_HEAD,
    MISSING_ROW,
    ChainBreak,
    ChainedFields,
    ChainedRow,
    ChainHead,
    ChainWalker,
    chain_hash,
    chain_rows,
    verify_chain,
)

ROOM = "!room:example.org"
text = st.text(max_size=30)  # any Unicode, including what JSON must escape


@st.composite
def fields(draw: st.DrawFn) -> ChainedFields:
    """The chained fields of one archive row of `ROOM`, with arbitrary values."""
    return ChainedFields(
        room_id=ROOM,
        event_id="$" + draw(st.text(min_size=1, max_size=12)),
        stream_ordering=draw(st.integers(-(2**40), 2**40)),
        sender=draw(text),
        type=draw(st.sampled_from(["m.room.message", "m.room.member", "m.room.redaction"])),
        state_key=draw(st.none() | text),
        origin_server_ts=draw(st.integers(0, 2**45)),
        archived_ts=draw(st.integers(0, 2**45)),
        event_json=draw(text),
    )


# A room's rows: 1 to 8 rows, chained from the genesis value.
chains = st.lists(fields(), min_size=1, max_size=8).map(chain_rows)


def head_of(rows: list[ChainedRow]) -> ChainHead:
    """The head the store would have recorded for `rows`."""
    return ChainHead(ROOM, len(rows), rows[-1].chain_hash)


def _changed(value: object) -> Any:
    """A different value of the same kind."""
    if isinstance(value, bool):
        raise AssertionError("no booleans are chained")
    if isinstance(value, int):
        return value + 1
    if value is None:
        return ""
    assert isinstance(value, str)
    return value + "x"


FIELD_NAMES = [f.name for f in attrs.fields(ChainedFields)]


@given(chains)
def test_an_untouched_chain_holds(rows: list[ChainedRow]) -> None:
    assert verify_chain(rows, head_of(rows)) is None
    assert rows[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.chain_hash for a, b in itertools.pairwise(rows))


@given(chains, st.data())
def test_any_changed_field_is_caught_at_its_row(rows: list[ChainedRow], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(rows) - 1))
    name = data.draw(st.sampled_from(FIELD_NAMES))
    row = rows[index]
    forged_fields = attrs.evolve(row.fields, **{name: _changed(getattr(row.fields, name))})
    forged = [*rows[:index], attrs.evolve(row, fields=forged_fields), *rows[index + 1 :]]
    f = forged_fields  # the break names the row as it now reads
    assert verify_chain(forged, head_of(rows)) == ChainBreak(
        f.room_id, f.event_id, f.stream_ordering, HASH_MISMATCH
    )


@given(chains, st.data())
def test_a_changed_stored_hash_is_caught(rows: list[ChainedRow], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(rows) - 1))
    which = data.draw(st.sampled_from(["prev_hash", "chain_hash"]))
    forged_hash: Any = hashlib.sha256(b"forged").hexdigest()
    forged = list(rows)
    forged[index] = attrs.evolve(rows[index], **{which: forged_hash})
    found = verify_chain(forged, head_of(rows))
    assert found is not None
    assert found.event_id == rows[index].fields.event_id
    assert found.reason == (BROKEN_LINK if which == "prev_hash" else HASH_MISMATCH)


@given(chains, st.data())
def test_any_deleted_row_is_caught(rows: list[ChainedRow], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(rows) - 1))
    remaining = rows[:index] + rows[index + 1 :]
    found = verify_chain(remaining, head_of(rows))
    if index == len(rows) - 1:  # the last row: only the head shows it
        assert found == ChainBreak(ROOM, None, None, MISSING_ROW)
    else:  # the next row's prev_hash no longer matches its new predecessor
        nxt = rows[index + 1].fields
        assert found == ChainBreak(ROOM, nxt.event_id, nxt.stream_ordering, BROKEN_LINK)


@given(chains)
def test_swapped_rows_are_caught(rows: list[ChainedRow]) -> None:
    if len(rows) < 2:
        return
    swapped = [rows[1], rows[0], *rows[2:]]
    assert verify_chain(swapped, head_of(rows)) is not None


@given(chains, st.integers(1, 5))
def test_paging_gives_the_same_answer(rows: list[ChainedRow], page: int) -> None:
    walker = ChainWalker()
    for start in range(0, len(rows), page):
        assert walker.feed(rows[start : start + page]) is None
    assert walker.finish(head_of(rows)) is None
    assert walker.rows == len(rows)


def test_rows_without_a_head_are_reported() -> None:
    rows = chain_rows([ChainedFields(ROOM, "$a", 1, "@u:x", "m.room.message", None, 1, 2, "{}")])
    walker = ChainWalker()
    assert walker.feed(rows) is None
    assert walker.finish(ChainHead(ROOM, 0, GENESIS)) == ChainBreak(ROOM, None, None, MISSING_HEAD)


@given(fields(), fields())
def test_the_hash_depends_on_the_fields_and_the_predecessor(a: ChainedFields, b: ChainedFields) -> None:
    assert chain_hash(GENESIS, a) == chain_hash(GENESIS, a)  # deterministic
    if a != b:
        assert chain_hash(GENESIS, a) != chain_hash(GENESIS, b)
    other_prev = chain_hash(GENESIS, b)
    assert chain_hash(other_prev, a) != chain_hash(GENESIS, a)


def test_the_hash_format_is_pinned() -> None:
    """Archives written by earlier releases must keep verifying: the encoding may not drift."""
    f = ChainedFields(ROOM, "$ev", 7, "@ö:example.org", "m.room.message", None, 100, 200, '{"a":1}')
    canonical = (
        '{"archived_ts":200,"event_id":"$ev","event_json":"{\\"a\\":1}","origin_server_ts":100,'
        '"room_id":"!room:example.org","sender":"@ö:example.org","state_key":null,'
        '"stream_ordering":7,"type":"m.room.message"}'
    ).encode()
    assert f.canonical() == canonical
    assert chain_hash(GENESIS, f) == hashlib.sha256(bytes(32) + canonical).hexdigest()


@given(fields())
def test_the_encoding_covers_every_field_as_attrs_sees_them(f: ChainedFields) -> None:
    """`canonical` lists the fields by hand (it runs per archived row): none may be missed."""
    every = json.dumps(attrs.asdict(f), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert f.canonical() == every.encode("utf-8")


@pytest.mark.parametrize("prev", ["", "zz", "0" * 63, "g" * 64])
def test_a_malformed_predecessor_hash_is_a_programmer_error(prev: str) -> None:
    f = ChainedFields(ROOM, "$ev", 7, "@u:x", "m.room.message", None, 100, 200, "{}")
    with pytest.raises(ValueError):
        chain_hash(prev, f)
