"""Signed checkpoints without I/O: construction, signatures, the checkpoint chain, and checking
checkpoints against the archive (core/checkpoints.py); the signing key file and keygen."""

import hashlib
import json
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import pytest
from canonicaljson import encode_canonical_json
from hypothesis import given
from hypothesis import strategies as st
from signedjson.key import generate_signing_key, get_verify_key, write_signing_keys
from signedjson.sign import verify_signed_json
from signedjson.types import SigningKey

from synapse_compliance.cli import main
from synapse_compliance.config import ConfigProblem, parse_config
from synapse_compliance.core.archive_chain import GENESIS
from synapse_compliance.core.checkpoints import (
    BAD_SIGNATURE,
    CHAIN_BROKEN,
    IDS_PER_REQUEST,
    MALFORMED,
    MISMATCH,
    PRUNED,
    SIGNATURE_NAME,
    UNKNOWN_KEY,
    Anchor,
    ArchivedRow,
    CheckpointHead,
    CheckpointReport,
    CheckScope,
    RowsRequest,
    SignedCheckpoint,
    StoredCheckpoint,
    checkpoint_steps,
    entry_problem,
    key_id,
    parse_checkpoint,
    same_heads,
    sign_checkpoint,
    signature_problem,
    verify_keys_for,
)
from synapse_compliance.keys import load_settings, read_checkpoint_keys, write_checkpoint_key

KEY = generate_signing_key("k1")
OLD_KEY = generate_signing_key("k0")
KEYS = verify_keys_for([KEY])


def h(n: int) -> str:
    """A distinct 64-hex-digit hash."""
    return hashlib.sha256(str(n).encode()).hexdigest()


HEADS = (
    CheckpointHead("!b:x", 7, 4, h(1)),
    CheckpointHead("!a:x", 3, 2, h(2)),
)


def make(
    heads: Sequence[CheckpointHead] = HEADS,
    previous: SignedCheckpoint | None = None,
    key: SigningKey = KEY,
    ts: int = 1_000,
) -> SignedCheckpoint:
    return sign_checkpoint(previous, heads, ts, "example.org", key)


# --- construction -------------------------------------------------------------------------


def test_a_checkpoint_is_canonical_signed_json() -> None:
    cp = make()
    doc = json.loads(cp.text)
    assert cp.text.encode() == encode_canonical_json(doc)
    assert cp.hash == hashlib.sha256(cp.text.encode()).hexdigest()
    assert doc["heads"] == [["!a:x", 3, 2, h(2)], ["!b:x", 7, 4, h(1)]]  # sorted by room
    assert (doc["seq"], doc["prev_hash"], doc["ts"], doc["key_id"]) == (1, GENESIS, 1_000, "ed25519:k1")
    verify_signed_json(doc, SIGNATURE_NAME, get_verify_key(KEY))
    assert parse_checkpoint(cp.text) == cp


def test_checkpoints_chain_by_hash() -> None:
    first = make()
    second = make(HEADS[:1], first, ts=2_000)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert second.hash != first.hash


def test_same_heads() -> None:
    cp = make()
    assert same_heads(None, [])
    assert not same_heads(None, HEADS)
    assert same_heads(cp, list(reversed(HEADS)))
    assert not same_heads(cp, HEADS[:1])
    assert not same_heads(cp, [HEADS[0], attrs.evolve(HEADS[1], rows=3)])


def test_signatures() -> None:
    cp = make()
    assert signature_problem(cp, KEYS) is None
    found = signature_problem(cp, verify_keys_for([OLD_KEY]))
    assert found is not None and found[0] == UNKNOWN_KEY
    # An older key left in the file still verifies what it signed.
    old = make(key=OLD_KEY)
    assert signature_problem(old, verify_keys_for([KEY, OLD_KEY])) is None
    forged = parse_checkpoint(cp.text.replace(h(1), h(9)))
    found = signature_problem(forged, KEYS)
    assert found is not None and found[0] == BAD_SIGNATURE


room_ids = st.text("abcxyz", min_size=1, max_size=6).map(lambda s: f"!{s}:example.org")
heads_lists = st.dictionaries(
    room_ids,
    st.tuples(st.integers(1, 10**12), st.integers(1, 10**9), st.integers(0, 10**6)),
    max_size=8,
).map(lambda d: [CheckpointHead(r, last, rows, h(n)) for r, (last, rows, n) in d.items()])


