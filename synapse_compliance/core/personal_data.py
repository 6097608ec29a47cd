"""Personal data behind a verified identity, and how many accounts one identity may hold.

Theory of operation. An admin attesting a user may record the person's real name, identity
document (type and number) and birth date. The module keeps them only sealed (`crypto`), so this
value object exists in memory between the request and the seal, and between opening and the
reveal response; its repr never shows the data, so it cannot end up in a log by accident.

One person may hold at most `identity.max_accounts_per_identity` accounts: a document already
recorded for that many *other* accounts is refused with `identity_already_used` (facts: `limit`,
`usage`). The user's own earlier record never counts against them, so re-attesting the same
person always works. Records stay with their account when its verification is revoked or
expires, so they keep counting.
"""

import json

import attrs

from synapse_compliance.core.decision import ALLOW, INVALID_PARAM, Decision

IDENTITY_ALREADY_USED = "identity_already_used"


@attrs.frozen
class PersonalData:
    """Clear personal data. Every field is hidden from repr."""

    real_name: str = attrs.field(repr=False)
    document_type: str = attrs.field(repr=False)
    document_number: str = attrs.field(repr=False)
    birth_date: str | None = attrs.field(default=None, repr=False)  # ISO "YYYY-MM-DD"

    def to_plaintext(self) -> bytes:
        """The bytes that get sealed (canonical JSON)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_plaintext(cls, plaintext: bytes) -> "PersonalData":
        """The inverse of `to_plaintext`.

        Raises:
            ValueError: the bytes are not a sealed personal-data document.
        """
        raw = json.loads(plaintext.decode("utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("sealed personal data is not a JSON object")
        birth_date = raw.get("birth_date")
        return cls(
            real_name=str(raw["real_name"]),
            document_type=str(raw["document_type"]),
            document_number=str(raw["document_number"]),
            birth_date=None if birth_date is None else str(birth_date),
        )

    def to_json(self) -> dict[str, str | None]:
        """The API shape (only the reveal endpoint may return it)."""
        return {
            "real_name": self.real_name,
            "document_type": self.document_type,
            "document_number": self.document_number,
            "birth_date": self.birth_date,
        }


def decide_identity_uniqueness(other_accounts: int, max_accounts: int) -> Decision:
    """Decide whether one more account may hold a document already held by `other_accounts`.

    Args:
        other_accounts: accounts other than the one being attested that hold the document.
        max_accounts: `identity.max_accounts_per_identity` (at least 1).
    """
    if other_accounts + 1 > max_accounts:
        return Decision.refuse(INVALID_PARAM, IDENTITY_ALREADY_USED, limit=max_accounts, usage=other_accounts)
    return ALLOW
