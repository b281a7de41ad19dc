"""subscriptions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 12:09:04.725617
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('plans',
    sa.Column('code', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=500), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('interval', sa.String(length=8), nullable=False),
    sa.Column('interval_count', sa.SmallInteger(), nullable=False),
    sa.Column('trial_days', sa.SmallInteger(), nullable=False),
    sa.Column('archived_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.CheckConstraint("currency ~ '^[a-z]{3}$'", name=op.f('ck_plans_currency_format')),
    sa.CheckConstraint("interval IN ('day', 'week', 'month', 'year')", name=op.f('ck_plans_interval_kind')),
    sa.CheckConstraint('amount BETWEEN 1 AND 99999999', name=op.f('ck_plans_amount_range')),
    sa.CheckConstraint('interval_count BETWEEN 1 AND 12', name=op.f('ck_plans_interval_count_range')),
    sa.CheckConstraint('trial_days BETWEEN 0 AND 730', name=op.f('ck_plans_trial_days_range')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_plans_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plans')),
    sa.UniqueConstraint('tenant_id', 'livemode', 'code', name=op.f('uq_plans_tenant_id_livemode_code'))
    )
    op.create_index('ix_plans_list', 'plans', ['tenant_id', 'livemode', 'id'], unique=False)
    op.create_table('test_clocks',
    sa.Column('frozen_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.Enum('ready', 'advancing', name='clockstatus', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_test_clocks_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_test_clocks'))
    )
    op.create_table('subscriptions',
    sa.Column('customer_id', sa.String(length=40), nullable=False),
    sa.Column('plan_id', sa.String(length=40), nullable=False),
    sa.Column('payment_method_id', sa.String(length=40), nullable=False),
    sa.Column('test_clock_id', sa.String(length=40), nullable=True),
    sa.Column('status', sa.Enum('incomplete', 'trialing', 'active', 'past_due', 'paused', 'canceled', 'incomplete_expired', name='status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('billing_anchor', sa.DateTime(timezone=True), nullable=False),
    sa.Column('current_period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('current_period_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('trial_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('trial_will_end_sent', sa.Boolean(), nullable=False),
    sa.Column('cancel_at_period_end', sa.Boolean(), nullable=False),
    sa.Column('canceled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancellation_reason', sa.String(length=64), nullable=True),
    sa.Column('paused_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('latest_payment_id', sa.String(length=40), nullable=True),
    sa.Column('credit_balance', sa.BigInteger(), nullable=False),
    sa.Column('first_failure_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retry_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_event_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.CheckConstraint('credit_balance >= 0', name=op.f('ck_subscriptions_credit_non_negative')),
    sa.CheckConstraint('current_period_end > current_period_start', name=op.f('ck_subscriptions_period_order')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_subscriptions_customer_id_customers')),
    sa.ForeignKeyConstraint(['payment_method_id'], ['payment_methods.id'], name=op.f('fk_subscriptions_payment_method_id_payment_methods')),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_subscriptions_plan_id_plans')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_subscriptions_tenant_id_tenants')),
    sa.ForeignKeyConstraint(['test_clock_id'], ['test_clocks.id'], name=op.f('fk_subscriptions_test_clock_id_test_clocks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscriptions'))
    )
    op.create_index('ix_subscriptions_clock_due', 'subscriptions', ['test_clock_id', 'next_event_at'], unique=False, postgresql_where=sa.text('test_clock_id IS NOT NULL AND next_event_at IS NOT NULL'))
    op.create_index('ix_subscriptions_customer', 'subscriptions', ['tenant_id', 'livemode', 'customer_id', 'id'], unique=False)
    op.create_index('ix_subscriptions_due', 'subscriptions', ['next_event_at'], unique=False, postgresql_where=sa.text('test_clock_id IS NULL AND next_event_at IS NOT NULL'))
    op.create_index('ix_subscriptions_list', 'subscriptions', ['tenant_id', 'livemode', 'id'], unique=False)
    op.create_index('ix_subscriptions_status', 'subscriptions', ['tenant_id', 'livemode', 'status', 'id'], unique=False)
    op.add_column('customers', sa.Column('test_clock_id', sa.String(length=40), nullable=True))
    op.create_foreign_key(op.f('fk_customers_test_clock_id_test_clocks'), 'customers', 'test_clocks', ['test_clock_id'], ['id'])
    op.add_column('payments', sa.Column('purpose', sa.Enum('one_time', 'cycle', 'proration', name='paymentpurpose', native_enum=False, create_constraint=True, length=32), server_default='one_time', nullable=False))
    op.add_column('payments', sa.Column('period_start', sa.DateTime(timezone=True), nullable=True))
    op.create_index('uq_payments_cycle', 'payments', ['subscription_id', 'period_start'], unique=True, postgresql_where=sa.text("purpose = 'cycle'"))
    op.create_foreign_key(op.f('fk_payments_subscription_id_subscriptions'), 'payments', 'subscriptions', ['subscription_id'], ['id'])
    op.create_check_constraint(
        op.f('ck_payments_subscription_purpose'), 'payments',
        "(purpose = 'one_time') = (subscription_id IS NULL)",
    )
    op.create_check_constraint(
        op.f('ck_payments_cycle_period'), 'payments', "purpose <> 'cycle' OR period_start IS NOT NULL"
    )
    op.add_column('tenants', sa.Column('dunning_retry_days', postgresql.ARRAY(sa.Integer()), nullable=True))


def downgrade() -> None:
    op.drop_column('tenants', 'dunning_retry_days')
    op.drop_constraint(op.f('fk_payments_subscription_id_subscriptions'), 'payments', type_='foreignkey')
    op.drop_index('uq_payments_cycle', table_name='payments', postgresql_where=sa.text("purpose = 'cycle'"))
    op.drop_column('payments', 'period_start')
    op.drop_column('payments', 'purpose')
    op.drop_constraint(op.f('fk_customers_test_clock_id_test_clocks'), 'customers', type_='foreignkey')
    op.drop_column('customers', 'test_clock_id')
    op.drop_index('ix_subscriptions_status', table_name='subscriptions')
    op.drop_index('ix_subscriptions_list', table_name='subscriptions')
    op.drop_index('ix_subscriptions_due', table_name='subscriptions', postgresql_where=sa.text('test_clock_id IS NULL AND next_event_at IS NOT NULL'))
    op.drop_index('ix_subscriptions_customer', table_name='subscriptions')
    op.drop_index('ix_subscriptions_clock_due', table_name='subscriptions', postgresql_where=sa.text('test_clock_id IS NOT NULL AND next_event_at IS NOT NULL'))
    op.drop_table('subscriptions')
    op.drop_table('test_clocks')
    op.drop_index('ix_plans_list', table_name='plans')
    op.drop_table('plans')
