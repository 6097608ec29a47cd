"""The `credit:` section of the config (DESIGN §4.3): score range, hysteresis and tiers."""

import itertools
from collections.abc import Sequence

import attrs

from synapse_compliance.config_readers import (
    ConfigPath,
    ConfigProblem,
    boolean,
    describe,
    duration,
    integer,
    mapping,
    optional_str,
    reject_unknown,
)
from synapse_compliance.core.credit import MessageRate, Tier

DEFAULT_TIERS = (
    # Low credit (sanctions, or unverified accounts): one private group, slow messages.
    Tier("restricted", 0, 1, 10, 20, True, True, False, MessageRate(1.0, 10), False),
    # An ordinary verified user (credit.initial_verified) is here and notices nothing.
    Tier("standard", 200, 10, 200, 500, True, True, True, MessageRate(5.0, 20), True),
    Tier("trusted", 600, 50, 1000, 5000, True, True, True, MessageRate(20.0, 100), True),
)


DAY_MS = 86_400_000
# Recovery runs at most this often, however short its interval (a DB query per run).
MIN_RECOVERY_INTERVAL_MS = 1_000


@attrs.frozen
class RecoveryConfig:
    """`credit.recovery`: `points` every `interval` while the score is below `ceiling`.

    Off unless the `recovery:` mapping is given (then on unless `enabled: false`): scores only
    change when an operator asked for it. `ceiling` defaults to `credit.initial_verified`.
    """

    enabled: bool = False
    points: int = 1
    interval_ms: int = DAY_MS
    ceiling: int = 300


@attrs.frozen
class CreditConfig:
    """Credit and tiers (DESIGN §4.3)."""

    initial: int = 100
    initial_verified: int = 300
    min: int = 0
    max: int = 1000
    hysteresis: int = 20
    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    recovery: RecoveryConfig = RecoveryConfig()


# Six months, rounded up: the shortest retention the group-chat rules allow (DESIGN §4.4).


def parse_credit(raw: object, path: ConfigPath) -> CreditConfig:
    d = mapping(raw, path)
    reject_unknown(d, {"initial", "initial_verified", "min", "max", "hysteresis", "tiers", "recovery"}, path)
    default = CreditConfig()
    low = integer(d, "min", default.min, path)
    high = integer(d, "max", default.max, path)
    if high <= low:
        raise ConfigProblem((*path, "max"), f"must be greater than credit.min ({low}); got {high}")
    values: dict[str, int] = {}
    for key in ("initial", "initial_verified"):
        values[key] = integer(d, key, getattr(default, key), path)
        if not low <= values[key] <= high:
            raise ConfigProblem((*path, key), f"must be from credit.min to credit.max ({low}-{high})")
    tiers = default.tiers if d.get("tiers") is None else _tiers(d["tiers"], (*path, "tiers"), low, high)
    if tiers[0].min_score != low:
        raise ConfigProblem(
            (*path, "tiers", "<item 0>", "min_score"), f"the first tier must start at credit.min ({low})"
        )
    hysteresis = integer(d, "hysteresis", default.hysteresis, path, minimum=0)
    gap = min((b.min_score - a.min_score for a, b in itertools.pairwise(tiers)), default=None)
    if gap is not None and hysteresis >= gap:
        raise ConfigProblem(
            (*path, "hysteresis"), f"must be smaller than the smallest gap between tiers ({gap})"
        )
    return CreditConfig(
        initial=values["initial"],
        initial_verified=values["initial_verified"],
        min=low,
        max=high,
        hysteresis=hysteresis,
        tiers=tiers,
        recovery=_recovery(d.get("recovery"), (*path, "recovery"), low, high, values["initial_verified"]),
    )


def _recovery(raw: object, path: ConfigPath, low: int, high: int, initial_verified: int) -> RecoveryConfig:
    """`credit.recovery`; absent or null: off (with the defaults it would have)."""
    if raw is None:
        return RecoveryConfig(ceiling=initial_verified)
    d = mapping(raw, path)
    reject_unknown(d, {"enabled", "points", "interval", "ceiling"}, path)
    default = RecoveryConfig()
    interval = duration(d, "interval", default.interval_ms, path)
    if interval < MIN_RECOVERY_INTERVAL_MS:
        raise ConfigProblem((*path, "interval"), f"must be at least 1s; got {d.get('interval')!r}")
    ceiling = integer(d, "ceiling", initial_verified, path)
    if not low <= ceiling <= high:
        raise ConfigProblem((*path, "ceiling"), f"must be from credit.min to credit.max ({low}-{high})")
    return RecoveryConfig(
        enabled=boolean(d, "enabled", True, path),
        points=integer(d, "points", default.points, path, minimum=1),
        interval_ms=interval,
        ceiling=ceiling,
    )


