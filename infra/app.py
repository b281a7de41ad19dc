"""The CDK app: `python -m infra.app` from the repository root (cdk.json says so).

Four stacks, deployed in this order: Network, Data (databases, Kafka, ECR, secrets),
Services (ECS, ALB, API Gateway), Observability (alarms, dashboard). Synthesizing needs no
AWS account; cdk-nag's AwsSolutions pack runs as a validation plugin and fails the synth on
any finding not acknowledged with a reason (infra/nag.py).
"""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.data import DataStack
from infra.network import NetworkStack
from infra.observability import ObservabilityStack
from infra.processes import NAME
from infra.services import ServicesStack
from infra.settings import Settings


def build(app: cdk.App) -> dict[str, cdk.Stack]:
    """Every stack of the engine in `app`, by name."""
    settings = Settings.from_context(app)
    network = NetworkStack(app, "SubscriptionEngineNetwork", settings=settings)
    data = DataStack(app, "SubscriptionEngineData", settings=settings, network=network)
    services = ServicesStack(app, "SubscriptionEngineServices", settings=settings,
                             network=network, data=data)
    observability = ObservabilityStack(app, "SubscriptionEngineObservability",
                                       settings=settings, data=data, services=services)
    stacks: dict[str, cdk.Stack] = {"network": network, "data": data, "services": services,
                                    "observability": observability}
    for stack in stacks.values():
        cdk.Tags.of(stack).add("app", NAME)
    return stacks


def main() -> None:
    app = cdk.App()
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    build(app)
    app.synth()


if __name__ == "__main__":
    main()
