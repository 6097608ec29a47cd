"""Shared by every callback: who is exempt from the module's gates, and fail-closed wrapping."""

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, ParamSpec, TypeVar

from synapse.module_api import JsonDict, ModuleApi
from synapse.module_api.errors import Codes, SynapseError

from synapse_compliance._synapse_private import server_notices_mxid
from synapse_compliance.messages import REASON_FIELD
from synapse_compliance.metrics import CALLBACK_SECONDS, REFUSALS

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# What a spam-checker callback answers: allow, or refuse with an errcode and extra fields.
SpamAnswer = Literal["NOT_SPAM"] | Codes | tuple[Codes, JsonDict]


class Exemptions:
    """Users the module never blocks: server admins and the server-notices user (DESIGN §4.1).

    Synapse skips some callbacks for admins but not all (room upgrades, `check_event_for_spam`,
    `check_event_allowed`; SYNAPSE_FACTS §6), so each callback asks here itself.
    """

    def __init__(self, api: ModuleApi) -> None:
        self._api = api
        self._notices_mxid = server_notices_mxid(api)

    async def is_exempt(self, user_id: str) -> bool:
        """True for the server-notices user and for local server admins."""
        if user_id == self._notices_mxid:
            return True
        return self._api.is_mine(user_id) and await self._api.is_user_admin(user_id)


class CallbackGuard:
    """Wraps each callback: times it, counts refusals by reason, and fails closed.

    An unexpected error is logged and becomes a 500 `M_UNKNOWN` (a `SynapseError` passes
    through). `functools.wraps` keeps the signature visible: Synapse counts a callback's
    parameters to decide what to pass it (SYNAPSE_FACTS §6).
    """

    def __init__(self, server_name: str) -> None:
        self._server_name = server_name

    def __call__(self, name: str, func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """`func` guarded, reported under `name` in the metrics."""
        timer = CALLBACK_SECONDS.labels(server_name=self._server_name, callback=name)
        server_name = self._server_name

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            start = time.perf_counter()
            try:
                result = await func(*args, **kwargs)
            except SynapseError:
                raise
            except Exception:
                logger.exception("compliance callback %s failed; refusing", name)
                raise SynapseError(500, "The compliance module could not check this request") from None
            finally:
                timer.observe(time.perf_counter() - start)
            if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
                reason = result[1].get(REASON_FIELD)
                REFUSALS.labels(server_name=server_name, reason=str(reason or "unknown")).inc()
            return result

        return wrapper
