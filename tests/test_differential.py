"""Differential test: the JSON file and PostgreSQL, given the same `inv` commands, say the
same thing.

DESIGN.md: "Every backend passes one conformance suite: same commands, same results, same
errors, same exit codes" and "two SKUs are the same product when the casefold() of their
NFC forms are equal, on every backend ... invisible and control characters are refused".

Hypothesis drives a random sequence of `inv` commands (writes, reads, imports) through
the in-process CLI against a fresh JSON inventory and a fresh PostgreSQL database, with
SKUs, names and categories drawn from awkward Unicode (case pairs, ß, NFC/NFD, Turkish
i, final sigma, ligatures, the Kelvin sign, full-width letters, title case, emoji,
invisible and control characters) and earlier SKUs often typed again in another
spelling.  After every command both backends must give the same exit code, the same
stdout and the same stderr, once times, generated UUIDs and the backend's own location
(file path, database URL) are hidden (`differential_support.normalise`).  Audit ids are
compared as they are: both backends number history from 1.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import pg
import pytest
from differential_support import (
    CATEGORIES,
    NAME_PIECES,
    SKU_PIECES,
    STORE_ARGS,
    Observed,
    Pair,
    fresh_names,
    fresh_skus,
    respell,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from strategies import examples

#: About 50 s on an idle 2-core machine (each command runs twice: json ~10 ms, postgres
#: ~40 ms; each example clones a database).  A failure shrinks for up to 5 more minutes.
DIFF_SETTINGS = settings(
    max_examples=examples(40),
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

#: Prices, now and then a bad one.
PRICES = st.sampled_from(["0", "1", "2.5", "4.50", "10", "0.99", "3", "7", "1.5", "-1", "abc"])
KEYS = st.sampled_from(["k1", "k2", "K1"])
FORMATS = st.sampled_from(["csv", "jsonl"])


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


class DifferentialMachine(RuleBasedStateMachine):
    """Each example: a new JSON file and a new database, the same commands on both."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair(pg.fresh_database())
        self.skus: list[str] = []  # every SKU typed so far, as typed
        self.names: list[str] = []
        self.failed = False
        # The database comes migrated with store main (tests/pg.py); the file is made here.
        json_, postgres = self.pair.both(["init"])
        assert (json_.exit_code, postgres.exit_code) == (0, 0), self.pair.differs(json_, postgres)
        self.pair.transcript.clear()
        for code in ("north", "kiosk"):  # stores for moves to succeed at
            self.check(["store", "add", code])

    def teardown(self) -> None:
        try:
            # State nobody read back yet must agree too (unless a step failed already:
            # Hypothesis runs teardown in a `finally`, and its error would hide that one).
            if not self.failed:
                self.check(["export", "--format", "jsonl"])
                self.check(["history", "--format", "json"])
        finally:
            self.pair.close()
            pg.drop_database(self.pair.url)

    # -- helpers -----------------------------------------------------------------------

    def check(self, argv: list[str], stdin: str | None = None) -> Observed:
        json_, postgres = self.pair.both(argv, stdin)
        self.failed = json_ != postgres or json_.crash is not None
        assert json_ == postgres, self.pair.differs(json_, postgres)
        assert json_.crash is None, self.pair.differs(json_, postgres)
        return json_

    def sku(self, data: st.DataObject, *, new: bool = False) -> str:
        """Mostly an earlier SKU, as typed or in another spelling, else a new one; with
        `new`, the other way round."""
        reuse = data.draw(st.integers(0, 4), label="reuse?")
        if self.skus and (reuse == 4 if new else reuse < 4):
            earlier = data.draw(st.sampled_from(self.skus), label="earlier sku")
            if data.draw(st.booleans(), label="respell"):
                return data.draw(respell(earlier), label="sku")
            return earlier
        return data.draw(fresh_skus, label="sku")

    def remember(self, sku: str, outcome: Observed) -> None:
        """An SKU a command just created is worth typing again."""
        if outcome.exit_code == 0 and sku not in self.skus:
            self.skus.append(sku)

    def name(self, data: st.DataObject) -> str:
        if self.names and data.draw(st.booleans(), label="reuse name"):
            earlier = data.draw(st.sampled_from(self.names), label="earlier name")
            return data.draw(respell(earlier), label="name")
        name = data.draw(fresh_names, label="name")
        self.names.append(name)
        return name

    def store(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(STORE_ARGS), label="store")

    def search_text(self, data: st.DataObject) -> str:
        pool = [*self.skus, *self.names, *SKU_PIECES, *NAME_PIECES]
        text = data.draw(st.sampled_from(pool), label="search in")
        start = data.draw(st.integers(0, max(0, len(text) - 1)), label="from")
        text = text[start : start + data.draw(st.integers(1, 4), label="length")]
        return data.draw(respell(text), label="search")

    # -- one step: a command, drawn by weight ------------------------------------------

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        command = data.draw(st.sampled_from(COMMANDS), label="command")
        getattr(self, command)(data)

    # -- writes ------------------------------------------------------------------------

    def init(self, data: st.DataObject) -> None:
        self.check(["init"])

    def add(self, data: st.DataObject) -> None:
        argv = ["add", self.name(data), "--price", data.draw(PRICES, label="price")]
        sku = (
            self.sku(data, new=True) if data.draw(st.integers(0, 4), label="no sku?") < 4 else None
        )
        if sku is not None:
            argv += ["--sku", sku]
        if data.draw(st.integers(0, 3), label="no qty?") < 3:
            argv += ["--qty", str(data.draw(st.integers(0, 12), label="qty"))]
        if data.draw(st.booleans(), label="store?"):
            argv += ["--store", self.store(data)]
        if (category := data.draw(maybe(st.sampled_from(CATEGORIES)), label="cat")) is not None:
            argv += ["--category", category]
        if (level := data.draw(maybe(st.integers(0, 5)), label="reorder")) is not None:
            argv += ["--reorder-level", str(level)]
        outcome = self.check(argv)
        if sku is not None:
            self.remember(sku, outcome)

    def update(self, data: st.DataObject) -> None:
        argv = ["update", self.sku(data)]
        if data.draw(st.booleans(), label="change or set"):
            argv += ["--change", str(data.draw(st.integers(-8, 8), label="change"))]
        else:
            argv += ["--set", str(data.draw(st.integers(0, 12), label="set"))]
        if data.draw(st.booleans(), label="store?"):
            argv += ["--store", self.store(data)]
        if data.draw(st.integers(0, 3), label="expect?") == 3:
            argv += ["--expect", str(data.draw(st.integers(0, 6), label="expect"))]
        if (key := data.draw(maybe(KEYS), label="key")) is not None:
            argv += ["--idempotency-key", key]
        self.check(argv)

    def transfer(self, data: st.DataObject) -> None:
        argv = ["transfer", self.sku(data), "--from", self.store(data)]
        argv += ["--to", data.draw(st.sampled_from(STORE_ARGS[::-1]), label="to")]
        argv += ["--qty", str(data.draw(st.sampled_from([1, 2, 3, 5, 0]), label="qty"))]
        self.check(argv)

    def edit(self, data: st.DataObject) -> None:
        argv = ["edit", self.sku(data)]
        if data.draw(st.booleans(), label="name?"):
            argv += ["--name", self.name(data)]
        if (price := data.draw(maybe(PRICES), label="price")) is not None:
            argv += ["--price", price]
        if (
            category := data.draw(maybe(st.sampled_from(["", *CATEGORIES])), label="cat")
        ) is not None:
            argv += ["--category", category]
        if len(argv) == 2:
            argv += ["--name", self.name(data)]
        self.check(argv)

    def remove(self, data: st.DataObject) -> None:
        argv = ["remove", self.sku(data)]
        if data.draw(st.booleans(), label="store?"):
            argv += ["--store", self.store(data)]
        if data.draw(st.booleans(), label="force"):
            argv.append("--force")
        self.check(argv)

    def store_add(self, data: st.DataObject) -> None:
        self.check(["store", "add", self.store(data)])

    def store_remove(self, data: st.DataObject) -> None:
        argv = ["store", "remove", self.store(data)]
        if data.draw(st.booleans(), label="force"):
            argv.append("--force")
        self.check(argv)

    def import_(self, data: st.DataObject) -> None:
        rows: list[dict[str, Any]] = []
        for _ in range(data.draw(st.integers(1, 4), label="rows")):
            sku = self.sku(data)
            row: dict[str, Any] = {"sku": sku}
            if data.draw(st.integers(0, 3), label="no catalog?") < 3:
                row["name"] = self.name(data)
                row["price"] = data.draw(PRICES, label="price")
                if (cat := data.draw(maybe(st.sampled_from(CATEGORIES)), label="cat")) is not None:
                    row["category"] = cat
            if data.draw(st.booleans(), label="store?"):
                row["store"] = self.store(data)
            movement = data.draw(st.sampled_from(["none", "quantity", "change"]), label="move")
            if movement == "quantity":
                row["quantity"] = data.draw(st.integers(0, 12), label="quantity")
            elif movement == "change":
                row["change"] = data.draw(st.sampled_from([1, 2, 5, -1, -3, 0]), label="change")
            rows.append(row)
        fmt = data.draw(FORMATS, label="format")
        argv = ["import", "-", "--format", fmt]
        if data.draw(st.booleans(), label="skip-rows"):
            argv += ["--on-error", "skip-rows"]
        if data.draw(st.integers(0, 4), label="dry-run") == 0:
            argv.append("--dry-run")
        outcome = self.check(argv, stdin=_file(rows, fmt))
        if "--dry-run" not in argv:
            for row in rows:
                self.remember(row["sku"], outcome)

    # -- reads -------------------------------------------------------------------------

    def list_(self, data: st.DataObject) -> None:
        argv = ["list", "--format", "json"]
        if data.draw(st.booleans(), label="search?"):
            argv += ["--search", self.search_text(data)]
        if (category := data.draw(maybe(st.sampled_from(CATEGORIES)), label="cat")) is not None:
            argv += ["--category", data.draw(respell(category), label="category")]
        sort = data.draw(maybe(st.sampled_from(["sku", "name", "quantity", "value"])), label="sort")
        if sort is not None:
            argv += ["--sort", sort]
        if data.draw(st.booleans(), label="desc"):
            argv.append("--desc")
        if data.draw(st.integers(0, 3), label="store?") == 0:
            argv += ["--store", self.store(data)]
        if data.draw(st.integers(0, 3), label="low?") == 0:
            argv.append("--low-stock")
        if (limit := data.draw(maybe(st.integers(0, 4)), label="limit")) is not None:
            argv += ["--limit", str(limit), "--offset", str(data.draw(st.integers(0, 3)))]
        self.check(argv)

    def show(self, data: st.DataObject) -> None:
        self.check(["show", self.sku(data), "--format", "json"])

    def history(self, data: st.DataObject) -> None:
        argv = ["history"]
        if data.draw(st.booleans(), label="sku?"):
            argv.append(self.sku(data))
        if data.draw(st.integers(0, 3), label="store?") == 0:
            argv += ["--store", self.store(data)]
        if (limit := data.draw(maybe(st.integers(1, 5)), label="limit")) is not None:
            argv += ["--limit", str(limit)]
        self.check([*argv, "--format", "json"])

    def export(self, data: st.DataObject) -> None:
        self.check(["export", "--format", data.draw(FORMATS, label="format")])

    def report(self, data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(["value", "low-stock", "movements"]), label="report")
        argv = ["report", kind, "--format", "json"]
        if data.draw(st.booleans(), label="store?"):
            argv += ["--store", self.store(data)]
        self.check(argv)


