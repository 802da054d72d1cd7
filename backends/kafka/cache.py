"""The Redis read cache: cache-aside for `get(sku)`, written through by the worker.

One hash per product, `<prefix>:<generation>:item:<sku, case-folded>`, with a TTL (the
prefix is `inv` unless `INV_CACHE_PREFIX` says otherwise, for inventories sharing a Redis):

    p           the catalog fields, JSON (present once a reader has filled the entry)
    s:<store>   "<version>:<quantity>", one per store the product is stocked at

A read is one `EVALSHA` (the entry and the hit/miss counter together).  An entry without
`p` is a miss: the reader reads the database and fills it.  Every quantity carries the
stock row's version (one PostgreSQL sequence for all rows, so versions only grow) and a
field is only ever replaced by a *newer* version, by readers filling and by the worker
writing through alike: a slow reader can never put an older quantity back.

Changes made straight to PostgreSQL (catalog edits, removals, imports) drop the entries
they touch after their commit (`forget`), or every entry at once (`forget_all` moves the
generation on; the old entries expire).  `forget` leaves the entry's epoch behind, one
higher: a reader that read before it cannot fill afterwards (its stamp is older).  Misses
are filled from the primary, never from a replica that may not have the change yet.

Redis is optional: when it is down or slow (timeouts of a fraction of a second), reads go
to the database and the first failure logs one warning; the cache is not tried again by
that process for `RETRY_AFTER` seconds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..values import sku_key

if TYPE_CHECKING:
    import redis

__all__ = ["Cache", "Stamp"]

#: What `read` saw of an entry: (generation, epoch); `fill` is refused if it moved on.
Stamp = tuple[str, str]

log = logging.getLogger("inv.cache")

RETRY_AFTER = 5.0

# Every script's ARGV[1] is the key prefix (`inv` unless configured).  An entry's `e`
# field is its epoch: `forget` moves it on, and a fill read under an older epoch is refused.
_READ = """
local p = ARGV[1]
local g = redis.call('GET', p .. ':gen') or '0'
local entry = redis.call('HGETALL', p .. ':' .. g .. ':item:' .. ARGV[2])
local hit = 0
local e = '0'
for i = 1, #entry, 2 do
  if entry[i] == 'p' then hit = 1 end
  if entry[i] == 'e' then e = entry[i + 1] end
end
redis.call('HINCRBY', p .. ':stats', hit == 1 and 'hits' or 'misses', 1)
if hit == 0 then return {g, e} end
table.insert(entry, 1, e)
table.insert(entry, 1, g)
return entry
"""

# One quantity.  ARGV: prefix, sku, store.  {1, quantity} a hit; {2} a hit, and the store
# does not exist; {0} a miss (no catalog entry, or the store list is not cached).
_ONE = """
local p = ARGV[1]
local g = redis.call('GET', p .. ':gen') or '0'
local got = redis.call('HMGET', p .. ':' .. g .. ':item:' .. ARGV[2], 'p', 's:' .. ARGV[3])
local stores = p .. ':' .. g .. ':stores'
if not got[1] or redis.call('EXISTS', stores) == 0 then
  redis.call('HINCRBY', p .. ':stats', 'misses', 1)
  return {0}
end
redis.call('HINCRBY', p .. ':stats', 'hits', 1)
if got[2] then return {1, tonumber(string.match(got[2], ':(%d+)$'))} end
if redis.call('SISMEMBER', stores, ARGV[3]) == 1 then return {1, 0} end
return {2}
"""

# ARGV: prefix, ttl, then store codes.
_STORES = """
local p = ARGV[1]
local g = redis.call('GET', p .. ':gen') or '0'
local key = p .. ':' .. g .. ':stores'
redis.call('DEL', key)
for i = 3, #ARGV do redis.call('SADD', key, ARGV[i]) end
redis.call('EXPIRE', key, tonumber(ARGV[2]))
return 1
"""

# ARGV: prefix, generation, epoch, ttl, sku, catalog JSON, then (store, version, quantity).
_FILL = """
local p = ARGV[1]
local g = redis.call('GET', p .. ':gen') or '0'
if g ~= ARGV[2] then return 0 end
local key = p .. ':' .. g .. ':item:' .. ARGV[5]
if (redis.call('HGET', key, 'e') or '0') ~= ARGV[3] then return 0 end
for i = 7, #ARGV, 3 do
  local field = 's:' .. ARGV[i]
  local old = redis.call('HGET', key, field)
  local version = tonumber(ARGV[i + 1])
  if not old or tonumber(string.match(old, '^(%d+):')) < version then
    redis.call('HSET', key, field, ARGV[i + 1] .. ':' .. ARGV[i + 2])
  end
