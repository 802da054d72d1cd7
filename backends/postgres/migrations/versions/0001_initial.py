"""The v2 schema: stores, products, inventory, users, api_tokens, audit_log, applied_events.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE stores (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text NOT NULL UNIQUE CHECK (code ~ '^[a-z0-9_-]{1,64}$'),
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE product_sku_seq;

CREATE TABLE products (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku text NOT NULL CHECK (sku = btrim(sku) AND length(sku) BETWEEN 1 AND 64),
    name text NOT NULL,
    price numeric(12, 2) NOT NULL CHECK (price >= 0),
    unit text NOT NULL DEFAULT 'each',
    category text,
    reorder_level integer NOT NULL DEFAULT 0 CHECK (reorder_level >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- SKUs keep their case and are unique ignoring it.
CREATE UNIQUE INDEX products_sku_key ON products (lower(sku));
CREATE INDEX products_category_idx ON products (lower(category));

CREATE TABLE inventory (
    store_id integer NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    product_id bigint NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    quantity integer NOT NULL DEFAULT 0 CHECK (quantity >= 0),
    version bigint NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, product_id)
);
-- The primary key serves one store's list; these serve a product's stock and low stock.
CREATE INDEX inventory_product_idx ON inventory (product_id);
CREATE INDEX inventory_store_quantity_idx ON inventory (store_id, quantity);

CREATE TABLE users (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    role text NOT NULL CHECK (role IN ('admin', 'manager', 'clerk')),
    stores text[],
    disabled boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash text NOT NULL UNIQUE,
    name text,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    last_used_at timestamptz
);

CREATE TABLE applied_events (
    event_id text PRIMARY KEY,
    fingerprint text NOT NULL,
    result jsonb NOT NULL DEFAULT '{}'::jsonb,
    at timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE audit_log_id_seq;

CREATE TABLE audit_log (
    id bigint NOT NULL DEFAULT nextval('audit_log_id_seq'),
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    source text NOT NULL,
    event_id text NOT NULL,
    store text,
    sku text,
    action text NOT NULL,
    delta integer,
    quantity_after integer,
    reason text,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
ALTER SEQUENCE audit_log_id_seq OWNED BY audit_log.id;
CREATE INDEX audit_log_sku_idx ON audit_log (lower(sku), id);
CREATE INDEX audit_log_store_idx ON audit_log (store, id);
CREATE INDEX audit_log_at_idx ON audit_log (at);

-- The audit log is append-only: no UPDATE, DELETE or TRUNCATE, on it or a partition.
CREATE FUNCTION audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse();

-- One partition per month (UTC), created ahead by `inv db upgrade`/`inv init` and on
-- demand; row triggers reach partitions by themselves, TRUNCATE triggers do not.
CREATE FUNCTION audit_log_partition(at timestamptz) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    start timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    stop timestamptz := (date_trunc('month', at AT TIME ZONE 'UTC') + interval '1 month')
        AT TIME ZONE 'UTC';
    name text := 'audit_log_' || to_char(at AT TIME ZONE 'UTC', 'YYYY_MM');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('inv.audit_log_partition'));
    IF to_regclass(name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF audit_log FOR VALUES FROM (%L) TO (%L)',
            name, start, stop);
        EXECUTE format(
            'CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse()', name);
    END IF;
    RETURN name;
END
$$;

SELECT audit_log_partition(now() + make_interval(months => m))
FROM generate_series(-1, 12) AS m;
"""

DOWNGRADE = """
DROP TABLE audit_log CASCADE;
DROP FUNCTION audit_log_partition(timestamptz);
DROP FUNCTION audit_log_refuse();
DROP TABLE applied_events, api_tokens, users, inventory, products, stores CASCADE;
DROP SEQUENCE product_sku_seq;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
