"""Credit endpoints: an admin's view and adjustment of a user's credit, and the user's own view.

GET  admin/users/{user_id}/credit   score, tier, the tier's limits, usage, ledger (newest first)
POST admin/users/{user_id}/credit   {delta, reason}: change the score (clamped), audited
GET  me/credit                      the caller's own score, tier, limits and usage
POST admin/credit/recovery/run      {reason}: run credit recovery now, audited
POST admin/credit/recount           {reason}: rebuild the groups-created counts, audited
"""

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from synapse.module_api import JsonDict, ModuleApi
from synapse.module_api.errors import Codes, SynapseError

from synapse_compliance.core.credit import ADMIN_ADJUSTMENT, Standing, Tier
from synapse_compliance.core.credit_recount import RecountSettings
from synapse_compliance.http._auth import require_admin, require_user
from synapse_compliance.http._parse import (
    bad_param,
    encode_page_token,
    json_body,
    local_user,
    page_limit,
    page_position,
    reject_unknown_fields,
    required_str,
)
from synapse_compliance.http._router import Route, route
from synapse_compliance.storage.audit_store import AuditEntry, append_audit_txn
from synapse_compliance.storage.credit_recount import (
    Step,
    TxnSql,
    recount_steps,
    run_steps_async,
)
from synapse_compliance.storage.credit_store import CreditChange, CreditStore
from synapse_compliance.storage.schema import SchemaManager
from synapse_compliance.tasks.credit_recovery import CreditRecovery
from synapse_compliance.tasks.notices import NoticeSender

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest

AUDIT_ACTION = "credit.adjust"
# Larger changes are surely typos (the whole range is usually 0-1000).
MAX_DELTA = 1_000_000_000


def tier_json(tier: Tier) -> JsonDict:
    """The API shape of a tier's limits."""
    return {
        "name": tier.name,
        "min_score": tier.min_score,
        "max_groups_created": tier.max_groups_created,
        "max_groups_joined": tier.max_groups_joined,
        "max_group_size": tier.max_group_size,
        "may_invite": tier.may_invite,
        "may_manage": tier.may_manage,
        "may_create_public": tier.may_create_public,
        "message_rate": {"per_second": tier.message_rate.per_second, "burst": tier.message_rate.burst},
        "federation": tier.federation,
    }


def standing_json(user_id: str, standing: Standing, started: bool) -> JsonDict:
    """Score, tier, limits and usage."""
    return {
        "user_id": user_id,
        "score": standing.score,
        "tier": standing.tier.name,
        "limits": tier_json(standing.tier),
        "usage": {"groups_created": standing.groups_created, "groups_joined": standing.groups_joined},
        "ledger_started": started,
    }


