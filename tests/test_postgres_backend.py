"""The conformance suite and the stateful model, run over the postgres backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from contract import BackendContract
from pg import drop_database, fresh_backend
from statemachine import machine_for

from backends import Backend
from backends.postgres import PostgresBackend


class TestPostgresContract(BackendContract):
    @pytest.fixture
    def make_backend(self) -> Iterator[Callable[[], Backend]]:
        made: list[PostgresBackend] = []

        def make() -> Backend:
            made.append(fresh_backend())
            return made[-1]

        yield make
        for backend in made:
            backend.close()
            drop_database(backend.url)

    @pytest.fixture
    def backend(self, make_backend: Callable[[], Backend]) -> Backend:
        return make_backend()


TestPostgresMachine = machine_for(fresh_backend).TestCase
