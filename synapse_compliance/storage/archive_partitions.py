"""The archive's month partitions on PostgreSQL: the schema change that makes them, and creating them.

Schema delta 16 (`partition_archive_txn`) turns the plain `compliance_archive` of delta 08 into a
table partitioned by range of `archived_ts` (core/partitions.py), without copying a row: the old
table becomes the partition `compliance_archive_before`, covering everything up to the end of
the month of its newest row, indexes and all. Ids keep coming from one sequence, started past
every id the old table ever handed out, so ids stay unique and in archive order across
partitions, which the hash chains need.

What a partitioned table cannot have: a unique index across partitions, unless it includes the
partition key. So `event_id` is unique within each partition (and `id` is each partition's
primary key), not across them. Exactly-once archiving never rested on that index alone: the
archiver's cursor moves in the transaction that writes the rows, and `append` skips events it
finds already archived (storage/archive_store.py).

New month partitions are made by the archiver, in the transaction that writes the first rows
stamped in that month, and a week before a month begins (`PartitionKeeper`). Each is created
as a table of its own and then attached, which takes only a SHARE UPDATE EXCLUSIVE lock on the
archive: exports, verifies and the archiver's inserts go on meanwhile.

On SQLite nothing here does anything: the archive stays one table and is pruned row by row.
"""

from collections.abc import Sequence

from synapse.module_api import LoggingTransaction

from synapse_compliance._synapse_private import is_postgres
from synapse_compliance.core.partitions import (
    BEFORE,
    PARENT,
    Partition,
    before_bound,
    covering,
    missing_month,
    parse_bound,
)

AHEAD_MS = 7 * 86_400_000  # next month's partition is made this long before the month begins
SEQUENCE = f"{PARENT}_ids"

# The columns of delta 08, with ids from the shared sequence instead of an identity column.
_PARENT_DDL = f"""
CREATE TABLE {PARENT} (
    id BIGINT NOT NULL DEFAULT nextval('{SEQUENCE}'),
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    origin_server_ts BIGINT NOT NULL,
    archived_ts BIGINT NOT NULL,
    event_json TEXT NOT NULL,
    redacts TEXT,
    redacted_by TEXT,
    prev_hash TEXT NOT NULL,
    chain_hash TEXT NOT NULL
) PARTITION BY RANGE (archived_ts)
"""
# Indexes every partition gets through the parent. The old table's equal indexes (deltas 08 and
# 15) are attached to these, not rebuilt.
_PARENT_INDEXES = (
    f"CREATE INDEX {PARENT}_by_room ON {PARENT} (room_id, id)",
    f"CREATE INDEX {PARENT}_by_redacts ON {PARENT} (redacts)",
    f"CREATE INDEX {PARENT}_by_sender ON {PARENT} (sender, id)",
)


def archive_is_partitioned_txn(txn: LoggingTransaction) -> bool:
    """Whether `compliance_archive` is a partitioned table (never on SQLite)."""
    if not is_postgres(txn):
        return False
    txn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(?)", (PARENT,))
    row = txn.fetchone()
    return row is not None and row[0] == "p"


def list_partitions_txn(txn: LoggingTransaction) -> list[Partition]:
    """The archive's partitions, oldest range first (none on SQLite)."""
    if not archive_is_partitioned_txn(txn):
        return []
    txn.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits AS i"
        " JOIN pg_class AS c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(?)",
        (PARENT,),
    )
    return sorted((parse_bound(str(r[0]), str(r[1])) for r in txn.fetchall()), key=lambda p: p.low)


def partitions_if_partitioned_txn(txn: LoggingTransaction) -> list[Partition] | None:
    """The archive's partitions, oldest first; None when it is one table (SQLite)."""
    return list_partitions_txn(txn) if archive_is_partitioned_txn(txn) else None


