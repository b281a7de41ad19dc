"""cdk-nag's AwsSolutions pack, and the one way to accept a finding: with a written reason."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept the finding `rule` (e.g. "AwsSolutions-IAM5[Resource::*]") on `scope` and its
    children, saying why right here, next to the resource."""
    assert len(reason) >= 40, f"{rule}: say why in a sentence"
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))
