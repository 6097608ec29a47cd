"""Human wording of refusals. The core decides; this module only says it in words.

Messages never contain personal data: they speak of the user's status, never of their identity.
"""

from synapse_compliance.core.decision import Decision
from synapse_compliance.core.identity import GatedAction

REASON_FIELD = "io.synapse_compliance.reason"
HELP_URL_FIELD = "io.synapse_compliance.help_url"
STATUS_FIELD = "io.synapse_compliance.status"

ACTION_WORDS = {
    GatedAction.CREATE_GROUP.value: "create a group",
    GatedAction.JOIN_GROUP.value: "join a group",
    GatedAction.INVITE.value: "invite people to a group",
    GatedAction.SEND_IN_GROUP.value: "send messages in a group",
    GatedAction.MANAGE_GROUP.value: "manage a group",
}

_STATUS_WORDS = {
    "unverified": "Your identity has not been verified yet.",
    "pending": "Your identity verification is still pending.",
    "expired": "Your identity verification has expired and must be renewed.",
    "revoked": "Your identity verification was revoked.",
}


_THEIR_STATUS_WORDS = {
    "unverified": "their identity has not been verified yet",
    "pending": "their identity verification is still pending",
    "expired": "their identity verification has expired",
    "revoked": "their identity verification was revoked",
}


def identity_refusal_message(decision: Decision, help_url: str | None) -> str:
    """The `error` text for an `identity_unverified` refusal.

    With a `subject` in the facts the refusal is about another user (a promotion to manager);
    otherwise it is about the requester.
    """
    status = str(decision.facts.get("status"))
    subject = decision.facts.get("subject")
    if subject is not None:
        their = _THEIR_STATUS_WORDS.get(status, "their identity is not verified")
        return f"{subject} cannot be made a manager of a group: {their}. Managers need a verified identity."
    action = ACTION_WORDS.get(str(decision.facts.get("action")), "do this")
    how = (
        f"Find out how to get verified at {help_url}"
        if help_url
        else "Ask this server's administrators how to get your identity verified."
    )
    return f"You need a verified identity to {action}. {_STATUS_WORDS.get(status, '')} {how}".replace(
        "  ", " "
    )


def identity_refusal_fields(decision: Decision, help_url: str | None) -> dict[str, object]:
    """The Matrix error fields (message plus namespaced machine fields) for an identity refusal."""
    fields: dict[str, object] = {
        "error": identity_refusal_message(decision, help_url),
        REASON_FIELD: decision.reason_code,
        STATUS_FIELD: decision.facts.get("status"),
    }
    if help_url:
        fields[HELP_URL_FIELD] = help_url
    return fields


def verification_change_message(decision: Decision) -> str:
    """The `error` text for a refused verification change, naming the field at fault."""
    f = decision.facts
    allowed = f.get("allowed")
    allowed_text = ", ".join(map(str, allowed)) if isinstance(allowed, list | tuple) else ""
    messages = {
        "invalid_transition": (
            f"status: cannot go from {f.get('from_status')} to {f.get('to_status')}; "
            f"allowed from {f.get('from_status')}: {allowed_text}"
        ),
        "level_required": f"level: required when status is verified ({f.get('min')}-{f.get('max')})",
        "level_out_of_range": f"level: must be from {f.get('min')} to {f.get('max')}",
        "level_not_applicable": (
            f"level/expires_ts: only apply when status is verified, not {f.get('status')}"
        ),
        "expiry_in_past": "expires_ts: must be in the future",
        # Says how many accounts, never which ones or whose document.
        "identity_already_used": (
            f"personal_data.document_number: this identity document is already on record for "
            f"{f.get('usage')} other account(s), and identity.max_accounts_per_identity is {f.get('limit')}"
        ),
    }
    return messages.get(str(decision.reason_code), "invalid verification change")


_REMOTE_WORDS = {
    "remote_users_blocked": (
        "{subject} is a user of another homeserver, and this server's groups are open to its own users only."
    ),
    "remote_user_restricted": (
        "{subject} is a user of another homeserver and cannot be made a manager of a group here: "
        "managers must be users of this server with a verified identity."
    ),
}


def remote_refusal_fields(decision: Decision) -> dict[str, object]:
    """The Matrix error fields for a refusal about a remote user."""
    template = _REMOTE_WORDS.get(str(decision.reason_code), "{subject} may not take part in groups here.")
    return {
        "error": template.format(subject=decision.facts.get("subject")),
        REASON_FIELD: decision.reason_code,
    }


# --- credit and tiers ------------------------------------------------------------------------

LIMIT_FIELD = "io.synapse_compliance.limit"
USAGE_FIELD = "io.synapse_compliance.usage"
TIER_FIELD = "io.synapse_compliance.tier"

_HOW_TO_RISE = (
    "Credit grows with a verified identity and good conduct; the server's administrators can "
    "tell you more. GET /_synapse/client/compliance/v1/me/credit shows your credit and limits."
)


def credit_refusal_message(decision: Decision) -> str:
    """The `error` text for a credit refusal: which limit, the usage, the limit, and how to rise."""
    f = decision.facts
    tier = f.get("tier")
    if decision.reason_code == "group_create_cap":
        what = (
            f"You have created {f.get('usage')} {'group' if f.get('usage') == 1 else 'groups'} "
            f"you are still in, and your credit tier "
            f"({tier}) allows {f.get('limit')} (max_groups_created). Leave a group you created, "
            "or gain credit, to create another."
        )
    elif decision.reason_code == "may_not_create_public":
        what = (
            f"Your credit tier ({tier}) does not allow creating public groups (may_create_public); "
            "you can create a private group instead."
        )
    elif decision.reason_code == "message_rate":
        seconds = int(str(f.get("retry_after_ms", 0))) / 1000
        what = (
            f"You are sending messages faster than your credit tier ({tier}) allows: "
            f"{f.get('per_second')} per second, bursts of up to {f.get('burst')} (message_rate). "
            f"Try again in {seconds:.1f} s."
        )
    else:
        what = f"Your credit tier ({tier}) does not allow this."
    return f"{what} {_HOW_TO_RISE}"


def credit_refusal_fields(decision: Decision) -> dict[str, object]:
    """The Matrix error fields for a credit refusal (message plus machine fields)."""
    f = decision.facts
    fields: dict[str, object] = {
        "error": credit_refusal_message(decision),
        REASON_FIELD: decision.reason_code,
        TIER_FIELD: f.get("tier"),
    }
    if "limit" in f:
        fields[LIMIT_FIELD] = f["limit"]
        fields[USAGE_FIELD] = f["usage"]
    if "retry_after_ms" in f:
        fields["retry_after_ms"] = f["retry_after_ms"]
        fields[LIMIT_FIELD] = {"per_second": f.get("per_second"), "burst": f.get("burst")}
    return fields
