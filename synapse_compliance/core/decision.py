"""The answer every policy function gives: allowed, or refused with a stable reason and its facts.

A refusal carries the Matrix errcode the shell should answer with, a snake_case reason code that
tools can rely on (DESIGN §5), and the numbers or states behind it (`facts`), so the shell can
explain the refusal in words without deciding anything itself.
"""

from collections.abc import Mapping

import attrs


@attrs.frozen
class Decision:
    """Outcome of a policy check."""

    allowed: bool
    errcode: str | None = None
    reason_code: str | None = None
    facts: Mapping[str, object] = attrs.field(factory=dict)

    @classmethod
    def refuse(cls, errcode: str, reason_code: str, **facts: object) -> "Decision":
        """A refusal with its reason code and the facts that explain it."""
        return cls(False, errcode, reason_code, facts)


ALLOW = Decision(True)

FORBIDDEN = "M_FORBIDDEN"
INVALID_PARAM = "M_INVALID_PARAM"
