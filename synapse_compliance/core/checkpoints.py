"""Signed checkpoints of the archive's chain heads (DESIGN §4.4, issue #6).

Theory of operation: the per-room hash chains (`core.archive_chain`) show that rows were changed
or deleted, but someone with write access to the database can recompute a whole chain and its
head after altering a row. A checkpoint pins every room's head at one moment — `(room_id,
last_id, rows, chain_hash)` — in a document signed with an Ed25519 key that the database does
not hold. A forger who rewrites history afterwards then no longer matches a signed checkpoint.

Documents: canonical JSON (sorted keys, no whitespace, UTF-8), signed with `signedjson` under
the name `SIGNATURE_NAME`; fields `type`, `format`, `seq` (1, 2, …), `prev_hash` (the hash of the
checkpoint before, `GENESIS` for the first, so checkpoints form their own chain), `ts`,
`server_name`, `key_id`, and `heads` as compact `[room_id, last_id, rows, chain_hash]` lists
sorted by room id. A checkpoint's hash is the SHA-256 of its signed canonical JSON.

Checking (`checkpoint_steps`, sans-I/O like `verify_steps`): for the latest checkpoints, oldest
first, in this order: the document parses (`malformed_checkpoint`), its key is known
(`unknown_key`), its signature holds (`bad_signature`), it links to its predecessor
(`checkpoint_chain_broken`), and each room it names still matches (`checkpoint_mismatch`): the
archived row at `last_id` exists in that room with that `chain_hash`, and the room's chain is at
least `rows` long. A room pruned past `last_id` is checked against its anchor when the anchor is
exactly that row, otherwise skipped as pruned. The first problem is reported.

Pure: no I/O, no clock (signing is deterministic Ed25519 through `signedjson`, which does no I/O).
"""

import hashlib
import json
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, TypeGuard

import attrs
from canonicaljson import encode_canonical_json
from signedjson.key import get_verify_key
from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json
from signedjson.types import SigningKey, VerifyKey

from synapse_compliance.core.archive_chain import GENESIS
from synapse_compliance.core.archive_chain import ChainAnchor as Anchor

SIGNATURE_NAME = "synapse_compliance"
DOCUMENT_TYPE = "io.synapse_compliance.archive_checkpoint"
FORMAT = 1

MALFORMED = "malformed_checkpoint"
UNKNOWN_KEY = "unknown_key"
BAD_SIGNATURE = "bad_signature"
CHAIN_BROKEN = "checkpoint_chain_broken"
MISMATCH = "checkpoint_mismatch"

IDS_PER_REQUEST = 500  # row ids asked for at once while checking


def key_id(key: SigningKey | VerifyKey) -> str:
    """`ed25519:<version>`, as `signedjson` names a key in `signatures`."""
    return f"{key.alg}:{key.version}"


def verify_keys_for(keys: Iterable[SigningKey]) -> dict[str, VerifyKey]:
    """The public keys of `keys`, by key id."""
    return {key_id(k): get_verify_key(k) for k in keys}


@attrs.frozen
class CheckpointHead:
    """One room's chain head as pinned by a checkpoint."""

    room_id: str
    last_id: int
    rows: int
    chain_hash: str


@attrs.frozen
class SignedCheckpoint:
    """A checkpoint: its fields, its signed document as canonical JSON text, and its hash."""

    seq: int
    prev_hash: str
    ts: int
    server_name: str
    key_id: str
    heads: tuple[CheckpointHead, ...]
    text: str = attrs.field(repr=False)
    hash: str


def _unsigned(cp: SignedCheckpoint) -> dict[str, Any]:
    return {
        "type": DOCUMENT_TYPE,
        "format": FORMAT,
        "seq": cp.seq,
        "prev_hash": cp.prev_hash,
        "ts": cp.ts,
        "server_name": cp.server_name,
        "key_id": cp.key_id,
        "heads": [[h.room_id, h.last_id, h.rows, h.chain_hash] for h in cp.heads],
    }


