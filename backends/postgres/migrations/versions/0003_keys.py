"""One identity for SKUs on every backend: keys computed by `backends.values`.

Two SKUs are one product when their `values.sku_key` (the case-folded NFC form) are
equal.  PostgreSQL's `lower()` is not that (`straße` and `STRASSE` differ under it, and
under the C locale it leaves non-ASCII letters alone), so the key is computed by inv and
kept in a column with the unique index: the database enforces the same identity as the
JSON file.  Names and categories get keys too, for `list --search`, `--category` and
`--sort name`, which compare text the same way on every backend.  The key columns use
the "C" collation: they sort by code point, as Python does.

The audit log keeps the key of each entry's SKU, for `history SKU`.  Filling it in
rewrites the log once, with its append-only trigger off inside this transaction.

A database holding two SKUs that the new identity makes one cannot be upgraded: the
migration names them, and nothing changes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from backends.errors import ConfigurationError
from backends.values import sku_key, text_key

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    connection = op.get_bind()
    connection.execute(
        text(
            'ALTER TABLE products ADD COLUMN sku_key text COLLATE "C", '
            'ADD COLUMN name_key text COLLATE "C", ADD COLUMN category_key text COLLATE "C"'
        )
    )
    rows = connection.execute(text("SELECT id, sku, name, category FROM products")).all()
    seen: dict[str, str] = {}
    clashes = []
    for row in rows:
        key = sku_key(row.sku)
        if key in seen:
            clashes.append(f"{seen[key]!r} and {row.sku!r}")
        seen[key] = row.sku
    if clashes:
        raise ConfigurationError(
            "these SKUs are one product now that case and Unicode form are ignored the same "
            f"way on every backend: {'; '.join(clashes[:10])}; remove or merge one of each "
            "pair with the previous inv, then upgrade"
        )
    if rows:
        connection.execute(
            text(
                "UPDATE products p SET sku_key = v.s, name_key = v.n, category_key = v.c "
                "FROM unnest(CAST(:i AS bigint[]), CAST(:s AS text[]), CAST(:n AS text[]), "
                "CAST(:c AS text[])) AS v(i, s, n, c) WHERE p.id = v.i"
            ),
            {
                "i": [r.id for r in rows],
                "s": [sku_key(r.sku) for r in rows],
                "n": [text_key(r.name) for r in rows],
                "c": [text_key(r.category) if r.category is not None else None for r in rows],
            },
        )
    connection.execute(
        text(
            "ALTER TABLE products ALTER COLUMN sku_key SET NOT NULL, "
            "ALTER COLUMN name_key SET NOT NULL"
        )
    )
    connection.execute(text("DROP INDEX products_sku_key"))
    connection.execute(text("CREATE UNIQUE INDEX products_sku_key ON products (sku_key)"))
    connection.execute(text("DROP INDEX products_category_idx"))
    connection.execute(text("CREATE INDEX products_category_idx ON products (category_key)"))

    connection.execute(text('ALTER TABLE audit_log ADD COLUMN sku_key text COLLATE "C"'))
    skus = list(
        connection.execute(
            text("SELECT DISTINCT sku FROM audit_log WHERE sku IS NOT NULL")
        ).scalars()
    )
    if skus:
        connection.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change"))
        connection.execute(
            text(
                "UPDATE audit_log a SET sku_key = v.k FROM unnest(CAST(:s AS text[]), "
                "CAST(:k AS text[])) AS v(s, k) WHERE a.sku = v.s"
            ),
            {"s": skus, "k": [sku_key(s) for s in skus]},
        )
        connection.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change"))
    connection.execute(text("DROP INDEX audit_log_sku_idx"))
    connection.execute(text("CREATE INDEX audit_log_sku_idx ON audit_log (sku_key, id)"))


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX audit_log_sku_idx;
        CREATE INDEX audit_log_sku_idx ON audit_log (lower(sku), id);
        ALTER TABLE audit_log DROP COLUMN sku_key;
        DROP INDEX products_category_idx;
        CREATE INDEX products_category_idx ON products (lower(category));
        DROP INDEX products_sku_key;
        CREATE UNIQUE INDEX products_sku_key ON products (lower(sku));
        ALTER TABLE products DROP COLUMN sku_key, DROP COLUMN name_key,
            DROP COLUMN category_key;
        """
    )
