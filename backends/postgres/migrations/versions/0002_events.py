"""The v3 additions: one version sequence for stock rows, and rejected events.

Every change of a stock row takes its new `version` from `stock_version_seq`, one
sequence for all rows, so versions only grow, even for a row deleted and created again.
The Redis cache keeps the version beside each quantity and refuses to replace a value
with an older one (a slow reader can never put an old quantity back).

`rejected_events` records what the Kafka worker could never apply (unknown product,
would go negative, stale `expect`, malformed): the message, why, and where it was on the
topic.  Its `message_id` is unique per published message, so a message delivered again
is recognised and never applied after it was rejected.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE SEQUENCE stock_version_seq;
SELECT setval('stock_version_seq', greatest((SELECT max(version) FROM inventory), 1));
ALTER TABLE inventory ALTER COLUMN version SET DEFAULT nextval('stock_version_seq');

CREATE TABLE rejected_events (
    message_id text PRIMARY KEY,
    event_id text,
    at timestamptz NOT NULL DEFAULT now(),
    topic text NOT NULL,
    "partition" integer NOT NULL,
    "offset" bigint NOT NULL,
    error text NOT NULL,
    reason text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    payload text NOT NULL
);
CREATE INDEX rejected_events_event_idx ON rejected_events (event_id);
CREATE INDEX rejected_events_at_idx ON rejected_events (at);
"""

DOWNGRADE = """
DROP TABLE rejected_events;
ALTER TABLE inventory ALTER COLUMN version SET DEFAULT 1;
DROP SEQUENCE stock_version_seq;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
