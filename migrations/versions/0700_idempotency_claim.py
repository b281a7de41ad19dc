"""idempotency_claim(): an Idempotency-Key's lock and its stored response in one round trip

Revision ID: 0700
Revises: 0400
Create Date: 2026-11-26 20:20:00

The function takes the transaction-scoped advisory lock on (tenant, mode, key), named as the
previous release names it (so both releases exclude each other during a deploy), and, when it
got it, reads the stored response. Being a volatile plpgsql function, its SELECT takes a new
snapshot after the lock is granted, so it sees a response committed by the request that held
the lock just before (one plain SQL statement would read with a snapshot taken before the
lock, and miss it).
"""

from alembic import op

revision = '0700'
down_revision = '0400'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION idempotency_claim(
            p_tenant_id text, p_livemode boolean, p_key text,
            OUT claimed boolean, OUT request_hash text, OUT status_code smallint,
            OUT response_body jsonb, OUT response_headers jsonb)
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            claimed := pg_try_advisory_xact_lock(hashtextextended(
                p_tenant_id || ':' || p_livemode::int || ':' || p_key, 0));
            IF claimed THEN
                SELECT k.request_hash, k.status_code, k.response_body, k.response_headers
                  INTO request_hash, status_code, response_body, response_headers
                  FROM idempotency_keys k
                 WHERE k.tenant_id = p_tenant_id AND k.livemode = p_livemode
                   AND k.key = p_key;
            END IF;
        END
        $$
    """)


def downgrade() -> None:
    op.execute("DROP FUNCTION idempotency_claim(text, boolean, text)")
