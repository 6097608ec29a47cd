"""`GET admin/status`: what the module is doing on this server, for operators and probes."""

from collections.abc import Awaitable, Callable
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

    def __init__(
        self,
        api: ModuleApi,
        config: ComplianceConfig,
        schema: SchemaManager,
        archive_status: Callable[[bool], Awaitable[JsonDict]] | None = None,
        *,
        connections_status: Callable[[bool], Awaitable[JsonDict]] | None = None,
        retention_status: Callable[[bool], Awaitable[JsonDict]] | None = None,
        warnings: Callable[[], list[JsonDict]] | None = None,
    ) -> None:
        self._api = api
        self._config = config
        self._schema = schema
        # Called with whether the schema is ready; answers the `archive` block.
        self._archive_status = archive_status
        self._connections_status = connections_status  # likewise, the `connections` block
        self._retention_status = retention_status  # likewise, the `retention` block (holds, pruning)
        # The archive guards' warnings (startup_checks.py), read after the blocks above.
        self._warnings = warnings

    def routes(self) -> list[Route]:
        """The routes these handlers serve."""
        return [route("GET", "admin/status", self.get_status)]

    async def get_status(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        await require_admin(self._api, request)
        required = self._config.identity.required_for
        body: JsonDict = {
            "version": __version__,
            "schema": {"version": self._schema.target_version, "ready": self._schema.is_ready},
            "identity": {"required_for": sorted(a.value for a in required)},
        }
        if self._archive_status is not None:
            body["archive"] = await self._archive_status(self._schema.is_ready)
        if self._connections_status is not None:
            body["connections"] = await self._connections_status(self._schema.is_ready)
        if self._retention_status is not None:
            body["retention"] = await self._retention_status(self._schema.is_ready)
        if self._warnings is not None:
            body["warnings"] = self._warnings()
        return 200, body
