"""The `kafka` backend; see `backends.kafka.backend` for its configuration and
`backends.kafka.worker` for `inv worker`."""

from .backend import KafkaBackend

__all__ = ["KafkaBackend"]