end
redis.call('HSET', key, 'p', ARGV[6])
redis.call('EXPIRE', key, tonumber(ARGV[4]))
return 1
"""

# ARGV: prefix, ttl, then one line per value: sku TAB store TAB version TAB quantity LF
# (one argument, not four a value: packing thousands of arguments costs the worker more
# than the script costs Redis; SKUs and store codes hold no control characters).
_WRITE = """
local p = ARGV[1]
local g = redis.call('GET', p .. ':gen') or '0'
local ttl = tonumber(ARGV[2])
local n = 0
local line = '([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t([^\\n]*)\\n'
for sku, store, v, q in string.gmatch(ARGV[3], line) do
  local key = p .. ':' .. g .. ':item:' .. sku
  local field = 's:' .. store
  local old = redis.call('HGET', key, field)
  local version = tonumber(v)
  if not old or tonumber(string.match(old, '^(%d+):')) < version then
    redis.call('HSET', key, field, v .. ':' .. q)
    if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, ttl) end
    n = n + 1
  end
end
return n
"""

# ARGV: prefix, ttl, then SKUs.  The entry goes; its epoch stays, one higher.
_FORGET = """
local p = ARGV[1]
local g = redis.call('GET', p .. ':gen') or '0'
for i = 3, #ARGV do
  local key = p .. ':' .. g .. ':item:' .. ARGV[i]
  local e = tonumber(redis.call('HGET', key, 'e') or '0')
  redis.call('DEL', key)
  redis.call('HSET', key, 'e', e + 1)
  redis.call('EXPIRE', key, tonumber(ARGV[2]))
