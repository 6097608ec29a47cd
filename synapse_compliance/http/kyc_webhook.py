"""The signed KYC-provider webhook: `POST kyc/webhook` (authenticated by signature only).

A provider reports verification outcomes as signed events (see `core/kyc.py` for the signature
and the body). Order of checks, each answering before anything is read further: the webhook is
enabled (else 404), the body is at most 64 KiB (413), the signature is genuine and fresh (401
`M_UNAUTHORIZED`), the body is a JSON object (400 `M_NOT_JSON` / `M_BAD_JSON`), the event is
valid (400 `M_INVALID_PARAM` naming the field), the user is a local user (400 / 404). Then the
change, the provider's event id, the history row, the audit entry (actor `kyc_webhook`) and any
sealed personal data are written in one transaction. A replayed event id changes nothing and
answers 200 with `"status": "duplicate"`.
"""

import json
import logging
from typing import TYPE_CHECKING

from synapse.module_api import JsonDict, ModuleApi
from synapse.module_api.errors import Codes, SynapseError

from synapse_compliance.config import KycWebhookConfig
from synapse_compliance.core.identity import VerificationChangeRequest
from synapse_compliance.core.kyc import SIGNATURE_HEADER, KycEventProblem, decide_signature, parse_kyc_event
from synapse_compliance.http._parse import bad_param, local_user
from synapse_compliance.http._router import Route, route
from synapse_compliance.http.identity import change_refused, verification_json
from synapse_compliance.http.personal_data import PersonalDataEndpoints
from synapse_compliance.messages import REASON_FIELD
from synapse_compliance.storage.identity_store import IdentityStore

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest

logger = logging.getLogger(__name__)

METHOD = "kyc_webhook"
MAX_BODY_BYTES = 64 * 1024

_SIGNATURE_WORDS = {
    "signature_missing": f"missing {SIGNATURE_HEADER} header",
    "signature_malformed": f"{SIGNATURE_HEADER} must look like t=<unix seconds>,v1=<hex>",
    "signature_expired": "signature timestamp is outside the accepted window",
    "signature_mismatch": "signature does not match the body",
}


class KycWebhookEndpoint:
    """Handler for the webhook route."""

    def __init__(
        self,
        api: ModuleApi,
        config: KycWebhookConfig,
        secret: bytes | None,
        store: IdentityStore,
        personal_data: PersonalDataEndpoints,
    ) -> None:
        self._api = api
        self._config = config
        self._secret = secret
        self._store = store
        self._personal_data = personal_data

    def routes(self) -> list[Route]:
        """The routes this handler serves."""
        return [route("POST", "kyc/webhook", self.post)]

    async def post(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        if not self._config.enabled or self._secret is None:
            raise SynapseError(404, "The KYC webhook is not enabled on this server", Codes.UNRECOGNIZED)
        content = request.content
        if content is None:
            raise SynapseError(400, "Content not JSON.", Codes.NOT_JSON)
        content.seek(0)
        raw: bytes = content.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            raise SynapseError(413, f"body larger than {MAX_BODY_BYTES} bytes", Codes.TOO_LARGE)
        header = request.getHeader(SIGNATURE_HEADER)
        now_ms = self._api.get_current_time_msec()
        signature = decide_signature(
            self._secret, header, raw, now_ms // 1000, self._config.tolerance_ms // 1000
        )
        if not signature.allowed:
            logger.warning("refused a KYC webhook delivery: %s", signature.reason_code)
            raise SynapseError(
                401,
                _SIGNATURE_WORDS.get(str(signature.reason_code), "bad signature"),
                Codes.UNAUTHORIZED,
                additional_fields={REASON_FIELD: signature.reason_code},
            )
        try:
            body = json.loads(raw)
        except ValueError:
            raise SynapseError(400, "Content not JSON.", Codes.NOT_JSON) from None
        if not isinstance(body, dict):
            raise SynapseError(400, "Content must be a JSON object.", Codes.BAD_JSON)
        event = parse_kyc_event(body)
        if isinstance(event, KycEventProblem):
            raise bad_param(event.field, event.message)
        user_id = await local_user(self._api, event.user_id)
        req = VerificationChangeRequest(
            status=event.status, level=event.level, method=METHOD, now_ms=now_ms, expires_ts=event.expires_ts
        )
        record = self._personal_data.record_from_body(body, user_id, event.status, now_ms)
        outcome = await self._store.change_verification(
            user_id,
            req,
            actor=METHOD,
            reason=f"KYC provider event {event.event_id}",
            note=None,
            record=record,
            provider_event_id=event.event_id,
        )
        if outcome.duplicate:
            return 200, {
                "status": "duplicate",
                "event_id": event.event_id,
                "user_id": user_id,
                "verification": verification_json(outcome.verification, now_ms),
            }
        if not outcome.decision.allowed:
            raise change_refused(outcome.decision)
        return 200, {
            "status": "applied",
            "event_id": event.event_id,
            "user_id": user_id,
            "verification": verification_json(outcome.verification, now_ms),
        }
