"""Sealing personal data and fingerprinting documents, without Synapse."""

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synapse_compliance.core.personal_data import PersonalData, decide_identity_uniqueness
from synapse_compliance.crypto import (
    NONCE_BYTES,
    Keyring,
    RecordOpenError,
    UnknownKeyError,
    fingerprint,
    normalise_document_number,
    normalise_document_type,
)
from synapse_compliance.keys import PiiKey, key_id_for

ALICE = "@alice:example.org"
BOB = "@bob:example.org"


def make_key(seed: int) -> PiiKey:
    key = bytes([seed]) * 32
    return PiiKey(key_id=key_id_for(key), key=key)


KEY1, KEY2, KEY3 = make_key(1), make_key(2), make_key(3)


def flip(data: bytes, index: int = 0) -> bytes:
    """`data` with one bit changed."""
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_round_trip_and_fresh_nonce_per_seal() -> None:
    ring = Keyring(KEY1)
    first, second = ring.seal(ALICE, b"secret"), ring.seal(ALICE, b"secret")
    assert first.key_id == KEY1.key_id
    assert len(first.nonce) == NONCE_BYTES
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext
    assert b"secret" not in first.ciphertext
    assert ring.open(ALICE, first) == ring.open(ALICE, second) == b"secret"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: attrs.evolve(r, ciphertext=flip(r.ciphertext)),
        lambda r: attrs.evolve(r, ciphertext=flip(r.ciphertext, len(r.ciphertext) - 1)),  # the tag
        lambda r: attrs.evolve(r, ciphertext=r.ciphertext[:-1]),
        lambda r: attrs.evolve(r, nonce=flip(r.nonce)),
        lambda r: attrs.evolve(r, nonce=b""),
    ],
    ids=["ciphertext bit", "tag bit", "truncated", "nonce bit", "empty nonce"],
)
def test_tampered_record_does_not_open(tamper: object) -> None:
    ring = Keyring(KEY1)
    record = ring.seal(ALICE, b"real name")
    with pytest.raises(RecordOpenError) as caught:
        ring.open(ALICE, tamper(record))  # type: ignore[operator]  # the lambdas above
    assert ALICE in str(caught.value)
    assert "real name" not in str(caught.value)


def test_record_copied_to_another_user_does_not_open() -> None:
    ring = Keyring(KEY1)
    with pytest.raises(RecordOpenError, match="copied from another user"):
        ring.open(BOB, ring.seal(ALICE, b"data"))


def test_same_key_id_with_another_key_does_not_open() -> None:
    record = Keyring(KEY1).seal(ALICE, b"data")
    impostor = PiiKey(key_id=KEY1.key_id, key=KEY2.key)
    with pytest.raises(RecordOpenError):
        Keyring(impostor).open(ALICE, record)


def test_unknown_key_id_is_named() -> None:
    record = Keyring(KEY3).seal(ALICE, b"data")
    with pytest.raises(UnknownKeyError) as caught:
        Keyring(KEY1, (KEY2,)).open(ALICE, record)
    assert caught.value.key_id == KEY3.key_id
    message = str(caught.value)
    assert KEY3.key_id in message and KEY1.key_id in message and KEY2.key_id in message
    assert "previous_pii_key_files" in message


def test_previous_keys_open_but_never_seal() -> None:
    old = Keyring(KEY1).seal(ALICE, b"data")
    ring = Keyring(KEY2, (KEY1,))
    assert ring.open(ALICE, old) == b"data"
    assert ring.seal(ALICE, b"data").key_id == KEY2.key_id
    assert ring.key_ids == (KEY2.key_id, KEY1.key_id)


def test_keys_never_in_repr() -> None:
    ring = Keyring(KEY1, (KEY2,))
    assert KEY1.key.hex() not in repr(ring) and repr(KEY1.key) not in repr(ring)
    record = ring.seal(ALICE, b"x")
    assert repr(record.ciphertext) not in repr(record)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("passport", "AB 123 456"), ("PASSPORT", "ab123456")),
        (("Passport", " ab-123.456 "), ("passport", "AB123456")),
        (("ID card", "x1\u00a0y2"), ("id_card", "X1Y2")),  # no-break space
        (("id-card", "ＡＢ１２"), ("ID Card", "AB12")),  # full-width letters and digits
    ],
)
def test_fingerprint_normalises_spacing_case_and_separators(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert fingerprint(KEY1, *a) == fingerprint(KEY1, *b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("passport", "AB123456"), ("passport", "AB123457")),
        (("passport", "AB123456"), ("id_card", "AB123456")),
        (("pass", "portAB1"), ("passport", "AB1")),  # the split between type and number counts
    ],
)
def test_fingerprint_tells_documents_apart(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert fingerprint(KEY1, *a) != fingerprint(KEY1, *b)


def test_fingerprint_is_keyed_and_reveals_nothing() -> None:
    fp1 = fingerprint(KEY1, "passport", "AB123456")
    assert fp1 != fingerprint(KEY2, "passport", "AB123456")
    assert len(fp1) == 64 and "AB123456" not in fp1
    ring = Keyring(KEY2, (KEY1,))
    assert ring.fingerprint("passport", "AB123456") == fingerprint(KEY2, "passport", "AB123456")
    assert ring.fingerprints("passport", "AB123456") == (
        fingerprint(KEY2, "passport", "AB123456"),
        fp1,
    )


def test_normalisation() -> None:
    assert normalise_document_type(" ID-Card ") == "idcard"
    assert normalise_document_number(" ab 12-34./56_7 ") == "AB1234567"


@given(
    plaintext=st.binary(max_size=2000),
    user_id=st.text(min_size=1, max_size=50),
    seed=st.integers(0, 255),
)
def test_round_trip_any_data(plaintext: bytes, user_id: str, seed: int) -> None:
    ring = Keyring(make_key(seed))
    record = ring.seal(user_id, plaintext)
    assert ring.open(user_id, record) == plaintext
    assert len(record.ciphertext) == len(plaintext) + 16  # GCM tag


personal_data = st.builds(
    PersonalData,
    real_name=st.text(min_size=1, max_size=40),
    document_type=st.text(min_size=1, max_size=10),
    document_number=st.text(min_size=1, max_size=20),
    birth_date=st.none() | st.dates().map(lambda d: d.isoformat()),
)


@given(data=personal_data)
def test_personal_data_round_trips_through_a_seal(data: PersonalData) -> None:
    ring = Keyring(KEY1)
    assert PersonalData.from_plaintext(ring.open(ALICE, ring.seal(ALICE, data.to_plaintext()))) == data


def test_personal_data_repr_hides_everything() -> None:
    data = PersonalData("Zebulon Quirk", "passport", "QX998877", "1970-01-02")
    assert "Zebulon" not in repr(data) and "QX998877" not in repr(data) and "1970" not in repr(data)


@pytest.mark.parametrize(
    ("others", "limit", "allowed"), [(0, 1, True), (1, 1, False), (1, 2, True), (2, 2, False), (5, 3, False)]
)
def test_uniqueness_decision(others: int, limit: int, allowed: bool) -> None:
    decision = decide_identity_uniqueness(others, limit)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason_code == "identity_already_used"
        assert decision.facts == {"limit": limit, "usage": others}
