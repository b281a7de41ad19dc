"""What an operator chooses per deployment, read from CDK context (`cdk deploy -c domain=...`).

Every value has a default so `make infra` synthesizes offline; docs/deploy.md lists them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.processes import SERVICES


@dataclass(frozen=True)
class Settings:
    """One deployment's choices; each field is the context key of the same camelCase name."""

    account: str | None = None
    region: str = "eu-west-1"
    availability_zones: tuple[str, ...] = ("eu-west-1a", "eu-west-1b", "eu-west-1c")
    domain: str = "api.example.com"
    certificate_arn: str = ("arn:aws:acm:eu-west-1:123456789012:certificate/"
                            "00000000-0000-0000-0000-000000000000")
    image_tag: str = "0.1.0"
    #: The image the migrate task runs; an upgrade migrates with the new one first.
    migrate_image_tag: str = ""
    alarm_email: str = ""
    mail_sender: str = "Billing <billing@example.com>"
    vpc_cidr: str = "10.40.0.0/16"
    db_instance_class: str = "r6g.large"
    db_storage_gib: int = 100
    db_max_storage_gib: int = 1000
    db_backup_days: int = 14
    redis_node_type: str = "cache.r7g.large"
    kafka_instance_type: str = "kafka.m7g.large"
    kafka_storage_gib: int = 500
    log_retention: str = "THREE_MONTHS"  # a name of aws_logs.RetentionDays
    desired: Mapping[str, int] = field(
        default_factory=lambda: {p.name: p.desired or 0 for p in SERVICES})
    api_max_tasks: int = 10
    worker_max_tasks: int = 20
    api_rate_limit: int = 2000
    api_burst_limit: int = 4000

    @classmethod
    def from_context(cls, scope: Construct) -> Settings:
        """Context values override the defaults; `desired` merges per process."""
        values: dict[str, Any] = {}
        for item in fields(cls):
            key = context_key(item.name)
            raw = scope.node.try_get_context(key)
            if raw is None:
                continue
            if isinstance(raw, str) and item.name in {"availability_zones", "desired"}:
                raw = json.loads(raw) if raw.startswith(("[", "{")) else raw.split(",")
            if item.name == "availability_zones":
                raw = tuple(raw)
            elif item.name == "desired":
                raw = {**cls().desired, **{k: int(v) for k, v in raw.items()}}
            elif isinstance(getattr(cls(), item.name), int):
                raw = int(raw)
            values[item.name] = raw
        return cls(**values)

    @property
    def retention(self) -> logs.RetentionDays:
        return logs.RetentionDays[self.log_retention]

    @property
    def env(self) -> cdk.Environment:
        return cdk.Environment(account=self.account, region=self.region)


def context_key(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)
