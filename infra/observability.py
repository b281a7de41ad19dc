"""Alarms to one SNS topic, and a dashboard of the same graphs.

The engine's alarms come from app/telemetry/catalog.py (each Metric's `alarms`), plus the
ratios computed here from series the engine writes; AWS's own metrics cover the database,
Redis and the ECS services. docs/deploy.md has a runbook line for every alarm, by name.
"""

from __future__ import annotations

import re

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from app.telemetry.catalog import CATALOG, HTTP_OUTCOMES
from infra.data import DataStack
from infra.metrics import engine_metric
from infra.processes import NAME
from infra.services import ServicesStack
from infra.settings import Settings

MINUTE = cdk.Duration.minutes(1)
FIVE_MINUTES = cdk.Duration.minutes(5)
#: Providers whose live payments count in the failed-payment ratio (sandbox has no live mode).
LIVE_PROVIDERS = ("stripe", "paypal")


class ObservabilityStack(cdk.Stack):
    def __init__(self, scope: Construct, id: str, *, settings: Settings, data: DataStack,
                 services: ServicesStack) -> None:
        super().__init__(scope, id, env=settings.env,
                         description="Subscription Engine: alarms, SNS topic, dashboard")
        key = kms.Key(self, "AlarmsKey", enable_key_rotation=True,
                      description="Encrypts the alarm topic")
        key.grant(iam.ServicePrincipal("cloudwatch.amazonaws.com"),
                  "kms:Decrypt", "kms:GenerateDataKey*")
        self.topic = sns.Topic(self, "Alarms", topic_name=f"{NAME}-alarms",
                               master_key=key, enforce_ssl=True)
        if settings.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(settings.alarm_email))
        self.alarms: list[cw.Alarm] = []
        self._engine_alarms()
        self._ratio_alarms()
        self._aws_alarms(data, services)
        dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=NAME)
        widgets: list[cw.IWidget] = [cw.AlarmWidget(alarm=alarm, title=alarm.node.id, width=8)
                                     for alarm in self.alarms]
        for row in range(0, len(widgets), 3):
            dashboard.add_widgets(*widgets[row:row + 3])

    def _alarm(self, name: str, metric: cw.IMetric, threshold: float,
               comparison: cw.ComparisonOperator, description: str,
               evaluation_periods: int = 1) -> None:
        alarm = cw.Alarm(
            self, name, alarm_name=f"{NAME}-{name}", metric=metric, threshold=threshold,
            comparison_operator=comparison, evaluation_periods=evaluation_periods,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            alarm_description=f"{description} Runbook: docs/deploy.md#{name.lower()}")
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        alarm.add_ok_action(actions.SnsAction(self.topic))
        self.alarms.append(alarm)

    def _engine_alarms(self) -> None:
        """One alarm per catalog alarm, on exactly the series the catalog names."""
        for metric in CATALOG:
            for alarm in metric.alarms:
                pinned = "".join(v.capitalize() for k, v in alarm.dimensions.items()
                                 if k != "Service")
                self._alarm(
                    f"{metric.name}{pinned}",
                    engine_metric(metric.name, alarm.statistic,
                                  cdk.Duration.seconds(alarm.period_seconds),
                                  **alarm.dimensions),
                    alarm.threshold, _comparison(alarm.comparison), alarm.description,
                    alarm.evaluation_periods)

    def _ratio_alarms(self) -> None:
        by_outcome = {f"h{outcome[0]}": engine_metric("HttpRequests", "Sum", FIVE_MINUTES,
                                                      Service="api", Outcome=outcome)
                      for outcome in HTTP_OUTCOMES}
        total = "+".join(f"FILL({m},0)" for m in by_outcome)
        self._alarm("Api5xxRate", cw.MathExpression(
            expression=f"IF(({total}) >= 100, 100*FILL(h5,0)/({total}), 0)",
            using_metrics=by_outcome, period=FIVE_MINUTES, label="API 5xx %"),
            5, cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            "More than 5% of API answers were server errors (at 100 requests or more).")

        settled = {f"{outcome[0]}{provider}": engine_metric(
                       "PaymentsSettled", "Sum", FIVE_MINUTES, Service="worker",
                       Provider=provider, Mode="live", Outcome=outcome)
                   for provider in LIVE_PROVIDERS for outcome in ("failed", "succeeded")}
        failed = "+".join(f"FILL({m},0)" for m in settled if m.startswith("f"))
        every = "+".join(f"FILL({m},0)" for m in settled)
        self._alarm("FailedPaymentRatio", cw.MathExpression(
            expression=f"IF(({every}) >= 20, 100*({failed})/({every}), 0)",
            using_metrics=settled, period=FIVE_MINUTES, label="failed live payments %"),
            30, cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            "More than 30% of live payments failed in 5 minutes (at 20 payments or more).",
            evaluation_periods=2)

        self._alarm("RelayNotPublishing", cw.MathExpression(
            expression="IF(backlog > 0 AND FILL(published,0) == 0, 1, 0)",
            using_metrics={
                "backlog": engine_metric("OutboxBacklog", "Minimum", MINUTE, Service="relay"),
                "published": engine_metric("EventsPublished", "Sum", MINUTE, Service="relay")},
            period=MINUTE, label="outbox waiting, nothing published"),
            1, cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            "Events wait in the outbox and the relay published none for 5 minutes.",
            evaluation_periods=5)

    def _aws_alarms(self, data: DataStack, services: ServicesStack) -> None:
        database, replica = data.database, data.replica
        self._alarm("DatabaseCpu", database.metric_cpu_utilization(period=FIVE_MINUTES),
                    80, cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    "The primary database's CPU above 80% for 15 minutes.", evaluation_periods=3)
        free_gib = data.settings.db_storage_gib // 10
        self._alarm("DatabaseFreeStorage",
                    database.metric_free_storage_space(period=FIVE_MINUTES),
                    free_gib * 1024 ** 3, cw.ComparisonOperator.LESS_THAN_THRESHOLD,
                    f"Less than {free_gib} GiB free on the primary database.")
        self._alarm("ReplicaLagRds", replica.metric("ReplicaLag", statistic="Maximum",
                                                    period=MINUTE),
                    60, cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    "RDS reports the read replica more than 60 s behind for 5 minutes.",
                    evaluation_periods=5)
        for member in data.redis_members:
            self._alarm(f"RedisMemory{member[-3:]}", cw.Metric(
                namespace="AWS/ElastiCache", metric_name="DatabaseMemoryUsagePercentage",
                dimensions_map={"CacheClusterId": member}, statistic="Maximum",
                period=FIVE_MINUTES),
                80, cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                f"Redis node {member} uses more than 80% of its memory.")
        for name, service in services.services.items():
            # Container Insights: a service short of tasks keeps restarting them.
            using = {metric[0].lower(): cw.Metric(
                namespace="ECS/ContainerInsights", metric_name=metric,
                dimensions_map={"ClusterName": services.cluster.cluster_name,
                                "ServiceName": service.service_name},
                statistic="Minimum", period=MINUTE)
                for metric in ("DesiredTaskCount", "RunningTaskCount")}
            self._alarm(f"TasksRestarting{name.capitalize()}", cw.MathExpression(
                expression="d - r", using_metrics=using, period=MINUTE,
                label=f"{name} tasks missing"),
                1, cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                f"{name}: fewer tasks running than desired for 10 minutes (tasks keep "
                "stopping and restarting).", evaluation_periods=10)


def _comparison(name: str) -> cw.ComparisonOperator:
    """CloudWatch's GreaterThanThreshold -> cw.ComparisonOperator.GREATER_THAN_THRESHOLD."""
    return cw.ComparisonOperator[re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()]
