"""provider credentials (encrypted per tenant and mode) and the tenant's failover provider

Revision ID: 0200
Revises: 0100
Create Date: 2026-11-25 13:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0200'
down_revision = '0100'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('provider_credentials',
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('sealed', sa.LargeBinary(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_provider_credentials_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('tenant_id', 'provider', 'livemode', name=op.f('pk_provider_credentials'))
    )
    # Nullable, no default: the running previous release neither reads nor writes it.
    op.add_column('tenants', sa.Column('failover_provider', sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.drop_column('tenants', 'failover_provider')
    op.drop_table('provider_credentials')
