"""The `retention` and `archive` config sections: defaults, good values, and bad values by path."""

from typing import Any

import pytest

from synapse_compliance.config import (
    MIN_RETENTION_DAYS,
    ArchiveConfig,
    ConfigProblem,
    RetentionConfig,
    parse_config,
)
from synapse_compliance.core.guards import EncryptedRooms


def test_defaults() -> None:
    config = parse_config({})
    assert config.retention == RetentionConfig(min_days=184, max_days=None)
    assert config.archive == ArchiveConfig(
        batch_size=2000, connection_records=True, connections_interval_ms=3_600_000
    )
    assert MIN_RETENTION_DAYS == 184


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"retention": None}, RetentionConfig()),
        ({"retention": {"min_days": 365}}, RetentionConfig(min_days=365)),
        ({"retention": {"max_days": 184}}, RetentionConfig(max_days=184)),
        ({"retention": {"min_days": 200, "max_days": 3650}}, RetentionConfig(200, 3650)),
        ({"retention": {"max_days": None}}, RetentionConfig()),
    ],
)
def test_good_retention(raw: Any, expected: RetentionConfig) -> None:
    assert parse_config(raw).retention == expected


@pytest.mark.parametrize(
    ("raw", "mode"),
    [
        ({}, EncryptedRooms.FORBID),
        ({"encrypted_rooms": None}, EncryptedRooms.FORBID),
        ({"encrypted_rooms": "forbid"}, EncryptedRooms.FORBID),
        ({"encrypted_rooms": "archive_ciphertext"}, EncryptedRooms.ARCHIVE_CIPHERTEXT),
    ],
)
def test_encrypted_rooms(raw: Any, mode: EncryptedRooms) -> None:
    assert parse_config({"retention": raw}).retention.encrypted_rooms is mode


@pytest.mark.parametrize(
    ("raw", "interval_ms", "batch"),
    [
        ({}, 86_400_000, 1_000),
        ({"prune_interval": None, "prune_batch_size": None}, 86_400_000, 1_000),
        ({"prune_interval": "1m", "prune_batch_size": 1}, 60_000, 1),
        ({"prune_interval": "7d", "prune_batch_size": 10_000}, 7 * 86_400_000, 10_000),
        ({"max_days": 400, "prune_interval": "12h"}, 43_200_000, 1_000),
    ],
)
def test_good_prune_options(raw: Any, interval_ms: int, batch: int) -> None:
    retention = parse_config({"retention": raw}).retention
    assert (retention.prune_interval_ms, retention.prune_batch_size) == (interval_ms, batch)


@pytest.mark.parametrize("size", [1, 500, 10_000])
def test_good_batch_sizes(size: int) -> None:
    assert parse_config({"archive": {"batch_size": size}}).archive.batch_size == size


@pytest.mark.parametrize(
    ("raw", "enabled", "interval_ms"),
    [
        ({}, True, 3_600_000),
        ({"connection_records": False}, False, 3_600_000),
        ({"connection_records": None, "connections_interval": None}, True, 3_600_000),
        ({"connections_interval": "1m"}, True, 60_000),
        ({"connections_interval": "60s"}, True, 60_000),
        ({"connections_interval": "6h"}, True, 21_600_000),
        ({"connections_interval": "1d"}, True, 86_400_000),
    ],
)
def test_good_connection_records(raw: Any, enabled: bool, interval_ms: int) -> None:
    archive = parse_config({"archive": raw}).archive
    assert (archive.connection_records, archive.connections_interval_ms) == (enabled, interval_ms)


