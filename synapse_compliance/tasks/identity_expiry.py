"""The re-verification sweep: expire verifications on time, warn users before (DESIGN §4.2).

Runs every minute on the instance that runs background tasks (and on demand from
`POST admin/identity/expiry/run`). The identity gate already treats a verification past its
`expires_ts` as expired (`Verification.effective_status`), so a late sweep never lets anyone
through; the sweep records the expiry in the history and queues the notices, which the main
process delivers.
"""

import logging

from synapse.module_api import ModuleApi

from synapse_compliance.config import IdentityConfig
from synapse_compliance.notices import IdentityNotices
from synapse_compliance.storage.identity_store import ExpirySweep, IdentityStore
from synapse_compliance.tasks.notices import NoticeSender

logger = logging.getLogger(__name__)

INTERVAL_MS = 60_000
BATCH = 500


class IdentityExpiry:
    """Expires verifications and queues the notices owed."""

    def __init__(
        self, api: ModuleApi, identity: IdentityConfig, store: IdentityStore, sender: NoticeSender
    ) -> None:
        self._api = api
        self._identity = identity
        self._store = store
        self._sender = sender
        self._notices = IdentityNotices(identity)

    def start(self) -> None:
        """Start the sweep loop (only where background tasks run)."""
        if self._api.should_run_background_tasks():
            self._api.looping_background_call(self.run_once, INTERVAL_MS, desc="compliance_identity_expiry")

    async def run_once(self) -> ExpirySweep:
        """One sweep, in batches until nothing is left; returns everyone it expired or warned."""
        expired: list[str] = []
        warned: list[str] = []
        while True:
            sweep = await self._store.sweep_expiry(
                self._api.get_current_time_msec(), self._identity.reverify_warning_ms, self._notices, BATCH
            )
            expired += sweep.expired
            warned += sweep.warned
            if len(sweep.expired) < BATCH and len(sweep.warned) < BATCH:
                break
        if expired or warned:
            logger.info("identity sweep: %d expired, %d warned", len(expired), len(warned))
            self._sender.wake()
        return ExpirySweep(expired=tuple(expired), warned=tuple(warned))
