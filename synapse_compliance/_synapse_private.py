"""The one place that touches Synapse internals outside `synapse.module_api`.

Checked against Synapse 1.163.2 (pinned in setup.cfg). Each accessor says why the public ModuleApi
is not enough. `self_test()` runs in `ComplianceModule.__init__` and raises — which stops Synapse
start-up with a traceback — if an upgrade moved any of them, so a broken upgrade is loud rather
than a silently weaker module.
"""

from typing import TYPE_CHECKING

from synapse.module_api import LoggingTransaction, ModuleApi
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


def is_postgres(txn: LoggingTransaction) -> bool:
    """Whether a transaction runs on PostgreSQL (DDL differs slightly from SQLite)."""
    return isinstance(txn.database_engine, PostgresEngine)


def self_test(api: ModuleApi) -> None:
    """Fail start-up loudly if a Synapse upgrade moved an internal this module relies on.

    Raises:
        RuntimeError: naming the internal that is gone.
    """
    try:
        if not isinstance(get_clock(api), Clock):
            raise TypeError("get_clock() did not return a Clock")
        server_notices_mxid(api)
    except Exception as e:
        raise RuntimeError(
            "synapse_compliance: a Synapse internal it relies on has moved "
            f"(checked against Synapse 1.163.2): {e!r}"
        ) from e
