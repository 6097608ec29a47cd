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


def test_defaults() -> None:
    config = parse_config({})
    assert config.retention == RetentionConfig(min_days=184, max_days=None)
    assert config.archive == ArchiveConfig(batch_size=500)
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


@pytest.mark.parametrize("size", [1, 500, 10_000])
def test_good_batch_sizes(size: int) -> None:
    assert parse_config({"archive": {"batch_size": size}}).archive.batch_size == size


BAD: list[tuple[Any, tuple[str, ...], str]] = [
    ({"retention": []}, ("retention",), "expected a mapping"),
    ({"retention": {"min_day": 200}}, ("retention", "min_day"), "accepted here: max_days, min_days"),
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
