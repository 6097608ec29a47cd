"""Homeserver settings that undercut the archive, and the archiver's lag (DESIGN §4.4 "Guards").

`SettingsCheck` reads Synapse's parsed config once (through `_synapse_private.synapse_settings`:
ModuleApi exposes no config), logs each `SettingWarning` of `core.guards.check_settings` at
WARNING when the module loads (once per process), and lists them in `GET admin/status` under
`warnings`. They are advice, not errors: a server may have reasons for each setting, and the
module cannot undo what Synapse deletes.

`LagMonitor` measures how far the archiver is behind: in stream positions (`lag_events`) and in
time (`lag_seconds`: the age, by this server's receipt time, of the oldest event the archiver has
not reached; two index lookups, whatever the backlog). It raises an alert when the lag exceeds
half of `redaction_retention_period`, past which Synapse censors redacted events' JSON before the
archive has copied it. It updates the Prometheus gauges every 30 s on the instance that runs
background tasks (so alerting does not depend on anyone reading status) and whenever status is
read, and logs a WARNING when the alert starts and an INFO line when it ends.
"""

import logging

import attrs
from synapse.module_api import JsonDict, ModuleApi

from synapse_compliance._synapse_private import (
    backfilled_downto,
    next_unarchived_received_ts_txn,
    persisted_upto,
    synapse_settings,
)
from synapse_compliance.config import ComplianceConfig
from synapse_compliance.core.guards import (
    SettingWarning,
    SynapseSettings,
    check_settings,
    lag_alert,
    lag_warning,
)
from synapse_compliance.messages import setting_warning_message
from synapse_compliance.metrics import ARCHIVE_LAG_EVENTS, ARCHIVE_LAG_SECONDS
from synapse_compliance.storage.archive_store import BACKWARD, FORWARD, ArchiveStore

logger = logging.getLogger(__name__)

LAG_INTERVAL_MS = 30_000


def warning_json(warning: SettingWarning) -> JsonDict:
    """A warning as listed in `GET admin/status`."""
    return {
        "code": warning.code,
        "setting": warning.setting,
        "message": setting_warning_message(warning.code, warning.facts),
    }


class SettingsCheck:
    """The start-up warnings about Synapse's settings (computed once: the config is fixed)."""

    def __init__(self, api: ModuleApi, config: ComplianceConfig) -> None:
        self.settings: SynapseSettings = synapse_settings(api)
        self.warnings = check_settings(
            self.settings, config.retention.min_days, config.retention.encrypted_rooms
        )

    def log(self) -> None:
        """Log every warning once, at WARNING."""
        for w in self.warnings:
            logger.warning(
                "compliance: %s (%s): %s", w.setting, w.code, setting_warning_message(w.code, w.facts)
            )


@attrs.frozen
class ArchiveLag:
    """How far the archiver is behind."""

    events: int
    seconds: float
    alert: bool


class LagMonitor:
    """Measures the archiver's lag, keeps the gauges current and remembers the last alert."""

    def __init__(
        self, api: ModuleApi, store: ArchiveStore, redaction_retention_period_ms: int | None
    ) -> None:
        self._api = api
        self._store = store
        self._window_ms = redaction_retention_period_ms
        self._events_gauge = ARCHIVE_LAG_EVENTS.labels(server_name=api.server_name)
        self._seconds_gauge = ARCHIVE_LAG_SECONDS.labels(server_name=api.server_name)
        self.last: ArchiveLag | None = None

    def start(self) -> None:
        """Measure every 30 s on the instance that runs background tasks (where the archiver is)."""
        if self._api.should_run_background_tasks():
            self._api.looping_background_call(self._loop, LAG_INTERVAL_MS, desc="compliance_archive_lag")

    async def _loop(self) -> None:
        try:
            await self.measure(await self._store.cursor(FORWARD), await self._store.cursor(BACKWARD))
        except Exception:
            logger.exception("measuring the archiver lag failed; retrying in %d ms", LAG_INTERVAL_MS)

    async def measure(self, cursor: int, backfill_cursor: int) -> ArchiveLag:
        """The lag for the archiver's cursors now; updates the gauges and the alert state."""
        upto = persisted_upto(self._api)
        downto = backfilled_downto(self._api)
        oldest = await self._api.run_db_interaction(
            "compliance_archive_lag", next_unarchived_received_ts_txn, cursor, upto, backfill_cursor, downto
        )
        now = self._api.get_current_time_msec()
        lag_ms = max(0, now - oldest) if oldest is not None else 0
        lag = ArchiveLag(
            events=max(0, upto - cursor) + max(0, backfill_cursor - downto),
            seconds=lag_ms / 1000,
            alert=lag_alert(lag_ms, self._window_ms),
        )
        self._events_gauge.set(lag.events)
        self._seconds_gauge.set(lag.seconds)
        was = self.last.alert if self.last is not None else False
        if lag.alert and not was and self._window_ms is not None:
            w = lag_warning(lag_ms, self._window_ms)
            logger.warning("compliance: %s", setting_warning_message(w.code, w.facts))
        elif was and not lag.alert:
            logger.info("compliance: the archiver lag is back below half of redaction_retention_period")
        self.last = lag
        return lag


class ArchiveWarnings:
    """The `warnings` list of `GET admin/status`: settings, plus the lag alert if it is on."""

    def __init__(self, settings: SettingsCheck, lag: LagMonitor) -> None:
        self._settings = settings
        self._lag = lag

    def current(self) -> list[JsonDict]:
        """Every warning that holds now (the lag as last measured)."""
        warnings = [warning_json(w) for w in self._settings.warnings]
        last = self._lag.last
        window = self._settings.settings.redaction_retention_period_ms
        if last is not None and last.alert and window is not None:
            warnings.append(warning_json(lag_warning(int(last.seconds * 1000), window)))
        return warnings
