"""How sealed bytes are stored: base64 text, portable across SQLite and PostgreSQL.

Shared by the module's store and the offline `rotate-key` command; imports nothing from Synapse.
"""

import base64


def encode_bytes(value: bytes) -> str:
    """A nonce or ciphertext as stored."""
    return base64.b64encode(value).decode("ascii")


def decode_bytes(value: str) -> bytes:
    """The inverse of `encode_bytes`."""
    return base64.b64decode(value.encode("ascii"), validate=True)
