"""`ComplianceOidcMappingProvider`: OIDC claims at login mark a user verified (DESIGN §4.2).

Configured per provider in homeserver.yaml (needs Synapse ≥ 1.39 for `on_user_login`; checked
against 1.163.2, which the package pins):

    oidc_providers:
      - idp_id: corp
        ...
        user_mapping_provider:
          module: synapse_compliance.oidc.ComplianceOidcMappingProvider
          config:
            localpart_template: "{{ user.preferred_username }}"   # Synapse's Jinja keys
            compliance: {claim: verified, value: true, level: 2}  # see oidc_config.py

Theory of operation. Synapse has no "SSO login happened, here are the claims" callback
(SYNAPSE_FACTS §4), and the one mapping-provider hook that sees the claims on every login,
`get_extra_attributes(userinfo, token)`, is not told which Matrix user is logging in; on a first
login that user does not even exist yet. So the work is split in two:

1. `get_extra_attributes` (every login, before Synapse looks up or registers the user) evaluates
   the claims (`core.oidc_claims.evaluate_oidc_claims`) and parks the verdict in memory, keyed by
   the remote user id (`get_remote_user_id(userinfo)`, normally `sub`).
2. `on_user_login` — an account-validity callback this provider registers itself — fires in
   `AuthHandler.complete_sso_login` with type `m.login.sso` and this provider's `idp_id`, once the
   local user exists and its `user_external_ids` mapping is recorded, and *before* the browser is
   redirected back to the client with its loginToken. It reads the user's external ids for this
   IdP, takes the parked verdict of that remote id, decides the change
   (`decide_oidc_verification`) and writes it through `IdentityStore.change_verification`
   (history row + audit entry, actor `oidc:<idp>`).

One code path thus covers first logins (the mapping is created between the two steps, also after
Synapse's username-picker page, which may take the user minutes — parked verdicts live 20 min,
longer than Synapse's 15-minute picker session) and later logins, and a verdict is applied only
when the login really completes (not when it fails after the claims were read). By the time the
client redeems its loginToken the verification is committed, so its first request already passes
the identity gate.

Failure handling: the login itself never fails because of this provider (fails open for login);
if the change cannot be written the user simply stays unverified and the gates refuse (fails
closed), and the error is logged. Parked verdicts are per process: Synapse's own SSO state
(username-mapping sessions, login extra attributes) is too, so SSO requests must already reach
one process.

Storage: the provider builds its own `IdentityStore`, with a `SchemaManager` that only *waits*
for the schema (`_SchemaWaiter`): the `ComplianceModule` instance applies the deltas; the
provider never runs DDL.

Private Synapse internals (`_SynapseInternals`, checked against 1.163.2, verified at start-up):
which provider entry this instance belongs to (its `idp_id`), a user's external ids, and the
in-process invalidation of the identity gate's cache (see there for why each is needed).
"""

import logging
from typing import TYPE_CHECKING, Any

import attrs
from authlib.oidc.core import UserInfo  # type: ignore[import-untyped]  # authlib ships no type hints
from synapse.handlers.oidc import JinjaOidcMappingConfig, JinjaOidcMappingProvider, Token
from synapse.module_api import ModuleApi
from synapse.module_api.errors import ConfigError, SynapseError
from synapse.types import JsonDict

from synapse_compliance.config import ConfigProblem
from synapse_compliance.core.oidc_claims import (
    ClaimVerdict,
    OidcClaimOutcome,
    OidcClaimPolicy,
    ParkedVerdicts,
    decide_oidc_verification,
    evaluate_oidc_claims,
)
from synapse_compliance.oidc_config import split_mapping_provider_config
from synapse_compliance.storage.identity_store import IdentityStore
from synapse_compliance.storage.schema import SchemaManager, current_version_txn

if TYPE_CHECKING:
    from synapse.config.oidc import OidcProviderConfig
    from synapse.storage.databases.main import DataStore
    from synapse.util.caches.descriptors import CachedFunction

logger = logging.getLogger(__name__)

LOGIN_TYPE_SSO = "m.login.sso"  # synapse.api.constants.LoginType.SSO: the on_user_login of the SSO step
_SCHEMA_POLL_S = 0.1
_SCHEMA_TIMEOUT_S = 10.0


def method_for(idp_id: str) -> str:
    """The verification method (and audit actor) of a provider: `oidc:<idp_id as configured>`.

    Synapse stores `idp_id: corp` as `oidc-corp`; the prefix is dropped again here. The legacy
    single provider without an idp_id is `oidc` in Synapse and `oidc:oidc` here.
    """
    return "oidc:" + idp_id.removeprefix("oidc-")


@attrs.frozen
class ComplianceOidcMappingConfig(JinjaOidcMappingConfig):
    """Synapse's Jinja mapping config (inherited, so its methods keep working) plus the policy."""

    policy: OidcClaimPolicy = attrs.field(kw_only=True)


