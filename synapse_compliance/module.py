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
from synapse_compliance.callbacks.rooms import RoomLifecycle
from synapse_compliance.config import ConfigProblem, parse_config
from synapse_compliance.crypto import keyring_for
from synapse_compliance.http._router import BASE_PATH, ComplianceResource
from synapse_compliance.http.archive import ArchiveEndpoints
from synapse_compliance.http.audit import AuditEndpoints
from synapse_compliance.http.credit import CreditEndpoints
from synapse_compliance.http.identity import IdentityEndpoints
from synapse_compliance.http.kyc_webhook import KycWebhookEndpoint
from synapse_compliance.http.notices import NoticeEndpoints
from synapse_compliance.http.personal_data import PersonalDataEndpoints
from synapse_compliance.http.status import StatusEndpoints
from synapse_compliance.keys import ComplianceSettings, load_settings
from synapse_compliance.storage.archive_store import ArchiveStore
from synapse_compliance.storage.audit_store import AuditStore
from synapse_compliance.storage.credit_store import CreditStore
from synapse_compliance.storage.identity_record_store import IdentityRecordStore
from synapse_compliance.storage.identity_store import IdentityStore
from synapse_compliance.storage.notice_store import NoticeStore
from synapse_compliance.storage.room_events import RoomEventStore
from synapse_compliance.storage.room_store import RoomStore
from synapse_compliance.storage.schema import SchemaManager
from synapse_compliance.tasks.archiver import Archiver
from synapse_compliance.tasks.group_count import GroupCounter
from synapse_compliance.tasks.identity_expiry import IdentityExpiry
from synapse_compliance.tasks.notices import NoticeSender
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
        CreditGate(api, config, self.credit_store, self.room_store, exemptions).register(guard)

        notice_sender = NoticeSender(api, self.notice_store)
        identity_expiry = IdentityExpiry(api, config.identity, self.identity_store, notice_sender)

        archiver = Archiver(api, config, self.schema, self.archive_store, self.room_store)
        archive = ArchiveEndpoints(api, self.archive_store, archiver)
        room_watch = RoomWatch(
            api,
            self.schema,
            RoomEventStore(api, self.schema),
            [room_lifecycle, remote_users, GroupCounter(api, config, self.credit_store)],
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
            *CreditEndpoints(api, self.credit_store).routes(),
            *StatusEndpoints(api, config, self.schema, archive.status).routes(),
            *archive.routes(),
            *NoticeEndpoints(api, self.notice_store, notice_sender, identity_expiry).routes(),
        ]
        api.register_web_resource(BASE_PATH, ComplianceResource(routes, _synapse_private.get_clock(api)))

        self.schema.start()
        archiver.start()
        room_watch.start()
        notice_sender.start()
        identity_expiry.start()
        logger.info(
            "synapse_compliance loaded on %s (background tasks here: %s)",
            api.worker_name or "main process",
            api.should_run_background_tasks(),
        )
        if keyring is not None:  # key ids only; they name keys, they are not secret
            logger.info(
                "personal data: sealing with PII key %s; also opening %s",
                keyring.current.key_id,
                ", ".join(k.key_id for k in keyring.previous) or "no previous keys",
            )

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