BAD: list[tuple[Any, tuple[str, ...], str]] = [
    ({"retention": []}, ("retention",), "expected a mapping"),
    (
        {"retention": {"min_day": 200}},
        ("retention", "min_day"),
        "accepted here: encrypted_rooms, max_days, min_days, prune_batch_size, prune_interval",
    ),
    ({"retention": {"prune_interval": "59s"}}, ("retention", "prune_interval"), "from 1m to 7d; got '59s'"),
    ({"retention": {"prune_interval": "8d"}}, ("retention", "prune_interval"), "from 1m to 7d"),
    ({"retention": {"prune_interval": 3600}}, ("retention", "prune_interval"), "expected a duration"),
    ({"retention": {"prune_batch_size": 0}}, ("retention", "prune_batch_size"), "at least 1"),
    ({"retention": {"prune_batch_size": 10_001}}, ("retention", "prune_batch_size"), "at most 10000"),
    ({"retention": {"prune_batch_size": "1000"}}, ("retention", "prune_batch_size"), "expected an integer"),
    (
        {"retention": {"encrypted_rooms": "allow"}},
        ("retention", "encrypted_rooms"),
        "got 'allow'; accepted: forbid, archive_ciphertext",
    ),
    ({"retention": {"encrypted_rooms": True}}, ("retention", "encrypted_rooms"), "archive_ciphertext"),
    ({"retention": {"min_days": 183}}, ("retention", "min_days"), "at least 184 (six months"),
    ({"retention": {"min_days": 0}}, ("retention", "min_days"), "got 0"),
    ({"retention": {"min_days": "184d"}}, ("retention", "min_days"), "expected an integer"),
    ({"retention": {"min_days": 200.5}}, ("retention", "min_days"), "expected an integer"),
    ({"retention": {"min_days": True}}, ("retention", "min_days"), "expected an integer"),
    ({"retention": {"max_days": 100}}, ("retention", "max_days"), "at least retention.min_days (184)"),
    (
        {"retention": {"min_days": 400, "max_days": 399}},
        ("retention", "max_days"),
        "at least retention.min_days (400); got 399",
    ),
    ({"retention": {"max_days": "forever"}}, ("retention", "max_days"), "expected an integer"),
    ({"archive": 5}, ("archive",), "expected a mapping"),
    ({"archive": {"batch": 5}}, ("archive", "batch"), "accepted here: batch_size"),
    ({"archive": {"batch_size": 0}}, ("archive", "batch_size"), "at least 1"),
    ({"archive": {"batch_size": 10_001}}, ("archive", "batch_size"), "at most 10000"),
    ({"archive": {"batch_size": "500"}}, ("archive", "batch_size"), "expected an integer"),
    ({"archive": {"connection_records": "yes"}}, ("archive", "connection_records"), "expected true or false"),
    ({"archive": {"connection_records": 1}}, ("archive", "connection_records"), "expected true or false"),
    ({"archive": {"connections_interval": 3600}}, ("archive", "connections_interval"), "expected a duration"),
    ({"archive": {"connections_interval": "1 h"}}, ("archive", "connections_interval"), "a duration"),
    (
        {"archive": {"connections_interval": "59s"}},
        ("archive", "connections_interval"),
        "must be from 1m to 1d; got '59s'",
    ),
    ({"archive": {"connections_interval": "0m"}}, ("archive", "connections_interval"), "from 1m to 1d"),
    ({"archive": {"connections_interval": "2d"}}, ("archive", "connections_interval"), "from 1m to 1d"),
    ({"archive": {"connection": True}}, ("archive", "connection"), "connection_records, connections_"),
]


@pytest.mark.parametrize(("raw", "path", "message"), BAD)
def test_bad_values_name_their_path(raw: Any, path: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigProblem) as caught:
        parse_config(raw)
    assert caught.value.path == path
    assert message in caught.value.message


def test_synapse_prints_the_full_path() -> None:
    with pytest.raises(ConfigProblem) as caught:
        parse_config({"retention": {"min_days": 30}})
    assert caught.value.dotted("modules.<item 0>.config") == "modules.<item 0>.config.retention.min_days"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, (None, 3_600_000, None)),
        ({"signing_key_file": "/k"}, ("/k", 3_600_000, None)),
        (
            {"signing_key_file": "/k", "checkpoint_interval": "1m", "checkpoint_sink": "/s.jsonl"},
            ("/k", 60_000, "/s.jsonl"),
        ),
        ({"signing_key_file": "/k", "checkpoint_interval": "7d"}, ("/k", 7 * 86_400_000, None)),
        ({"checkpoint_interval": "2h", "checkpoint_sink": None}, (None, 7_200_000, None)),
    ],
)
def test_good_checkpoint_options(raw: Any, expected: tuple[str | None, int, str | None]) -> None:
    archive = parse_config({"archive": raw}).archive
    assert (archive.signing_key_file, archive.checkpoint_interval_ms, archive.checkpoint_sink) == expected


CHECKPOINT_BAD: list[tuple[Any, str, str]] = [
    ({"signing_key_file": ""}, "signing_key_file", "expected a non-empty string"),
    ({"signing_key_file": 5}, "signing_key_file", "expected a non-empty string"),
    ({"checkpoint_interval": "59s"}, "checkpoint_interval", "must be from 1m to 7d; got '59s'"),
    ({"checkpoint_interval": "8d"}, "checkpoint_interval", "from 1m to 7d"),
    ({"checkpoint_interval": 3600}, "checkpoint_interval", "expected a duration"),
    ({"checkpoint_sink": "/s.jsonl"}, "checkpoint_sink", "needs archive.signing_key_file"),
    ({"signing_key_file": "/k", "checkpoint_sink": ["/s"]}, "checkpoint_sink", "non-empty string"),
    ({"checkpoint_sinks": "/s"}, "checkpoint_sinks", "checkpoint_interval, checkpoint_sink"),
]


@pytest.mark.parametrize(("raw", "key", "message"), CHECKPOINT_BAD)
def test_bad_checkpoint_options_name_their_path(raw: Any, key: str, message: str) -> None:
    with pytest.raises(ConfigProblem) as caught:
        parse_config({"archive": raw})
    assert caught.value.path == ("archive", key)
    assert message in caught.value.message
