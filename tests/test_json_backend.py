"""The conformance suite and the stateful model, run over the JSON backend."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from contract import BackendContract
from statemachine import machine_for

from backends import Backend
from backends.jsonfile import JsonBackend


def open_json_backend(folder: Path) -> JsonBackend:
    backend = JsonBackend(path=folder / "inventory.json", actor="tester", source="cli")
    backend.init()
    return backend


class TestJsonContract(BackendContract):
    @pytest.fixture
    def make_backend(self, tmp_path: Path) -> Iterator[Callable[[], Backend]]:
        made: list[JsonBackend] = []

        def make() -> Backend:
            folder = tmp_path / f"backend-{len(made)}"
            folder.mkdir()
            made.append(open_json_backend(folder))
            return made[-1]

        yield make
        for backend in made:
            backend.close()

    @pytest.fixture
    def backend(self, make_backend: Callable[[], Backend]) -> Backend:
        return make_backend()


def fresh_json_backend() -> Backend:
    """A backend in its own temporary folder, removed when the test run ends."""
    folder = tempfile.mkdtemp(prefix="inv-machine-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return open_json_backend(Path(folder))


TestJsonMachine = machine_for(fresh_json_backend).TestCase
