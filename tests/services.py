"""The local Redis for tests (127.0.0.1:6379, `INV_TEST_REDIS_URL`), or a skip; under
CI=true a missing Redis fails the test instead: CI must never pass without it."""

from __future__ import annotations

import os

import pytest

REDIS_URL = os.environ.get("INV_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_or_skip(url: str = REDIS_URL) -> str:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        message = f"Redis is not reachable at {url}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url
