"""Secret key files: reading them at start-up and generating them (`synapse-compliance keygen`).

A PII key file holds one line: the standard base64 encoding of 32 random bytes (an AES-256 key).
Its key id is derived from the key itself (first 16 hex digits of its SHA-256), so records can
name the key that sealed them without the file having to carry an id, and a rotated key always
gets a new id.
"""

import base64
import binascii
import hashlib
import os
import secrets
import stat
from pathlib import Path

import attrs
from signedjson.key import generate_signing_key, read_signing_keys, write_signing_keys
from signedjson.types import SigningKey

from synapse_compliance.config import ComplianceConfig, ConfigPath, ConfigProblem

PII_KEY_BYTES = 32


@attrs.frozen
class PiiKey:
    """An AES-256 key for personal data. The key bytes never appear in repr or logs."""

    key_id: str
    key: bytes = attrs.field(repr=False)


@attrs.frozen
class ComplianceSettings:
    """The parsed config together with the secrets it names, as handed to the module."""

    config: ComplianceConfig
    pii_key: PiiKey | None = None
    # Keys of `identity.previous_pii_key_files`, in the order listed (never the current key).
    previous_pii_keys: tuple[PiiKey, ...] = ()
    kyc_webhook_secret: bytes | None = attrs.field(default=None, repr=False)
    # `archive.signing_key_file`: the first key signs checkpoints, all of them verify.
    checkpoint_keys: tuple[SigningKey, ...] = attrs.field(default=(), repr=False)


def load_settings(config: ComplianceConfig) -> ComplianceSettings:
    """Read the secret files the config names.

    Raises:
        ConfigProblem: a file is missing, unreadable or malformed, or a previous key repeats the
            current key or another previous key (path names the config key or list item).
    """
    pii_key = None
    if config.identity.pii_key_file is not None:
        pii_key = read_pii_key(config.identity.pii_key_file, ("identity", "pii_key_file"))
    previous: list[PiiKey] = []
    for i, file_name in enumerate(config.identity.previous_pii_key_files):
        path = ("identity", "previous_pii_key_files", f"<item {i}>")
        key = read_pii_key(file_name, path)
        if pii_key is not None and key.key_id == pii_key.key_id:
            raise ConfigProblem(
                path,
                f"key file {file_name!r} holds the current key ({key.key_id}, the same as "
                "identity.pii_key_file); list only keys that were replaced",
            )
        if any(k.key_id == key.key_id for k in previous):
            raise ConfigProblem(path, f"key file {file_name!r} repeats key {key.key_id} listed earlier")
        previous.append(key)
    secret = None
    if config.identity.kyc_webhook.secret_file is not None:
        secret = read_secret(
            config.identity.kyc_webhook.secret_file, ("identity", "kyc_webhook", "secret_file")
        )
    checkpoint_keys: tuple[SigningKey, ...] = ()
    if config.archive.signing_key_file is not None:
        checkpoint_keys = read_checkpoint_keys(
            config.archive.signing_key_file, ("archive", "signing_key_file")
        )
    if config.archive.checkpoint_sink is not None:
        check_sink_path(config.archive.checkpoint_sink, ("archive", "checkpoint_sink"))
    return ComplianceSettings(
        config=config,
        pii_key=pii_key,
        previous_pii_keys=tuple(previous),
        kyc_webhook_secret=secret,
        checkpoint_keys=checkpoint_keys,
    )


MIN_SECRET_BYTES = 16


def read_secret(file_name: str, path: ConfigPath) -> bytes:
    """Read a shared secret file (surrounding whitespace ignored, at least 16 bytes).

    Raises:
        ConfigProblem: at `path`, saying what is wrong with the file.
    """
    try:
        secret = Path(file_name).read_bytes().strip()
    except OSError as e:
        raise ConfigProblem(path, f"cannot read secret file {file_name!r}: {e}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigProblem(
            path, f"secret file {file_name!r} holds {len(secret)} bytes; use at least {MIN_SECRET_BYTES}"
        )
    return secret


def key_id_for(key: bytes) -> str:
    """The stable id of a key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:16]


def read_pii_key(file_name: str, path: ConfigPath) -> PiiKey:
    """Read and check a PII key file.

    Raises:
        ConfigProblem: at `path`, saying what is wrong with the file and how to make a good one.
    """
    hint = "generate one with `synapse-compliance keygen --pii-key <file>`"
    try:
        text = Path(file_name).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigProblem(path, f"cannot read key file {file_name!r}: {e}; {hint}") from None
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise ConfigProblem(path, f"key file {file_name!r} is not base64 text; {hint}") from None
    if len(key) != PII_KEY_BYTES:
        raise ConfigProblem(
            path,
            f"key file {file_name!r} holds {len(key)} bytes; an AES-256 key needs {PII_KEY_BYTES}; {hint}",
        )
    return PiiKey(key_id=key_id_for(key), key=key)


def write_pii_key(file_name: str, *, force: bool = False) -> PiiKey:
    """Create a new random PII key file readable by its owner only.

    Raises:
        FileExistsError: the file exists and `force` is false.
    """
    key = secrets.token_bytes(PII_KEY_BYTES)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(file_name, flags, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(base64.b64encode(key).decode("ascii") + "\n")
    os.chmod(file_name, stat.S_IRUSR | stat.S_IWUSR)
    return PiiKey(key_id=key_id_for(key), key=key)


def read_checkpoint_keys(file_name: str, path: ConfigPath) -> tuple[SigningKey, ...]:
    """Read an Ed25519 signing key file in Synapse's format (`ed25519 <version> <base64>` lines).

    Raises:
        ConfigProblem: at `path`, saying what is wrong with the file and how to make a good one.
    """
    hint = "generate one with `synapse-compliance keygen --signing-key <file>`"
    try:
        with open(file_name, encoding="ascii") as f:
            lines = [line for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigProblem(path, f"cannot read signing key file {file_name!r}: {e}; {hint}") from None
    if not lines:
        raise ConfigProblem(path, f"signing key file {file_name!r} holds no key; {hint}")
    try:
        keys = read_signing_keys(lines)
    except ValueError:  # a line is not `alg version base64`, the algorithm or the key is bad
        raise ConfigProblem(
            path, f"signing key file {file_name!r} is not an Ed25519 signing key file; {hint}"
        ) from None
    if len({(k.alg, k.version) for k in keys}) != len(keys):
        raise ConfigProblem(path, f"signing key file {file_name!r} names one key version twice")
    return tuple(keys)


def write_checkpoint_key(file_name: str, *, force: bool = False) -> SigningKey:
    """Create a new Ed25519 signing key file (Synapse's format) readable by its owner only.

    Raises:
        FileExistsError: the file exists and `force` is false.
    """
    key = generate_signing_key(f"ckpt_{secrets.token_hex(3)}")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(file_name, flags, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        write_signing_keys(f, [key])
    os.chmod(file_name, stat.S_IRUSR | stat.S_IWUSR)
    return key


def check_sink_path(file_name: str, path: ConfigPath) -> None:
    """Refuse a checkpoint sink that cannot be appended to (nothing is created here).

    Raises:
        ConfigProblem: at `path`: the path is a directory, or it (or its folder) is not writable.
    """
    target = Path(file_name)
    if target.is_dir():
        raise ConfigProblem(path, f"{file_name!r} is a directory; name a file to append to")
    if target.exists():
        if not os.access(target, os.W_OK):
            raise ConfigProblem(path, f"{file_name!r} is not writable")
    elif not target.parent.is_dir() or not os.access(target.parent, os.W_OK):
        raise ConfigProblem(path, f"cannot create {file_name!r}: its folder is missing or not writable")
