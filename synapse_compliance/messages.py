"""Human wording of refusals. The core decides; this module only says it in words.

Messages never contain personal data: they speak of the user's status, never of their identity.
"""

from collections.abc import Mapping

from synapse_compliance.core.credit import Tier
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


# --- archive guards (core/guards.py) ---------------------------------------------------------

MIN_LIFETIME_FIELD = "io.synapse_compliance.min_lifetime_ms"


def guard_refusal_fields(decision: Decision) -> dict[str, object]:
    """The Matrix error fields for a refused retention policy or encryption in a group."""
    f = decision.facts
    if f.get("growth"):
        return _growth_refusal_fields(decision)
    if decision.reason_code == "retention_too_short":
        given = (
            "max_lifetime must be a whole number of milliseconds"
            if f.get("invalid")
            else f"max_lifetime {f.get('max_lifetime')} ms is shorter than that"
        )
        return {
            "error": (
                f"Group chat logs must be kept at least {f.get('min_days')} days on this server, so a "
                f"group's retention policy (m.room.retention) may not be shorter than "
                f"{f.get('min_lifetime_ms')} ms; {given}. Leave max_lifetime out to keep messages "
                "for as long as the server does."
            ),
            REASON_FIELD: decision.reason_code,
            MIN_LIFETIME_FIELD: f.get("min_lifetime_ms"),
        }
    why = (
        "Group chats here must keep a log the server can read, and an end-to-end encrypted "
        "group's log is unreadable ciphertext, which cannot satisfy the group-chat rules."
    )
    if f.get("forced_by_server"):
        what = (
            f"This server encrypts new rooms created with the {f.get('preset')} preset by default "
            "(encryption_enabled_by_default_for_room_type), but encrypted groups are forbidden "
            "(retention.encrypted_rooms: forbid). Ask the server's administrators to change one "
            "of these settings."
        )
    else:
        what = "Encryption (m.room.encryption) cannot be enabled in a group on this server."
    return {"error": f"{what} {why} Direct chats may still be encrypted.", REASON_FIELD: decision.reason_code}


def _growth_refusal_fields(decision: Decision) -> dict[str, object]:
    """Why a direct chat may not become a group (a third member invited or joining)."""
    f = decision.facts
    if decision.reason_code == "retention_too_short":
        why = (
            f"its retention policy (m.room.retention) keeps messages for less than the "
            f"{f.get('min_days')} days group chat logs must be kept on this server"
        )
    else:
        why = (
            "it is end-to-end encrypted, and groups here must keep a log the server can read "
            "(retention.encrypted_rooms: forbid)"
        )
    fields: dict[str, object] = {
        "error": (
            f"A third member would make this direct chat a group, but {why}. Start a new group "
            "for the people you want to add."
        ),
        REASON_FIELD: decision.reason_code,
    }
    if decision.reason_code == "retention_too_short":
        fields[MIN_LIFETIME_FIELD] = f.get("min_lifetime_ms")
    return fields


def _days(value_ms: object) -> str:
    return f"{int(str(value_ms)) / 86_400_000:g}d" if value_ms is not None else "unset"


def _seconds(value_ms: object) -> str:
    return f"{int(str(value_ms)) / 1000:.0f}" if value_ms is not None else "?"


def _listed(values: object) -> str:
    return ", ".join(map(str, values)) if isinstance(values, list | tuple) else str(values)


