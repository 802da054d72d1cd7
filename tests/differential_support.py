"""Helpers for tests/test_differential.py: two backends behind one `inv`, awkward text.

`Pair` runs the same `inv` command in-process on a JSON file and on a PostgreSQL database
and returns what each printed, normalised so that only what may legitimately differ is
hidden: times, generated UUIDs (event ids), and where each backend keeps its data (the
file's path, the database URL).  Everything else (exit code, every byte of stdout and
stderr, audit ids) must be equal.

The text strategies draw the Unicode that identity rules trip on (DESIGN.md: two SKUs are
one product when the casefold() of their NFC forms are equal; invisible and control
characters are refused).  Every character is written as an escape so the source stays
readable and ruff's ambiguous-character rules stay quiet.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shlex
import shutil
import tempfile
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import typer.testing
from hypothesis import strategies as st
from typer.testing import CliRunner

from inventory_cli.cli import app

__all__ = [
    "CATEGORIES",
    "CONTROL",
    "INVISIBLE",
    "NAME_PIECES",
    "SKU_PIECES",
    "STORE_ARGS",
    "Observed",
    "Pair",
    "fresh_names",
    "fresh_skus",
    "normalise",
    "respell",
]

# -- awkward text ------------------------------------------------------------------------

#: Pieces of SKUs: each line holds spellings that casefold(NFC(...)) may or may not unite.
SKU_PIECES: tuple[str, ...] = (
    "a",
    "A",
    "b",
    "stra\u00dfe",  # straße
    "STRASSE",
    "strasse",
    "Stra\u00dfe",
    "\u1e9e",  # capital sharp s (casefolds to "ss")
    "caf\u00e9",  # café, NFC
    "cafe\u0301",  # café, NFD
    "CAF\u00c9",
    "\u0130",  # İ, capital I with dot (lower() gives "i̇", casefold() too)
    "\u0131",  # dotless i (upper() gives "I")
    "i",
    "I",
    "\u0130stanbul",
    "ISTANBUL",
    "istanbul",
    "\u03c2",  # final sigma (casefolds to small sigma)
    "\u03c3",  # small sigma
    "\u03a3",  # Σ
    "\u03bf\u03b4\u03bf\u03c2",  # οδος
    "\u039f\u0394\u039f\u03a3",  # ΟΔΟΣ
    "\ufb01",  # ﬁ ligature (casefolds to "fi")
    "fi",
    "FI",
    "\ufb00",  # ﬀ
    "\u212a",  # Kelvin sign (lower() and casefold() give "k"; NFC gives "K")
    "k",
    "K",
    "\u212b",  # Angstrom sign (NFC gives Å)
    "\u00c5",  # Å
    "\u00e5",  # å
    "\u2126",  # Ohm sign (NFC gives Ω)
    "\u03c9",  # ω
    "\uff21\uff22\uff23",  # full-width ABC
    "\uff41\uff42\uff43",  # full-width abc
    "ABC",
    "abc",
    "\u01c5",  # ǅ title case
    "\u01c4",  # Ǆ
    "\u01c6",  # ǆ
    "\u00b5",  # micro sign (casefolds to small mu)
    "\u03bc",  # small mu
    "\u039c",  # capital mu
    "n\u0303",  # ñ, NFD
    "\u00f1",  # ñ, NFC
    "\u00d1",  # Ñ
    "\u01f0",  # ǰ (upper() is two code points)
    "x\u0308\u0301",  # stacked combining marks
    "\U0001f37a",  # beer mug
    "\U0001f44d\U0001f3fd",  # thumbs up, medium skin tone
    "P000001",
    "p000002",
    "-",
    ".",
    "_",
    "1",
    "42",
)

#: Characters that must be refused inside a SKU the same way by every backend.
INVISIBLE: tuple[str, ...] = (
    "\u200b",  # zero-width space
    "\ufeff",  # zero-width no-break space, BOM
    "\u00ad",  # soft hyphen
    "\u00a0",  # no-break space
    "\u200d",  # zero-width joiner
    "\u2060",  # word joiner
    "\u200e",  # left-to-right mark
    "\u202e",  # right-to-left override
)

#: Control characters, C0 and C1, and line separators.
CONTROL: tuple[str, ...] = ("\x00", "\x07", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\u2028")

#: Pieces of product names (for --sort name, --search).
NAME_PIECES: tuple[str, ...] = (
    "mug",
    "Mug",
    "MUG",
    "\u00c4pfel",  # Äpfel
    "a\u0308pfel",  # äpfel, NFD
    "apfel",
    "zebra",
    "Zebra",
    "\u00e9clair",  # éclair
    "Eclair",
    "stra\u00dfe",
    "Strasse",
    "\u0130nci",  # İnci
    "inci",
    "\u0131nci",  # dotless-i nci
    "\ufb01sh",  # ﬁsh
    "fish",
    "\u03a3\u03bf\u03c6\u03af\u03b1",  # Σοφία
    "\u03c3\u03bf\u03c6\u03b9\u03b1\u03c2",  # σοφιας
    "\u212aelvin",
    "kelvin",
    "\uff2d\uff55\uff47",  # full-width Mug
    "\U0001f37a beer",
    "10 nails",
    "9 nails",
    "_tape",
)

#: Categories, `""` clears one on edit.
CATEGORIES: tuple[str, ...] = (
    "Tools",
    "tools",
    "TOOLS",
    "Stra\u00dfe",
    "STRASSE",
    "strasse",
    "caf\u00e9",
    "cafe\u0301",
    "\u0130",
    "i\u0307",  # i + combining dot above: lower() of İ
    "\u03a3",
    "\u03c2",
    "\ufb01",
    "FI",
)

#: Store codes as a user types them: codes are lower-cased on input, the Kelvin sign too.
#: Main comes first and most often; reversed, it starts with another store (`--to`).
STORE_ARGS: tuple[str, ...] = (
    "main",
    "main",
    "main",
    "main",
    "MAIN",
    "nowhere",
    "\u0130",
    "s-1",
    " north ",
    "North",
    "\u212aiosk",
    "kiosk",
    "kiosk",
    "north",
    "north",
    "north",
)

#: A brand-new SKU: one to three pieces.
fresh_skus = st.lists(st.sampled_from(SKU_PIECES), min_size=1, max_size=3).map("".join)

#: A product name: one or two pieces, space-separated.
fresh_names = st.lists(st.sampled_from(NAME_PIECES), min_size=1, max_size=2).map(" ".join)


def _nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def _nfd(s: str) -> str:
    return unicodedata.normalize("NFD", s)


#: How a user may type an earlier SKU (or name) again.  Most spellings name the same
#: product by DESIGN.md; NFKC does not always (full-width, ligatures) and that is the point.
RESPELLINGS = {
    "same": lambda s: s,
    "upper": str.upper,
    "lower": str.lower,
    "casefold": str.casefold,
    "swapcase": str.swapcase,
    "title": str.title,
    "nfc": _nfc,
    "nfd": _nfd,
    "nfkc": lambda s: unicodedata.normalize("NFKC", s),
    "nfd-upper": lambda s: _nfd(s.upper()),
    "nfc-casefold": lambda s: _nfc(s).casefold(),
    "padded": lambda s: f" {s} ",
}


@st.composite
def respell(draw: st.DrawFn, text: str) -> str:
    """`text` in another spelling; now and then with an invisible or control character."""
    kind = draw(st.sampled_from([*RESPELLINGS, "invisible", "control"]))
    if kind in RESPELLINGS:
        return RESPELLINGS[kind](text)
    char = draw(st.sampled_from(INVISIBLE if kind == "invisible" else CONTROL))
    at = draw(st.integers(0, len(text)))
    return text[:at] + char + text[at:]


# -- running inv twice -------------------------------------------------------------------

_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def normalise(text: str, where: Sequence[str]) -> str:
    """Hide what legitimately differs: the backend's location, times, generated UUIDs."""
    for place in sorted(where, key=len, reverse=True):
        text = text.replace(place, "<WHERE>")
    text = _TIME.sub("<TIME>", text)
    return _UUID.sub("<UUID>", text)