@given(heads_lists, st.integers(0, 10**13))
def test_any_checkpoint_round_trips_and_verifies(heads: list[CheckpointHead], ts: int) -> None:
    cp = make(heads, ts=ts)
    assert parse_checkpoint(cp.text) == cp
    assert signature_problem(cp, KEYS) is None


@given(heads_lists.filter(bool), st.data())
def test_altering_any_head_breaks_the_signature(heads: list[CheckpointHead], data: st.DataObject) -> None:
    cp = make(heads)
    doc = json.loads(cp.text)
    entry = data.draw(st.sampled_from(doc["heads"]))
    field = data.draw(st.sampled_from([1, 2, 3]))
    entry[field] = h(-1) if field == 3 else entry[field] + 1
    forged = parse_checkpoint(encode_canonical_json(doc).decode())
    found = signature_problem(forged, KEYS)
    assert found is not None and found[0] == BAD_SIGNATURE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"type": "other", "format": 1}', "not a format 1"),
        (None, "seq, ts"),
        ("prev", "prev_hash"),
        ("heads", "heads is not a list"),
        ("entry", "heads[0]"),
    ],
)
def test_malformed_documents(text: str | None, message: str) -> None:
    doc = json.loads(make().text)
    if text is None:
        doc["seq"] = "1"
    elif text == "prev":
        doc["prev_hash"] = "xyz"
    elif text == "heads":
        doc["heads"] = {}
    elif text == "entry":
        doc["heads"][0] = ["!a:x", 3, True, h(2)]
    raw = text if text not in (None, "prev", "heads", "entry") else json.dumps(doc)
    assert raw is not None
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_checkpoint(raw)


# --- one room against its entry -----------------------------------------------------------

ENTRY = CheckpointHead("!a:x", 10, 5, h(5))
ROW = ArchivedRow("!a:x", h(5))


@pytest.mark.parametrize(
    ("row", "rows_now", "anchor", "expected"),
    [
        (ROW, 5, None, None),
        (ROW, 9, None, None),  # rows archived since
        (None, 5, None, "row 10 is no longer in the archive"),
        (ArchivedRow("!b:x", h(5)), 5, None, "row 10 now belongs to !b:x"),
        (ArchivedRow("!a:x", h(6)), 5, None, "no longer has the chain hash"),
        (ROW, 4, None, "the chain now has 4 rows; the checkpoint pinned 5"),
        (None, 0, Anchor("!a:x", 10, h(5), 0), None),  # pruned up to exactly this row: the anchor vouches
        (None, 0, Anchor("!a:x", 10, h(6), 0), "the anchor at row 10 has a different hash"),
        (None, 0, Anchor("!a:x", 11, h(6), 0), PRUNED),  # pruned past: nothing left to compare
        (ROW, 5, Anchor("!a:x", 9, h(6), 0), None),  # pruned before: the row itself is checked
    ],
)
def test_entry_problem(
    row: ArchivedRow | None, rows_now: int, anchor: Anchor | None, expected: str | None
) -> None:
    found = entry_problem(ENTRY, row, rows_now, anchor)
    if expected is None or expected == PRUNED:
        assert found == expected
    else:
        assert found is not None and expected in found


# --- checking the latest checkpoints ------------------------------------------------------


def run(
    stored: Sequence[StoredCheckpoint],
    count: int,
    archive: Mapping[int, ArchivedRow],
    rows_now: Mapping[str, int],
    *,
    room_id: str | None = None,
    anchors: Mapping[str, Anchor] | None = None,
) -> tuple[CheckpointReport, list[RowsRequest]]:
    """Drive `checkpoint_steps` over an in-memory archive; also return what it asked for."""
    scope = CheckScope(KEYS, rows_now, room_id, (anchors or {}).get)
    steps = checkpoint_steps(stored, count, scope)
    asked: list[RowsRequest] = []
    try:
        request = next(steps)
        while True:
            asked.append(request)
            request = steps.send({i: archive[i] for i in request.ids if i in archive})
    except StopIteration as done:
        report: CheckpointReport = done.value
        return report, asked


def history() -> tuple[list[SignedCheckpoint], dict[int, ArchivedRow], dict[str, int]]:
    """Three checkpoints of two growing rooms, and the archive they describe."""
    first = make([CheckpointHead("!a:x", 1, 1, h(1))])
    second = make([CheckpointHead("!a:x", 2, 2, h(2)), CheckpointHead("!b:x", 3, 1, h(3))], first, ts=2)
    third = make([CheckpointHead("!a:x", 4, 3, h(4)), CheckpointHead("!b:x", 3, 1, h(3))], second, ts=3)
    archive = {i: ArchivedRow("!a:x" if i != 3 else "!b:x", h(i)) for i in (1, 2, 3, 4)}
    return [first, second, third], archive, {"!a:x": 3, "!b:x": 1}


