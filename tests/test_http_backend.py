"""The conformance suite and the stateful model over the `http` backend: a real
`inv serve` process over PostgreSQL, reset between tests (`apiserver.PostgresSlot`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from apiserver import slot
from contract import BackendContract
from hypothesis import settings
from statemachine import MACHINE_SETTINGS, machine_for
from strategies import examples

from backends import Backend


class TestHttpContract(BackendContract):
    @pytest.fixture
    def make_backend(self) -> Iterator[Callable[[], Backend]]:
        made: list[Backend] = []

        def make() -> Backend:
            server = slot(len(made))
            server.reset()
            made.append(server.backend())
            return made[-1]

        yield make
        for backend in made:
            backend.close()

    @pytest.fixture
    def backend(self, make_backend: Callable[[], Backend]) -> Backend:
        return make_backend()


def fresh_http_backend() -> Backend:
    server = slot(0)
    server.reset()
    return server.backend()


TestHttpMachine = machine_for(fresh_http_backend).TestCase
# Each step is a few requests to a real server: fewer runs than in process, the same
# machine (the conformance suite above covers every rule over HTTP one by one).
TestHttpMachine.settings = settings(MACHINE_SETTINGS, max_examples=examples(15))