class ComplianceOidcMappingProvider(JinjaOidcMappingProvider):
    """Synapse's Jinja mapping provider that also turns identity claims into verifications."""

    def __init__(self, config: ComplianceOidcMappingConfig, module_api: ModuleApi) -> None:
        # Exactly two parameters: Synapse then passes a ModuleApi (handlers/oidc.py:475-486).
        super().__init__(config, module_api)
        self._api = module_api
        self._policy = config.policy
        self._internals = _SynapseInternals(module_api)
        provider = self._internals.provider_config_of(config)
        self.idp_id = provider.idp_id
        self.method = method_for(provider.idp_id)
        self._schema = _SchemaWaiter(module_api)
        self._store = IdentityStore(module_api, self._schema, register_cache=False)
        self._parked = ParkedVerdicts()
        self._warned_no_gate_cache = False
        module_api.register_account_validity_callbacks(on_user_login=self._on_user_login)
        logger.info(
            "OIDC provider %s (%s): identity from claim %r, method %s",
            self.idp_id,
            provider.issuer,
            self._policy.claim,
            self.method,
        )

    @staticmethod
    def parse_config(config: dict[str, object]) -> ComplianceOidcMappingConfig:
        """Parse Synapse's Jinja keys and the `compliance:` mapping.

        Raises:
            ConfigError: with the key path; Synapse prefixes
                `oidc_providers.<item N>.user_mapping_provider.config`.
        """
        try:
            jinja_raw, policy = split_mapping_provider_config(config)
        except ConfigProblem as e:
            raise ConfigError(e.message, path=list(e.path)) from None
        jinja = JinjaOidcMappingProvider.parse_config(jinja_raw)
        return ComplianceOidcMappingConfig(**attrs.asdict(jinja, recurse=False), policy=policy)

    async def get_extra_attributes(self, userinfo: UserInfo, token: Token) -> JsonDict:
        """Step 1, on every login: evaluate the claims and park the verdict by remote user id."""
        extras = await super().get_extra_attributes(userinfo, token)
        try:
            verdict = evaluate_oidc_claims(userinfo, self._policy)
            if verdict.verified or self._policy.revoke_when_absent:
                remote_id = str(self.get_remote_user_id(userinfo))
                self._parked.put(remote_id, verdict, self._api.get_current_time_msec())
        except Exception:  # never fail the login over this (the user stays as they were)
            logger.exception("OIDC provider %s: could not read the identity claims", self.idp_id)
        return extras

    async def _on_user_login(
        self, user_id: str, auth_provider_type: str | None, auth_provider_id: str | None
    ) -> None:
        """Step 2: the SSO login of `user_id` through this provider completes; apply its verdict."""
        if auth_provider_type != LOGIN_TYPE_SSO or auth_provider_id != self.idp_id or not self._parked:
            return
        try:
            external_ids = await self._internals.external_ids_of(user_id)
            remote_ids = [ext for provider, ext in external_ids if provider == self.idp_id]
            verdict = self._parked.take(remote_ids, self._api.get_current_time_msec())
            if verdict is not None:
                await self._apply(user_id, verdict)
        except SynapseError as e:  # storage not ready (503): the user stays as they were
            logger.warning("OIDC login of %s: verification not recorded: %s", user_id, e.msg)
        except Exception:
            logger.exception("OIDC login of %s: verification not recorded", user_id)

    async def _apply(self, user_id: str, verdict: ClaimVerdict) -> None:
        now = self._api.get_current_time_msec()
        # Read uncached: this store's own cache is not invalidated by admin changes made through
        # the module's store, so only the database is a trustworthy "current".
        current = await self._store.read_verification(user_id)
        outcome = decide_oidc_verification(current, verdict, self.method, self._policy, now)
        if outcome.change is None:
            logger.debug("OIDC login of %s via %s: %s", user_id, self.idp_id, outcome.reason_code)
            return
        reason = self._reason(outcome)
        result = await self._store.change_verification(
            user_id, outcome.change, actor=self.method, reason=reason, note=reason
        )
        if not result.decision.allowed:
            logger.warning(
                "OIDC login of %s via %s: change refused (%s)",
                user_id,
                self.idp_id,
                result.decision.reason_code,
            )
            return
        self._invalidate_gate_cache(user_id)
        logger.info(
            "OIDC login of %s via %s: %s (%s, level %s)",
            user_id,
            self.idp_id,
            result.verification.status.value,
            outcome.reason_code,
            result.verification.level,
        )

    def _reason(self, outcome: OidcClaimOutcome) -> str:
        change = outcome.change
        assert change is not None
        if change.level is None:
            return f"OIDC login via {self.idp_id}: claim {self._policy.claim!r} no longer says verified"
        return (
            f"OIDC login via {self.idp_id}: claim {self._policy.claim!r} says verified "
            f"(level {change.level}; {outcome.reason_code})"
        )

    def _invalidate_gate_cache(self, user_id: str) -> None:
        # `change_verification` invalidated this store's cache and told other workers; the
        # ComplianceModule's own store in this process caches separately (see _SynapseInternals).
        own_lookup = self._store.verification_cache
        found = self._internals.invalidate_registered(own_lookup, (user_id,))
        if not found and not self._warned_no_gate_cache:
            self._warned_no_gate_cache = True
            logger.warning(
                "OIDC provider %s: no ComplianceModule identity cache in this process; is "
                "synapse_compliance.ComplianceModule listed under `modules:`?",
                self.idp_id,
            )


