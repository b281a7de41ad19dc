"""deleted customers and detached payment methods (kept for the payments that name them),
and the API key's display prefix

Revision ID: 0500
Revises: 0600
Create Date: 2026-11-26 14:55:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0500'
down_revision = '0600'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: the running previous release neither reads nor writes them.
    op.add_column('customers', sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('payment_methods',
                  sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('api_keys', sa.Column('prefix', sa.String(length=12), nullable=True))


def downgrade() -> None:
    op.drop_column('api_keys', 'prefix')
    op.drop_column('payment_methods', 'deleted_at')
    op.drop_column('customers', 'deleted_at')
