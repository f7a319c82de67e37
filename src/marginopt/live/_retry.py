"""How hard to try an exchange endpoint (kept apart from the client so that reading snapshots
never imports ccxt, which takes a second or more to import)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one endpoint: ``attempts`` in all, ``timeout_s`` per request, exponential
    back-off from ``backoff_s`` capped at ``max_backoff_s``. A 429's Retry-After is waited out
    unless it exceeds ``max_retry_after_s`` (then the call fails at once, saying how long)."""

    attempts: int = 4
    timeout_s: float = 10.0
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or not self.timeout_s > 0 or self.backoff_s < 0:
            raise ValueError("attempts >= 1, timeout_s > 0 and backoff_s >= 0 are required")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failure (1-based)."""
        return min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempt - 1))
