"""The `credit:` config section: defaults, inheritance between tiers, and each bad value's path."""

from typing import Any

import pytest

from synapse_compliance.config import DEFAULT_TIERS, ConfigProblem, CreditConfig, parse_config
from synapse_compliance.core.credit import MessageRate, tier_for


def _tiers(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "low", "min_score": 0}, {"name": "mid", "min_score": 100}, *extra]


def test_defaults_put_an_ordinary_verified_user_in_standard() -> None:
    credit = parse_config({}).credit
    assert credit == CreditConfig()
    assert [t.name for t in credit.tiers] == ["restricted", "standard", "trusted"]
    standard = tier_for(credit.initial_verified, credit.tiers, None, credit.hysteresis)
    assert standard.name == "standard"
    assert standard.may_create_public and standard.may_invite and standard.may_manage
    assert standard.max_groups_created >= 5
    assert standard.message_rate == MessageRate(5.0, 20)
    assert tier_for(credit.initial, credit.tiers, None, credit.hysteresis).name == "restricted"


def test_omitted_tier_options_are_inherited_from_the_tier_before() -> None:
    raw = {
        "credit": {
            "tiers": [
                {"name": "a", "min_score": 0, "max_groups_created": 2, "may_create_public": False},
                {"name": "b", "min_score": 50, "message_rate": {"burst": 40}},
            ]
        }
    }
    a, b = parse_config(raw).credit.tiers
    standard = DEFAULT_TIERS[1]
    assert (a.max_groups_created, a.may_create_public, a.max_group_size) == (
        2,
        False,
        standard.max_group_size,
    )
    assert (b.max_groups_created, b.may_create_public) == (2, False)
    assert b.message_rate == MessageRate(standard.message_rate.per_second, 40)


def test_a_single_tier_is_enough() -> None:
    tiers = parse_config({"credit": {"tiers": [{"name": "everyone", "min_score": 0}]}}).credit.tiers
    assert [t.name for t in tiers] == ["everyone"]


C = ("credit",)
T = (*C, "tiers")

BAD: list[tuple[dict[str, Any], tuple[str, ...], str]] = [
    ({"credit": []}, C, "expected a mapping"),
    ({"credit": {"initail": 5}}, (*C, "initail"), "unknown option"),
    ({"credit": {"min": 10, "max": 10}}, (*C, "max"), "greater than credit.min"),
    ({"credit": {"max": "1000"}}, (*C, "max"), "expected an integer"),
    ({"credit": {"initial": 2000}}, (*C, "initial"), "from credit.min to credit.max"),
    ({"credit": {"initial_verified": -1}}, (*C, "initial_verified"), "from credit.min to credit.max"),
    ({"credit": {"hysteresis": -1}}, (*C, "hysteresis"), "at least 0"),
    ({"credit": {"hysteresis": 100, "tiers": _tiers()}}, (*C, "hysteresis"), "smallest gap"),
    ({"credit": {"tiers": []}}, T, "non-empty list"),
    ({"credit": {"tiers": "standard"}}, T, "non-empty list"),
    ({"credit": {"tiers": ["standard"]}}, (*T, "<item 0>"), "expected a mapping"),
    ({"credit": {"tiers": [{"min_score": 0}]}}, (*T, "<item 0>", "name"), "required"),
    ({"credit": {"tiers": [{"name": "a"}]}}, (*T, "<item 0>", "min_score"), "required"),
    (
        {"credit": {"tiers": [{"name": "a", "min_score": 5}]}},
        (*T, "<item 0>", "min_score"),
        "first tier must start at credit.min",
    ),
    (
        {"credit": {"tiers": _tiers({"name": "high", "min_score": 100})}},
        (*T, "<item 2>", "min_score"),
        "strictly increasing",
    ),
    (
        {"credit": {"tiers": [{"name": "a", "min_score": 0}, {"name": "b", "min_score": -5}]}},
        (*T, "<item 1>", "min_score"),
        "strictly increasing",
    ),
    (
        {"credit": {"tiers": _tiers({"name": "top", "min_score": 5000})}},
        (*T, "<item 2>", "min_score"),
        "from credit.min to credit.max",
    ),
    (
        {"credit": {"tiers": _tiers({"name": "low", "min_score": 300})}},
        (*T, "<item 2>", "name"),
        "unique",
    ),
    (
        {"credit": {"tiers": [{"name": "a", "min_score": 0, "max_groups_created": -1}]}},
        (*T, "<item 0>", "max_groups_created"),
        "at least 0",
    ),
    (
        {"credit": {"tiers": [{"name": "a", "min_score": 0, "max_group_size": 1.5}]}},
        (*T, "<item 0>", "max_group_size"),
        "expected an integer",
    ),
    (
        {"credit": {"tiers": [{"name": "a", "min_score": 0, "may_invite": "yes"}]}},
        (*T, "<item 0>", "may_invite"),
        "true or false",
    ),
    (
        {"credit": {"tiers": [{"name": "a", "min_score": 0, "max_members": 3}]}},
        (*T, "<item 0>", "max_members"),
        "unknown option",
    ),
    (
        {"credit": {"tiers": [{"name": "a", "min_score": 0, "message_rate": {"per_second": 0}}]}},
        (*T, "<item 0>", "message_rate", "per_second"),
        "above 0",
    ),
    (
        {"credit": {"tiers": [{"name": "a", "min_score": 0, "message_rate": {"burst": 0}}]}},
        (*T, "<item 0>", "message_rate", "burst"),
        "at least 1",
    ),
    (
        {"credit": {"tiers": [{"name": "a", "min_score": 0, "message_rate": {"rate": 1}}]}},
        (*T, "<item 0>", "message_rate", "rate"),
        "unknown option",
    ),
    (
        {"credit": {"tiers": _tiers({"name": "top", "min_score": 500, "may_create_public": False})}},
        (*T, "<item 2>", "may_create_public"),
        "less than in the tier before",
    ),
    (
        {"credit": {"tiers": _tiers({"name": "top", "min_score": 500, "max_groups_created": 0})}},
        (*T, "<item 2>", "max_groups_created"),
        "less than in the tier before",
    ),
    (
        {"credit": {"tiers": _tiers({"name": "top", "min_score": 500, "message_rate": {"burst": 1}})}},
        (*T, "<item 2>", "message_rate", "burst"),
        "less than in the tier before",
    ),
]


@pytest.mark.parametrize(("raw", "path", "words"), BAD)
def test_bad_credit_values_name_their_path(raw: dict[str, Any], path: tuple[str, ...], words: str) -> None:
    with pytest.raises(ConfigProblem) as info:
        parse_config(raw)
    assert info.value.path == path
    assert words in info.value.message
