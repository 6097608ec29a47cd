"""`ComplianceModule`: Synapse's entry point. `parse_config` validates; `__init__` wires once.

`__init__` does no I/O (an exception here stops Synapse, SYNAPSE_FACTS §1): it builds the object
graph, registers callbacks and the web resource (which is only possible now), and starts the
schema upgrade as a background process.
"""

import logging

from synapse.module_api import ModuleApi
from synapse.module_api.errors import ConfigError

from synapse_compliance import _synapse_private
from synapse_compliance.callbacks._common import CallbackGuard, Exemptions
from synapse_compliance.callbacks.credit import CreditGate
from synapse_compliance.callbacks.identity import IdentityGate
from synapse_compliance.callbacks.remote import RemoteUsersGate
from synapse_compliance.callbacks.retention_guard import RetentionGuard
from synapse_compliance.callbacks.rooms import RoomLifecycle
from synapse_compliance.config import ComplianceConfig, ConfigProblem, parse_config
from synapse_compliance.core.credit_recount import RecountSettings
from synapse_compliance.crypto import keyring_for
from synapse_compliance.http._router import BASE_PATH, ComplianceResource
from synapse_compliance.http.archive import ArchiveEndpoints
from synapse_compliance.http.archive_export import ArchiveExportEndpoint
from synapse_compliance.http.audit import AuditEndpoints
from synapse_compliance.http.connections import ConnectionEndpoints
from synapse_compliance.http.credit import CreditEndpoints, CreditJobEndpoints
from synapse_compliance.http.holds import RetentionEndpoints
from synapse_compliance.http.identity import IdentityEndpoints
from synapse_compliance.http.kyc_webhook import KycWebhookEndpoint
from synapse_compliance.http.notices import NoticeEndpoints
from synapse_compliance.http.personal_data import PersonalDataEndpoints
from synapse_compliance.http.status import StatusEndpoints
from synapse_compliance.keys import ComplianceSettings, load_settings
from synapse_compliance.startup_checks import ArchiveWarnings, LagMonitor, SettingsCheck
from synapse_compliance.storage.archive_store import ArchiveStore
from synapse_compliance.storage.audit_store import AuditStore
from synapse_compliance.storage.checkpoint_store import CheckpointStore
from synapse_compliance.storage.connection_store import ConnectionStore
from synapse_compliance.storage.credit_store import CreditStore
from synapse_compliance.storage.hold_store import HoldStore
from synapse_compliance.storage.identity_record_store import IdentityRecordStore
from synapse_compliance.storage.identity_store import IdentityStore
from synapse_compliance.storage.notice_store import NoticeStore
from synapse_compliance.storage.partition_prune import PartitionPruneStore
from synapse_compliance.storage.prune_store import PruneStore
from synapse_compliance.storage.room_events import RoomEventStore
from synapse_compliance.storage.room_store import RoomStore
from synapse_compliance.storage.schema import SchemaManager
from synapse_compliance.tasks.archiver import Archiver
from synapse_compliance.tasks.checkpointer import Checkpointer
from synapse_compliance.tasks.connections import ConnectionCopier
from synapse_compliance.tasks.credit_recovery import CreditRecovery
from synapse_compliance.tasks.group_count import GroupCounter
from synapse_compliance.tasks.identity_expiry import IdentityExpiry
from synapse_compliance.tasks.notices import NoticeSender
from synapse_compliance.tasks.pruner import Pruner
from synapse_compliance.tasks.room_watch import RoomWatch

logger = logging.getLogger(__name__)


