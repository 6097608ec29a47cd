"""Personal data over HTTP: the `personal_data` field of an attestation, and the audited reveal.

PUT  admin/users/{user_id}/verification       field `personal_data` (parsed and sealed here;
                                              the route itself is in `http/identity.py`)
POST admin/users/{user_id}/identity/reveal    {"reason": "..."}: the clear record, audited

Least exposure (DESIGN §4.2): clear data leaves the module only in the reveal response. Error
messages name fields, never their values, and nothing here logs request bodies or clear data.
"""

import logging
import re
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from synapse.module_api import JsonDict, ModuleApi
from synapse.module_api.errors import Codes, SynapseError

from synapse_compliance.config import IdentityConfig
from synapse_compliance.core.identity import VerificationStatus
from synapse_compliance.core.personal_data import PersonalData
from synapse_compliance.crypto import Keyring, PiiCryptoError
from synapse_compliance.http._auth import require_admin
from synapse_compliance.http._parse import (
    bad_param,
    json_body,
    local_user,
    optional_str,
    reject_unknown_fields,
    required_str,
)
from synapse_compliance.http._router import Route, route
from synapse_compliance.http.identity import verification_json
from synapse_compliance.storage.identity_record_store import IdentityRecordStore, IdentityRecordWrite
from synapse_compliance.storage.identity_store import IdentityStore

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest

logger = logging.getLogger(__name__)

FIELD = "personal_data"
MAX_NAME_LENGTH = 256
MAX_DOCUMENT_LENGTH = 64
EARLIEST_BIRTH_DATE = date(1900, 1, 1)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NO_KEY = (
    "this server has no identity.pii_key_file configured, so personal data can be neither stored "
    "nor revealed; make a key with `synapse-compliance keygen --pii-key <file>` and set it"
)


def parse_personal_data(raw: object, now_ms: int) -> PersonalData:
    """The `personal_data` object of an attestation, validated.

    Raises:
        SynapseError: 400 naming the field (`personal_data.birth_date: ...`), never its value.
    """
    if not isinstance(raw, dict):
        raise bad_param(FIELD, "must be an object with real_name, document_type and document_number")
    # Prefixed keys make the shared helpers name the nested field in their errors.
    body = {f"{FIELD}.{key}": value for key, value in raw.items()}
    reject_unknown_fields(
        body, {f"{FIELD}.{f}" for f in ("real_name", "document_type", "document_number", "birth_date")}
    )
    return PersonalData(
        real_name=required_str(body, f"{FIELD}.real_name", MAX_NAME_LENGTH).strip(),
        document_type=required_str(body, f"{FIELD}.document_type", MAX_DOCUMENT_LENGTH).strip(),
        document_number=required_str(body, f"{FIELD}.document_number", MAX_DOCUMENT_LENGTH).strip(),
        birth_date=_birth_date(optional_str(body, f"{FIELD}.birth_date", max_length=10), now_ms),
    )


def _birth_date(value: str | None, now_ms: int) -> str | None:
    field = f"{FIELD}.birth_date"
    if value is None:
        return None
    if not _ISO_DATE.fullmatch(value):
        raise bad_param(field, "must be a date written YYYY-MM-DD")
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise bad_param(field, "is not a date that exists (YYYY-MM-DD)") from None
    if day > datetime.fromtimestamp(now_ms / 1000, tz=UTC).date():
        raise bad_param(field, "must not be in the future")
    if day < EARLIEST_BIRTH_DATE:
        raise bad_param(field, f"must be {EARLIEST_BIRTH_DATE.isoformat()} or later")
    return value


class PersonalDataEndpoints:
    """Seals the personal data of attestations, and serves the reveal route."""

    def __init__(
        self,
        api: ModuleApi,
        identity: IdentityConfig,
        keyring: Keyring | None,
        records: IdentityRecordStore,
        identity_store: IdentityStore,
    ) -> None:
        self._api = api
        self._identity = identity
        self._keyring = keyring
        self._records = records
        self._identity_store = identity_store

    def routes(self) -> list[Route]:
        """The routes these handlers serve."""
        return [route("POST", "admin/users/{user_id}/identity/reveal", self.reveal)]

    def record_from_body(
        self, body: JsonDict, user_id: str, status: VerificationStatus, now_ms: int
    ) -> IdentityRecordWrite | None:
        """The sealed record for an attestation body's `personal_data` (None without one).

        Raises:
            SynapseError: 400 when personal data comes with a status other than `verified`,
                when no PII key is configured, or when a field is invalid.
        """
        raw = body.get(FIELD)
        if raw is None:
            return None
        if status is not VerificationStatus.VERIFIED:
            raise bad_param(FIELD, f"only allowed with status verified, not {status.value}")
        if self._keyring is None:
            raise bad_param(FIELD, _NO_KEY)
        data = parse_personal_data(raw, now_ms)
        return IdentityRecordWrite(
            sealed=self._keyring.seal(user_id, data.to_plaintext()),
            fingerprint=self._keyring.fingerprint(data.document_type, data.document_number),
            match_fingerprints=self._keyring.fingerprints(data.document_type, data.document_number),
            max_accounts=self._identity.max_accounts_per_identity,
        )

    async def reveal(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        actor = await require_admin(self._api, request)
        user_id = await local_user(self._api, params["user_id"])
        body = json_body(request)
        reject_unknown_fields(body, {"reason"})
        reason = required_str(body, "reason")
        if self._keyring is None:
            raise SynapseError(400, _NO_KEY, Codes.INVALID_PARAM)
        now = self._api.get_current_time_msec()
        try:
            revealed = await self._records.reveal(
                user_id, self._keyring, actor=actor, reason=reason, now_ms=now
            )
        except PiiCryptoError as e:
            # The message names the user and key ids only.
            logger.error("cannot open the identity record of %s: %s", user_id, e)
            raise SynapseError(500, f"personal data cannot be opened: {e}", Codes.UNKNOWN) from None
        if revealed is None:
            raise SynapseError(404, f"no personal data is on record for {user_id}", Codes.NOT_FOUND)
        logger.info("personal data of %s revealed to %s (audited)", user_id, actor)
        verification = await self._identity_store.get_verification(user_id)
        return 200, {
            "user_id": user_id,
            "key_id": revealed.key_id,
            "personal_data": revealed.personal_data.to_json(),
            "verification": verification_json(verification, now),
        }
