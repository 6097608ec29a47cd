"""Credit and tiers (DESIGN §4.3): the ledger arithmetic, tier choice, and the credit gates.

Theory of operation. A user's score is the plain sum of their ledger. Every change is clamped to
`[min, max]` *before* it is written: `apply_delta` returns the delta that was actually applied,
and that is what the ledger stores, so `score == sum(ledger)` holds by construction and no row
ever has to be reinterpreted later.

Tiers are an ordered list, strictly increasing by `min_score`, the first starting at the
score's minimum; a higher tier never has fewer rights than a lower one (the config parser
checks that). `tier_for` picks the tier for a score given the tier the user had before: a user
rises as soon as the score reaches the next tier's `min_score`, but only drops once the score
falls *below* the current tier's `min_score - hysteresis`, so a score hovering at a boundary
does not flap between tiers.

The caps compare a count with the tier's limit and refuse only what would go *beyond* it: a
user in `n` groups may join one more while `n < max_groups_joined`; a group of `n` members and
pending invites may take `k` more while `n + k <= max_group_size` (its owner's tier), and adding
nobody (an invitee accepting, a member re-joining) is never refused, even in a group already
over a cap that was lowered. The counts are the shell's: it reads them from Synapse.

The message-rate `TokenBucket` is pure too: it takes its state and the time and returns the
answer and the new state; the shell keeps the states in memory.

Nothing here imports Synapse or does I/O; times are always arguments.
"""

from collections.abc import Sequence

import attrs

from synapse_compliance.core.decision import ALLOW, FORBIDDEN, Decision

LIMIT_EXCEEDED = "M_LIMIT_EXCEEDED"
# Float slack when a refilled bucket should hold exactly one token.
_EPSILON = 1e-9

# Reason codes (stable, DESIGN §5).
GROUP_CREATE_CAP = "group_create_cap"
GROUP_JOIN_CAP = "group_join_cap"
GROUP_SIZE_CAP = "group_size_cap"
MAY_NOT_CREATE_PUBLIC = "may_not_create_public"
MAY_NOT_INVITE = "may_not_invite"
MAY_NOT_MANAGE = "may_not_manage"
MESSAGE_RATE = "message_rate"

# Ledger reason codes written by the module itself.
INITIAL = "initial"
ADMIN_ADJUSTMENT = "admin_adjustment"


@attrs.frozen
class LedgerEntry:
    """One change of a user's credit, as applied (the delta after clamping)."""

    delta: int
    reason_code: str
    reason: str
    actor: str
    ts: int
    case_id: str | None = None


def clamp(score: int, minimum: int, maximum: int) -> int:
    """`score` limited to `[minimum, maximum]`."""
    return max(minimum, min(maximum, score))


def apply_delta(score: int, delta: int, minimum: int, maximum: int) -> int:
    """The part of `delta` that can be applied to `score` without leaving `[minimum, maximum]`.

    A score already outside the range (after the operator narrowed it) is brought back inside.
    """
    return clamp(score + delta, minimum, maximum) - score


@attrs.frozen
class MessageRate:
    """Sustained messages per second, and how many may be sent at once after a quiet spell."""

    per_second: float
    burst: int


@attrs.frozen
class Tier:
    """What a user in this tier may do."""

    name: str
    min_score: int
    max_groups_created: int
    max_groups_joined: int
    max_group_size: int
    may_invite: bool
    may_manage: bool
    may_create_public: bool
    message_rate: MessageRate
    federation: bool


def tier_for(score: int, tiers: Sequence[Tier], previous: str | None, hysteresis: int) -> Tier:
    """The tier for `score`, given the tier the user was in before (`previous`, by name).

    Rises at once: if the score reaches a tier above `previous`, that tier. Drops only when the
    score is below `previous.min_score - hysteresis`, and then to the tier the score is in
    plainly. Unknown or absent `previous` (first look, or a tier removed from the config): the
    plain tier.
    """
    natural = 0
    for i, tier in enumerate(tiers):
        if score >= tier.min_score:
            natural = i
    held = next((i for i, t in enumerate(tiers) if t.name == previous), None)
    if held is None or natural >= held:
        return tiers[natural]
    if score >= tiers[held].min_score - hysteresis:
        return tiers[held]
    return tiers[natural]


@attrs.frozen
class Standing:
    """A user's credit as the gates see it."""

    score: int
    tier: Tier
    groups_created: int = 0
    groups_joined: int = 0


def decide_create_group(standing: Standing, is_public: bool) -> Decision:
    """Whether a user in `standing` may create one more group (public or not). Pure."""
    tier = standing.tier
    if is_public and not tier.may_create_public:
        return Decision.refuse(FORBIDDEN, MAY_NOT_CREATE_PUBLIC, tier=tier.name, score=standing.score)
    if standing.groups_created >= tier.max_groups_created:
        return Decision.refuse(
            FORBIDDEN,
            GROUP_CREATE_CAP,
            limit=tier.max_groups_created,
            usage=standing.groups_created,
            tier=tier.name,
            score=standing.score,
        )
    return ALLOW


