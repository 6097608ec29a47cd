"""The pure credit policy: ledger arithmetic, tiers with hysteresis, creation caps, token bucket."""

from hypothesis import given
from hypothesis import strategies as st

from synapse_compliance.config import DEFAULT_TIERS
from synapse_compliance.core.credit import (
    GROUP_CREATE_CAP,
    GROUP_JOIN_CAP,
    GROUP_SIZE_CAP,
    MAY_NOT_CREATE_PUBLIC,
    MAY_NOT_INVITE,
    MAY_NOT_MANAGE,
    MESSAGE_RATE,
    BucketState,
    MessageRate,
    Standing,
    Tier,
    TokenBucket,
    apply_delta,
    decide_create_group,
    decide_group_size,
    decide_invite,
    decide_join_group,
    decide_manage,
    decide_message_rate,
    tier_for,
)

# --- strategies ----------------------------------------------------------------------------


@st.composite
def credit_histories(draw: st.DrawFn) -> tuple[int, int, int, list[int]]:
    """A score range, an initial score inside it, and a list of requested deltas (any size)."""
    low = draw(st.integers(-1000, 1000))
    high = draw(st.integers(low + 1, low + 3000))
    initial = draw(st.integers(low, high))
    deltas = draw(st.lists(st.integers(-5000, 5000).filter(bool), max_size=60))
    return low, high, initial, deltas


@st.composite
def tier_lists(draw: st.DrawFn, min_gap: int = 1) -> tuple[Tier, ...]:
    """1-4 valid tiers as the config parser accepts them: from 0, increasing, rights never lost."""
    tiers: list[Tier] = []
    score, caps, rights = 0, [0, 0, 0], [False] * 4
    rate, burst = 0.5, 1
    for i in range(draw(st.integers(1, 4))):
        if i:
            score += draw(st.integers(min_gap, 300))
        caps = [c + draw(st.integers(0, 5)) for c in caps]
        rights = [r or draw(st.booleans()) for r in rights]
        rate, burst = rate + draw(st.integers(0, 5)), burst + draw(st.integers(0, 10))
        tiers.append(
            Tier(
                name=f"t{i}",
                min_score=score,
                max_groups_created=caps[0],
                max_groups_joined=caps[1],
                max_group_size=caps[2],
                may_invite=rights[0],
                may_manage=rights[1],
                may_create_public=rights[2],
                message_rate=MessageRate(rate, burst),
                federation=rights[3],
            )
        )
    return tuple(tiers)


@given(credit_histories())
def test_score_is_the_clamped_sum_and_the_plain_sum_of_the_ledger(
    history: tuple[int, int, int, list[int]],
) -> None:
    low, high, initial, deltas = history
    score = initial
    ledger = [initial]
    for delta in deltas:
        applied = apply_delta(score, delta, low, high)
        ledger.append(applied)
        expected = max(low, min(high, score + delta))  # clamp after each step
        score += applied
        assert score == expected
        assert low <= score <= high
        assert abs(applied) <= abs(delta)
        assert applied == 0 or (applied > 0) == (delta > 0)  # clamping never reverses a change
    assert score == sum(ledger)


def test_clamping_at_both_ends() -> None:
    assert apply_delta(990, 50, 0, 1000) == 10
    assert apply_delta(1000, 5, 0, 1000) == 0
    assert apply_delta(30, -100, 0, 1000) == -30
    assert apply_delta(1200, -1, 0, 1000) == -200  # a score outside a narrowed range comes back


