"""Server notices to users: what the module tells people about decisions concerning them.

Each notice is an `m.room.message` with a plain-text body a person can act on, and a namespaced
`io.synapse_compliance.notice` object with the machine-readable facts. Notices never contain
personal data. Their `dedupe_key` makes queueing idempotent.
"""

import datetime
from typing import Any

from synapse_compliance.config import IdentityConfig
from synapse_compliance.core.identity import Verification
from synapse_compliance.messages import ACTION_WORDS

NOTICE_FIELD = "io.synapse_compliance.notice"


def _date(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "an unknown date"
    return datetime.datetime.fromtimestamp(ts_ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def notice_content(kind: str, body: str, **facts: object) -> dict[str, Any]:
    """The event content of a notice."""
    return {"msgtype": "m.text", "body": body, NOTICE_FIELD: {"kind": kind, **facts}}


class IdentityNotices:
    """Notices about a user's identity verification (the re-verification sweep's `ExpiryNotices`)."""

    def __init__(self, identity: IdentityConfig) -> None:
        self._identity = identity

    def _how(self) -> str:
        if self._identity.help_url:
            return f"Find out how to renew it at {self._identity.help_url}"
        return "Ask this server's administrators how to renew it."

    def _losing(self) -> str:
        actions = [ACTION_WORDS[a.value] for a in sorted(self._identity.required_for, key=lambda a: a.value)]
        return ", ".join(actions) if actions else "nothing"

    def expiring(self, user_id: str, verification: Verification) -> dict[str, Any]:
        """The warning before a verification expires."""
        when = _date(verification.expires_ts)
        body = (
            f"Your identity verification expires on {when}. After that you can no longer "
            f"{self._losing()} until it is renewed. {self._how()}"
        )
        return {
            "user_id": user_id,
            "kind": "identity_expiring",
            "dedupe_key": f"identity_expiring:{user_id}:{verification.expires_ts}",
            "content": notice_content("identity_expiring", body, expires_ts=verification.expires_ts),
        }

    def expired(self, user_id: str, verification: Verification) -> dict[str, Any]:
        """The notice that a verification has expired."""
        when = _date(verification.expires_ts)
        body = (
            f"Your identity verification expired on {when}. Until it is renewed you cannot "
            f"{self._losing()}. {self._how()}"
        )
        return {
            "user_id": user_id,
            "kind": "identity_expired",
            "dedupe_key": f"identity_expired:{user_id}:{verification.expires_ts}",
            "content": notice_content("identity_expired", body, expires_ts=verification.expires_ts),
        }