def stored_of(cps: Sequence[SignedCheckpoint]) -> list[StoredCheckpoint]:
    return [StoredCheckpoint(c.seq, c.text) for c in cps]


def test_the_latest_checkpoint_holds() -> None:
    cps, archive, rows = history()
    report, asked = run(stored_of(cps[-2:]), 1, archive, rows)
    assert report == CheckpointReport(1, 3, 3, 2, 0, None)
    assert asked == [RowsRequest((3, 4))]


def test_all_checkpoints_hold_and_rows_are_read_once() -> None:
    cps, archive, rows = history()
    report, asked = run(stored_of(cps), 3, archive, rows)
    assert report.ok and report.checked == 3 and report.rooms_checked == 5
    assert sorted(i for r in asked for i in r.ids) == [1, 2, 3, 4]


def test_the_first_mismatch_is_reported_oldest_first() -> None:
    cps, archive, rows = history()
    archive[2] = ArchivedRow("!a:x", h(99))  # a recomputed chain: row 2 and later changed
    archive[4] = ArchivedRow("!a:x", h(98))
    report, _ = run(stored_of(cps), 3, archive, rows)
    assert report.first_mismatch is not None
    assert (report.first_mismatch.seq, report.first_mismatch.room_id) == (2, "!a:x")
    assert report.first_mismatch.reason == MISMATCH
    report, _ = run(stored_of(cps[-2:]), 1, archive, rows)
    assert report.first_mismatch is not None and report.first_mismatch.seq == 3


def test_one_room() -> None:
    cps, archive, rows = history()
    del archive[4]
    report, asked = run(stored_of(cps[-2:]), 1, archive, rows, room_id="!b:x")
    assert report.ok and report.rooms_checked == 1 and asked == [RowsRequest((3,))]
    report, _ = run(stored_of(cps[-2:]), 1, archive, rows, room_id="!a:x")
    assert not report.ok


def test_pruned_rooms_are_checked_against_their_anchor_or_skipped() -> None:
    cps, archive, rows = history()
    for i in (1, 2):
        del archive[i]
    anchors = {"!a:x": Anchor("!a:x", 2, h(2), 0)}
    report, _ = run(stored_of(cps), 3, archive, rows, anchors=anchors)
    assert report.ok and report.rooms_pruned == 1 and report.rooms_checked == 4
    report, _ = run(stored_of(cps), 3, archive, rows, anchors={"!a:x": Anchor("!a:x", 2, h(7), 0)})
    assert report.first_mismatch is not None and report.first_mismatch.seq == 2


def test_a_missing_or_altered_predecessor_breaks_the_chain() -> None:
    cps, archive, rows = history()
    report, _ = run(stored_of([cps[0], cps[2]]), 2, archive, rows)
    assert report.first_mismatch is not None
    assert (report.first_mismatch.seq, report.first_mismatch.reason) == (3, CHAIN_BROKEN)
    assert "checkpoint 2 is missing" in report.first_mismatch.detail
    # The predecessor outside the checked window is only hashed, and must still match.
    forged = attrs.evolve(cps[1], text=cps[1].text.replace(h(3), h(33)))
    report, _ = run(stored_of([forged, cps[2]]), 1, archive, rows)
    assert report.first_mismatch is not None and report.first_mismatch.reason == CHAIN_BROKEN
    # A first checkpoint that does not start from genesis.
    odd = sign_checkpoint(attrs.evolve(cps[0], seq=0), HEADS, 1, "example.org", KEY)
    report, _ = run(stored_of([odd]), 1, archive, rows)
    assert report.first_mismatch is not None and report.first_mismatch.reason == CHAIN_BROKEN


def test_bad_documents_are_reported() -> None:
    cps, archive, rows = history()
    report, _ = run([StoredCheckpoint(3, "{")], 1, archive, rows)
    assert report.first_mismatch is not None and report.first_mismatch.reason == MALFORMED
    report, _ = run([StoredCheckpoint(4, cps[2].text)], 1, archive, rows)  # stored under another seq
    assert report.first_mismatch is not None and report.first_mismatch.reason == MALFORMED
    forged = cps[2].text.replace(h(4), h(44))
    report, _ = run([*stored_of(cps[:2]), StoredCheckpoint(3, forged)], 1, archive, rows)
    assert report.first_mismatch is not None
    assert (report.first_mismatch.seq, report.first_mismatch.reason) == (3, BAD_SIGNATURE)