@dataclass(frozen=True)
class Observed:
    """What one backend did for one command, normalised."""

    exit_code: int
    stdout: str
    stderr: str
    crash: str | None  # an exception other than SystemExit: a traceback to a user

    def show(self) -> str:
        crash = f"\n  crash: {self.crash}" if self.crash else ""
        return (
            f"  exit {self.exit_code}\n  stdout: {self.stdout!r}\n  stderr: {self.stderr!r}{crash}"
        )


@functools.cache
def _command(application: typer.Typer) -> object:
    return typer.main.get_command(application)


@contextlib.contextmanager
def _built_once() -> Iterator[None]:
    """Typer builds the Click command again on every invoke (about 40 ms, more than the
    command itself); build it once.  The command is the same object either way."""
    original = typer.testing._get_command
    typer.testing._get_command = _command  # type: ignore[assignment]
    try:
        yield
    finally:
        typer.testing._get_command = original


class Pair:
    """A fresh JSON inventory and a fresh PostgreSQL database, driven by the same `inv`."""

    ACTOR = "tester"  # the actor tests/pg.py's template was initialised by

    def __init__(self, database_url: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="inv-diff-"))
        self.file = self.folder / "inventory.json"
        # An empty settings file: no ./inv.toml or user config of the checkout is read.
        self.config = self.folder / "inv.toml"
        self.config.touch()
        self.url = database_url
        self.runner = CliRunner()
        self.transcript: list[str] = []

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _json(self, argv: list[str], stdin: str | None) -> Observed:
        env = {"INV_ACTOR": self.ACTOR, "INV_CONFIG": str(self.config)}
        result = self._invoke(["--file", str(self.file), *argv], stdin, env)
        return self._observe(result, [str(self.file), str(self.folder)])

    def _postgres(self, argv: list[str], stdin: str | None) -> Observed:
        env = {
            "INV_ACTOR": self.ACTOR,
            "INV_CONFIG": str(self.config),
            "INV_BACKEND": "postgres",
            "INV_DATABASE_URL": self.url,
        }
        result = self._invoke(argv, stdin, env)
        return self._observe(result, [self.url, self.url.rpartition("/")[2]])

    def _invoke(
        self, argv: list[str], stdin: str | None, env: dict[str, str]
    ) -> typer.testing.Result:
        with _built_once():
            return self.runner.invoke(app, argv, input=stdin, env=env)

    @staticmethod
    def _observe(result: typer.testing.Result, where: list[str]) -> Observed:
        crash = None
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            crash = f"{type(result.exception).__name__}: {result.exception}"
        return Observed(
            result.exit_code,
            normalise(result.stdout, where),
            normalise(result.stderr, where),
            normalise(crash, where) if crash else None,
        )

    def both(self, argv: list[str], stdin: str | None = None) -> tuple[Observed, Observed]:
        """Run `inv ARGV` on both backends; returns (json, postgres)."""
        line = "$ inv " + shlex.join(argv)
        if stdin is not None:
            line += f" <<< {stdin!r}"
        if not (line.isascii() and line.isprintable()):
            # Some spellings look alike (NFC and NFD, the Kelvin sign and K) or not at all
            # (control characters): spell them out.
            line += f"\n      # {argv!a}" + (f" <<< {stdin!a}" if stdin is not None else "")
        self.transcript.append(line)
        return self._json(argv, stdin), self._postgres(argv, stdin)

    def differs(self, json_: Observed, postgres: Observed) -> str:
        return (
            "json and postgres disagree after:\n"
            + "\n".join(self.transcript)
            + f"\njson:\n{json_.show()}\npostgres:\n{postgres.show()}"
        )
