"""in flight: the sandbox's answer time per charge, and the owner of a payment's lease

Revision ID: 0300
Revises: 0200
Create Date: 2026-11-26 14:50:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0300'
down_revision = '0200'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: the running previous release neither reads nor writes them.
    op.add_column('sandbox_charges',
                  sa.Column('answer_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('payments', sa.Column('lease_owner', sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column('payments', 'lease_owner')
    op.drop_column('sandbox_charges', 'answer_at')