def decide_join_group(standing: Standing) -> Decision:
    """Whether a user in `standing` (in `groups_joined` groups now) may join one more. Pure."""
    tier = standing.tier
    if standing.groups_joined >= tier.max_groups_joined:
        return Decision.refuse(
            FORBIDDEN,
            GROUP_JOIN_CAP,
            limit=tier.max_groups_joined,
            usage=standing.groups_joined,
            tier=tier.name,
            score=standing.score,
        )
    return ALLOW


def decide_group_size(owner: Tier, members: int, adding: int) -> Decision:
    """Whether a group of `members` (joined + invited) may take `adding` more. Pure.

    Args:
        owner: the tier of the group's owner, whose `max_group_size` applies.
        members: joined plus invited users now (the owner included).
        adding: users the change adds (0 for an invitee accepting; then always allowed).
    """
    if adding > 0 and members + adding > owner.max_group_size:
        return Decision.refuse(
            FORBIDDEN,
            GROUP_SIZE_CAP,
            limit=owner.max_group_size,
            usage=members,
            adding=adding,
            tier=owner.name,
        )
    return ALLOW


def decide_invite(standing: Standing) -> Decision:
    """Whether a user in `standing` may invite people into a group. Pure."""
    if not standing.tier.may_invite:
        return Decision.refuse(FORBIDDEN, MAY_NOT_INVITE, tier=standing.tier.name, score=standing.score)
    return ALLOW


def decide_manage(target: Tier, subject: str) -> Decision:
    """Whether `subject`, in tier `target`, may be raised to a group's manager level. Pure."""
    if not target.may_manage:
        return Decision.refuse(FORBIDDEN, MAY_NOT_MANAGE, tier=target.name, subject=subject)
    return ALLOW


@attrs.frozen
class BucketState:
    """Tokens left at `updated_ms`."""

    tokens: float
    updated_ms: int


@attrs.frozen
class BucketAnswer:
    """Whether one event may go now; if not, how long until it may."""

    allowed: bool
    retry_after_ms: int
    state: BucketState


@attrs.frozen
class TokenBucket:
    """A token bucket: `burst` tokens at most, refilled at `per_second`; one token per event."""

    per_second: float
    burst: int

    def full(self, now_ms: int) -> BucketState:
        """The state of a bucket nobody has drawn from."""
        return BucketState(float(self.burst), now_ms)

    def take(self, state: BucketState | None, now_ms: int) -> BucketAnswer:
        """Take one token at `now_ms` if there is one.

        A clock that went backwards refills nothing. A bucket whose `burst` shrank (tier
        change) holds at most the new `burst`.
        """
        if state is None:
            state = self.full(now_ms)
        elapsed_ms = max(0, now_ms - state.updated_ms)
        tokens = min(float(self.burst), state.tokens + elapsed_ms * self.per_second / 1000.0)
        at = max(now_ms, state.updated_ms)
        if tokens >= 1.0 - _EPSILON:
            return BucketAnswer(True, 0, BucketState(max(0.0, tokens - 1.0), at))
        # ceil without floats drifting below the moment the token is really there
        wait_ms = int(-(-((1.0 - tokens) * 1000.0) // self.per_second))
        return BucketAnswer(False, max(1, wait_ms), BucketState(tokens, at))


def decide_message_rate(answer: BucketAnswer, tier: Tier) -> Decision:
    """The decision for a bucket's answer: refusals carry the wait and the tier's rate."""
    if answer.allowed:
        return ALLOW
    return Decision.refuse(
        LIMIT_EXCEEDED,
        MESSAGE_RATE,
        retry_after_ms=answer.retry_after_ms,
        per_second=tier.message_rate.per_second,
        burst=tier.message_rate.burst,
        tier=tier.name,
    )


# --- recovery (credit.recovery) -----------------------------------------------------------------
#
# Recovery grants `points` once per interval to a user below the ceiling, never past it.
# Intervals are counted from the Unix epoch (`recovery_period`), so "already granted in this
# interval" is one number per user that any instance can check: two loops, or a restart within
# an interval, grant nothing twice. An interval in which the loop did not run is not made up.

RECOVERY = "recovery"


def recovery_period(now_ms: int, interval_ms: int) -> int:
    """The number of the recovery interval `now_ms` falls in (intervals counted from the epoch)."""
    return now_ms // interval_ms


def recovery_tick_ms(interval_ms: int) -> int:
    """How often the recovery loop runs: a quarter interval, from 1 s to 10 min.

    More often than the interval, so every interval gets a run however restarts fall.
    """
    return max(1_000, min(interval_ms // 4, 600_000))


def recovery_delta(score: int, points: int, ceiling: int) -> int:
    """What recovery grants a user at `score`: up to `points`, never past `ceiling` (0 at or above)."""
    return max(0, min(points, ceiling - score))