class ComplianceModule:
    """The module Synapse loads: `modules: [{module: synapse_compliance.ComplianceModule}]`."""

    def __init__(self, settings: ComplianceSettings, api: ModuleApi) -> None:
        _synapse_private.self_test(api)
        config = settings.config
        self._api = api
        self._settings = settings

        self.schema = SchemaManager(api)
        self.audit_store = AuditStore(api, self.schema)
        self.identity_store = IdentityStore(
            api, self.schema, reverify_after_ms=config.identity.reverify_after_ms
        )
        self.notice_store = NoticeStore(api, self.schema)
        self.identity_record_store = IdentityRecordStore(api, self.schema)
        self.room_store = RoomStore(api, self.schema)
        self.archive_store = ArchiveStore(api, self.schema)
        self.credit_store = CreditStore(api, self.schema, config.credit, self.identity_store)

        exemptions = Exemptions(api)
        room_lifecycle = RoomLifecycle(api, self.room_store)
        room_lifecycle.register()
        guard = CallbackGuard(api.server_name)
        IdentityGate(api, config, self.identity_store, self.room_store, exemptions).register(guard)
        remote_users = RemoteUsersGate(api, config, self.room_store, exemptions)
        remote_users.register(guard)
        credit_gate = CreditGate(api, config, self.credit_store, self.room_store, exemptions)
        credit_gate.register(guard)
        settings_check = SettingsCheck(api, config)
        synapse_settings = settings_check.settings
        RetentionGuard(api, config, self.room_store, synapse_settings.encrypted_presets).register(guard)

        notice_sender = NoticeSender(api, self.notice_store)
        identity_expiry = IdentityExpiry(api, config.identity, self.identity_store, notice_sender)
        credit_recovery, credit_jobs = self._credit_jobs(config, notice_sender)

        archiver = Archiver(api, config, self.schema, self.archive_store, self.room_store)
        lag_monitor = LagMonitor(api, self.archive_store, synapse_settings.redaction_retention_period_ms)
        archive = ArchiveEndpoints(
            api,
            self.archive_store,
            archiver,
            lag=lag_monitor,
            encrypted_rooms=config.retention.encrypted_rooms.value,
            checkpointer=self._start_checkpointer(settings),
        )
        self.connection_store = ConnectionStore(api, self.schema)
        connection_copier = ConnectionCopier(api, config, self.schema, self.connection_store)
        connections = ConnectionEndpoints(api, self.connection_store, connection_copier)
        room_watch = RoomWatch(
            api,
            self.schema,
            RoomEventStore(api, self.schema),
            [room_lifecycle, remote_users, GroupCounter(api, config, self.credit_store, self.room_store)],
            archiver.wake,
        )

        keyring = keyring_for(settings)
        personal_data = PersonalDataEndpoints(
            api, config.identity, keyring, self.identity_record_store, self.identity_store
        )
        routes = [
            *IdentityEndpoints(api, config.identity, self.identity_store, personal_data).routes(),
            *personal_data.routes(),
            *KycWebhookEndpoint(
                api,
                config.identity.kyc_webhook,
                settings.kyc_webhook_secret,
                self.identity_store,
                personal_data,
            ).routes(),
            *AuditEndpoints(api, self.audit_store).routes(),
            *CreditEndpoints(api, self.credit_store, credit_gate.caps.groups_joined).routes(),
            *StatusEndpoints(
                api,
                config,
                self.schema,
                archive.status,
                connections_status=connections.status,
                # Legal holds and pruning; its routes follow the archive's below.
                retention_status=(retention := self._retention(config)).status,
                warnings=ArchiveWarnings(settings_check, lag_monitor).current,
            ).routes(),
            *archive.routes(),
            *retention.routes(),
            *ArchiveExportEndpoint(api, self.schema).routes(),
            *connections.routes(),
            *NoticeEndpoints(api, self.notice_store, notice_sender, identity_expiry).routes(),
            *credit_jobs.routes(),
        ]
        api.register_web_resource(BASE_PATH, ComplianceResource(routes, _synapse_private.get_clock(api)))

        self.schema.start()
        archiver.start()
        lag_monitor.start()
        connection_copier.start()
        room_watch.start()
        notice_sender.start()
        identity_expiry.start()
        credit_recovery.start()
        logger.info(
            "synapse_compliance loaded on %s (background tasks here: %s)",
            api.worker_name or "main process",
            api.should_run_background_tasks(),
        )
        settings_check.log()
        if keyring is not None:  # key ids only; they name keys, they are not secret
            logger.info(
                "personal data: sealing with PII key %s; also opening %s",
                keyring.current.key_id,
                ", ".join(k.key_id for k in keyring.previous) or "no previous keys",
            )

    def _retention(self, config: ComplianceConfig) -> RetentionEndpoints:
        """Legal holds and the pruner (its loop is started here; it waits for the schema)."""
        self.hold_store = HoldStore(self._api, self.schema)
        partitions = PartitionPruneStore(self._api, self.schema)
        pruner = Pruner(
            self._api, config.retention, self.schema, PruneStore(self._api, self.schema), partitions
        )
        pruner.start()
        return RetentionEndpoints(self._api, config.retention, self.hold_store, pruner)

    def _credit_jobs(
        self, config: ComplianceConfig, notice_sender: NoticeSender
    ) -> tuple[CreditRecovery, CreditJobEndpoints]:
        """Credit recovery, the recount and tier-change notices (sent by `notice_sender`)."""
        api = self._api
        self.credit_store.set_notice_listener(notice_sender.wake)
        recovery = CreditRecovery(api, config.credit.recovery, self.credit_store)
        recount = RecountSettings(
            api.server_name, config.scope.direct_chats, _synapse_private.server_notices_mxid(api)
        )
        return recovery, CreditJobEndpoints(api, recovery, recount, notice_sender, self.schema)

    def _start_checkpointer(self, settings: ComplianceSettings) -> Checkpointer:
        """The signed-checkpoint loop (it waits for the schema itself, so it may start first)."""
        store = CheckpointStore(self._api, self.schema)
        checkpointer = Checkpointer(
            self._api, settings.config.archive, settings.checkpoint_keys, self.schema, store
        )
        checkpointer.start()
        return checkpointer

    @staticmethod
    def parse_config(raw: object) -> ComplianceSettings:
        """Validate the module config and read the secrets it names.

        Raises:
            ConfigError: with the key path; Synapse prefixes `modules.<item N>.config`.
        """
        try:
            return load_settings(parse_config(raw))
        except ConfigProblem as e:
            raise ConfigError(e.message, path=list(e.path)) from None
