"""The fleet's package floor for bench/pay.py: what one `charge_payment` message costs Dramatiq
alone, with none of the engine's work (no claim, no provider call, no settle).

`dramatiq floor_fleet` (from bench/, on the engine's settings) declares an actor of the same
name on the engine's RedisBroker with its middleware (app/bootstrap.py: Dramatiq's defaults,
its Retries policy, CurrentMessage) that does nothing: each message is fetched, dispatched,
run and acknowledged, as every charge message is. Any fleet that charges one payment per
message spends at least this per payment, above whatever its own work costs.
"""

from __future__ import annotations

import dramatiq

from app.bootstrap import build

build().broker  # noqa: B018 - the engine's broker, installed as Dramatiq's


@dramatiq.actor
def charge_payment(payment_id: str) -> None:
    """Nothing: the message's fetch, dispatch and acknowledgement are the floor."""