_TIER_CAPS = ("max_groups_created", "max_groups_joined", "max_group_size")
_TIER_RIGHTS = ("may_invite", "may_manage", "may_create_public", "federation")


def _tiers(raw: object, path: ConfigPath, low: int, high: int) -> tuple[Tier, ...]:
    """Tiers in order; omitted options are inherited from the tier before (the first: `standard`)."""
    if isinstance(raw, str) or not isinstance(raw, Sequence) or not raw:
        raise ConfigProblem(path, f"expected a non-empty list of tiers; got {describe(raw)}")
    tiers: list[Tier] = []
    for i, item in enumerate(raw):
        p = (*path, f"<item {i}>")
        d = mapping(item, p)
        reject_unknown(d, {"name", "min_score", "message_rate", *_TIER_CAPS, *_TIER_RIGHTS}, p)
        base = tiers[-1] if tiers else DEFAULT_TIERS[1]
        name = optional_str(d, "name", p)
        if name is None:
            raise ConfigProblem((*p, "name"), "required: a non-empty string")
        if any(t.name == name for t in tiers):
            raise ConfigProblem((*p, "name"), f"tier names must be unique; {name!r} is used twice")
        if d.get("min_score") is None:
            raise ConfigProblem((*p, "min_score"), "required: an integer")
        min_score = integer(d, "min_score", 0, p)
        if tiers and min_score <= tiers[-1].min_score:
            raise ConfigProblem(
                (*p, "min_score"),
                f"tiers must be strictly increasing by min_score; {min_score} follows {tiers[-1].min_score}",
            )
        if not low <= min_score <= high:
            raise ConfigProblem((*p, "min_score"), f"must be from credit.min to credit.max ({low}-{high})")
        caps = {k: integer(d, k, getattr(base, k), p, minimum=0) for k in _TIER_CAPS}
        rights = {k: boolean(d, k, getattr(base, k), p) for k in _TIER_RIGHTS}
        rate = _message_rate(d.get("message_rate"), (*p, "message_rate"), base.message_rate)
        tier = Tier(
            name=name,
            min_score=min_score,
            max_groups_created=caps["max_groups_created"],
            max_groups_joined=caps["max_groups_joined"],
            max_group_size=caps["max_group_size"],
            may_invite=rights["may_invite"],
            may_manage=rights["may_manage"],
            may_create_public=rights["may_create_public"],
            message_rate=rate,
            federation=rights["federation"],
        )
        if tiers:
            _check_no_lost_right(tiers[-1], tier, p)
        tiers.append(tier)
    return tuple(tiers)


def _message_rate(raw: object, path: ConfigPath, base: MessageRate) -> MessageRate:
    d = mapping(raw, path)
    reject_unknown(d, {"per_second", "burst"}, path)
    per_second = d.get("per_second", base.per_second)
    if isinstance(per_second, bool) or not isinstance(per_second, int | float) or not per_second > 0:
        raise ConfigProblem((*path, "per_second"), f"expected a number above 0; got {describe(per_second)}")
    return MessageRate(float(per_second), integer(d, "burst", base.burst, path, minimum=1))


def _check_no_lost_right(lower: Tier, higher: Tier, path: ConfigPath) -> None:
    """More credit never loses a permission: a higher tier has at least the rights of the one before."""
    for key in (*_TIER_CAPS, *_TIER_RIGHTS):
        if getattr(higher, key) < getattr(lower, key):
            raise ConfigProblem(
                (*path, key),
                f"must not be less than in the tier before ({lower.name}: {getattr(lower, key)})",
            )
    for key in ("per_second", "burst"):
        if getattr(higher.message_rate, key) < getattr(lower.message_rate, key):
            raise ConfigProblem(
                (*path, "message_rate", key), f"must not be less than in the tier before ({lower.name})"
            )
