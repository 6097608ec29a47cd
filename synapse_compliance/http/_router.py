"""One leaf resource for the module's whole URL space, routing on path segments.

Synapse hands a module resource every request below its path only when `isLeaf` is set
(SYNAPSE_FACTS §9), so routing is ours. Segments are split before percent-decoding, so an
encoded `/` inside a user id never changes the route.
"""

import enum
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import unquote

import attrs
from synapse.module_api import DirectServeJsonResource, JsonDict
from synapse.module_api.errors import Codes, SynapseError
from synapse.util.clock import Clock

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest

BASE_PATH = "/_synapse/client/compliance/v1"


class Streamed(enum.Enum):
    """What a handler returns when it wrote (streamed) the response itself."""

    STREAMED = "streamed"


# A handler that wrote the response itself returns `STREAMED`; Synapse then sends nothing more
# (`_AsyncResource._async_render_wrapper` only responds to a `(status, body)` return). Errors
# raised before its first byte are still sent as Matrix JSON.
STREAMED = Streamed.STREAMED

Handler = Callable[["SynapseRequest", dict[str, str]], Awaitable[tuple[int, JsonDict] | Streamed]]


@attrs.frozen
class Route:
    """`pattern` segments are literals or `{name}` placeholders."""

    method: str
    pattern: tuple[str, ...]
    handler: Handler

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        """The placeholder values when `segments` fit this route's pattern."""
        if len(segments) != len(self.pattern):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.pattern, segments, strict=True):
            if want.startswith("{") and want.endswith("}"):
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params


def route(method: str, path: str, handler: Handler) -> Route:
    """A route from a path like `admin/users/{user_id}`."""
    return Route(method, tuple(path.strip("/").split("/")) if path else (), handler)


class ComplianceResource(DirectServeJsonResource):
    """Serves every module endpoint below `BASE_PATH`."""

    isLeaf = True

    def __init__(self, routes: Sequence[Route], clock: Clock) -> None:
        super().__init__(clock=clock)
        self._routes = list(routes)

    def _segments(self, request: "SynapseRequest") -> list[str]:
        path = request.path.decode("ascii", errors="replace")
        rest = path[len(BASE_PATH) :] if path.startswith(BASE_PATH) else path
        return [unquote(s) for s in rest.strip("/").split("/") if s]

    async def _dispatch(self, method: str, request: "SynapseRequest") -> tuple[int, JsonDict] | None:
        segments = self._segments(request)
        path_known = False
        for r in self._routes:
            params = r.match(segments)
            if params is None:
                continue
            path_known = True
            if r.method == method:
                result = await r.handler(request, params)
                return None if isinstance(result, Streamed) else result
        if path_known:
            raise SynapseError(405, f"{method} is not supported here", Codes.UNRECOGNIZED)
        raise SynapseError(404, "Unknown compliance endpoint", Codes.UNRECOGNIZED)

    async def _async_render_GET(self, request: "SynapseRequest") -> tuple[int, JsonDict] | None:
        return await self._dispatch("GET", request)

    async def _async_render_PUT(self, request: "SynapseRequest") -> tuple[int, JsonDict] | None:
        return await self._dispatch("PUT", request)

    async def _async_render_POST(self, request: "SynapseRequest") -> tuple[int, JsonDict] | None:
        return await self._dispatch("POST", request)

    async def _async_render_DELETE(self, request: "SynapseRequest") -> tuple[int, JsonDict] | None:
        return await self._dispatch("DELETE", request)