def _delta(body: JsonDict) -> int:
    if "delta" not in body:
        raise SynapseError(400, "delta: missing", Codes.MISSING_PARAM)
    value = body["delta"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_param("delta", f"must be an integer, not {type(value).__name__}")
    if value == 0:
        raise bad_param("delta", "must not be 0")
    if abs(value) > MAX_DELTA:
        raise bad_param("delta", f"must be from -{MAX_DELTA} to {MAX_DELTA}")
    return value


class CreditEndpoints:
    """Handlers for the credit routes."""

    def __init__(
        self,
        api: ModuleApi,
        store: CreditStore,
        groups_joined: Callable[[str], Awaitable[int]] | None = None,
    ) -> None:
        self._api = api
        self._store = store
        # Counts the governed groups a user is in (callbacks/credit_caps.py); None: not shown.
        self._groups_joined = groups_joined

    def routes(self) -> list[Route]:
        """The routes these handlers serve."""
        return [
            route("GET", "admin/users/{user_id}/credit", self.get_credit),
            route("POST", "admin/users/{user_id}/credit", self.post_credit),
            route("GET", "me/credit", self.get_me),
        ]

    async def _standing_json(self, user_id: str) -> JsonDict:
        state = await self._store.get_credit(user_id)
        groups = await self._store.groups.count_groups_created(user_id)
        joined = await self._groups_joined(user_id) if self._groups_joined is not None else 0
        standing = Standing(state.score, state.tier, groups, groups_joined=joined)
        return standing_json(user_id, standing, state.started)

    async def get_credit(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        await require_admin(self._api, request)
        user_id = await local_user(self._api, params["user_id"])
        limit = page_limit(request)
        before = page_position(request, "cl")
        body = await self._standing_json(user_id)
        entries = await self._store.list_ledger(user_id, before_id=before, limit=limit)
        body["ledger"] = [
            {
                "delta": e.entry.delta,
                "reason_code": e.entry.reason_code,
                "reason": e.entry.reason,
                "actor": e.entry.actor,
                "case_id": e.entry.case_id,
                "ts": e.entry.ts,
            }
            for e in entries
        ]
        if len(entries) == limit:
            body["next_batch"] = encode_page_token("cl", entries[-1].id)
        return 200, body

    async def post_credit(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        actor = await require_admin(self._api, request)
        user_id = await local_user(self._api, params["user_id"])
        body = json_body(request)
        reject_unknown_fields(body, {"delta", "reason"})
        delta = _delta(body)
        reason = required_str(body, "reason")
        outcome = await self._store.change(
            user_id,
            CreditChange(
                delta=delta,
                reason_code=ADMIN_ADJUSTMENT,
                reason=reason,
                actor=actor,
                audit_action=AUDIT_ACTION,
            ),
        )
        return 200, {
            "user_id": user_id,
            "requested_delta": delta,
            "applied_delta": outcome.applied,
            "score": outcome.after.score,
            "tier": outcome.after.tier.name,
            "previous_tier": outcome.before.tier.name,
            "limits": tier_json(outcome.after.tier),
        }

    async def get_me(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        user_id = await require_user(self._api, request)
        return 200, await self._standing_json(user_id)


RECOVERY_RUN_ACTION = "credit.recovery.run"


class CreditJobEndpoints:
    """Handlers that run the credit jobs on demand: recovery and the groups recount."""

    def __init__(
        self,
        api: ModuleApi,
        recovery: CreditRecovery,
        recount: RecountSettings,
        sender: NoticeSender,
        schema: SchemaManager,
    ) -> None:
        self._api = api
        self._schema = schema
        self._recovery = recovery
        self._recount = recount
        self._sender = sender

    def routes(self) -> list[Route]:
        """The routes these handlers serve."""
        return [
            route("POST", "admin/credit/recovery/run", self.run_recovery),
            route("POST", "admin/credit/recount", self.run_recount),
        ]

    async def run_recovery(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        actor = await require_admin(self._api, request)
        body = json_body(request)
        reject_unknown_fields(body, {"reason"})
        reason = required_str(body, "reason")
        run = await self._recovery.run_once()
        summary: JsonDict = {
            "enabled": run.enabled,
            "period": run.period,
            "granted": run.granted,
            "points_granted": run.points_granted,
            "tier_changes": run.tier_changes,
            "blocked": run.blocked,
        }
        # One entry for the run (each grant is a ledger row of its own, actor synapse_compliance).
        await self._api.run_db_interaction(
            "compliance_audit_recovery_run",
            append_audit_txn,
            AuditEntry(actor=actor, action=RECOVERY_RUN_ACTION, target=None, reason=reason, details=summary),
            self._api.get_current_time_msec(),
        )
        delivered = await self._sender.deliver_due() if self._sender.can_send and run.tier_changes else 0
        return 200, {**summary, "granted_users": list(run.granted_users), "notices_delivered": delivered}

    async def run_recount(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        actor = await require_admin(self._api, request)
        body = json_body(request)
        reject_unknown_fields(body, {"reason"})
        reason = required_str(body, "reason")
        await self._schema.ready()
        steps = recount_steps(
            self._recount, actor=actor, reason=reason, now_ms=self._api.get_current_time_msec()
        )

        async def execute(step: Step) -> object:
            return await self._api.run_db_interaction(
                "compliance_credit_recount", lambda txn: step(TxnSql(txn))
            )

        report = await run_steps_async(steps, execute)
        return 200, report.as_json()