@given(tier_lists(), st.integers(-50, 2000), st.integers(-50, 2000))
def test_more_credit_never_loses_a_permission(tiers: tuple[Tier, ...], a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    t_lo, t_hi = tier_for(lo, tiers, None, 0), tier_for(hi, tiers, None, 0)
    for key in ("max_groups_created", "max_groups_joined", "max_group_size"):
        assert getattr(t_hi, key) >= getattr(t_lo, key)
    for key in ("may_invite", "may_manage", "may_create_public", "federation"):
        assert getattr(t_hi, key) >= getattr(t_lo, key)
    assert t_hi.message_rate.per_second >= t_lo.message_rate.per_second
    assert t_hi.message_rate.burst >= t_lo.message_rate.burst
    for usage in range(4):
        for public in (False, True):
            if decide_create_group(Standing(lo, t_lo, usage), public).allowed:
                assert decide_create_group(Standing(hi, t_hi, usage), public).allowed
        if decide_join_group(Standing(lo, t_lo, groups_joined=usage)).allowed:
            assert decide_join_group(Standing(hi, t_hi, groups_joined=usage)).allowed
        for adding in range(3):
            if decide_group_size(t_lo, usage, adding).allowed:
                assert decide_group_size(t_hi, usage, adding).allowed
    for decide in (decide_invite, lambda s: decide_manage(s.tier, "@x:hs")):
        if decide(Standing(lo, t_lo)).allowed:
            assert decide(Standing(hi, t_hi)).allowed


def test_rises_at_once_and_drops_only_below_the_band() -> None:
    tiers, h = DEFAULT_TIERS, 20
    assert tier_for(199, tiers, "restricted", h).name == "restricted"
    assert tier_for(200, tiers, "restricted", h).name == "standard"  # rises at min_score
    assert tier_for(180, tiers, "standard", h).name == "standard"  # inside the band: kept
    assert tier_for(179, tiers, "standard", h).name == "restricted"  # below it: dropped
    assert tier_for(700, tiers, "restricted", h).name == "trusted"  # may rise several tiers
    assert tier_for(590, tiers, "trusted", h).name == "trusted"
    assert tier_for(150, tiers, "trusted", h).name == "restricted"  # drops to the plain tier
    assert tier_for(190, tiers, "gone_from_config", h).name == "restricted"


@given(
    tier_lists(min_gap=10),
    st.integers(0, 9),
    st.integers(-60, 60),
    st.lists(st.sampled_from([-1, 1]), max_size=300),
)
def test_hysteresis_changes_tier_at_most_once_per_crossing_of_the_band(
    tiers: tuple[Tier, ...],
    hysteresis: int,
    offset: int,
    steps: list[int],
) -> None:
    boundary = tiers[len(tiers) // 2].min_score if len(tiers) > 1 else 0
    score = max(0, boundary + offset)
    current = tier_for(score, tiers, None, hysteresis)
    names = [t.name for t in tiers]
    last_change_at: int | None = None
    for i, step in enumerate(steps):
        score = max(0, score + step)
        new = tier_for(score, tiers, current.name, hysteresis)
        # The tier is the plain one, or one the score is within the band of.
        plain = tier_for(score, tiers, None, hysteresis)
        assert new == plain or (
            names.index(new.name) > names.index(plain.name) and (score >= new.min_score - hysteresis)
        )
        if new != current:
            if names.index(new.name) > names.index(current.name):
                assert score == new.min_score  # ±1 steps: rises exactly at the boundary
            else:
                assert score == current.min_score - hysteresis - 1  # drops just below the band
            if last_change_at is not None:
                # Going back across the same boundary needs the whole band: at least h + 1 steps.
                assert i - last_change_at >= hysteresis + 1
            last_change_at = i
            current = new


def test_creation_refusals_carry_limit_usage_and_tier() -> None:
    restricted, standard = DEFAULT_TIERS[0], DEFAULT_TIERS[1]
    assert decide_create_group(Standing(100, restricted, 0), False).allowed
    capped = decide_create_group(Standing(100, restricted, 1), False)
    assert capped.reason_code == GROUP_CREATE_CAP
    assert capped.facts == {"limit": 1, "usage": 1, "tier": "restricted", "score": 100}
    public = decide_create_group(Standing(100, restricted, 0), True)
    assert public.reason_code == MAY_NOT_CREATE_PUBLIC
    assert decide_create_group(Standing(300, standard, 9), True).allowed
    assert decide_create_group(Standing(300, standard, 10), True).reason_code == GROUP_CREATE_CAP


def test_bucket_refusal_says_how_long_to_wait() -> None:
    bucket = TokenBucket(per_second=2.0, burst=3)
    state = None
    for _ in range(3):
        answer = bucket.take(state, 1_000)
        assert answer.allowed
        state = answer.state
    refused = bucket.take(state, 1_000)
    assert not refused.allowed and refused.retry_after_ms == 500
    assert not bucket.take(refused.state, 1_499).allowed
    assert bucket.take(refused.state, 1_500).allowed
    decision = decide_message_rate(refused, DEFAULT_TIERS[0])
    assert decision.errcode == "M_LIMIT_EXCEEDED" and decision.reason_code == MESSAGE_RATE
    assert decision.facts["retry_after_ms"] == 500


def test_bucket_ignores_a_clock_going_backwards_and_a_shrunk_burst() -> None:
    state = BucketState(tokens=0.0, updated_ms=10_000)
    assert not TokenBucket(1.0, 5).take(state, 5_000).allowed  # no refill from the past
    full = BucketState(tokens=50.0, updated_ms=0)
    answer = TokenBucket(1.0, 5).take(full, 0)
    assert answer.allowed and answer.state.tokens == 4.0


@given(
    st.floats(0.1, 50.0),
    st.integers(1, 30),
    st.lists(st.integers(0, 400), min_size=1, max_size=200),
)
def test_bucket_never_allows_more_than_burst_plus_rate_times_t(
    per_second: float, burst: int, gaps: list[int]
) -> None:
    bucket = TokenBucket(per_second, burst)
    state = None
    now = 0
    allowed: list[int] = []
    for gap in gaps:
        now += gap
        answer = bucket.take(state, now)
        state = answer.state
        if answer.allowed:
            allowed.append(now)
        else:
            # Waiting as long as told is enough.
            assert bucket.take(state, now + answer.retry_after_ms).allowed
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            window_ms = allowed[j] - start
            assert j - i + 1 <= burst + per_second * window_ms / 1000 + 1e-6


# --- membership caps ----------------------------------------------------------------------------


@given(tier_lists(), st.integers(0, 40))
def test_the_join_cap_refuses_exactly_at_the_limit_and_not_one_earlier(
    tiers: tuple[Tier, ...], n: int
) -> None:
    for tier in tiers:
        decision = decide_join_group(Standing(100, tier, groups_joined=n))
        assert decision.allowed is (n < tier.max_groups_joined)
        if not decision.allowed:
            assert decision.reason_code == GROUP_JOIN_CAP and decision.errcode == "M_FORBIDDEN"
            assert decision.facts["limit"] == tier.max_groups_joined
            assert decision.facts["usage"] == n
            assert decision.facts["tier"] == tier.name
        assert decision == decide_join_group(Standing(100, tier, groups_joined=n))  # deterministic


def test_the_join_cap_examples() -> None:
    restricted = DEFAULT_TIERS[0]  # max_groups_joined 10
    assert decide_join_group(Standing(100, restricted, groups_joined=9)).allowed  # the 10th
    capped = decide_join_group(Standing(100, restricted, groups_joined=10))
    assert capped.facts == {"limit": 10, "usage": 10, "tier": "restricted", "score": 100}
    assert not decide_join_group(Standing(100, restricted, groups_joined=15)).allowed  # cap lowered


@given(tier_lists(), st.integers(0, 40), st.integers(0, 5))
def test_group_size_never_lets_a_change_go_beyond_the_cap(
    tiers: tuple[Tier, ...], members: int, adding: int
) -> None:
    for tier in tiers:
        decision = decide_group_size(tier, members, adding)
        if adding == 0:
            assert decision.allowed  # accepting an invite or re-joining adds nobody
        else:
            assert decision.allowed is (members + adding <= tier.max_group_size)
        if not decision.allowed:
            assert decision.reason_code == GROUP_SIZE_CAP
            assert (decision.facts["limit"], decision.facts["usage"]) == (tier.max_group_size, members)
            assert decision.facts["tier"] == tier.name  # the owner's tier


def test_group_size_examples() -> None:
    standard = DEFAULT_TIERS[1]  # max_group_size 500
    assert decide_group_size(standard, 499, 1).allowed  # the 500th member
    assert decide_group_size(standard, 500, 1).reason_code == GROUP_SIZE_CAP
    assert decide_group_size(standard, 1, 499).allowed  # a creation inviting 499
    assert decide_group_size(standard, 1, 500).reason_code == GROUP_SIZE_CAP
    assert decide_group_size(standard, 900, 0).allowed  # over a lowered cap, nobody added


def test_invite_and_manage_follow_the_tiers_rights() -> None:
    allowed = DEFAULT_TIERS[0]
    barred = Tier("barred", 0, 1, 1, 1, False, False, False, MessageRate(1.0, 1), False)
    assert decide_invite(Standing(100, allowed)).allowed
    refused = decide_invite(Standing(50, barred))
    assert (refused.reason_code, refused.facts) == (MAY_NOT_INVITE, {"tier": "barred", "score": 50})
    assert decide_manage(allowed, "@a:hs").allowed
    refused = decide_manage(barred, "@a:hs")
    assert (refused.reason_code, refused.facts) == (MAY_NOT_MANAGE, {"tier": "barred", "subject": "@a:hs"})