def partition_archive_txn(txn: LoggingTransaction, now_ms: int) -> None:
    """Schema delta 16: partition the archive by month on PostgreSQL (nothing on SQLite).

    Runs in the delta's transaction, so it is all or nothing. Reads the old table once (to
    check that its rows fit the `before` partition) and copies none.
    """
    if not is_postgres(txn) or archive_is_partitioned_txn(txn):
        return
    txn.execute(f"SELECT MAX(archived_ts), COALESCE(MAX(id), 0) FROM {PARENT}")  # noqa: S608 (constant)
    row = txn.fetchone()
    assert row is not None  # an aggregate always yields a row
    newest = int(row[0]) if row[0] is not None else None
    next_id = max(int(row[1]), _identity_last_value(txn)) + 1
    txn.execute(f"ALTER TABLE {PARENT} RENAME TO {BEFORE}")
    txn.execute(f"ALTER TABLE {BEFORE} ALTER COLUMN id DROP IDENTITY")
    txn.execute(f"CREATE SEQUENCE {SEQUENCE} AS BIGINT START WITH {next_id:d}")
    txn.execute(_PARENT_DDL)
    txn.execute(f"ALTER SEQUENCE {SEQUENCE} OWNED BY {PARENT}.id")
    for statement in _PARENT_INDEXES:
        txn.execute(statement)
    bound = before_bound(newest, now_ms)
    txn.execute(f"ALTER TABLE {PARENT} ATTACH PARTITION {BEFORE} FOR VALUES FROM (MINVALUE) TO ({bound:d})")


def _identity_last_value(txn: LoggingTransaction) -> int:
    """The last id the old table's identity column handed out (0 if none), pruned rows' included."""
    txn.execute("SELECT pg_get_serial_sequence(?, 'id')", (PARENT,))
    row = txn.fetchone()
    if row is None or row[0] is None:
        return 0
    txn.execute(f"SELECT last_value, is_called FROM {row[0]}")  # noqa: S608 (a name from the catalog)
    seq = txn.fetchone()
    assert seq is not None  # a sequence has exactly one row
    return int(seq[0]) if seq[1] else 0


def create_partition_txn(txn: LoggingTransaction, partition: Partition) -> None:
    """Make `partition` (a month from `core.partitions.month_partition`) and attach it."""
    assert partition.lower is not None and partition.upper is not None
    name = partition.name
    txn.execute(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS)")
    txn.execute(f"ALTER TABLE {name} ADD CONSTRAINT {name}_pkey PRIMARY KEY (id)")
    txn.execute(f"CREATE UNIQUE INDEX {name}_event ON {name} (event_id)")
    # Telling PostgreSQL the range up front spares ATTACH a scan (the table is empty anyway).
    txn.execute(
        f"ALTER TABLE {name} ADD CONSTRAINT {name}_range"
        f" CHECK (archived_ts >= {partition.lower:d} AND archived_ts < {partition.upper:d})"
    )
    txn.execute(
        f"ALTER TABLE {PARENT} ATTACH PARTITION {name}"
        f" FOR VALUES FROM ({partition.lower:d}) TO ({partition.upper:d})"
    )


class PartitionKeeper:
    """Makes sure a partition exists for the rows the archiver is about to write.

    Remembers the partitions it last saw, so a batch whose stamp (and the stamp a week on) is
    covered costs no catalog query. It only learns what a transaction made once that
    transaction has committed.
    """

    def __init__(self) -> None:
        self._known: Sequence[Partition] | None = None

    def ensure_txn(self, txn: LoggingTransaction, archived_ts: int) -> None:
        """Inside the archiver's append: make the partitions `archived_ts` (and a week on) need."""
        if not is_postgres(txn):
            return
        known = self._known
        wanted = (archived_ts, archived_ts + AHEAD_MS)
        if known is not None and all(covering(known, ts) is not None for ts in wanted):
            return
        partitions = list_partitions_txn(txn)
        for ts in wanted:
            new = missing_month(partitions, ts)
            if new is not None:
                create_partition_txn(txn, new)
                partitions.append(new)
        txn.call_after(self._remember, tuple(partitions))

    def forget(self) -> None:
        """Drop what it remembers (a partition may have been dropped, or a write failed)."""
        self._known = None

    def _remember(self, partitions: Sequence[Partition]) -> None:
        self._known = partitions
