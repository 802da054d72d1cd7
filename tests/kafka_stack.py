"""The kafka backend for tests: a real broker, a real worker, real PostgreSQL and Redis.

    stacks = StackPool(broker, redis_url=...)   # one per test session or module
    backend = stacks.backend()                  # a KafkaBackend in --wait mode, with its
                                                # own database, topic and running worker
    ...
    backend.close()                             # stops the worker, drops the database

Every backend gets its own database (cloned from the migrated template, see `pg`), its
own topic and its own consumer group, served by a `Worker` running in a thread of the
test process: the same class `inv worker` runs, through the same broker.  Joining a group
takes Tansu about a second whatever the session timeout, so the pool keeps a few stacks
joined ahead, in the background: a test takes one that is ready.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from broker import Broker
from pg import drop_database, fresh_database

from backends.kafka import KafkaBackend, admin
from backends.kafka.worker import Worker

__all__ = ["Stack", "StackBackend", "StackPool"]

JOIN_TIMEOUT = 30.0


@dataclass
class Stack:
    url: str
    topic: str
    group: str
    worker: Worker
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(timeout=30)
        self.worker.backend.close()
        drop_database(self.url)


class StackBackend(KafkaBackend):
    """A KafkaBackend whose `close` also stops its worker and drops its database."""

    stack: Stack | None = None

    def close(self) -> None:
        super().close()
        stack, self.stack = self.stack, None
        if stack is not None:
            stack.stop()
            if stack.errors:
                raise AssertionError(f"the worker failed: {stack.errors[0]!r}")


class StackPool:
    """Stacks (database + topic + joined worker) made ahead, in the background."""

    def __init__(
        self,
        broker: Broker,
        *,
        redis_url: str | None = None,
        ahead: int = 3,
        partitions: int = 6,
    ) -> None:
        self.broker = broker
        self.redis_url = redis_url
        self.partitions = partitions
        self._ready: queue.Queue[Stack | BaseException] = queue.Queue()
        self._closed = False
        self._makers: list[threading.Thread] = []
        for _ in range(ahead):
            self._make_one()

    def _make_one(self) -> None:
        if self._closed:
            return
        maker = threading.Thread(target=self._make, daemon=True)
        self._makers.append(maker)
        maker.start()

    def _make(self) -> None:
        try:
            self._ready.put(self.make_stack())
        except BaseException as exc:
            self._ready.put(exc)

    def kafka_backend(self, url: str, topic: str, **kwargs: Any) -> KafkaBackend:
        return KafkaBackend(
            url,
            bootstrap_servers=self.broker.bootstrap,
            topic=topic,
            partitions=self.partitions,
            timeout=5.0,
            redis_url=self.redis_url,
            cache_prefix=topic,
            **kwargs,
        )

    def make_stack(self, *, batch_ms: int = 5) -> Stack:
        url = fresh_database()
        topic = f"inv-test-{uuid.uuid4().hex[:12]}"
        group = f"{topic}-workers"
        backend = self.kafka_backend(url, topic, actor="worker")
        admin.create_topics(backend)
        worker = Worker(
            backend, group=group, batch_ms=batch_ms, session_timeout_ms=2000, report_every=3600
        )
        errors: list[BaseException] = []

        def run() -> None:
            try:
                worker.run()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, name=f"worker-{topic}", daemon=True)
        thread.start()
        if not worker.joined.wait(JOIN_TIMEOUT):
            worker.stop()
            raise RuntimeError(f"the worker did not join its group in {JOIN_TIMEOUT} s: {errors}")
        return Stack(url, topic, group, worker, thread, errors)

    def take(self) -> Stack:
        got = self._ready.get(timeout=JOIN_TIMEOUT * 2)
        self._make_one()
        if isinstance(got, BaseException):
            raise got
        return got

    def backend(
        self, *, actor: str = "tester", source: str = "cli", wait: bool = True
    ) -> StackBackend:
        """A kafka backend in `wait` mode over a stack of its own."""
        stack = self.take()
        backend = StackBackend(
            stack.url,
            bootstrap_servers=self.broker.bootstrap,
            topic=stack.topic,
            partitions=self.partitions,
            timeout=5.0,
            redis_url=self.redis_url,
            cache_prefix=stack.topic,
            wait=wait,
            wait_timeout=20.0,
            actor=actor,
            source=source,
        )
        backend.stack = stack
        return backend

    def close(self) -> None:
        self._closed = True
        for maker in self._makers:
            maker.join(timeout=JOIN_TIMEOUT)
        while True:
            try:
                got = self._ready.get_nowait()
            except queue.Empty:
                break
            if isinstance(got, Stack):
                with contextlib.suppress(Exception):
                    got.stop()
