"""Typed readers for the module's config: each names the full key path in its error.

Pure: no Synapse, no I/O. `ConfigProblem(path, message)` is what every parser raises; the module
turns it into Synapse's `ConfigError`, the CLI prints it itself.
"""

import re
from collections.abc import Collection, Mapping, Sequence
from enum import Enum
from typing import TypeVar

ConfigPath = tuple[str, ...]

E = TypeVar("E", bound=Enum)


class ConfigProblem(Exception):
    """A config value is invalid. `path` is relative to the module's `config:` mapping."""

    def __init__(self, path: ConfigPath, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message

    def dotted(self, prefix: str = "") -> str:
        """The path as Synapse prints it, e.g. `identity.required_for.<item 1>`."""
        parts = [prefix, *self.path] if prefix else list(self.path)
        return ".".join(parts)


def describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def mapping(raw: object, path: ConfigPath) -> Mapping[str, object]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigProblem(path, f"expected a mapping; got {describe(raw)}")
    for key in raw:
        if not isinstance(key, str):
            raise ConfigProblem(path, f"keys must be strings; got {describe(key)}")
    return raw


def reject_unknown(d: Mapping[str, object], allowed: Collection[str], path: ConfigPath) -> None:
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ConfigProblem(
            (*path, unknown[0]),
            f"unknown option {unknown[0]!r}; accepted here: {', '.join(sorted(allowed))}",
        )


def optional_str(d: Mapping[str, object], key: str, path: ConfigPath) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigProblem((*path, key), f"expected a non-empty string; got {describe(value)}")
    return value


def str_list(d: Mapping[str, object], key: str, path: ConfigPath) -> tuple[str, ...]:
    raw = d.get(key)
    if raw is None:
        return ()
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise ConfigProblem((*path, key), f"expected a list; got {describe(raw)}")
    for i, item in enumerate(raw):
        if not isinstance(item, str) or not item.strip():
            raise ConfigProblem(
                (*path, key, f"<item {i}>"), f"expected a non-empty string; got {describe(item)}"
            )
    return tuple(raw)


_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h|d|w)$")
_DURATION_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def duration(d: Mapping[str, object], key: str, default_ms: int, path: ConfigPath) -> int:
    """A duration written like "300s", "12h", "184d"; returned in milliseconds."""
    value = d.get(key)
    if value is None:
        return default_ms
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigProblem(
            (*path, key), f'expected a duration such as "30s", "12h" or "7d"; got {describe(value)}'
        )
    return int(match.group(1)) * _DURATION_MS[match.group(2)]


def boolean(d: Mapping[str, object], key: str, default: bool, path: ConfigPath) -> bool:
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigProblem((*path, key), f"expected true or false; got {describe(value)}")
    return value


def integer(
    d: Mapping[str, object], key: str, default: int, path: ConfigPath, *, minimum: int | None = None
) -> int:
    value = d.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigProblem((*path, key), f"expected an integer; got {describe(value)}")
    if minimum is not None and value < minimum:
        raise ConfigProblem((*path, key), f"must be at least {minimum}; got {value}")
    return value


def enum(d: Mapping[str, object], key: str, enum_type: type[E], default: E, path: ConfigPath) -> E:
    if key not in d or d[key] is None:
        return default
    return enum_value(d[key], enum_type, (*path, key))


def enum_value(value: object, enum_type: type[E], path: ConfigPath) -> E:
    accepted = [str(member.value) for member in enum_type]
    if isinstance(value, str):
        for member in enum_type:
            if member.value == value:
                return member
    raise ConfigProblem(path, f"got {describe(value)}; accepted: {', '.join(accepted)}")


def enum_set(raw: object, enum_type: type[E], path: ConfigPath) -> frozenset[E]:
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise ConfigProblem(path, f"expected a list; got {describe(raw)}")
    members = [enum_value(item, enum_type, (*path, f"<item {i}>")) for i, item in enumerate(raw)]
    return frozenset(members)