end
return #ARGV - 2
"""


class Cache:
    """Redis at `url`, or nothing when Redis cannot be reached."""

    def __init__(
        self, url: str, *, ttl: int = 300, prefix: str = "inv", timeout: float = 0.25
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self.timeout = timeout
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._down_until = 0.0
        self._warned = False
        #: Hits and misses of this process (`<prefix>:stats` has everyone's).
        self.hits = 0
        self.misses = 0

    def where(self) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"

    def _redis(self) -> redis.Redis:
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(
                self.url,
                socket_connect_timeout=self.timeout,
                socket_timeout=self.timeout,
                health_check_interval=0,
            )
            self._scripts = {
                name: self._client.register_script(body)
                for name, body in (
                    ("read", _READ),
                    ("fill", _FILL),
                    ("write", _WRITE),
                    ("forget", _FORGET),
                    ("one", _ONE),
                    ("stores", _STORES),
                )
            }
        return self._client

    def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script; None (and one warning) when Redis is unavailable."""
        if self._down_until and time.monotonic() < self._down_until:
            return None
        import redis

        try:
            self._redis()
            return self._scripts[script](keys=keys, args=args)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError) as exc:
            self._down_until = time.monotonic() + RETRY_AFTER
            if not self._warned:
                self._warned = True
                log.warning(
                    "Redis at %s is unavailable (%s); reading from the database", self.where(), exc
                )
            return None

    @property
    def available(self) -> bool:
        return not (self._down_until and time.monotonic() < self._down_until)

    # -- reads ---------------------------------------------------------------------

    def read(
        self, key: str
    ) -> tuple[tuple[str, str] | None, dict[str, Any] | None, dict[str, int]]:
        """(stamp, catalog fields, stock) for a hit; (stamp, None, {}) for a miss; (None,
        None, {}) when Redis is down.  `stamp` (generation, epoch) goes back to `fill`."""
        reply = self._run("read", [], [self.prefix, key])
        if reply is None:
            return None, None, {}
        stamp = (reply[0].decode(), reply[1].decode())
        if len(reply) == 2:
            self.misses += 1
            return stamp, None, {}
        self.hits += 1
        catalog: dict[str, Any] | None = None
        stock: dict[str, int] = {}
        for name, value in zip(reply[2::2], reply[3::2], strict=True):
            if name == b"p":
                catalog = json.loads(value)
            elif name.startswith(b"s:"):
                stock[name[2:].decode()] = int(value.split(b":", 1)[1])
        return stamp, catalog, stock

    def quantity(self, key: str, store: str) -> int | None:
        """A quantity from the cache: an int for a hit, -1 when the store does not exist,
        None for a miss (or Redis down)."""
        reply = self._run("one", [], [self.prefix, key, store])
        if not reply or reply[0] == 0:
            self.misses += reply is not None
            return None
        self.hits += 1
        return int(reply[1]) if reply[0] == 1 else -1

    def fill_stores(self, codes: Iterable[str]) -> None:
        """Cache the store codes (what `quantity` tells an unknown store by)."""
        self._run("stores", [], [self.prefix, self.ttl, *codes])

    def forget_stores(self) -> bool:
        """Drop the cached store codes (after a store is added or removed)."""
        if not self.available:
            return False
        import redis

        try:
            raw = self._redis().get(f"{self.prefix}:gen") or b"0"
            generation = raw.decode() if isinstance(raw, bytes) else str(raw)
            self._redis().delete(f"{self.prefix}:{generation}:stores")
            return True
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            self._down_until = time.monotonic() + RETRY_AFTER
            return False

    def fill(
        self,
        stamp: Stamp,
        key: str,
        catalog: dict[str, Any],
        stock: Iterable[tuple[str, int, int]],
    ) -> None:
        """Store what a reader read after `read` gave it `stamp`: catalog fields and
        (store, version, quantity).  Refused if the entry was forgotten meanwhile."""
        generation, epoch = stamp
        args: list[Any] = [self.prefix, generation, epoch, self.ttl, key, json.dumps(catalog)]
        for store, version, quantity in stock:
            args += [store, version, quantity]
        self._run("fill", [], args)

    # -- writes --------------------------------------------------------------------

    def write_through(self, values: Iterable[tuple[str, str, int, int]]) -> bool:
        """Committed (sku, store, quantity, version) values; False if Redis was down."""
        lines = "".join(
            f"{sku_key(sku)}\t{store}\t{version}\t{quantity}\n"
            for sku, store, quantity, version in values
        )
        if not lines:
            return True
        return self._run("write", [], [self.prefix, self.ttl, lines]) is not None

    def forget(self, skus: Iterable[str]) -> bool:
        """Drop the entries of these SKUs (after a change made straight to the database)."""
        keys = sorted({sku_key(sku) for sku in skus})
        if not keys:
            return True
        return self._run("forget", [], [self.prefix, self.ttl, *keys]) is not None

    def forget_all(self) -> bool:
        """Drop every entry, by moving the generation on."""
        if not self.available:
            return False
        import redis

        try:
            self._redis().incr(f"{self.prefix}:gen")
            return True
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            self._down_until = time.monotonic() + RETRY_AFTER
            return False

    def stats(self) -> dict[str, Any]:
        """Health and the hit ratio of everyone using this Redis, for `inv status`."""
        import redis

        try:
            client = self._redis()
            started = time.perf_counter()
            client.ping()
            ping_ms = (time.perf_counter() - started) * 1000
            raw = client.hgetall(f"{self.prefix}:stats")
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            return {"where": self.where(), "ok": False, "error": str(exc)}
        hits = int(raw.get(b"hits", 0))
        misses = int(raw.get(b"misses", 0))
        total = hits + misses
        return {
            "where": self.where(),
            "ok": True,
            "ping_ms": round(ping_ms, 2),
            "hits": hits,
            "misses": misses,
            "hit_ratio": round(hits / total, 4) if total else None,
        }

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
