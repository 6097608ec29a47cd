"""The one place that touches Synapse internals outside `synapse.module_api`.

Checked against Synapse 1.163.2 (pinned in setup.cfg). Each accessor says why the public ModuleApi
is not enough. `self_test()` runs in `ComplianceModule.__init__` and raises — which stops Synapse
start-up with a traceback — if an upgrade moved any of them, so a broken upgrade is loud rather
than a silently weaker module.
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from synapse.module_api import CachedFunction, LoggingTransaction, ModuleApi
from synapse.storage.engines import PostgresEngine
from synapse.util.clock import Clock

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
        if api.worker_name is None and not callable(
            getattr(_hs(api).get_server_notices_manager(), "send_notice", None)
        ):
            raise TypeError("the server notices manager has no send_notice")
    except Exception as e:
        raise RuntimeError(
            "synapse_compliance: a Synapse internal it relies on has moved "
            f"(checked against Synapse 1.163.2): {e!r}"
        ) from e
