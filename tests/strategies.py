"""Hypothesis strategies for the domain's values, shared by every property and stateful test.

Each strategy draws values a backend must accept as they are, so a refusal is a bug;
the stateful model relies on that.
"""

from __future__ import annotations

import string
from decimal import Decimal

from hypothesis import settings
from hypothesis import strategies as st

__all__ = [
    "categories",
    "deltas",
    "examples",
    "names",
    "price_text",
    "prices",
    "quantities",
    "reasons",
    "skus",
    "store_codes",
    "units",
]


def examples(full: int) -> int:
    """`full` examples under the `ci` profile (100 by default), a share of them otherwise."""
    return max(5, full * settings.default.max_examples // 100)


# SKUs stay ASCII so "ignoring case" means the same thing to the model (str.lower) and to
# every backend (Python, PostgreSQL's lower(), a JSON file).
_SKU_ALPHABET = string.ascii_letters + string.digits + "-_."

#: A SKU as a user types it: 1-12 characters, sometimes padded with spaces (trimmed on input).
skus = st.builds(
    lambda core, pad_left, pad_right: " " * pad_left + core + " " * pad_right,
    st.text(alphabet=_SKU_ALPHABET, min_size=1, max_size=12),
    st.integers(0, 1),
    st.integers(0, 1),
)

_WORDS = st.characters(categories=("L", "N", "P"), include_characters=" ", codec="utf-8")

#: A product name: printable text with at least one non-space character, at most 60 long.
names = st.text(alphabet=_WORDS, min_size=1, max_size=60).filter(lambda s: s.strip() != "")

#: A unit of measure.
units = st.sampled_from(["each", "kg", "box", "m", "litre"])

#: A category, or None.
categories = st.none() | st.sampled_from(["Tools", "Garden", "Food", "paint"])

#: A price in cents, kept small enough that value sums stay readable when they fail.
_cents = st.integers(min_value=0, max_value=10_000_000)


def _cents_to_text(cents: int, style: int) -> str:
    whole, frac = divmod(cents, 100)
    if style == 0 and frac == 0:
        return str(whole)  # "7"
    if style == 1 and frac % 10 == 0:
        return f"{whole}.{frac // 10}"  # "4.5"
    return f"{whole}.{frac:02d}"  # "4.50"


#: A price as text with at most 2 decimal places ("7", "4.5", "4.50").
price_text = st.builds(_cents_to_text, _cents, st.integers(0, 2))

#: A price as a `Decimal` with exactly 2 places, the form every backend returns.
prices = _cents.map(lambda c: Decimal(c).scaleb(-2))

#: A stock quantity.
quantities = st.integers(min_value=0, max_value=100)

#: A non-zero stock change, negative to take stock away.
deltas = st.integers(min_value=-100, max_value=100).filter(lambda d: d != 0)

#: A store code other than `main` (which always exists): a lower-case slug.
store_codes = st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True).filter(lambda c: c != "main")

#: A movement reason, or None.
reasons = st.none() | st.sampled_from(["sale", "restock", "count", "damage"])
