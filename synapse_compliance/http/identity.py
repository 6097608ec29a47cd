"""Identity endpoints: an admin's view and attestation of a user's verification, and `/me`.

GET  admin/users/{user_id}                        user summary with verification
PUT  admin/users/{user_id}/verification           admin attestation (audited), optionally with
                                                  sealed personal data (`http/personal_data.py`)
GET  admin/users/{user_id}/verification/history   every change, newest first
GET  me                                           the caller's own status and gated actions
"""

from typing import TYPE_CHECKING

from synapse.module_api import JsonDict, ModuleApi
from synapse.module_api.errors import Codes, SynapseError

from synapse_compliance.config import IdentityConfig
from synapse_compliance.core.decision import Decision
from synapse_compliance.core.identity import (
    GatedAction,
    Verification,
    VerificationChangeRequest,
    VerificationStatus,
    decide_identity_gate,
)
from synapse_compliance.http._auth import require_admin, require_user
from synapse_compliance.http._parse import (
    bad_param,
    encode_page_token,
    json_body,
    local_user,
    optional_int,
    optional_str,
    page_limit,
    page_position,
    reject_unknown_fields,
    required_str,
)
from synapse_compliance.http._router import Route, route
from synapse_compliance.messages import REASON_FIELD, verification_change_message
from synapse_compliance.storage.identity_store import IdentityStore

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest

    from synapse_compliance.http.personal_data import PersonalDataEndpoints

ADMIN_METHOD = "admin_attestation"

# Statuses an admin may set by hand. `expired` comes from time (`expires_ts`), not from a decision.
_ADMIN_STATUSES = {
    s.value: s
    for s in (
        VerificationStatus.VERIFIED,
        VerificationStatus.PENDING,
        VerificationStatus.REVOKED,
        VerificationStatus.UNVERIFIED,
    )
}


def verification_json(v: Verification, now_ms: int) -> JsonDict:
    """The API shape of a verification."""
    return {
        "status": v.effective_status(now_ms).value,
        "recorded_status": v.status.value,
        "level": v.level,
        "method": v.method,
        "updated_ts": v.updated_ts,
        "verified_ts": v.verified_ts,
        "expires_ts": v.expires_ts,
    }


def change_refused(decision: Decision) -> SynapseError:
    return SynapseError(
        400,
        verification_change_message(decision),
        decision.errcode or Codes.INVALID_PARAM,
        additional_fields={REASON_FIELD: decision.reason_code},
    )


class IdentityEndpoints:
    """Handlers for the identity routes."""

    def __init__(
        self,
        api: ModuleApi,
        identity: IdentityConfig,
        store: IdentityStore,
        personal_data: "PersonalDataEndpoints",
    ) -> None:
        self._api = api
        self._identity = identity
        self._store = store
        self._personal_data = personal_data

    def routes(self) -> list[Route]:
        """The routes these handlers serve."""
        return [
            route("GET", "admin/users/{user_id}", self.get_user),
            route("PUT", "admin/users/{user_id}/verification", self.put_verification),
            route("GET", "admin/users/{user_id}/verification/history", self.get_history),
            route("GET", "me", self.get_me),
        ]

    async def get_user(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        await require_admin(self._api, request)
        user_id = await local_user(self._api, params["user_id"])
        verification = await self._store.get_verification(user_id)
        now = self._api.get_current_time_msec()
        return 200, {"user_id": user_id, "verification": verification_json(verification, now)}

    async def put_verification(
        self, request: "SynapseRequest", params: dict[str, str]
    ) -> tuple[int, JsonDict]:
        actor = await require_admin(self._api, request)
        user_id = await local_user(self._api, params["user_id"])
        body = json_body(request)
        reject_unknown_fields(body, {"status", "level", "note", "reason", "expires_ts", "personal_data"})
        raw_status = required_str(body, "status", max_length=32)
        status = _ADMIN_STATUSES.get(raw_status)
        if status is None:
            raise bad_param("status", f"must be one of {', '.join(sorted(_ADMIN_STATUSES))}")
        if status is VerificationStatus.VERIFIED and not self._identity.admin_attestation:
            raise SynapseError(
                403,
                "Admin attestation is turned off on this server (identity.admin_attestation: false): "
                "identities are verified by the configured KYC provider or OIDC login only",
                Codes.FORBIDDEN,
            )
        level = optional_int(body, "level")
        expires_ts = optional_int(body, "expires_ts")
        note = optional_str(body, "note")
        reason = optional_str(body, "reason") or note
        if reason is None:
            raise bad_param("reason", "a reason (or note) is required for every admin change")
        req = VerificationChangeRequest(
            status=status,
            level=level,
            method=ADMIN_METHOD,
            now_ms=self._api.get_current_time_msec(),
            expires_ts=expires_ts,
        )
        record = self._personal_data.record_from_body(body, user_id, status, req.now_ms)
        outcome = await self._store.change_verification(
            user_id, req, actor=actor, reason=reason, note=note, record=record
        )
        if not outcome.decision.allowed:
            raise change_refused(outcome.decision)
        response: JsonDict = {
            "user_id": user_id,
            "verification": verification_json(outcome.verification, req.now_ms),
        }
        if record is not None:  # that it was stored, never what
            response["identity_record"] = {"key_id": record.sealed.key_id, "updated_ts": req.now_ms}
        return 200, response

    async def get_history(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        await require_admin(self._api, request)
        user_id = await local_user(self._api, params["user_id"])
        limit = page_limit(request)
        entries = await self._store.list_history(user_id, before_id=page_position(request, "vh"), limit=limit)
        body: JsonDict = {
            "user_id": user_id,
            "chunk": [
                {
                    "status": e.status.value,
                    "level": e.level,
                    "method": e.method,
                    "actor": e.actor,
                    "note": e.note,
                    "ts": e.ts,
                }
                for e in entries
            ],
        }
        if len(entries) == limit:
            body["next_batch"] = encode_page_token("vh", entries[-1].id)
        return 200, body

    async def get_me(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        user_id = await require_user(self._api, request)
        verification = await self._store.get_verification(user_id)
        now = self._api.get_current_time_msec()
        not_yet = [
            action.value
            for action in GatedAction
            if not decide_identity_gate(verification, action, self._identity.required_for, now).allowed
        ]
        body: JsonDict = {
            "user_id": user_id,
            "verification": verification_json(verification, now),
            "not_allowed_until_verified": sorted(not_yet),
        }
        if self._identity.help_url:
            body["help_url"] = self._identity.help_url
        return 200, body
