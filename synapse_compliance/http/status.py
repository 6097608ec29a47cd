"""`GET admin/status`: what the module is doing on this server, for operators and probes."""

from typing import TYPE_CHECKING

from synapse.module_api import JsonDict, ModuleApi

from synapse_compliance import __version__
from synapse_compliance.config import ComplianceConfig
from synapse_compliance.http._auth import require_admin
from synapse_compliance.http._router import Route, route
from synapse_compliance.storage.schema import SchemaManager

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest


class StatusEndpoints:
    """Handler for the status route."""

    def __init__(self, api: ModuleApi, config: ComplianceConfig, schema: SchemaManager) -> None:
        self._api = api
        self._config = config
        self._schema = schema

    def routes(self) -> list[Route]:
        """The routes these handlers serve."""
        return [route("GET", "admin/status", self.get_status)]

    async def get_status(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        await require_admin(self._api, request)
        required = self._config.identity.required_for
        return 200, {
            "version": __version__,
            "schema": {"version": self._schema.target_version, "ready": self._schema.is_ready},
            "identity": {"required_for": sorted(a.value for a in required)},
        }
