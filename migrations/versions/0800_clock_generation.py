"""test_clocks.generation: the one advance message that may drive a clock

Revision ID: 0800
Revises: 0700
Create Date: 2026-11-27 08:00:00.000000

Each message that starts or continues a clock's advance carries the clock's generation,
bumped as it is sent, so a message the scheduler has replaced (lost, or late past its time)
is void. The partial index serves the scheduler's look for overdue advances.
"""

from alembic import op
import sqlalchemy as sa


revision = '0800'
down_revision = '0700'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A server default: the running previous release inserts clocks without it.
    op.add_column('test_clocks', sa.Column('generation', sa.Integer(), nullable=False,
                                           server_default='0'))
    with op.get_context().autocommit_block():  # the previous release keeps writing clocks
        op.create_index('ix_test_clocks_advancing', 'test_clocks', ['updated_at'],
                        postgresql_where=sa.text("status = 'advancing'"),
                        postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index('ix_test_clocks_advancing', table_name='test_clocks',
                      postgresql_concurrently=True)
    op.drop_column('test_clocks', 'generation')