def checkpoint_hash(document: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of a signed document's canonical JSON."""
    return hashlib.sha256(encode_canonical_json(dict(document))).hexdigest()


def same_heads(previous: SignedCheckpoint | None, heads: Sequence[CheckpointHead]) -> bool:
    """True when a new checkpoint of `heads` would pin nothing new."""
    if previous is None:
        return not heads
    return set(previous.heads) == set(heads)


def sign_checkpoint(
    previous: SignedCheckpoint | None,
    heads: Iterable[CheckpointHead],
    now_ms: int,
    server_name: str,
    key: SigningKey,
) -> SignedCheckpoint:
    """The checkpoint after `previous` pinning `heads`, signed with `key`."""
    ordered = tuple(sorted(heads, key=lambda h: h.room_id))
    seq = previous.seq + 1 if previous is not None else 1
    prev_hash = previous.hash if previous is not None else GENESIS
    fields = SignedCheckpoint(seq, prev_hash, now_ms, server_name, key_id(key), ordered, "", "")
    document = sign_json(_unsigned(fields), SIGNATURE_NAME, key)
    text = encode_canonical_json(document).decode("utf-8")
    return attrs.evolve(fields, text=text, hash=checkpoint_hash(document))


def parse_checkpoint(text: str) -> SignedCheckpoint:
    """A stored checkpoint document, with its fields checked (not its signature).

    Raises:
        ValueError: the text is not a checkpoint document; the message says what is wrong.
    """
    try:
        doc = json.loads(text)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("type") != DOCUMENT_TYPE or doc.get("format") != FORMAT:
        raise ValueError(f"not a format {FORMAT} {DOCUMENT_TYPE} document")
    seq, ts = doc.get("seq"), doc.get("ts")
    prev_hash, server_name, key = doc.get("prev_hash"), doc.get("server_name"), doc.get("key_id")
    if not (_is_int(seq) and _is_int(ts) and isinstance(server_name, str) and isinstance(key, str)):
        raise ValueError("seq, ts, server_name or key_id missing or of the wrong type")
    if not _is_hash(prev_hash):
        raise ValueError("prev_hash is not 64 hex digits")
    raw_heads = doc.get("heads")
    if not isinstance(raw_heads, list):
        raise ValueError("heads is not a list")
    heads = []
    for n, raw in enumerate(raw_heads):
        if not (
            isinstance(raw, list)
            and len(raw) == 4
            and isinstance(raw[0], str)
            and _is_int(raw[1])
            and _is_int(raw[2])
            and _is_hash(raw[3])
        ):
            raise ValueError(f"heads[{n}] is not [room_id, last_id, rows, chain_hash]")
        heads.append(CheckpointHead(raw[0], raw[1], raw[2], raw[3]))
    return SignedCheckpoint(seq, prev_hash, ts, server_name, key, tuple(heads), text, checkpoint_hash(doc))


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_hash(value: object) -> TypeGuard[str]:
    return (
        isinstance(value, str) and len(value) == len(GENESIS) and all(c in "0123456789abcdef" for c in value)
    )


def signature_problem(cp: SignedCheckpoint, keys: Mapping[str, VerifyKey]) -> tuple[str, str] | None:
    """(reason, detail) when `cp` is not validly signed by one of `keys`, else None."""
    key = keys.get(cp.key_id)
    if key is None:
        return UNKNOWN_KEY, f"signed with {cp.key_id}, which is not among the configured keys"
    try:
        verify_signed_json(json.loads(cp.text), SIGNATURE_NAME, key)
    except SignatureVerifyException as e:
        return BAD_SIGNATURE, str(e)
    return None


# Where a room's chain was pruned (its last pruned row's id and hash), or None: never pruned.
AnchorLookup = Callable[[str], Anchor | None]


def no_anchors(room_id: str) -> Anchor | None:
    """The anchor lookup of an archive that was never pruned."""
    return None


@attrs.frozen
class ArchivedRow:
    """What the archive holds now at a row id: its room and chain hash."""

    room_id: str
    chain_hash: str


PRUNED = "pruned"


def entry_problem(
    entry: CheckpointHead, row: ArchivedRow | None, rows_now: int, anchor: Anchor | None
) -> str | None:
    """Why a room no longer matches its checkpoint entry (a detail), `PRUNED`, or None.

    Args:
        entry: the room's head as the checkpoint pinned it.
        row: the archived row now at `entry.last_id` (None when there is none).
        rows_now: the length of the room's chain as recorded now (0 without a head).
        anchor: the room's pruning anchor, if it was pruned.
    """
    if anchor is not None and entry.last_id <= anchor.last_pruned_id:
        return _anchor_problem(entry, anchor)
    if row is None:
        return f"row {entry.last_id} is no longer in the archive"
    if row.room_id != entry.room_id:
        return f"row {entry.last_id} now belongs to {row.room_id}"
    if row.chain_hash != entry.chain_hash:
        return f"row {entry.last_id} no longer has the chain hash the checkpoint pinned"
    if rows_now < entry.rows:
        return f"the chain now has {rows_now} rows; the checkpoint pinned {entry.rows}"
    return None


def _anchor_problem(entry: CheckpointHead, anchor: Anchor) -> str | None:
    """An entry at or before the room's anchor: checked against it if it is that row."""
    if entry.last_id < anchor.last_pruned_id:
        return PRUNED
    if anchor.anchor_hash != entry.chain_hash:
        return f"the anchor at row {entry.last_id} has a different hash than the checkpoint"
    return None


@attrs.frozen
class StoredCheckpoint:
    """A checkpoint row as read from the table: its seq and document text."""

    seq: int
    text: str


@attrs.frozen
class RowsRequest:
    """What `checkpoint_steps` needs read next: the archived rows with these ids."""

    ids: tuple[int, ...]


@attrs.frozen
class CheckpointMismatch:
    """The first checkpoint that no longer holds, and why."""

    seq: int
    room_id: str | None
    reason: str
    detail: str


@attrs.frozen
class CheckpointReport:
    """The outcome of checking the latest checkpoints."""

    checked: int
    latest_seq: int | None
    latest_ts: int | None
    rooms_checked: int
    rooms_pruned: int
    first_mismatch: CheckpointMismatch | None

    @property
    def ok(self) -> bool:
        """True when every checked checkpoint holds."""
        return self.first_mismatch is None


CheckpointSteps = Generator[RowsRequest, Mapping[int, ArchivedRow], CheckpointReport]


@attrs.define
class _Tally:
    checked: int = 0
    latest_ts: int | None = None
    rooms: int = 0
    pruned: int = 0

    def report(self, latest_seq: int, mismatch: CheckpointMismatch | None) -> CheckpointReport:
        return CheckpointReport(self.checked, latest_seq, self.latest_ts, self.rooms, self.pruned, mismatch)


@attrs.frozen
class CheckScope:
    """What to check the checkpoints against: keys, the chains now, which rooms, the anchors.

    Attributes:
        keys: verify keys by key id.
        rows_now: each room's chain length as recorded now (rooms without a head: absent).
        room_id: check only this room's entries (signatures and links are checked anyway).
        anchor_for: the pruning anchor of a room, or None.
    """

    keys: Mapping[str, VerifyKey]
    rows_now: Mapping[str, int]
    room_id: str | None = None
    anchor_for: AnchorLookup = no_anchors


def checkpoint_steps(stored: Sequence[StoredCheckpoint], count: int, scope: CheckScope) -> CheckpointSteps:
    """Check the latest `count` checkpoints without I/O: yields row requests, returns the report.

    Args:
        stored: the latest `count + 1` checkpoints (the extra, oldest one only to check the
            link of the next), in any order.
        count: how many of the latest to check, oldest first.
        scope: keys, current chain lengths, room filter and anchors.
    """
    window = sorted(stored, key=lambda s: s.seq)
    to_check = window[-count:] if count > 0 else []
    if not to_check:
        return CheckpointReport(0, None, None, 0, 0, None)
    latest_seq = to_check[-1].seq
    by_seq = {s.seq: s for s in window}
    fetched: dict[int, ArchivedRow] = {}
    tally = _Tally()
    for stored_cp in to_check:
        tally.checked += 1
        cp, problem = _document_problem(stored_cp, by_seq.get(stored_cp.seq - 1), scope.keys)
        if cp is None or problem is not None:
            assert problem is not None
            return tally.report(latest_seq, problem)
        tally.latest_ts = cp.ts
        entries = [h for h in cp.heads if scope.room_id is None or h.room_id == scope.room_id]
        anchors = {h.room_id: scope.anchor_for(h.room_id) for h in entries}
        wanted = sorted({h.last_id for h in entries if _needs_row(h, anchors[h.room_id])} - set(fetched))
        for start in range(0, len(wanted), IDS_PER_REQUEST):
            fetched.update((yield RowsRequest(tuple(wanted[start : start + IDS_PER_REQUEST]))))
        for h in entries:
            found = entry_problem(
                h, fetched.get(h.last_id), scope.rows_now.get(h.room_id, 0), anchors[h.room_id]
            )
            if found == PRUNED:
                tally.pruned += 1
                continue
            tally.rooms += 1
            if found is not None:
                return tally.report(latest_seq, CheckpointMismatch(cp.seq, h.room_id, MISMATCH, found))
    return tally.report(latest_seq, None)


def _document_problem(
    stored: StoredCheckpoint, predecessor: StoredCheckpoint | None, keys: Mapping[str, VerifyKey]
) -> tuple[SignedCheckpoint | None, CheckpointMismatch | None]:
    """The parsed checkpoint, and the first problem of its document, signature or link."""
    try:
        cp = parse_checkpoint(stored.text)
    except ValueError as e:
        return None, CheckpointMismatch(stored.seq, None, MALFORMED, str(e))
    if cp.seq != stored.seq:
        detail = f"the document says seq {cp.seq}, stored as {stored.seq}"
        return cp, CheckpointMismatch(stored.seq, None, MALFORMED, detail)
    signature = signature_problem(cp, keys)
    if signature is not None:
        return cp, CheckpointMismatch(cp.seq, None, *signature)
    link = _link_problem(cp, predecessor)
    if link is not None:
        return cp, CheckpointMismatch(cp.seq, None, CHAIN_BROKEN, link)
    return cp, None


def _needs_row(entry: CheckpointHead, anchor: Anchor | None) -> bool:
    return anchor is None or entry.last_id > anchor.last_pruned_id


def _link_problem(cp: SignedCheckpoint, predecessor: StoredCheckpoint | None) -> str | None:
    if cp.seq == 1:
        return None if cp.prev_hash == GENESIS else "the first checkpoint does not start from genesis"
    if predecessor is None:
        return f"checkpoint {cp.seq - 1} is missing"
    try:
        prev_hash = parse_checkpoint(predecessor.text).hash
    except ValueError as e:
        return f"checkpoint {cp.seq - 1} is malformed ({e})"
    if prev_hash != cp.prev_hash:
        return f"prev_hash is not the hash of checkpoint {cp.seq - 1}"
    return None
