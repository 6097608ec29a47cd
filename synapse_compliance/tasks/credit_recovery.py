"""Credit recovery (`credit.recovery`, DESIGN §4.3): a little credit back, every interval.

Theory of operation. Intervals are numbered from the Unix epoch (`recovery_period`: for `1d`,
UTC days). In each interval, every user who has a credit row (`compliance_credit`: their credit
changed at least once; everyone else is at their initial score and has nothing to recover) and
whose score is below `ceiling` is granted `points`, never past the ceiling, as an ordinary
ledger entry (reason code `recovery`, actor `synapse_compliance`). The grant goes through
`CreditStore.recover`, which records the interval in the grant's own transaction after locking
the user's row: two loops, an on-demand run next to the loop, or a restart within an interval
never grant one interval twice. An interval in which no run happened (the server was down) is
not made up. A grant that moves the user to another tier sends them the tier-change notice, as
every change does.

"Only while no sanction is active": sanctions (DESIGN §4.5) are not built yet. The loop asks a
`RecoveryBlocker` which users of a batch must not recover; today that is `NoSanctions`, which
blocks nobody. The sanctions store will implement it.

Users are read in batches of `BATCH`, by user id, each granted in its own transaction. The loop
runs only where background tasks run, every quarter interval (at least every second, at most
every ten minutes), so each interval gets its run even after restarts;
`POST admin/credit/recovery/run` runs it on demand.
"""

import logging
from collections.abc import Sequence
from typing import Protocol

import attrs
from synapse.module_api import ModuleApi

from synapse_compliance.config_credit import RecoveryConfig
from synapse_compliance.core.credit import recovery_period, recovery_tick_ms
from synapse_compliance.storage.credit_store import CreditStore

logger = logging.getLogger(__name__)

BATCH = 200
MAX_LISTED = 1000  # granted users named in a run's answer


class RecoveryBlocker(Protocol):
    """Says which users must not recover now (an active sanction, DESIGN §4.5)."""

    async def blocked(self, user_ids: Sequence[str]) -> set[str]:
        """The users among `user_ids` whose recovery is suspended."""
        ...


class NoSanctions:
    """The blocker until sanctions exist: nobody is blocked."""

    async def blocked(self, user_ids: Sequence[str]) -> set[str]:
        """Nobody (sanctions are not built yet)."""
        return set()


@attrs.frozen
class RecoveryRun:
    """What one run did."""

    enabled: bool
    period: int | None = None
    granted: int = 0
    points_granted: int = 0
    tier_changes: int = 0
    blocked: int = 0
    granted_users: tuple[str, ...] = ()


class CreditRecovery:
    """Grants recovery points to users below the ceiling, once per interval."""

    def __init__(
        self,
        api: ModuleApi,
        config: RecoveryConfig,
        store: CreditStore,
        blocker: RecoveryBlocker | None = None,
    ) -> None:
        self._api = api
        self._config = config
        self._store = store
        self._blocker: RecoveryBlocker = blocker if blocker is not None else NoSanctions()

    @property
    def config(self) -> RecoveryConfig:
        """The recovery settings in force."""
        return self._config

    def start(self) -> None:
        """Start the loop (only where background tasks run, and only when recovery is on)."""
        if self._config.enabled and self._api.should_run_background_tasks():
            self._api.looping_background_call(
                self.run_once, recovery_tick_ms(self._config.interval_ms), desc="compliance_credit_recovery"
            )

    async def run_once(self) -> RecoveryRun:
        """Grant the current interval's recovery to everyone due; returns what was done."""
        c = self._config
        if not c.enabled:
            return RecoveryRun(enabled=False)
        period = recovery_period(self._api.get_current_time_msec(), c.interval_ms)
        granted: list[str] = []
        points = tier_changes = blocked_count = 0
        after = ""
        while True:
            users = await self._store.due_for_recovery(
                period=period, ceiling=c.ceiling, after=after, limit=BATCH
            )
            if not users:
                break
            blocked = await self._blocker.blocked(users)
            for user_id in users:
                if user_id in blocked:
                    blocked_count += 1
                    continue
                outcome = await self._store.recover(
                    user_id, period=period, points=c.points, ceiling=c.ceiling
                )
                if outcome is None:
                    continue  # another run granted this interval first
                granted.append(user_id)
                points += outcome.applied
                tier_changes += int(outcome.notice_queued)
            if len(users) < BATCH:
                break
            after = users[-1]
        if granted or blocked_count:
            logger.info(
                "credit recovery (interval %d): %d users granted %d points, %d tier changes, %d blocked",
                period,
                len(granted),
                points,
                tier_changes,
                blocked_count,
            )
        return RecoveryRun(
            enabled=True,
            period=period,
            granted=len(granted),
            points_granted=points,
            tier_changes=tier_changes,
            blocked=blocked_count,
            granted_users=tuple(granted[:MAX_LISTED]),
        )