class _SchemaWaiter(SchemaManager):
    """A `SchemaManager` that never applies deltas: it waits for the module's instance to.

    `SchemaManager.start()` on the background-tasks process would apply the deltas a second
    time, concurrently with the `ComplianceModule`'s own manager, so this one reads
    `compliance_schema_version` on demand instead, until it reaches the target version.
    """

    def __init__(self, api: ModuleApi) -> None:
        super().__init__(api)
        self._module_api = api
        self._seen_ready = False

    def start(self) -> None:
        """Refused: only the `ComplianceModule` applies schema deltas."""
        raise RuntimeError("the OIDC mapping provider waits for the schema; it never applies it")

    @property
    def is_ready(self) -> bool:
        """True once the schema was seen at the target version."""
        return self._seen_ready

    async def ready(self) -> None:
        """Wait (bounded) until the schema is at the target version.

        Raises:
            SynapseError: 503 when it is still not there after `_SCHEMA_TIMEOUT_S`.
        """
        waited = 0.0
        while not self._seen_ready:
            try:
                version = await self._module_api.run_db_interaction(
                    "compliance_oidc_schema_version", current_version_txn
                )
            except Exception:  # the version table does not exist before the first upgrade
                version = 0
            if version >= self.target_version:
                self._seen_ready = True
                return
            if waited >= _SCHEMA_TIMEOUT_S:
                raise SynapseError(
                    503,
                    f"compliance schema is at version {version}, not {self.target_version}: "
                    "is synapse_compliance.ComplianceModule loaded?",
                )
            await self._module_api.sleep(_SCHEMA_POLL_S)
            waited += _SCHEMA_POLL_S


class _SynapseInternals:
    """The Synapse internals this provider relies on, checked against Synapse 1.163.2.

    Kept here rather than in `_synapse_private.py` (owned by the module's core) because only the
    mapping provider needs them; `__init__` checks them all so a Synapse upgrade that moves one
    stops start-up loudly (the OIDC handler, and with it this provider, is built in
    `synapse.app._base.start`, before the modules).
    """

    def __init__(self, api: ModuleApi) -> None:
        self._hs = api._hs
        self._datastore: DataStore = self._hs.get_datastores().main
        try:
            providers = self._hs.config.oidc.oidc_providers
            if not all(
                hasattr(p, "user_mapping_provider_config") and hasattr(p, "idp_id") for p in providers
            ):
                raise TypeError("OidcProviderConfig has no user_mapping_provider_config/idp_id")
            if not callable(getattr(self._datastore, "get_external_ids_by_user", None)):
                raise TypeError("the main store has no get_external_ids_by_user")
            if not isinstance(getattr(self._datastore, "external_cached_functions", None), dict):
                raise TypeError("the main store has no external_cached_functions")
        except Exception as e:
            raise RuntimeError(
                "synapse_compliance.oidc: a Synapse internal it relies on has moved "
                f"(checked against Synapse 1.163.2): {e!r}"
            ) from e

    def provider_config_of(self, config: object) -> "OidcProviderConfig":
        """The `oidc_providers` entry whose parsed mapping-provider config is `config`.

        Why private: a mapping provider is not told its provider's `idp_id`, which is both the
        `auth_provider` of `user_external_ids` and what `on_user_login` reports. Synapse hands
        each provider exactly the object `parse_config` returned (handlers/oidc.py:479-486),
        so identity finds the entry.

        Raises:
            RuntimeError: no entry holds `config`.
        """
        for provider in self._hs.config.oidc.oidc_providers:
            if provider.user_mapping_provider_config is config:
                return provider
        raise RuntimeError("synapse_compliance.oidc: cannot find the oidc_providers entry of this provider")

    async def external_ids_of(self, user_id: str) -> list[tuple[str, str]]:
        """`(auth_provider, external_id)` pairs of a local user.

        Why private: ModuleApi can record external ids (`record_user_external_id`) but not read
        them; this is how the local user of a login is tied to the remote id of its claims.
        """
        return await self._datastore.get_external_ids_by_user(user_id)

    def invalidate_registered(self, cached_func: "CachedFunction[Any]", key: tuple[object, ...]) -> bool:
        """Invalidate `key` in the cache registered under `cached_func`'s name, if that is another.

        Why private: the ComplianceModule's `IdentityStore` and this provider's are two objects
        with two caches registered under one name; `ModuleApi.invalidate_cache` clears the one it
        is given and tells *other* workers, so the gate's cache in this very process would keep
        the old verification. The registry (`external_cached_functions`, last registration wins,
        and the module registers after the OIDC handler is built) holds the gate's one.

        Returns:
            False when nothing but `cached_func` itself is registered under the name.
        """
        name = f"{cached_func.__module__}.{cached_func.__name__}"
        registered = self._datastore.external_cached_functions.get(name)
        if registered is None or registered is cached_func:
            return False
        registered.invalidate(key)
        return True