def setting_warning_message(code: str, facts: Mapping[str, object]) -> str:
    """Words for a `SettingWarning`: what the setting does to the archive and what to change."""
    value = _days(facts.get("value_ms"))
    min_days = facts.get("min_days")
    words = {
        "redaction_retention_short": (
            f"redaction_retention_period is {value}: Synapse overwrites a redacted event's JSON that "
            f"long after the redaction. The archive keeps the original only if the archiver copied it "
            f"first, and a window shorter than {_days(facts.get('margin_ms'))} is not survived by an "
            "outage of the background-tasks instance. Set it to null, or to 7d or more."
        ),
        "retention_default_too_short": (
            f"retention.default_policy.max_lifetime is {value}, shorter than retention.min_days "
            f"({min_days}d): Synapse purges rooms without their own policy early. Raise it or remove it."
        ),
        "retention_allowed_max_too_short": (
            f"retention.allowed_lifetime_max is {value}, shorter than retention.min_days ({min_days}d): "
            "Synapse caps every room's max_lifetime below the archive's minimum. Raise it or remove it."
        ),
        "retention_purge_jobs": (
            f"Synapse's retention is enabled with {facts.get('jobs')} purge job(s), and "
            f"retention.allowed_lifetime_min ({_days(facts.get('allowed_min_ms'))}) does not stop a "
            f"room's policy going below retention.min_days ({min_days}d); remote users' m.room.retention "
            "events cannot be refused. Purged history stays only in the archive. Set "
            f"allowed_lifetime_min to {min_days}d or more."
        ),
        "user_ips_max_age_short": (
            f"user_ips_max_age is {value}: Synapse deletes connection records (IP, user agent) after "
            f"that. The module copies them periodically; a window shorter than "
            f"{_days(facts.get('margin_ms'))} is not survived by an outage of the background-tasks "
            "instance. Set it to 7d or more (the default is 28d)."
        ),
        "forgotten_room_purge": (
            f"forgotten_room_retention_period is {value}: Synapse purges a room every local member "
            "has forgotten, and no module can veto that purge. The archive keeps what it copied "
            "before; remove the setting to keep groups in Synapse too."
        ),
        "encryption_by_default": (
            "encryption_enabled_by_default_for_room_type encrypts new rooms created with the "
            f"{_listed(facts.get('presets'))} preset(s), and retention.encrypted_rooms "
            "is forbid: creating a group with those presets is refused. Set the Synapse option to off, "
            "or retention.encrypted_rooms to archive_ciphertext."
        ),
        "archive_lag_near_redaction_window": (
            f"The archiver is {_seconds(facts.get('lag_ms'))} s behind, more than half of "
            f"redaction_retention_period ({value}): events redacted now may be archived censored. "
            "Check the background-tasks instance's log."
        ),
    }
    return words.get(code, code)


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
    elif decision.reason_code == "group_join_cap":
        what = (
            f"You are in {f.get('usage')} {'group' if f.get('usage') == 1 else 'groups'}, and your "
            f"credit tier ({tier}) allows {f.get('limit')} (max_groups_joined). Leave a group, or "
            "gain credit, to join another."
        )
    elif decision.reason_code == "group_size_cap":
        # About the group's owner, not the requester: their credit is not this user's to raise.
        return (
            f"This group has {f.get('usage')} members and pending invites, and its owner's credit "
            f"tier ({tier}) allows {f.get('limit')} (max_group_size). A place frees up when a "
            "member leaves or an invite is withdrawn or declined; the limit grows with the "
            "owner's credit."
        )
    elif decision.reason_code == "may_not_invite":
        what = (
            f"Your credit tier ({tier}) does not allow inviting people to groups (may_invite); "
            "a group's other members can invite them."
        )
    elif decision.reason_code == "may_not_manage":
        return (
            f"{f.get('subject')} cannot be made a manager of a group: their credit tier ({tier}) "
            "does not allow managing groups (may_manage). They can be made a manager once their "
            "credit reaches a tier that allows it."
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


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def tier_limits_text(tier: Tier) -> str:
    """A tier's limits in words, for notices."""
    rate = tier.message_rate
    return (
        f"create up to {tier.max_groups_created} group{'' if tier.max_groups_created == 1 else 's'} "
        f"and be in up to {tier.max_groups_joined}; "
        f"groups you own may have up to {tier.max_group_size} members (joined and invited); "
        f"invite people: {_yes_no(tier.may_invite)}; manage groups: {_yes_no(tier.may_manage)}; "
        f"create public groups: {_yes_no(tier.may_create_public)}; messages in groups: "
        f"{rate.per_second:g} per second, bursts of up to {rate.burst}"
    )


def tier_change_notice_body(before: Tier, after: Tier, score: int, reason: str) -> str:
    """The server notice telling a user their credit tier changed: old and new, why, new limits."""
    direction = "rose" if after.min_score > before.min_score else "dropped"
    return (
        f"Your credit tier {direction} from {before.name} to {after.name} (credit score now "
        f"{score}). Reason: {reason}. From now on you may {tier_limits_text(after)}. "
        "GET /_synapse/client/compliance/v1/me/credit shows your credit and limits."
    )
