"""`ComplianceModule`: Synapse's entry point. `parse_config` validates; `__init__` wires once.

`__init__` does no I/O (an exception here stops Synapse, SYNAPSE_FACTS §1): it builds the object
graph, registers callbacks and the web resource (which is only possible now), and starts the
schema upgrade as a background process.
"""

import logging

from synapse.module_api import ModuleApi
from synapse.module_api.errors import ConfigError

from synapse_compliance import _synapse_private
from synapse_compliance.callbacks._common import Exemptions
from synapse_compliance.callbacks.identity import IdentityGate
from synapse_compliance.config import ENFORCED_ACTIONS, ConfigProblem, parse_config
from synapse_compliance.http._router import BASE_PATH, ComplianceResource
from synapse_compliance.http.audit import AuditEndpoints
from synapse_compliance.http.identity import IdentityEndpoints
from synapse_compliance.http.status import StatusEndpoints
from synapse_compliance.keys import ComplianceSettings, load_settings
from synapse_compliance.storage.audit_store import AuditStore
from synapse_compliance.storage.identity_store import IdentityStore
from synapse_compliance.storage.schema import SchemaManager

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
        self.identity_store = IdentityStore(api, self.schema)

        exemptions = Exemptions(api)
        IdentityGate(api, config.identity, config.scope, self.identity_store, exemptions).register()

        routes = [
            *IdentityEndpoints(api, config.identity, self.identity_store).routes(),
            *AuditEndpoints(api, self.audit_store).routes(),
            *StatusEndpoints(api, config, self.schema).routes(),
        ]
        api.register_web_resource(BASE_PATH, ComplianceResource(routes, _synapse_private.get_clock(api)))

        self.schema.start()
        not_enforced = config.identity.required_for - ENFORCED_ACTIONS
        if not_enforced:
            logger.warning(
                "identity.required_for lists %s, which this version does not enforce yet",
                ", ".join(sorted(a.value for a in not_enforced)),
            )
        logger.info(
            "synapse_compliance loaded on %s (background tasks here: %s)",
            api.worker_name or "main process",
            api.should_run_background_tasks(),
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
