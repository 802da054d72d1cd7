"""The conformance suite and the stateful model, run over the kafka backend.

Writes go to a real broker (Tansu), a real worker applies them to a real PostgreSQL, and
reads go through a real Redis; the backend waits for each write (`--wait` mode), so the
suite's expectations hold unchanged.  See `kafka_stack` for how stacks are made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from broker import Broker, broker_or_skip
from contract import BackendContract
from kafka_stack import StackBackend, StackPool
from services import redis_or_skip
from statemachine import machine_for

from backends import Backend


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with broker_or_skip() as running:
        yield running


@pytest.fixture(scope="module")
def stacks(broker: Broker) -> Iterator[StackPool]:
    pool = StackPool(broker, redis_url=redis_or_skip())
    yield pool
    pool.close()


class TestKafkaContract(BackendContract):
    @pytest.fixture
    def make_backend(self, stacks: StackPool) -> Iterator[Callable[[], Backend]]:
        made: list[StackBackend] = []

        def make() -> Backend:
            made.append(stacks.backend())
            return made[-1]

        yield make
        for backend in made:
            backend.close()

    @pytest.fixture
    def backend(self, make_backend: Callable[[], Backend]) -> Backend:
        return make_backend()


_pool: list[StackPool] = []


@pytest.fixture(scope="module", autouse=True)
def _machine_pool(stacks: StackPool) -> Iterator[None]:
    _pool.append(stacks)
    yield
    _pool.clear()


def _machine_backend() -> Backend:
    return _pool[0].backend()


TestKafkaMachine = machine_for(_machine_backend).TestCase
