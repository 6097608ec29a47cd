"""synapse-compliance: a Synapse module for group chats under strict group-chat rules."""

__version__ = "0.1.0"

from synapse_compliance.module import ComplianceModule  # noqa: E402 (version first: submodules read it)

__all__ = ["ComplianceModule", "__version__"]
