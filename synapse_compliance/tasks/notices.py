"""Delivers queued server notices, on the main process only (SYNAPSE_FACTS §3).

Delivery is at least once: a notice is marked sent after Synapse accepted it, so a crash in
between sends it again. Failures are retried with exponential backoff (5 s doubling, at most
an hour). Runs every few seconds and whenever this process queues a notice itself.
"""

import logging

from synapse.module_api import ModuleApi

from synapse_compliance._synapse_private import send_server_notice
from synapse_compliance.storage.notice_store import NoticeStore

logger = logging.getLogger(__name__)

INTERVAL_MS = 5_000
BATCH = 100
_BACKOFF_BASE_MS = 5_000
_BACKOFF_MAX_MS = 3_600_000
_WAIT_POLL_S = 0.05


class NoticeSender:
    """Sends due notices from the outbox."""

    def __init__(self, api: ModuleApi, store: NoticeStore) -> None:
        self._api = api
        self._store = store
        self._running = False
        self._again = False

    @property
    def can_send(self) -> bool:
        """Only the main process can send server notices."""
        return self._api.worker_name is None

    def start(self) -> None:
        """Start the delivery loop here if this is the main process."""
        if self.can_send:
            self._api.looping_background_call(
                self.deliver_due, INTERVAL_MS, desc="compliance_notices", run_on_all_instances=True
            )

    def wake(self) -> None:
        """Deliver soon (after this process queued a notice)."""
        if self.can_send:
            self._api.run_as_background_process("compliance_notices_wake", self.deliver_due)

    async def deliver_due(self) -> int:
        """Send every due notice; return how many this call delivered.

        One delivery pass runs at a time. A call while one runs asks it to go round once more
        and waits for it, so when any call returns, every notice due at its start was tried.
        """
        if self._running:
            self._again = True
            await self._wait_idle()
            return 0
        self._running = True
        delivered = 0
        try:
            while True:
                self._again = False
                delivered += await self._pass()
                if not self._again:
                    break
        finally:
            self._running = False
        if delivered:
            logger.info("delivered %d compliance notice(s)", delivered)
        return delivered

    async def _wait_idle(self) -> None:
        while self._running:
            await self._api.sleep(_WAIT_POLL_S)

    async def _pass(self) -> int:
        delivered = 0
        for notice in await self._store.due(self._api.get_current_time_msec(), BATCH):
            try:
                event_id = await send_server_notice(self._api, notice.user_id, notice.content)
            except Exception as e:
                delay = min(_BACKOFF_BASE_MS * 2**notice.attempts, _BACKOFF_MAX_MS)
                logger.warning("could not deliver notice %d to %s: %s", notice.id, notice.user_id, e)
                await self._store.mark_failed(notice.id, str(e), self._api.get_current_time_msec() + delay)
                continue
            await self._store.mark_sent(notice.id, event_id, self._api.get_current_time_msec())
            delivered += 1
        return delivered
