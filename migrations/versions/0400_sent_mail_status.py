"""sent_mails.status: `sent`, or `skipped` (test-mode mail with no TEST_MAIL_SERVER)

Revision ID: 0400
Revises: 0500
Create Date: 2026-11-26 16:10:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0400'
down_revision = '0500'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A server default: the running previous release inserts rows without it (all sent).
    op.add_column('sent_mails', sa.Column('status', sa.String(length=16), nullable=False,
                                          server_default='sent'))


def downgrade() -> None:
    op.drop_column('sent_mails', 'status')
