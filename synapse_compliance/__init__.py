"""synapse-compliance: a Synapse module for group chats under strict group-chat rules.

`ComplianceModule` is imported lazily, so the pure parts (config, core, CLI) load without Synapse.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from synapse_compliance.module import ComplianceModule

__all__ = ["ComplianceModule", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "ComplianceModule":
        from synapse_compliance.module import ComplianceModule  # noqa: PLC0415 (lazy by design)

        return ComplianceModule
    raise AttributeError(f"module 'synapse_compliance' has no attribute {name!r}")