#: Each command as often as its weight says (Hypothesis alone would favour the first rules).
COMMANDS = tuple(
    command
    for command, weight in {
        "add": 6,
        "update": 5,
        "import_": 3,
        "list_": 3,
        "transfer": 2,
        "edit": 2,
        "remove": 2,
        "show": 2,
        "history": 2,
        "report": 2,
        "store_add": 1,
        "store_remove": 1,
        "export": 1,
        "init": 1,
    }.items()
    for _ in range(weight)
)


def _file(rows: list[dict[str, Any]], fmt: str) -> str:
    """Rows as an import file: CSV with a header (every column any row uses), or JSONL."""
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    columns = ["sku", "name", "price", "category", "store", "quantity", "change"]
    used = [c for c in columns if any(c in row for row in rows)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=used, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@pytest.mark.slow
def test_json_and_postgres_say_the_same() -> None:
    pg.template()  # skips (or fails under CI) before Hypothesis starts when PostgreSQL is down
    run_state_machine_as_test(DifferentialMachine, settings=DIFF_SETTINGS)


def test_init_on_nothing_says_the_same() -> None:
    """`inv init` on no file and on an empty database (not the migrated template)."""
    name = f"inv_diff_{uuid.uuid4().hex[:12]}"
    with pg.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg.url_for(name)
    pair = Pair(url)
    try:
        for argv in (
            ["init"],
            ["init"],
            ["history", "--format", "json"],
            ["store", "list", "--format", "json"],
        ):
            json_, postgres = pair.both(argv)
            assert json_ == postgres, pair.differs(json_, postgres)
    finally:
        pair.close()
        pg.drop_database(url)
