"""Kafka administration for the kafka backend: its topics, and the workers' lag.

`create_topics` makes the events topic and its dead-letter topic (`inv init`);
`consumer_lag` reads the workers' committed offsets and the topic's ends, and peeks at
the oldest event not yet applied (`inv status`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import KafkaBackend

__all__ = ["consumer_lag", "create_topics"]


def create_topics(backend: KafkaBackend) -> list[str]:
    """Create the events topic and its dead-letter topic if missing; returns those
    created."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(backend.kafka_config())
    try:
        existing = admin.list_topics(timeout=backend.timeout).topics
    except KafkaException as exc:
        raise backend.unreachable(str(exc.args[0])) from None
    wanted = [t for t in (backend.topic, backend.dead_letter_topic) if t not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=backend.partitions, replication_factor=-1) for t in wanted],
        operation_timeout=backend.timeout,
        request_timeout=backend.timeout,
    )
    for topic, future in futures.items():
        try:
            future.result(backend.timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise backend.unreachable(f"creating topic {topic}: {exc.args[0]}") from None
    return wanted


def consumer_lag(backend: KafkaBackend, *, group: str, peek: bool = True) -> dict[str, Any]:
    """The broker's health and the group's lag per partition; with `peek`, the age of the
    oldest event not yet committed by the workers."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    report: dict[str, Any] = {
        "where": backend.bootstrap_servers,
        "topic": backend.topic,
        "group": group,
    }
    config = {**backend.kafka_config(), "group.id": group, "enable.auto.commit": False}
    consumer = Consumer(config)
    try:
        metadata = consumer.list_topics(backend.topic, timeout=backend.timeout)
        topic = metadata.topics.get(backend.topic)
        if topic is None or topic.error is not None:
            report.update(ok=False, error=f"topic {backend.topic} does not exist; run 'inv init'")
            return report
        partitions = [TopicPartition(backend.topic, p) for p in sorted(topic.partitions)]
        committed = consumer.committed(partitions, timeout=backend.timeout)
        rows = []
        total = 0
        oldest: float | None = None
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=backend.timeout)
            done = tp.offset if tp.offset >= 0 else low
            lag = max(0, high - done)
            total += lag
            row: dict[str, Any] = {
                "partition": tp.partition,
                "committed": done,
                "end": high,
                "lag": lag,
            }
            if peek and lag:
                age = _age_at(backend, tp.partition, done)
                if age is not None:
                    row["oldest_age_s"] = round(age, 3)
                    oldest = age if oldest is None else max(oldest, age)
            rows.append(row)
        report.update(ok=True, lag=total, partitions=rows)
        report["oldest_unapplied_age_s"] = round(oldest, 3) if oldest is not None else 0.0
    except KafkaException as exc:
        report.update(ok=False, error=str(exc.args[0]))
    finally:
        consumer.close()
    return report


def _age_at(backend: KafkaBackend, partition: int, offset: int) -> float | None:
    """Seconds since the event at `offset` was published (None if it cannot be read)."""
    from confluent_kafka import Consumer, TopicPartition

    peeker = Consumer(
        {
            **backend.kafka_config(),
            "group.id": "inv-status-peek",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        peeker.assign([TopicPartition(backend.topic, partition, offset)])
        deadline = time.monotonic() + min(backend.timeout, 3.0)
        while time.monotonic() < deadline:
            record = peeker.poll(0.1)
            if record is None or record.error() is not None:
                continue
            _kind, stamp = record.timestamp()
            if stamp <= 0:
                return None
            return max(0.0, time.time() - stamp / 1000)
        return None
    finally:
        peeker.close()
