"""Shared by every callback: who is exempt from the module's gates, and fail-closed wrapping."""

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from synapse.module_api import ModuleApi
from synapse.module_api.errors import SynapseError

from synapse_compliance._synapse_private import server_notices_mxid

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


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


def fail_closed(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Log an unexpected error in a callback and refuse with a 500 `M_UNKNOWN`.

    `functools.wraps` keeps the signature visible: Synapse counts a callback's parameters to
    decide what to pass it (SYNAPSE_FACTS §6).
    """

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await func(*args, **kwargs)
        except SynapseError:
            raise
        except Exception:
            logger.exception("compliance callback %s failed; refusing", func.__qualname__)
            raise SynapseError(500, "The compliance module could not check this request") from None

    return wrapper
