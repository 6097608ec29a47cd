"""The archive walk without I/O: pages to a head, and a prune that commits while it runs."""

from collections.abc import Sequence

from synapse_compliance.core.archive_chain import (
    BROKEN_LINK,
    HASH_MISMATCH,
    ChainAnchor,
    ChainedFields,
    ChainedRow,
    ChainHead,
    VerifyReport,
    chain_rows,
)
from synapse_compliance.storage.archive_rows import AnchorRequest, PageRequest, StoredHead, verify_steps

ROOM = "!r:localhost"


def fields(n: int) -> ChainedFields:
    return ChainedFields(ROOM, f"$e{n}", n, "@a:localhost", "m.room.message", None, n, n, "{}")


ROWS = chain_rows(fields(n) for n in range(1, 9))  # ids 1..8
HEAD = StoredHead(ChainHead(ROOM, len(ROWS), ROWS[-1].chain_hash), ROWS[-1].id)


def anchor_after(row: ChainedRow) -> ChainAnchor:
    return ChainAnchor(ROOM, row.id, row.chain_hash, row.id)


class Archive:
    """What the walk reads: rows after the current anchor, and the anchor; counts anchor reads."""

    def __init__(self, rows: Sequence[ChainedRow], anchor: ChainAnchor | None) -> None:
        self.rows = list(rows)
        self.anchor = anchor
        self.anchor_reads = 0

    def run(self, heads: Sequence[StoredHead]) -> VerifyReport:
        steps = verify_steps(heads)
        try:
            request = next(steps)
            while True:
                if isinstance(request, AnchorRequest):
                    self.anchor_reads += 1
                    request = steps.send(self.anchor)
                else:
                    assert isinstance(request, PageRequest)
                    page = [r for r in self.rows if request.after_id < r.id <= request.upto_id]
                    request = steps.send(page[: request.limit])
        except StopIteration as done:
            report: VerifyReport = done.value
            return report


def test_a_whole_chain_holds_without_reading_anchors_again() -> None:
    archive = Archive(ROWS, None)
    report = archive.run([HEAD])
    assert report.ok and report.rows_checked == len(ROWS) and archive.anchor_reads == 0


def test_a_prune_committed_after_the_heads_were_read_is_no_break() -> None:
    # The heads were read with the anchor after row 2; a prune then moved it to row 5.
    stale = StoredHead(HEAD.head, HEAD.last_id, anchor_after(ROWS[1]))
    archive = Archive(ROWS[5:], anchor_after(ROWS[4]))
    report = archive.run([stale])
    assert report.ok and report.rows_checked == 3 and archive.anchor_reads == 1


def test_rows_missing_after_an_unchanged_anchor_are_a_break() -> None:
    anchor = anchor_after(ROWS[1])
    archive = Archive(ROWS[3:], anchor)  # row 3 was deleted, the anchor not moved
    report = archive.run([StoredHead(HEAD.head, HEAD.last_id, anchor)])
    assert report.first_break is not None and report.first_break.reason == BROKEN_LINK
    assert report.first_break.event_id == "$e4" and archive.anchor_reads == 1


def test_a_forged_row_is_reported_even_when_the_anchor_moved() -> None:
    forged = [*ROWS[5:6], ChainedRow(7, fields(70), ROWS[5].chain_hash, ROWS[6].chain_hash), ROWS[7]]
    archive = Archive(forged, anchor_after(ROWS[4]))
    report = archive.run([StoredHead(HEAD.head, HEAD.last_id, anchor_after(ROWS[1]))])
    assert report.first_break is not None and report.first_break.reason == HASH_MISMATCH
    assert report.first_break.event_id == "$e70" and archive.anchor_reads == 2
