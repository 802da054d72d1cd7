"""Rate limits (the `limits` library): per client address before a token is known, per
token after.  In Redis when `INV_REDIS_URL` is set, so every server shares one budget;
in memory otherwise.  If Redis goes away the server keeps serving, unlimited, and logs
one warning until it is back.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Decision", "RateLimits", "parse_limit"]

log = logging.getLogger("inv.api")


def parse_limit(text: str) -> Any:
    """A `limits` string the settings have checked (`Settings._rate`): its first limit."""
    from limits import parse_many

    return parse_many(text)[0]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # seconds until the window starts over

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset).encode()),
        ]


class RateLimits:
    """The two budgets and where they are counted."""

    def __init__(self, anonymous: str, token: str, redis_url: str | None) -> None:
        from limits import storage, strategies

        self.anonymous = parse_limit(anonymous)
        self.token = parse_limit(token)
        if redis_url:
            self.storage: Any = storage.storage_from_string(
                redis_url,
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
                key_prefix="inv-ratelimit",
            )
        else:
            self.storage = storage.MemoryStorage()
        self.limiter = strategies.FixedWindowRateLimiter(self.storage)
        self.shared = bool(redis_url)
        self._down_since: float | None = None

    def check(self, kind: str, identity: str) -> Decision | None:
        """Count one request of `kind` (`anonymous` or `token`) for `identity`; None when
        the counter's storage is unreachable (the request is let through)."""
        item = self.anonymous if kind == "anonymous" else self.token
        try:
            allowed = self.limiter.hit(item, kind, identity)
            stats = self.limiter.get_window_stats(item, kind, identity)
        except Exception as exc:  # Redis down or slow: serve, say so once
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("rate limits are not counted: their storage is unreachable (%s)", exc)
            return None
        if self._down_since is not None:
            self._down_since = None
            log.warning("rate limits are counted again: their storage is back")
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return Decision(allowed, item.amount, max(0, stats.remaining), reset)
