"""Plans: create and archive."""

from __future__ import annotations

from app.cache import Cache
from app.clock import utcnow
from app.ids import new_id
from app.models import Plan
from app.models.uow import UnitOfWork
from app.services.errors import Conflict
from app.services.scope import Scope


def create_plan(
    uow: UnitOfWork,
    scope: Scope,
    *,
    code: str,
    name: str,
    amount: int,
    currency: str,
    interval: str,
    interval_count: int,
    trial_days: int,
) -> Plan:
    """A new plan; `code` is unique per tenant and mode (409 on a duplicate)."""
    query = scope.query(Plan).where(Plan.code == code).with_only_columns(Plan.id)
    taken = uow.session.scalar(query)
    if taken is not None:
        raise Conflict(f"A plan with code '{code}' already exists.", code="plan_code_taken")
    plan = Plan(
        id=new_id("plan"),
        tenant_id=scope.tenant_id,
        livemode=scope.livemode,
        code=code,
        name=name,
        amount=amount,
        currency=currency,
        interval=interval,
        interval_count=interval_count,
        trial_days=trial_days,
    )
    uow.session.add(plan)
    uow.session.flush()
    return plan


def archive_plan(uow: UnitOfWork, cache: Cache, scope: Scope, plan_id: str) -> Plan:
    """Stop new subscriptions to a plan; existing ones go on."""
    plan = scope.get(uow.session, Plan, plan_id, lock=True)
    if plan.archived_at is None:
        plan.archived_at = utcnow()
        uow.after_commit(lambda: cache.invalidate_plan(scope, plan_id))
    return plan
