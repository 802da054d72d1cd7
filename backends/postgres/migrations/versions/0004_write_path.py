"""A schema for the write path: stock updated in place (HOT), time-ordered audit indexed by BRIN.

Every index is paid for on every write, so each one left is here for a query:

* `inventory` primary key `(store_id, product_id)`: one store's list and low stock
  (`list --store`, `report low-stock --store`: the store's rows are one range of it),
  every movement's row lookup, the worker's locks.
* `inventory_product_idx (product_id)`: a product's stock at every store (`show`,
  `get`, the cache's fill) and the cascade when a product is removed.
* `inventory_store_quantity_idx (store_id, quantity)` is **dropped**: low stock compares
  each row's quantity with its product's reorder level, which no index on `quantity`
  alone answers (the planner read the store's range either way), and because `quantity`
  was in an index, every quantity change had to write a new entry into all three
  indexes.  Without it no indexed column of `inventory` changes when stock moves, so
  PostgreSQL can update the row in place on its page (a heap-only tuple, HOT) and
  touch no index at all.
* `fillfactor = 80` on `inventory` leaves a fifth of each page free, so the new version of
  a row fits on its page and the update stays HOT.  It applies to pages written from now
  on (inserts, and `VACUUM FULL` if an operator wants it for old pages); no rewrite here,
  so the migration is quick on a populated database.
* `audit_log_at_idx` becomes a BRIN index: audit rows arrive in time order, so a
  block-range summary finds a period (`history --since`, `report movements --since`)
  for a few kilobytes instead of a btree entry per row on every insert.  The other
  audit indexes serve `history SKU` (`sku_key, id`), `history --store` (`store, id`)
  and the primary key `(id, at)`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
DROP INDEX IF EXISTS inventory_store_quantity_idx;
ALTER TABLE inventory SET (fillfactor = 80);
DROP INDEX audit_log_at_idx;
CREATE INDEX audit_log_at_idx ON audit_log USING brin (at);
"""

DOWNGRADE = """
DROP INDEX audit_log_at_idx;
CREATE INDEX audit_log_at_idx ON audit_log (at);
ALTER TABLE inventory RESET (fillfactor);
CREATE INDEX inventory_store_quantity_idx ON inventory (store_id, quantity);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
