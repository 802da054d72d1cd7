"""`inv worker`: consume stock events in batches and apply them to PostgreSQL.

Any number of workers share the topic's partitions in one consumer group.  The loop:

1. take up to `batch_size` events, or what came within `batch_ms`;
2. apply them in one transaction (`backends.kafka.apply.apply_batch`): events already
   applied are skipped, the rest write their stock, audit rows and results, or are
   recorded as rejected; commit;
3. write the new quantities through to Redis (version-guarded), send rejected events to
   the dead-letter topic (`<topic>.dlq`);
4. commit the batch's offsets (asynchronously; synchronously when partitions are revoked
   and when the worker stops).

A reader thread owns the consumer (steps 1 and 4, and decoding the next batch while this
one applies); the worker's thread does 2 and 3.  A crash anywhere loses nothing and
applies nothing twice: before 2's commit nothing happened; after it, the events are in
`applied_events` and the redelivered batch finds them there (an offset commit lost in a
crash or a rebalance only means such duplicates).  While PostgreSQL is unreachable the
batch is retried with backoff (up to 5 s between tries) and no offset is committed.
SIGTERM (`stop()`) finishes the batch in hand, commits it and leaves the group; a batch
read ahead but not applied is not committed, so the partition's next owner reads it.

The counters (`Worker.counters`) are logged every `report_every` seconds: events applied,
rejected, duplicates skipped, batches, and the group's lag on this worker's partitions.
With `metrics` (`inv worker --metrics-port`, see `backends.kafka.metrics`) the same
counts, each batch's duration and the lag per partition (refreshed every second) are
served to Prometheus.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailable, ConfigurationError, InventoryError, PermissionDenied
from ..settings import DEFAULTS
from .apply import Batch, Message, Outcome, apply_batch, record_rejections, unprocessable

if TYPE_CHECKING:
    from .backend import KafkaBackend
    from .metrics import WorkerMetrics

__all__ = ["Counters", "Worker"]

log = logging.getLogger("inv.worker")


#: The interpreter's thread switch interval while a worker runs (seconds; Python's
#: default is 0.005).
SWITCH_INTERVAL = 0.0005

#: How often (seconds) the lag per partition is measured for the metrics.
LAG_EVERY = 1.0

#: How often a batch that fails (other than PostgreSQL being away) is tried before it is
#: split to find the message that fails.
TRIES = 3


def _merge(a: Outcome, b: Outcome) -> Outcome:
    return Outcome(
        applied=a.applied + b.applied,
        duplicates=a.duplicates + b.duplicates,
        rejected=a.rejected + b.rejected,
        stock=a.stock + b.stock,
        movements=a.movements + b.movements,
    )


@dataclass
class Counters:
    applied: int = 0
    rejected: int = 0
    duplicates: int = 0
    batches: int = 0
    retries: int = 0
    lag: int = 0


class Worker:
    """One member of the consumer group; `run()` until `stop()`."""

    def __init__(
        self,
        backend: KafkaBackend,
        *,
        group: str = DEFAULTS.kafka_group,
        batch_size: int = DEFAULTS.worker_batch_size,
        batch_ms: int = DEFAULTS.worker_batch_ms,
        session_timeout_ms: int = DEFAULTS.kafka_session_timeout_ms,
        health_file: Path | None = None,
        report_every: float = 10.0,
        on_batch: Callable[[Outcome], None] | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        if batch_size < 1 or batch_ms < 1:
            raise ValueError("batch_size and batch_ms must be at least 1")
        self.backend = backend
        self.group = group
        self.batch_size = batch_size
        self.batch_ms = batch_ms
        self.session_timeout_ms = session_timeout_ms
        self.health_file = health_file
        self.report_every = report_every
        self.on_batch = on_batch
        self.metrics = metrics
        self.counters = Counters()
        self._stop = threading.Event()
        self._dead_letters: Any = None
        self._stale: set[str] = set()  # SKUs whose write-through failed: forget them later
        self._assigned: list[Any] = []
        self._warned: dict[str, float] = {}
        #: Set once the group has given this worker its partitions (maybe none).
        self.joined = threading.Event()

    def stop(self) -> None:
        """Finish the batch in hand, commit it, and return from `run()`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def consumer_config(self) -> dict[str, Any]:
        return {
            **self.backend.kafka_config(),
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(100, self.session_timeout_ms // 4),
            "fetch.wait.max.ms": 10,
            "partition.assignment.strategy": "range",
            # A topic created after the worker started (`inv init` later) is found in
            # seconds, not librdkafka's default five minutes.
            "topic.metadata.refresh.interval.ms": 5000,
        }

    # -- the loop ------------------------------------------------------------------

    def run(self) -> Counters:
        """Apply batches until `stop()`.

        Three threads share the work so that each core has some: a reader owns the
        Kafka consumer (consume, decode the next batch, commit offsets, measure lag), this
        thread applies a batch, and a finisher writes each committed batch through to the
        cache, sends its rejections to the dead-letter topic, then hands its offsets to
        the reader, in batch order, while this thread applies the next one.  At most one
        decoded batch waits to be applied.  Offsets are committed asynchronously (the
        last ones synchronously when the worker stops): a commit that is lost only means
        events delivered again, which `applied_events` turns into duplicates.
        """
        backend = self.backend
        reader = _Reader(self)
        log.info(
            "worker started: group %s, topic %s at %s, database %s, batches of up to %d "
            "events or %d ms",
            self.group,
            backend.topic,
            backend.bootstrap_servers,
            backend.describe(),
            self.batch_size,
            self.batch_ms,
        )
        if self.metrics is not None and self.metrics.address is not None:
            log.info("metrics on http://%s:%d/metrics", *self.metrics.address)
        # The reader decodes while this thread waits on PostgreSQL; each time a statement
        # returns, this thread needs the GIL back, and by default it waits up to 5 ms for
        # the reader to let go of it (ten statements a batch: up to 50 ms).  A shorter
        # switch interval hands it back within a fraction of a millisecond.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, SWITCH_INTERVAL))
        reader.start()
        finisher = _Finisher(self, reader)
        finisher.start()
        try:
            while not self.stopping:
                finisher.check()
                batch = reader.next_batch()
                if batch is None:
                    continue
                started = time.monotonic()
                outcome = self._apply(batch.messages, batch)
                if outcome is None:  # stopped while the database was away
                    break
                finisher.hand(batch.messages, outcome, started)
        finally:
            finisher.finish()
            reader.finish()
            if self._dead_letters is not None:
                self._dead_letters.flush(self.backend.timeout)
            sys.setswitchinterval(interval)
            log.info("worker stopped")
        finisher.check()
        return self.counters

    def _warn_once(self, text: str, every: float = 30.0) -> None:
        """Log `text`, but the same text at most once every `every` seconds (a missing
        topic is reported by every poll)."""
        now = time.monotonic()
        if now - self._warned.get(text, -every) >= every:
            self._warned[text] = now
            log.warning("%s", text)

    def _beat(self) -> None:
        if self.health_file is not None:
            try:
                self.health_file.touch()
            except OSError as exc:
                log.warning("cannot touch the health file %s: %s", self.health_file, exc)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._assigned = list(partitions)
        self.joined.set()
        log.info("assigned partitions %s", sorted(p.partition for p in partitions) or "none")

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # The reader committed what was handed back before calling this (`_Reader._on_revoke`).
        log.info("partitions %s revoked", sorted(p.partition for p in partitions))
        self._assigned = []

    def _apply(self, messages: list[Message], batch: Batch | None = None) -> Outcome | None:
        """Apply in one transaction.  While PostgreSQL is unreachable (or writers collide:
        any error that says it is `retryable`), retry with backoff (no offsets are
        committed meanwhile); None if stopped before it could.  A configuration error
        stops the worker.

        A batch that fails for any other reason is tried again (`TRIES` times), then
        split in two, down to the message that fails on its own, which is rejected as
        `Unprocessable`: one bad message never holds up its partition.
        """
        pause = 0.1
        failures = 0
        work: Batch | list[Message] = batch if batch is not None else messages
        while True:
            try:
                return self.backend.db.write(lambda connection: apply_batch(connection, work))
            except (ConfigurationError, PermissionDenied):
                raise  # the setup is wrong, not a message: stop rather than reject them all
            except InventoryError as exc:
                if not exc.retryable:
                    failure: BaseException = exc
                else:
                    self.counters.retries += 1
                    if self.metrics is not None:
                        self.metrics.retried()
                    log.warning(
                        "cannot apply %d events (%s); retrying in %.1f s", len(messages), exc, pause
                    )
                    if self._stop.wait(pause):
                        log.warning(
                            "stopped with %d events not applied; they stay on the topic",
                            len(messages),
                        )
                        return None
                    pause = min(pause * 2, 5.0)
                    continue
            except Exception as exc:
                failure = exc
            failures += 1
            log.error(
                "a batch of %d events failed (%d of %d): %s: %s",
                len(messages),
                failures,
                TRIES,
                type(failure).__name__,
                failure,
                exc_info=failure if failures == TRIES else None,
            )
            if failures < TRIES:
                if self._stop.wait(0.05 * failures):
                    return None
                continue
            if len(messages) == 1:
                return self._reject_alone(messages[0], failure)
            half = len(messages) // 2
            first = self._apply(messages[:half])
            if first is None:
                return None
            second = self._apply(messages[half:])
            if second is None:
                return None
            return _merge(first, second)

    def _reject_alone(self, message: Message, failure: BaseException) -> Outcome | None:
        rejection = unprocessable(message, failure)
        while True:
            try:
                self.backend.db.write(lambda connection: record_rejections(connection, [rejection]))
                return Outcome(rejected=[rejection])
            except BackendUnavailable as exc:
                log.warning("cannot record the rejection of %s (%s)", message.message_id, exc)
                if self._stop.wait(1.0):
                    return None

    def _forget_stale(self) -> None:
        """Drop the entries whose write-through failed, once Redis answers again."""
        cache = self.backend.cache
        if self._stale and cache is not None and cache.forget(self._stale):
            self._stale.clear()

    def _after_commit(self, outcome: Outcome) -> None:
        cache = self.backend.cache
        if cache is not None:
            self._forget_stale()
            values = outcome.stock  # (sku, store, quantity, version) tuples
            if values and not cache.write_through(values):
                self._stale.update(v.sku for v in outcome.stock)
        if outcome.rejected:
            for rejection in outcome.rejected:
                log.warning(
                    "rejected %s at %s[%d]@%d: %s: %s",
                    rejection.message.message_id,
                    rejection.message.topic,
                    rejection.message.partition,
                    rejection.message.offset,
                    rejection.error,
                    rejection.reason,
                )
            self._dead_letter(outcome)

    def _dead_letter(self, outcome: Outcome) -> None:
        """Rejected events to `<topic>.dlq` (they are in `rejected_events` already; a
        failure here is logged, not retried)."""
        from confluent_kafka import KafkaException, Producer

        if self._dead_letters is None:
            self._dead_letters = Producer(
                {**self.backend.kafka_config(), "enable.idempotence": True, "acks": "all"}
            )
        try:
            for rejection in outcome.rejected:
                self._dead_letters.produce(
                    self.backend.dead_letter_topic,
                    json.dumps(rejection.record()).encode(),
                    key=rejection.message.message_id.encode(),
                )
            left = self._dead_letters.flush(self.backend.timeout)
            if left:
                log.warning(
                    "%d rejected events not confirmed by %s", left, self.backend.dead_letter_topic
                )
        except (KafkaException, BufferError) as exc:
            log.warning(
                "cannot send %d rejected events to %s: %s",
                len(outcome.rejected),
                self.backend.dead_letter_topic,
                exc,
            )

    def _count(self, outcome: Outcome, seconds: float = 0.0) -> None:
        c = self.counters
        c.applied += outcome.applied
        c.rejected += len(outcome.rejected)
        c.duplicates += outcome.duplicates
        c.batches += 1
        log.debug(
            "batch: %d applied, %d rejected, %d duplicates",
            outcome.applied,
            len(outcome.rejected),
            outcome.duplicates,
        )
        if self.metrics is not None:
            self.metrics.batch(
                applied=outcome.applied,
                rejected=len(outcome.rejected),
                duplicates=outcome.duplicates,
                seconds=seconds,
            )
        if self.on_batch is not None:
            self.on_batch(outcome)

    def _lag(self, consumer: Any) -> dict[int, int]:
        """Events not yet consumed on each partition this worker holds (from the offsets
        the consumer knows already: no request to the broker)."""
        lags: dict[int, int] = {}
        try:
            for tp in consumer.position(self._assigned) if self._assigned else []:
                low, high = consumer.get_watermark_offsets(tp, timeout=1, cached=True)
                position = tp.offset if tp.offset >= 0 else low
                lags[int(tp.partition)] = max(0, high - position)
        except Exception as exc:
            log.debug("lag unknown: %s", exc)
        return lags

    def _report(self, consumer: Any) -> None:
        lags = self._lag(consumer)
        self.counters.lag = sum(lags.values())
        if self.metrics is not None:
            self.metrics.set_lag(self.backend.topic, lags)
        log.info("counters: %s", " ".join(f"{k}={v}" for k, v in asdict(self.counters).items()))


def _offsets(messages: list[Message]) -> dict[tuple[str, int], int]:
    """The next offset to read on each partition once `messages` are applied."""
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        last[(m.topic, m.partition)] = max(last.get((m.topic, m.partition), -1), m.offset + 1)
    return last


class _Reader(threading.Thread):
    """The thread that owns the worker's Kafka consumer: it consumes and decodes the next
    batch while the worker applies the last, and commits the offsets the worker hands
    back.  Only this thread calls the consumer (librdkafka's rebalance callbacks run here
    too)."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(name="inv-worker-reader", daemon=True)
        self.worker = worker
        self.ready: queue.Queue[Batch | BaseException] = queue.Queue(maxsize=1)
        self.commits: queue.Queue[dict[tuple[str, int], int]] = queue.Queue()
        self.done = threading.Event()

    # -- the worker's side -------------------------------------------------------------

    def next_batch(self) -> Batch | None:
        """The next decoded batch, or None when none came within a batch window."""
        try:
            got = self.ready.get(timeout=self.worker.batch_ms / 1000 + 0.05)
        except queue.Empty:
            if not self.is_alive() and not self.worker.stopping:
                raise RuntimeError("the worker's Kafka reader stopped") from None
            return None
        if isinstance(got, BaseException):
            raise got
        return got

    def commit(self, messages: list[Message]) -> None:
        self.commits.put(_offsets(messages))

    def finish(self) -> None:
        """Stop reading, commit what was handed back, leave the group."""
        self.worker.stop()
        self.done.set()
        self.join(max(10.0, self.worker.session_timeout_ms / 1000 * 2))

    # -- the reader's side -------------------------------------------------------------

    def run(self) -> None:
        worker = self.worker
        try:
            from confluent_kafka import Consumer

            consumer = Consumer(worker.consumer_config())
            consumer.subscribe(
                [worker.backend.topic], on_assign=worker._on_assign, on_revoke=self._on_revoke
            )
        except BaseException as exc:
            self._hand_over(exc)
            return
        last_report = last_lag = time.monotonic()
        try:
            batch: Batch | None = None
            while not worker.stopping:
                self._commit(consumer, asynchronous=True)
                if batch is None:
                    batch = self._consume(consumer)
                    worker._beat()
                if batch is not None:
                    try:
                        self.ready.put(batch, timeout=0.05)
                        batch = None
                    except queue.Full:
                        pass
                now = time.monotonic()
                if worker.metrics is not None and now - last_lag >= LAG_EVERY:
                    last_lag = now
                    worker.metrics.set_lag(worker.backend.topic, worker._lag(consumer))
                if now - last_report >= worker.report_every:
                    last_report = now
                    worker._report(consumer)
        except BaseException as exc:
            self._hand_over(exc)
        finally:
            self.done.wait(30)  # the worker's last batch, and its offsets
            self._commit(consumer, asynchronous=False)
            worker._report(consumer)
            consumer.close()

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._commit(consumer, asynchronous=False)  # what was applied, before the owner moves
        self.worker._on_revoke(consumer, partitions)

    def _hand_over(self, exc: BaseException) -> None:
        while not self.done.is_set():
            try:
                self.ready.put(exc, timeout=0.1)
                return
            except queue.Full:
                continue

    def _consume(self, consumer: Any) -> Batch | None:
        """The next batch, decoded and prepared (`apply.Batch`); None if nothing came."""
        worker = self.worker
        records = consumer.consume(worker.batch_size, worker.batch_ms / 1000)
        messages = []
        for record in records:
            error = record.error()
            if error is not None:
                if error.fatal():
                    raise BackendUnavailable(f"Kafka: {error.str()}")
                worker._warn_once(f"Kafka: {error.str()}")
                continue
            messages.append(
                Message.from_record(
                    str(record.topic()),
                    int(record.partition() or 0),
                    int(record.offset() or 0),
                    record.value(),
                )
            )
        return Batch(messages) if messages else None

    def _commit(self, consumer: Any, *, asynchronous: bool) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        merged: dict[tuple[str, int], int] = {}
        while True:
            try:
                handed = self.commits.get_nowait()
            except queue.Empty:
                break
            for key, offset in handed.items():
                merged[key] = max(merged.get(key, -1), offset)
        if not merged:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(merged.items())]
        try:
            consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:
            # Lost the partitions in a rebalance: their new owner gets these events again
            # and skips them, since they are in applied_events.
            log.warning(
                "offset commit failed (%s); the events will be skipped when redelivered",
                exc.args[0],
            )


class _Finisher(threading.Thread):
    """What follows a batch's commit, in batch order: the write-through to the cache, the
    dead letters, then its offsets to the reader and the counters (`Worker._finish`)."""

    def __init__(self, worker: Worker, reader: _Reader) -> None:
        super().__init__(name="inv-worker-finisher", daemon=True)
        self.worker = worker
        self.reader = reader
        # A few batches at most: if the cache is slow, the applying thread waits for it.
        self.batches: queue.Queue[tuple[list[Message], Outcome, float] | None] = queue.Queue(4)
        self.failure: BaseException | None = None

    def hand(self, messages: list[Message], outcome: Outcome, started: float) -> None:
        self.batches.put((messages, outcome, started))

    def check(self) -> None:
        """Raise what went wrong in this thread (its batch's offsets were not committed)."""
        if self.failure is not None:
            raise self.failure

    def finish(self) -> None:
        self.batches.put(None)
        self.join()

    def run(self) -> None:
        worker = self.worker
        while True:
            try:
                item = self.batches.get(timeout=worker.batch_ms / 1000 + 0.05)
            except queue.Empty:
                worker._forget_stale()
                continue
            if item is None:
                return
            if self.failure is not None:
                continue  # the worker stops; later batches are delivered again
            messages, outcome, started = item
            try:
                worker._after_commit(outcome)
                self.reader.commit(messages)  # after the write-through: see _after_commit
                worker._count(outcome, time.monotonic() - started)
            except BaseException as exc:
                self.failure = exc
