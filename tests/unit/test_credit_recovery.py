"""Credit recovery and the groups recount, without Synapse: config, arithmetic, plan, SQL."""

import json
import sqlite3
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synapse_compliance.config import ConfigProblem, parse_config
from synapse_compliance.config_credit import DAY_MS, DEFAULT_TIERS, RecoveryConfig
from synapse_compliance.core.credit import recovery_delta, recovery_period, recovery_tick_ms
from synapse_compliance.core.credit_recount import (
    GroupRow,
    RecountSettings,
    RoomCreate,
    RowChange,
    plan_changes,
    wanted_rows,
)
from synapse_compliance.core.groups import KIND_DIRECT_CHAT, KIND_GROUP, ROOM_KIND_KEY, DirectChats
from synapse_compliance.messages import tier_change_notice_body
from synapse_compliance.storage.credit_recount import DatabaseSql, apply_changes, recount_steps, run_steps

# --- config -------------------------------------------------------------------------------------


def recovery(raw: Any, **credit: Any) -> RecoveryConfig:
    return parse_config({"credit": {**credit, "recovery": raw}}).credit.recovery


def test_recovery_is_off_unless_configured_and_its_ceiling_follows_initial_verified() -> None:
    assert parse_config({}).credit.recovery == RecoveryConfig(enabled=False, ceiling=300)
    assert recovery(None, initial_verified=450).ceiling == 450
    assert recovery({}) == RecoveryConfig(enabled=True, points=1, interval_ms=DAY_MS, ceiling=300)
    assert recovery({"enabled": False, "points": 3}) == RecoveryConfig(enabled=False, points=3)
    got = recovery({"points": 5, "interval": "12h", "ceiling": 250})
    assert got == RecoveryConfig(enabled=True, points=5, interval_ms=12 * 3_600_000, ceiling=250)
    assert recovery({"ceiling": 0}).ceiling == 0  # the bounds themselves are fine
    assert recovery({"ceiling": 1000, "interval": "1s"}).interval_ms == 1000


R = ("credit", "recovery")
NARROW = {"min": 10, "initial": 10, "initial_verified": 10, "tiers": [{"name": "all", "min_score": 10}]}

BAD: list[tuple[Any, dict[str, Any], tuple[str, ...], str]] = [
    ([], {}, R, "expected a mapping"),
    ("daily", {}, R, "expected a mapping"),
    ({"pionts": 1}, {}, (*R, "pionts"), "unknown option"),
    ({"points": 0}, {}, (*R, "points"), "at least 1"),
    ({"points": -3}, {}, (*R, "points"), "at least 1"),
    ({"points": "1"}, {}, (*R, "points"), "expected an integer"),
    ({"points": 1.5}, {}, (*R, "points"), "expected an integer"),
    ({"points": True}, {}, (*R, "points"), "expected an integer"),
    ({"interval": "1x"}, {}, (*R, "interval"), "expected a duration"),
    ({"interval": 86400}, {}, (*R, "interval"), "expected a duration"),
    ({"interval": "500ms"}, {}, (*R, "interval"), "at least 1s"),
    ({"interval": "0s"}, {}, (*R, "interval"), "at least 1s"),
    ({"ceiling": 1001}, {}, (*R, "ceiling"), "from credit.min to credit.max (0-1000)"),
    ({"ceiling": 5}, NARROW, (*R, "ceiling"), "(10-1000)"),
    ({"ceiling": "300"}, {}, (*R, "ceiling"), "expected an integer"),
    ({"enabled": "yes"}, {}, (*R, "enabled"), "true or false"),
]


@pytest.mark.parametrize(("raw", "credit", "path", "words"), BAD)
def test_bad_recovery_values_name_their_path(
    raw: Any, credit: dict[str, Any], path: tuple[str, ...], words: str
) -> None:
    with pytest.raises(ConfigProblem) as info:
        recovery(raw, **credit)
    assert info.value.path == path
    assert words in info.value.message


# --- arithmetic ---------------------------------------------------------------------------------


@given(score=st.integers(-1000, 2000), points=st.integers(1, 500), ceiling=st.integers(0, 1000))
def test_recovery_never_passes_the_ceiling_nor_grants_more_than_points(
    score: int, points: int, ceiling: int
) -> None:
    delta = recovery_delta(score, points, ceiling)
    assert 0 <= delta <= points
    if score >= ceiling:
        assert delta == 0
    else:
        assert score + delta <= ceiling
        assert delta == points or score + delta == ceiling  # as much as allowed


