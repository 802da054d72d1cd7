"""What the tests need from outside: `unavailable` for a missing service or tool (a skip,
but a failure under CI=true: CI must never pass without it), and the local Redis
(127.0.0.1:6379, `INV_TEST_REDIS_URL`)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REDIS_URL = os.environ.get("INV_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(message: str) -> NoReturn:
    """Skip the test for want of `message`'s service; fail it under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def redis_or_skip(url: str = REDIS_URL) -> str:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        unavailable(f"Redis is not reachable at {url}: {exc}")
    return url


def delete_keys(prefix: str, url: str = REDIS_URL) -> None:
    """Delete every key under `prefix:` (what a test's cache wrote)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
