"""Request parsing: JSON bodies, path and query values into typed values, or a 400 naming the field.

Every error is a `SynapseError` with a Matrix errcode, raised before anything is changed.
"""

import base64
import binascii
from collections.abc import Mapping
from typing import TYPE_CHECKING

from synapse.module_api import JsonDict, ModuleApi, UserID, parse_json_object_from_request
from synapse.module_api.errors import Codes, SynapseError

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_REASON_LENGTH = 2000


def bad_param(field: str, message: str) -> SynapseError:
    """A 400 `M_INVALID_PARAM` naming `field`."""
    return SynapseError(400, f"{field}: {message}", Codes.INVALID_PARAM)


def json_body(request: "SynapseRequest") -> JsonDict:
    """The request body as a JSON object (400 `M_NOT_JSON` / `M_BAD_JSON` otherwise)."""
    return parse_json_object_from_request(request)


def required_str(body: Mapping[str, object], field: str, max_length: int = MAX_REASON_LENGTH) -> str:
    """A mandatory non-empty string field."""
    if field not in body:
        raise SynapseError(400, f"{field}: missing", Codes.MISSING_PARAM)
    value = optional_str(body, field, max_length)
    if value is None:
        raise bad_param(field, "must be a non-empty string")
    return value


def optional_str(body: Mapping[str, object], field: str, max_length: int = MAX_REASON_LENGTH) -> str | None:
    """An optional string field; empty or whitespace-only counts as absent."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_param(field, f"must be a string, not {type(value).__name__}")
    if len(value) > max_length:
        raise bad_param(field, f"must be at most {max_length} characters")
    return value if value.strip() else None


def optional_int(body: Mapping[str, object], field: str) -> int | None:
    """An optional integer field (JSON booleans and floats are refused)."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_param(field, f"must be an integer, not {type(value).__name__}")
    return value


def reject_unknown_fields(body: Mapping[str, object], allowed: set[str]) -> None:
    """Refuse fields this endpoint does not know, so a typo is not silently ignored."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad_param(unknown[0], f"unknown field; accepted: {', '.join(sorted(allowed))}")


async def local_user(api: ModuleApi, raw: str) -> str:
    """The canonical id of an existing local user named in the path.

    Raises:
        SynapseError: 400 for a malformed or remote id, 404 for an unknown user.
    """
    try:
        user = UserID.from_string(raw)
    except SynapseError:
        raise bad_param("user_id", f"{raw!r} is not a Matrix user id") from None
    if not api.is_mine(user):
        raise bad_param("user_id", f"{raw} is not a user of this homeserver")
    canonical = await api.check_user_exists(user.to_string())
    if canonical is None:
        raise SynapseError(404, f"no such user: {raw}", Codes.NOT_FOUND)
    return canonical


def query_arg(request: "SynapseRequest", name: str) -> str | None:
    """A single query-string argument, decoded."""
    values = request.args.get(name.encode("ascii"))
    if not values:
        return None
    value: bytes = values[-1]
    return value.decode("utf-8", errors="strict")


def query_reason(request: "SynapseRequest", default: str) -> str:
    """The optional `reason` query argument of a read that is audited (`default` when blank)."""
    reason = (query_arg(request, "reason") or "").strip() or default
    if len(reason) > MAX_REASON_LENGTH:
        raise bad_param("reason", f"must be at most {MAX_REASON_LENGTH} characters")
    return reason


def page_limit(request: "SynapseRequest") -> int:
    """The `limit` query argument: 1..1000, default 100."""
    raw = query_arg(request, "limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise bad_param("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def encode_page_token(kind: str, position: int) -> str:
    """An opaque `next_batch` token for a keyset position."""
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode("ascii").rstrip("=")


def page_position(request: "SynapseRequest", kind: str) -> int | None:
    """The position in the `from` query argument (a `next_batch` token), if any."""
    raw = query_arg(request, "from")
    if raw is None:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        prefix, _, number = text.partition(":")
        if prefix != kind or not number.isdigit():
            raise ValueError(text)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_param("from", "not a next_batch token of this list") from None
