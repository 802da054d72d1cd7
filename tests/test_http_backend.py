"""The conformance suite and the stateful model over the `http` backend: a real
`inv serve` process over PostgreSQL, reset between tests (`apiserver.PostgresSlot`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from apiserver import slot
from contract import BackendContract
from statemachine import machine_for

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


_machine_slots = itertools.count()


def fresh_http_backend() -> Backend:
    server = slot(0)
    server.reset()
    return server.backend()


TestHttpMachine = machine_for(fresh_http_backend).TestCase