@given(score=st.integers(0, 1000), points=st.integers(1, 50), ceiling=st.integers(0, 1000))
def test_repeated_recovery_reaches_the_ceiling_and_stays(score: int, points: int, ceiling: int) -> None:
    start = score
    for _ in range(2 + 1000 // points):
        score += recovery_delta(score, points, ceiling)
    assert score == max(start, ceiling)


@given(now=st.integers(0, 2**53), interval=st.integers(1000, 10**12))
def test_periods_are_epoch_aligned_intervals(now: int, interval: int) -> None:
    period = recovery_period(now, interval)
    assert period * interval <= now < (period + 1) * interval
    assert recovery_period(now + interval, interval) == period + 1


def test_the_loop_ticks_a_quarter_interval_within_bounds() -> None:
    assert recovery_tick_ms(1000) == 1000
    assert recovery_tick_ms(8000) == 2000
    assert recovery_tick_ms(DAY_MS) == 600_000
    assert recovery_tick_ms(36500 * DAY_MS) == 600_000


# --- recount plan -------------------------------------------------------------------------------

S = RecountSettings("hs.test", DirectChats.IGNORE, "@notices:hs.test")


def room(room_id: str, creator: str = "@a:hs.test", **kw: Any) -> RoomCreate:
    values: dict[str, Any] = {
        "created_ts": 1,
        "marker": KIND_GROUP,
        "predecessor": None,
        "creator_membership": "join",
        "members": None,
        "has_direct_flag": False,
        "became_group": False,
    }
    values.update(kw)
    return RoomCreate(room_id=room_id, creator=creator, **values)


def by_id(*rooms: RoomCreate) -> dict[str, RoomCreate]:
    return {r.room_id: r for r in rooms}


def test_which_rooms_are_groups_and_which_count() -> None:
    rooms = by_id(
        room("!group"),
        room("!left", creator_membership="leave"),
        room("!invited-only", creator_membership="invite"),
        room("!dm", marker=KIND_DIRECT_CHAT, members=2),
        room("!grown-dm", marker=KIND_DIRECT_CHAT, members=3),
        room("!shrunk-dm", marker=KIND_DIRECT_CHAT, members=1, became_group=True),
        room("!old-unflagged", marker=None, members=2),
        room("!old-dm", marker=None, members=2, has_direct_flag=True),
        room("!notices", creator="@notices:hs.test"),
        room("!old", creator="@a:hs.test"),
        room("!new", creator="@b:hs.test", marker=None, predecessor="!old", members=5),
        room("!dm-upgraded", marker=None, predecessor="!dm", members=2),
    )
    wanted = wanted_rows(rooms, S)
    counting = {r for r, w in wanted.items() if w.counts}
    assert counting == {"!group", "!grown-dm", "!shrunk-dm", "!old-unflagged", "!new"}
    assert set(wanted) - counting == {"!left", "!invited-only", "!old"}
    assert wanted["!new"].creator == "@b:hs.test"  # an upgrade counts for the upgrader
    governed = wanted_rows(rooms, RecountSettings("hs.test", DirectChats.GOVERN, None))
    assert {"!dm", "!old-dm", "!dm-upgraded", "!notices"} <= set(governed)  # no notices user set


def test_predecessor_cycles_do_not_hang() -> None:
    rooms = by_id(
        room("!x", marker=None, predecessor="!y", members=3),
        room("!y", marker=None, predecessor="!x", members=3),
    )
    assert set(wanted_rows(rooms, S)) == {"!x", "!y"}


def test_the_plan_adds_ends_restores_and_reassigns_only_what_differs() -> None:
    wanted = wanted_rows(
        by_id(
            room("!missing"),
            room("!wrongly-ended"),
            room("!wrongly-counting", creator_membership="leave"),
            room("!wrong-creator", creator="@c:hs.test"),
            room("!fine"),
        ),
        S,
    )
    rows = [
        GroupRow("!wrongly-ended", "@a:hs.test", 1, 99),
        GroupRow("!wrongly-counting", "@a:hs.test", 1, None),
        GroupRow("!wrong-creator", "@a:hs.test", 1, None),
        GroupRow("!fine", "@a:hs.test", 1, None),
        GroupRow("!not-a-group", "@a:hs.test", 1, None),
        GroupRow("!ended-orphan", "@a:hs.test", 1, 5),
    ]
    changes = {(c.kind, c.room_id) for c in plan_changes(wanted, rows)}
    assert changes == {
        ("added", "!missing"),
        ("restored", "!wrongly-ended"),
        ("ended", "!wrongly-counting"),
        ("reassigned", "!wrong-creator"),
        ("ended", "!not-a-group"),
    }


# --- the whole recount over SQLite, with the Synapse tables it reads ----------------------------

SYNAPSE_TABLES = """
CREATE TABLE rooms (room_id TEXT PRIMARY KEY, creator TEXT);
CREATE TABLE current_state_events (event_id TEXT, room_id TEXT, type TEXT, state_key TEXT,
    membership TEXT, UNIQUE (room_id, type, state_key));
CREATE TABLE event_json (event_id TEXT UNIQUE, room_id TEXT, json TEXT);
CREATE TABLE compliance_groups (room_id TEXT PRIMARY KEY, became_group_ts BIGINT, origin TEXT);
CREATE TABLE compliance_credit_groups (room_id TEXT PRIMARY KEY, creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL, ended_ts BIGINT);
CREATE TABLE compliance_audit_log (id INTEGER PRIMARY KEY, ts BIGINT, actor TEXT, action TEXT,
    target TEXT, reason TEXT, details TEXT);
"""


class Db:
    """The `execute` the CLI's `Database` offers, over an in-memory SQLite."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:")
        self.conn.executescript(SYNAPSE_TABLES)

    def execute(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, args)

    def add_room(self, room_id: str, creator: str, content: dict[str, Any], members: dict[str, str]) -> None:
        create = {"type": "m.room.create", "sender": creator, "content": content, "origin_server_ts": 7}
        self.execute("INSERT INTO rooms VALUES (?, ?)", (room_id, creator))
        self._state(room_id, "m.room.create", "", create, None)
        for user, membership in members.items():
            ev = {"type": "m.room.member", "sender": user, "content": {"membership": membership}}
            self._state(room_id, "m.room.member", user, ev, membership)

    def _state(self, room_id: str, type_: str, key: str, ev: dict[str, Any], membership: str | None) -> None:
        event_id = f"${room_id}{type_}{key}"
        self.execute(
            "INSERT INTO current_state_events VALUES (?, ?, ?, ?, ?)",
            (event_id, room_id, type_, key, membership),
        )
        self.execute("INSERT INTO event_json VALUES (?, ?, ?)", (event_id, room_id, json.dumps(ev)))

    def counting(self) -> dict[str, str]:
        rows = self.execute("SELECT room_id, creator FROM compliance_credit_groups WHERE ended_ts IS NULL")
        return dict(rows.fetchall())


def recount(db: Db) -> dict[str, int]:
    steps = recount_steps(S, actor="test", reason="unit", now_ms=1000)
    return run_steps(steps, lambda step: step(DatabaseSql(db))).as_json()


def test_recount_rebuilds_the_table_from_synapse_state_and_then_changes_nothing() -> None:
    db = Db()
    group = {ROOM_KIND_KEY: KIND_GROUP}
    db.add_room("!g1", "@a:hs.test", group, {"@a:hs.test": "join", "@x:elsewhere": "join"})
    db.add_room("!g2", "@a:hs.test", group, {"@a:hs.test": "leave"})
    db.add_room(
        "!dm", "@a:hs.test", {ROOM_KIND_KEY: KIND_DIRECT_CHAT}, {"@a:hs.test": "join", "@b:hs.test": "join"}
    )
    db.add_room("!remote", "@r:elsewhere", group, {"@a:hs.test": "join"})
    db.add_room("!up", "@b:hs.test", {"predecessor": {"room_id": "!g1"}}, {"@b:hs.test": "join"})
    db.execute("INSERT INTO compliance_credit_groups VALUES ('!dm', '@a:hs.test', 1, NULL)")
    db.execute("INSERT INTO compliance_credit_groups VALUES ('!gone', '@a:hs.test', 1, NULL)")
    report = recount(db)
    assert db.counting() == {"!up": "@b:hs.test"}
    assert report == {
        "rooms_scanned": 5,
        "local_rooms": 4,
        "groups": 3,
        "counting": 1,
        "added": 3,
        "ended": 2,
        "restored": 0,
        "reassigned": 0,
    }
    again = recount(db)
    assert (again["added"], again["ended"], again["restored"], again["reassigned"]) == (0, 0, 0, 0)
    audit = db.execute("SELECT actor, action, reason, details FROM compliance_audit_log").fetchall()
    assert [a[:3] for a in audit] == [("test", "credit.recount", "unit")] * 2
    assert json.loads(audit[0][3]) == report


def test_recount_pages_through_many_rooms() -> None:
    db = Db()
    for i in range(450):  # more than two batches of ROOM_BATCH
        db.add_room(f"!r{i:04d}", "@a:hs.test", {ROOM_KIND_KEY: KIND_GROUP}, {"@a:hs.test": "join"})
    report = recount(db)
    assert (report["rooms_scanned"], report["counting"], report["added"]) == (450, 450, 450)
    assert len(db.counting()) == 450


def test_row_changes_are_conditional() -> None:
    db = Db()
    db.execute("INSERT INTO compliance_credit_groups VALUES ('!a', '@a:hs.test', 1, NULL)")
    sql = DatabaseSql(db)
    change = RowChange("restored", "!a", "@a:hs.test", 1, True)
    assert apply_changes(sql, [change], 5)["restored"] == 0  # it counted already: nothing to do


# --- notice wording -----------------------------------------------------------------------------


def test_the_tier_notice_names_both_tiers_the_reason_and_every_limit() -> None:
    restricted, standard, _ = DEFAULT_TIERS
    up = tier_change_notice_body(restricted, standard, 200, "helpful moderator")
    assert up.startswith("Your credit tier rose from restricted to standard (credit score now 200).")
    assert "Reason: helpful moderator." in up
    for words in (
        f"create up to {standard.max_groups_created} groups",
        f"be in up to {standard.max_groups_joined}",
        f"up to {standard.max_group_size} members",
        "invite people: yes",
        "manage groups: yes",
        "create public groups: yes",
        "5 per second, bursts of up to 20",
    ):
        assert words in up
    down = tier_change_notice_body(standard, restricted, 150, "spam")
    assert "dropped from standard to restricted" in down and "create public groups: no" in down