def test_no_checkpoints_yet() -> None:
    assert run([], 1, {}, {})[0] == CheckpointReport(0, None, None, 0, 0, None)


def test_many_rooms_are_read_in_bounded_requests() -> None:
    heads = [CheckpointHead(f"!r{n}:x", n, 1, h(n)) for n in range(1, 1_201)]
    cp = make(heads)
    archive = {n: ArchivedRow(f"!r{n}:x", h(n)) for n in range(1, 1_201)}
    report, asked = run(stored_of([cp]), 1, archive, {f"!r{n}:x": 1 for n in range(1, 1_201)})
    assert report.ok and report.rooms_checked == 1_200
    assert [len(r.ids) for r in asked] == [IDS_PER_REQUEST, IDS_PER_REQUEST, 200]


# --- the key file -------------------------------------------------------------------------


def test_keygen_writes_a_signing_key_that_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "checkpoints.key"
    assert main(["keygen", "--signing-key", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (key,) = read_checkpoint_keys(str(path), ("archive", "signing_key_file"))
    out = capsys.readouterr().out
    assert key_id(key) in out and "public key" in out
    assert main(["keygen", "--signing-key", str(path)]) == 1  # never overwritten silently
    assert "--force" in capsys.readouterr().err
    assert main(["keygen", "--signing-key", str(path), "--force"]) == 0
    (new,) = read_checkpoint_keys(str(path), ())
    assert new.encode() != key.encode()


def test_keygen_needs_exactly_one_kind(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["keygen"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit):
        main(["keygen", "--pii-key", str(tmp_path / "a"), "--signing-key", str(tmp_path / "b")])


def test_every_key_in_the_file_verifies_and_the_first_signs(tmp_path: Path) -> None:
    path = tmp_path / "k"
    with path.open("w") as f:
        write_signing_keys(f, [KEY, OLD_KEY])
    keys = write_and_read = read_checkpoint_keys(str(path), ())
    assert [key_id(k) for k in keys] == ["ed25519:k1", "ed25519:k0"]
    assert write_and_read[0].encode() == KEY.encode()
    new = write_checkpoint_key(str(tmp_path / "n"))
    assert new.version.startswith("ckpt_")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read signing key file"),
        (b"", "holds no key"),
        (b"\n  \n", "holds no key"),
        (b"ed25519 a1\n", "not an Ed25519 signing key file"),
        (b"rsa a1 AAAA\n", "not an Ed25519 signing key file"),
        (b"ed25519 a1 AAAA\n", "not an Ed25519 signing key file"),  # too short for a key
        (b"ed25519 a1 %%%%\n", "not an Ed25519 signing key file"),
        (b"\xff\xfe", "cannot read signing key file"),
    ],
)
def test_bad_signing_key_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "k"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigProblem) as caught:
        read_checkpoint_keys(str(path), ("archive", "signing_key_file"))
    assert caught.value.path == ("archive", "signing_key_file")
    assert message in caught.value.message and str(path) in caught.value.message
    assert "keygen --signing-key" in caught.value.message


def test_a_key_version_listed_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    with path.open("w") as f:
        write_signing_keys(f, [KEY, generate_signing_key("k1")])
    with pytest.raises(ConfigProblem, match="names one key version twice"):
        read_checkpoint_keys(str(path), ())


def test_load_settings_reads_the_signing_key_and_checks_the_sink(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    write_checkpoint_key(str(key_file))
    archive = {"signing_key_file": str(key_file), "checkpoint_sink": str(tmp_path / "sink.jsonl")}
    settings = load_settings(parse_config({"archive": archive}))
    assert len(settings.checkpoint_keys) == 1
    assert "checkpoint_keys" not in repr(settings)  # the private key is never printed
    assert not (tmp_path / "sink.jsonl").exists()  # checked, not created
    for sink, message in (
        (tmp_path, "is a directory"),
        (tmp_path / "missing" / "sink.jsonl", "its folder is missing"),
    ):
        with pytest.raises(ConfigProblem) as caught:
            load_settings(parse_config({"archive": {**archive, "checkpoint_sink": str(sink)}}))
        assert caught.value.path == ("archive", "checkpoint_sink") and message in caught.value.message
    assert load_settings(parse_config({})).checkpoint_keys == ()
