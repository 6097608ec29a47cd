"""The one place that touches Synapse internals outside `synapse.module_api`.

Checked against Synapse 1.163.2 (pinned in setup.cfg). Each accessor says why the public ModuleApi
is not enough. `self_test()` runs in `ComplianceModule.__init__` and raises — which stops Synapse
start-up with a traceback — if an upgrade moved any of them, so a broken upgrade is loud rather
than a silently weaker module.

SQL on Synapse's own tables is not here but next to the store that needs it, with a comment
saying why (the archiver's in storage/archive_store.py; the groups recount's, which the CLI also
runs without Synapse, in the `read_*` functions of storage/credit_recount.py); their e2e tests on
both databases fail loudly if an upgrade changes those tables.
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from synapse.module_api import CachedFunction, LoggingTransaction, ModuleApi
from synapse.storage.engines import PostgresEngine
from synapse.util.clock import Clock

from synapse_compliance.core.guards import SynapseSettings

if TYPE_CHECKING:
    from synapse.server import HomeServer


def _hs(api: ModuleApi) -> "HomeServer":
    return api._hs


def get_clock(api: ModuleApi) -> Clock:
    """Synapse's clock.

    Why private: `@cached` (and `DirectServeJsonResource`) need the homeserver's `Clock` on the
    owning object (SYNAPSE_FACTS §12); ModuleApi exposes none.
    """
    return _hs(api).get_clock()


def server_notices_mxid(api: ModuleApi) -> str | None:
    """The server-notices user id, or None when server notices are off.

    Why private: the module exempts this user from its gates (DESIGN §4.1); ModuleApi does not
    say who it is.
    """
    mxid = _hs(api).config.servernotices.server_notices_mxid
    return str(mxid) if mxid is not None else None


async def send_server_notice(api: ModuleApi, user_id: str, content: Mapping[str, object]) -> str:
    """Send a server notice to a local user; return the event id.

    Why private: ModuleApi has no server-notice method (SYNAPSE_FACTS §3). Only the main process
    can send them: on a worker `get_server_notices_manager()` raises.

    Raises:
        RuntimeError: server notices are not configured (no `server_notices:` block).
    """
    manager = _hs(api).get_server_notices_manager()
    if not manager.is_enabled():
        raise RuntimeError("server notices are not enabled (add a server_notices: block)")
    event = await manager.send_notice(user_id=user_id, event_content=dict(content))
    return str(event.event_id)


MISSING: Any = object()


def cached_now(func: CachedFunction[Any], key: tuple[Any, ...]) -> Any:
    """The completed value `func` has cached for its arguments `key`, or `MISSING`, without awaiting.

    Why private: awaiting a `@cached` method costs about 50 µs even on a hit (new Deferreds and
    logcontext switches, measured by benchmarks/send.py), which is most of the hot-path budget
    of 100 µs a callback (DESIGN §8). `CachedFunction.cache` is declared by Synapse, but its
    `get_immediate` is not part of the module API.
    """
    # A one-argument cached function keys its cache by the bare argument, not a tuple
    # (synapse/util/caches/descriptors.py, `num_args == 1`).
    cache_key = key[0] if func.num_args == 1 else key
    return func.cache.get_immediate(cache_key, MISSING)


def is_postgres(txn: LoggingTransaction) -> bool:
    """Whether a transaction runs on PostgreSQL (DDL differs slightly from SQLite)."""
    return isinstance(txn.database_engine, PostgresEngine)


def persisted_upto(api: ModuleApi) -> int:
    """The highest stream ordering below which every event has been persisted.

    Why private: the archiver must not read past it (orderings are allocated before commit and
    commit out of order, SYNAPSE_FACTS §11), and ModuleApi exposes no stream position. This is
    `get_room_max_stream_ordering()`, the persisted-up-to position across all event writers.
    """
    return int(api._store.get_room_max_stream_ordering())


def backfilled_downto(api: ModuleApi) -> int:
    """The lowest (negative) stream ordering above which every backfilled event is persisted.

    Why private: as for `persisted_upto`, for events fetched by back-pagination, which get
    negative orderings from a second generator (SYNAPSE_FACTS §11):
    `get_room_min_stream_ordering()`.
    """
    return int(api._store.get_room_min_stream_ordering())


async def rooms_for_user(api: ModuleApi, user_id: str) -> frozenset[str]:
    """The rooms `user_id` is joined to now (from `current_state_events`).

    Why private: ModuleApi has no "rooms of a user" lookup. Synapse's `get_rooms_for_user` is
    `@cached` on every process and invalidated (across workers too) after each persisted
    membership change (synapse/storage/_base.py:129), so leaves, kicks, bans and shutdowns show
    at once, and a warm lookup makes no DB call. On `RoomMemberWorkerStore` (workers have it).
    """
    # `@cached` methods type wrongly without Synapse's mypy plugin (see IdentityStore).
    lookup = cast(Callable[[str], Awaitable[frozenset[str]]], api._store.get_rooms_for_user)
    return frozenset(await lookup(user_id))


async def member_counts(api: ModuleApi, room_id: str) -> Mapping[str, int]:
    """How many users hold each membership (`join`, `invite`, ...) in `room_id` now.

    Why private: ModuleApi offers only `get_room_state`, which loads every member event (slow
    for large groups). Synapse's `get_member_counts` is one `GROUP BY` over
    `current_state_events`, `@cached` and invalidated after each membership change
    (synapse/storage/_base.py:118), unlike the lagging `room_stats_current`. Remote members
    and invitees are counted too.
    """
    lookup = cast(Callable[[str], Awaitable[Mapping[str, int]]], api._store.get_member_counts)
    return dict(await lookup(room_id))


def member_counts_now(api: ModuleApi) -> Callable[[str], Mapping[str, int] | None]:
    """`member_counts` as Synapse has it cached, without awaiting (None when not cached).

    Why private: as `member_counts`, and awaiting a hit costs ~50 µs (see `cached_now`).
    """
    func = cast(CachedFunction[Any], api._store.get_member_counts)

    def lookup(room_id: str) -> Mapping[str, int] | None:
        hit = cached_now(func, (room_id,))
        return None if hit is MISSING else cast(Mapping[str, int], hit)

    return lookup


# (last_seen, user_id, device_id or "", ip, user_agent): one `user_ips` row without its token.
UserIpRow = tuple[int, str, str, str, str]


def read_user_ips_txn(txn: LoggingTransaction, after: UserIpRow, limit: int) -> list[UserIpRow]:
    """Up to `limit` rows of Synapse's `user_ips` after keyset position `after`, oldest first.

    Why private: the public `api.get_user_ip_and_agents(user_id, since_ts)` (same data, minus the
    device id) asks per user, so a copy pass would cost O(local users); this reads the rows that
    changed since a `last_seen` mark, O(changes), through `user_ips_last_seen_only` (an index on
    `last_seen`). The table (schema: synapse/storage/schema/main/full_schemas/72/full.sql.*) is
    written by `_update_client_ips_batch_txn` (synapse/storage/databases/main/client_ips.py:685)
    and pruned after `user_ips_max_age` (client_ips.py:476). The access token is never read.
    Checked against Synapse 1.163.2; tests/e2e/test_connections.py fails if the table changes.
    Rows that differ only by token sort together and compare equal here, which is harmless: they
    are the same connection record.
    """
    txn.execute(
        "SELECT last_seen, user_id, COALESCE(device_id, ''), ip, user_agent FROM user_ips"
        " WHERE last_seen >= ?"
        " AND (last_seen, user_id, COALESCE(device_id, ''), ip, user_agent) > (?, ?, ?, ?, ?)"
        " ORDER BY last_seen, user_id, COALESCE(device_id, ''), ip, user_agent LIMIT ?",
        (after[0], *after, limit),
    )
    return [(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in txn.fetchall()]


def synapse_settings(api: ModuleApi) -> SynapseSettings:
    """The homeserver settings that can destroy history, as Synapse parsed them.

    Why private: ModuleApi exposes none of the homeserver's config, and these settings decide
    whether Synapse deletes or censors what the archive must keep (SYNAPSE_FACTS §13), so the
    module warns about them at start-up and in status. Read from `hs.config.server`
    (synapse/config/server.py:666-701), `hs.config.retention` (synapse/config/retention.py) and
    `hs.config.room` (synapse/config/room.py:44-66), all parsed durations in ms.
    """
    config = _hs(api).config
    server, retention = config.server, config.retention

    def ms(value: object) -> int | None:
        return None if value is None else int(str(value))

    return SynapseSettings(
        redaction_retention_period_ms=ms(server.redaction_retention_period),
        retention_enabled=bool(retention.retention_enabled),
        retention_default_max_lifetime_ms=ms(retention.retention_default_max_lifetime),
        retention_allowed_lifetime_min_ms=ms(retention.retention_allowed_lifetime_min),
        retention_allowed_lifetime_max_ms=ms(retention.retention_allowed_lifetime_max),
        retention_purge_jobs=len(retention.retention_purge_jobs),
        user_ips_max_age_ms=ms(server.user_ips_max_age),
        forgotten_room_retention_period_ms=ms(server.forgotten_room_retention_period),
        encrypted_presets=frozenset(map(str, config.room.encryption_enabled_by_default_for_room_presets)),
    )


def next_unarchived_received_ts_txn(
    txn: LoggingTransaction, after: int, upto: int, before: int, downto: int
) -> int | None:
    """When this server received the oldest event the archiver has not reached yet (ms), or None.

    That is the event just past the forward cursor (`after < stream_ordering <= upto`) and, for
    backfilled events, the one just below the backward cursor (`downto <= stream_ordering <
    before`); each is one index lookup on `events.stream_ordering`, whatever the backlog.
    Why private: the archiver lag in seconds needs Synapse's `events` table (its `received_ts`,
    not the sender-chosen `origin_server_ts`), which ModuleApi does not expose.
    """
    found: list[int] = []
    for sql, args in (
        (
            "SELECT received_ts, origin_server_ts FROM events"
            " WHERE stream_ordering > ? AND stream_ordering <= ? ORDER BY stream_ordering LIMIT 1",
            (after, upto),
        ),
        (
            "SELECT received_ts, origin_server_ts FROM events"
            " WHERE stream_ordering < ? AND stream_ordering >= ? ORDER BY stream_ordering DESC LIMIT 1",
            (before, downto),
        ),
    ):
        txn.execute(sql, args)
        row = txn.fetchone()
        if row is not None:
            ts = row[0] if row[0] is not None else row[1]
            if ts is not None:
                found.append(int(ts))
    return min(found) if found else None


def self_test(api: ModuleApi) -> None:
    """Fail start-up loudly if a Synapse upgrade moved an internal this module relies on.

    Raises:
        RuntimeError: naming the internal that is gone.
    """
    try:
        if not isinstance(get_clock(api), Clock):
            raise TypeError("get_clock() did not return a Clock")
        server_notices_mxid(api)
        if not isinstance(persisted_upto(api), int):
            raise TypeError("get_room_max_stream_ordering() did not return an int")
        if not isinstance(backfilled_downto(api), int):
            raise TypeError("get_room_min_stream_ordering() did not return an int")
        synapse_settings(api)  # raises AttributeError if a config attribute moved
        for name in ("get_rooms_for_user", "get_member_counts"):
            if not callable(getattr(api._store, name, None)):
                raise TypeError(f"the main store has no {name}")
        if api.worker_name is None and not callable(
            getattr(_hs(api).get_server_notices_manager(), "send_notice", None)
        ):
            raise TypeError("the server notices manager has no send_notice")
    except Exception as e:
        raise RuntimeError(
            "synapse_compliance: a Synapse internal it relies on has moved "
            f"(checked against Synapse 1.163.2): {e!r}"
        ) from e
