"""Who is asking: any user's own token for `me/...`, a server admin's for `admin/...` (DESIGN §5)."""

from typing import TYPE_CHECKING

from synapse.module_api import ModuleApi
from synapse.module_api.errors import Codes, SynapseError

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest


async def require_user(api: ModuleApi, request: "SynapseRequest") -> str:
    """The requesting user's id (401 `M_MISSING_TOKEN` / `M_UNKNOWN_TOKEN` otherwise)."""
    requester = await api.get_user_by_req(request)
    return requester.user.to_string()


async def require_admin(api: ModuleApi, request: "SynapseRequest") -> str:
    """The requesting server admin's id (403 `M_FORBIDDEN` for other users)."""
    user_id = await require_user(api, request)
    if not await api.is_user_admin(user_id):
        raise SynapseError(403, "This endpoint is for server admins only", Codes.FORBIDDEN)
    return user_id
