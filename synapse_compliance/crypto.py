"""Sealing personal data at rest, and keyed fingerprints of identity documents (DESIGN §4.2).

Theory of operation. A record is sealed with AES-256-GCM under the keyring's *current* key, with a
fresh 12-byte random nonce per seal and associated data that names the record's owner
(`AAD_PREFIX + user_id`). GCM authenticates ciphertext, nonce and associated data together, so a
flipped bit, a swapped nonce or a row copied to another user all fail to open with
`RecordOpenError`, never with wrong clear text. Each sealed record names the id of the key that
sealed it; opening looks that id up in the keyring (current key or a previous one), so records
stay readable while `rotate-key` re-seals them, and an id the keyring does not hold is
`UnknownKeyError`.

A fingerprint is HMAC-SHA256 over the normalised document type and number, keyed with a key
derived from the PII key by HKDF (a separate key, so the fingerprint reveals nothing about the
encryption key's use). Normalisation folds case and drops spaces and the separators people type
differently (`"ab 123-456"` and `"AB123456"` are one document), so the fingerprint finds the same
document however it was typed. A fingerprint is only comparable with fingerprints made under the
same key: `Keyring.fingerprints` gives one per configured key for matching during a rotation.

Pure: no Synapse, no I/O; the only side effect is reading randomness for nonces. Nothing here
logs, and no exception message carries clear data.
"""

import hashlib
import hmac
import json
import os
import unicodedata

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from synapse_compliance.keys import ComplianceSettings, PiiKey

AAD_PREFIX = b"synapse-compliance pii v1|"
FINGERPRINT_INFO = b"synapse-compliance fingerprint v1"
NONCE_BYTES = 12

# Characters people type in document numbers or leave out, with no meaning of their own.
_NUMBER_SEPARATORS = frozenset("-./_")


class PiiCryptoError(Exception):
    """A sealed record cannot be opened. Messages name users and key ids, never clear data."""


class UnknownKeyError(PiiCryptoError):
    """The record was sealed with a key the keyring does not hold."""

    def __init__(self, key_id: str, known: tuple[str, ...]) -> None:
        super().__init__(
            f"sealed with key id {key_id}, which is neither identity.pii_key_file nor in "
            f"identity.previous_pii_key_files (configured key ids: {', '.join(known)})"
        )
        self.key_id = key_id


class RecordOpenError(PiiCryptoError):
    """Authentication failed: ciphertext, nonce or owner do not match the key's seal."""


@attrs.frozen
class SealedRecord:
    """Encrypted personal data as stored: which key sealed it, the nonce and the ciphertext."""

    key_id: str
    nonce: bytes = attrs.field(repr=False)
    ciphertext: bytes = attrs.field(repr=False)


@attrs.frozen
class Keyring:
    """The current PII key, used for every new seal, and previous keys that can still open."""

    current: PiiKey
    previous: tuple[PiiKey, ...] = ()

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every configured key id, the current one first."""
        return (self.current.key_id, *(k.key_id for k in self.previous))

    def key(self, key_id: str) -> PiiKey:
        """The key with `key_id`.

        Raises:
            UnknownKeyError: no configured key has that id.
        """
        for candidate in (self.current, *self.previous):
            if candidate.key_id == key_id:
                return candidate
        raise UnknownKeyError(key_id, self.key_ids)

    def seal(self, user_id: str, plaintext: bytes) -> SealedRecord:
        """Encrypt `plaintext` for `user_id` under the current key with a fresh random nonce."""
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(self.current.key).encrypt(nonce, plaintext, associated_data(user_id))
        return SealedRecord(key_id=self.current.key_id, nonce=nonce, ciphertext=ciphertext)

    def open(self, user_id: str, record: SealedRecord) -> bytes:
        """Decrypt `record`, which must belong to `user_id`.

        Raises:
            UnknownKeyError: the record names a key id the keyring does not hold.
            RecordOpenError: the record was altered, or sealed for another user.
        """
        key = self.key(record.key_id)
        try:
            return AESGCM(key.key).decrypt(record.nonce, record.ciphertext, associated_data(user_id))
        except (InvalidTag, ValueError):  # ValueError: a nonce of impossible length
            raise RecordOpenError(
                f"the identity record of {user_id} (key id {record.key_id}) cannot be opened: its "
                "ciphertext, nonce or owner do not match (altered, or copied from another user)"
            ) from None

    def fingerprint(self, document_type: str, document_number: str) -> str:
        """The document's fingerprint under the current key (what is stored)."""
        return fingerprint(self.current, document_type, document_number)

    def fingerprints(self, document_type: str, document_number: str) -> tuple[str, ...]:
        """The document's fingerprint under every configured key (what is matched against)."""
        return tuple(fingerprint(k, document_type, document_number) for k in (self.current, *self.previous))


def keyring_for(settings: ComplianceSettings) -> Keyring | None:
    """The keyring of the configured PII keys (None without `identity.pii_key_file`)."""
    if settings.pii_key is None:
        return None
    return Keyring(current=settings.pii_key, previous=settings.previous_pii_keys)


def associated_data(user_id: str) -> bytes:
    """The GCM associated data binding a record to its owner."""
    return AAD_PREFIX + user_id.encode("utf-8")


def normalise_document_type(document_type: str) -> str:
    """`"ID card"`, `"id_card"` and `" ID-Card "` are one type: case-folded letters and digits."""
    text = unicodedata.normalize("NFKC", document_type).casefold()
    return "".join(ch for ch in text if ch.isalnum())


def normalise_document_number(document_number: str) -> str:
    """`"ab 123-456"` and `"AB123456"` are one number: upper case, no spaces or separators."""
    text = unicodedata.normalize("NFKC", document_number).upper()
    return "".join(ch for ch in text if not ch.isspace() and ch not in _NUMBER_SEPARATORS)


def fingerprint_key(key: PiiKey) -> bytes:
    """The HMAC key for fingerprints, derived from `key` with HKDF-SHA256."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=FINGERPRINT_INFO).derive(key.key)


def fingerprint(key: PiiKey, document_type: str, document_number: str) -> str:
    """Hex HMAC-SHA256 of the normalised document type and number under `key`'s fingerprint key."""
    message = json.dumps(
        [normalise_document_type(document_type), normalise_document_number(document_number)],
        ensure_ascii=True,
        separators=(",", ":"),
    ).encode("ascii")
    return hmac.new(fingerprint_key(key), message, hashlib.sha256).hexdigest()
