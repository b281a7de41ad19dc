"""The synthesized stacks have the properties issue 13 asks for, read from the templates with
aws_cdk.assertions. The app is synthesized once per run (about 10 s on an idle machine)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from app.config import Config
from app.telemetry.catalog import BY_NAME, NAMESPACE, dimension_sets
from infra.app import build
from infra.data import COMPOSED
from infra.metrics import allowed
from infra.network import KAFKA_IAM_PORT, POSTGRES_PORT, REDIS_PORT
from infra.processes import PROCESSES, SERVICES, container_definition
from infra.services import ServicesStack
from infra.settings import Settings, context_key

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = {"desired": {"worker": 3}, "alarmEmail": "ops@example.com"}


@pytest.fixture(scope="session")
def templates() -> dict[str, dict[str, Any]]:
    app = cdk.App(context=CONTEXT)
    stacks = build(app)
    assembly = app.synth()
    return {name: assembly.get_stack_by_name(stack.stack_name).template
            for name, stack in stacks.items()}


@pytest.fixture(scope="session")
def t(templates: dict[str, dict[str, Any]]) -> dict[str, Template]:
    return {name: Template.from_json(body) for name, body in templates.items()}


def resources(templates: dict[str, dict[str, Any]], kind: str,
              stack: str | None = None) -> dict[str, dict[str, Any]]:
    """Properties of every resource of `kind`, by logical id (ids are unique across stacks)."""
    return {rid: body.get("Properties", {})
            for name, template in templates.items() if stack in (None, name)
            for rid, body in template["Resources"].items() if body["Type"] == kind}


def text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def import_names(value: Any) -> list[str]:
    """The export names of every Fn::ImportValue in `value` (cross-stack references)."""
    return re.findall(r'"Fn::ImportValue": "([^"]+)"', text(value))


# --- network ---------------------------------------------------------------------------------

def test_vpc_spans_three_zones_with_public_private_and_isolated_subnets(
        templates: dict[str, dict[str, Any]], t: dict[str, Template]) -> None:
    subnets = resources(templates, "AWS::EC2::Subnet", "network")
    zones = {props["AvailabilityZone"] for props in subnets.values()}
    assert zones == set(Settings().availability_zones)
    kinds = {}
    for rid, props in subnets.items():
        kind = re.match(r"Vpc(Public|Tasks|Data)Subnet", rid)
        assert kind, rid
        kinds.setdefault(kind[1], set()).add(props["AvailabilityZone"])
        assert props["MapPublicIpOnLaunch"] is (kind[1] == "Public")
    assert {kind: len(z) for kind, z in kinds.items()} == {"Public": 3, "Tasks": 3, "Data": 3}
    t["network"].resource_count_is("AWS::EC2::NatGateway", 3)
    t["network"].resource_count_is("AWS::EC2::FlowLog", 1)
    # Isolated subnets have no route out.
    routes = resources(templates, "AWS::EC2::Route", "network")
    assert not [rid for rid in routes if rid.startswith("VpcDataSubnet")]


def test_tasks_run_in_private_subnets_without_public_ips(
        templates: dict[str, dict[str, Any]]) -> None:
    services = resources(templates, "AWS::ECS::Service", "services")
    assert len(services) == len(SERVICES)
    for props in services.values():
        network = props["NetworkConfiguration"]["AwsvpcConfiguration"]
        assert network["AssignPublicIp"] == "DISABLED"
        subnets = import_names(network["Subnets"])
        assert len(subnets) == 3 and all("VpcTasksSubnet" in name for name in subnets)
    (alb,) = resources(templates, "AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    assert alb["Scheme"] == "internal"
    assert all("VpcTasksSubnet" in name for name in import_names(alb["Subnets"]))


def test_data_lives_in_isolated_subnets(templates: dict[str, dict[str, Any]]) -> None:
    db = [p["SubnetIds"] for p in resources(templates, "AWS::RDS::DBSubnetGroup").values()]
    (redis,) = resources(templates, "AWS::ElastiCache::SubnetGroup").values()
    (kafka,) = resources(templates, "AWS::MSK::Cluster").values()
    assert len(db) == 2  # primary and replica
    for ids in (*db, redis["SubnetIds"], kafka["BrokerNodeGroupInfo"]["ClientSubnets"]):
        names = import_names(ids)
        assert len(names) == 3 and all("VpcDataSubnet" in name for name in names), names


def _group(ref: Any) -> str:
    """A security group's logical id from a Ref / Fn::GetAtt to it."""
    match = re.search(r'"(?:Ref|Fn::GetAtt)": \[?"(\w+?Sg)[0-9A-F]{8}', text(ref))
    assert match, ref
    return match[1]


def test_security_groups_allow_only_the_engines_flows(
        templates: dict[str, dict[str, Any]]) -> None:
    groups = resources(templates, "AWS::EC2::SecurityGroup", "network")
    ingress = {(_group(p["SourceSecurityGroupId"]), _group(p["GroupId"]), p["FromPort"])
               for p in resources(templates, "AWS::EC2::SecurityGroupIngress").values()}
    egress = {(_group(p["GroupId"]), _group(p["DestinationSecurityGroupId"]), p["FromPort"])
              for p in resources(templates, "AWS::EC2::SecurityGroupEgress").values()}
    expected = {("VpcLinkSg", "AlbSg", 443), ("AlbSg", "ApiSg", 8000)}
    for process in PROCESSES:
        sg = f"{process.name.capitalize()}Sg"
        for used, group, port in (("postgres" in process.uses, "PostgresSg", POSTGRES_PORT),
                                  ("redis" in process.uses, "RedisSg", REDIS_PORT),
                                  (process.kafka, "KafkaSg", KAFKA_IAM_PORT)):
            if used:
                expected.add((sg, group, port))
    assert ingress == expected
    assert egress == expected
    for rid, props in groups.items():
        for rule in props.get("SecurityGroupIngress", []):
            raise AssertionError(f"{rid}: inline ingress {rule}")
        outbound = {(r.get("CidrIp"), r["FromPort"]) for r in props.get("SecurityGroupEgress", [])}
        if rid.startswith(("VpcLinkSg", "AlbSg", "PostgresSg", "RedisSg", "KafkaSg")):
            assert outbound <= {("255.255.255.255/32", 252)}, rid  # CDK's "no egress" rule
            continue
        process = next(p for p in PROCESSES if rid.startswith(f"{p.name.capitalize()}Sg"))
        assert outbound == {("0.0.0.0/0", 443)} | (
            {("0.0.0.0/0", 587)} if "smtp" in process.uses else set()), rid


# --- front door ------------------------------------------------------------------------------

def test_api_gateway_reaches_the_alb_over_tls_through_a_vpc_link(t: dict[str, Template]) -> None:
    services = t["services"]
    services.has_resource_properties("AWS::ApiGatewayV2::Api", {"ProtocolType": "HTTP"})
    services.has_resource_properties("AWS::ApiGatewayV2::Integration", {
        "ConnectionType": "VPC_LINK", "IntegrationType": "HTTP_PROXY",
        "TlsConfig": {"ServerNameToVerify": Settings().domain}})
    services.has_resource_properties("AWS::ApiGatewayV2::Route", {"RouteKey": "$default"})
    services.has_resource_properties("AWS::ApiGatewayV2::Stage", {
        "StageName": "$default",
        "DefaultRouteSettings": {"ThrottlingRateLimit": Settings().api_rate_limit,
                                 "ThrottlingBurstLimit": Settings().api_burst_limit},
        "AccessLogSettings": Match.object_like({"DestinationArn": Match.any_value()})})
    services.has_resource_properties("AWS::ApiGatewayV2::DomainName", {
        "DomainName": Settings().domain,
        "DomainNameConfigurations": [Match.object_like(
            {"CertificateArn": Settings().certificate_arn})]})


def test_alb_listens_https_and_checks_readyz(t: dict[str, Template]) -> None:
    services = t["services"]
    services.resource_count_is("AWS::ElasticLoadBalancingV2::Listener", 1)
    services.has_resource_properties("AWS::ElasticLoadBalancingV2::Listener", {
        "Protocol": "HTTPS", "Port": 443,
        "Certificates": [{"CertificateArn": Settings().certificate_arn}],
        "SslPolicy": Match.string_like_regexp("TLS13")})
    services.has_resource_properties("AWS::ElasticLoadBalancingV2::TargetGroup", {
        "HealthCheckPath": "/readyz", "Port": 8000, "TargetType": "ip"})
    services.has_resource_properties("AWS::ElasticLoadBalancingV2::LoadBalancer", {
        "LoadBalancerAttributes": Match.array_with([
            {"Key": "access_logs.s3.enabled", "Value": "true"}])})
    services.has_resource_properties("AWS::ElasticLoadBalancingV2::LoadBalancer", {
        "LoadBalancerAttributes": Match.array_with([
            {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"}])})


def test_ecr_scans_on_push_with_immutable_tags_and_a_lifecycle(t: dict[str, Template]) -> None:
    t["data"].has_resource_properties("AWS::ECR::Repository", {
        "ImageScanningConfiguration": {"ScanOnPush": True},
        "ImageTagMutability": "IMMUTABLE",
        "LifecyclePolicy": {"LifecyclePolicyText": Match.string_like_regexp("imageCountMoreThan")},
    })


# --- ECS -------------------------------------------------------------------------------------

def test_every_service_runs_with_its_desired_count(templates: dict[str, dict[str, Any]]) -> None:
    services = {props["ServiceName"]: props
                for props in resources(templates, "AWS::ECS::Service").values()}
    assert set(services) == {process.family for process in SERVICES}
    for process in SERVICES:
        props = services[process.family]
        expected = CONTEXT["desired"].get(process.name, process.desired)  # type: ignore[attr-defined]
        assert props["DesiredCount"] == expected
        assert props["LaunchType"] == "FARGATE"
        config = props["DeploymentConfiguration"]
        assert config["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
        assert config["MinimumHealthyPercent"] == 100
    assert services["subscription-engine-scheduler"]["DesiredCount"] >= 2  # SKIP LOCKED claims


def _api_case(value: Any) -> Any:
    """CloudFormation's PascalCase container definition in ECS API's camelCase."""
    if isinstance(value, list):
        return [_api_case(item) for item in value]
    if isinstance(value, dict):
        return {(key if key[0].islower() else key[0].lower() + key[1:]):
                (item if key == "Options" else _api_case(item)) for key, item in value.items()}
    return value


def test_task_definitions_are_the_one_description(templates: dict[str, dict[str, Any]]) -> None:
    """Each task definition is what infra/processes.py describes, with the deployment's values
    (image, secret ARNs, brokers) in place of the example ones of ecs-task-defs/."""
    tasks = {props["Family"]: props
             for props in resources(templates, "AWS::ECS::TaskDefinition").values()}
    assert set(tasks) == {process.family for process in PROCESSES}
    for process in PROCESSES:
        task = tasks[process.family]
        assert (task["Cpu"], task["Memory"]) == (str(process.cpu), str(process.memory))
        assert task["RequiresCompatibilities"] == ["FARGATE"]
        assert task["NetworkMode"] == "awsvpc"
        assert task["Volumes"] == [{"Name": "scratch"}]
        (synthesized,) = _api_case(task["ContainerDefinitions"])
        options = synthesized["logConfiguration"]["options"]
        (log_group,) = [props for rid, props in resources(templates, "AWS::Logs::LogGroup").items()
                        if options["awslogs-group"] == {"Ref": rid}]
        options["awslogs-group"] = log_group["LogGroupName"]  # the name the JSON files spell
        environment = {item["name"]: item["value"] for item in synthesized["environment"]}
        secrets = {item["name"]: item["valueFrom"] for item in synthesized["secrets"]}
        assert set(environment) == set(process.environment) | set(process.deployed)
        assert {k: environment[k] for k in process.environment} == dict(process.environment)
        described = container_definition(
            process, synthesized["image"], environment, secrets.__getitem__,
            synthesized["logConfiguration"]["options"]["awslogs-region"])
        for item in ("environment", "secrets"):  # CDK sorts neither the same way
            described[item] = sorted(described[item], key=lambda i: i["name"])
            synthesized[item] = sorted(synthesized[item], key=lambda i: i["name"])
        assert synthesized == described
        assert "Ref" in text(synthesized["image"]) or "ImportValue" in text(synthesized["image"])
        for value in secrets.values():
            assert "ImportValue" in text(value)  # a Secrets Manager secret of the data stack


def test_secrets_come_from_secrets_manager_and_urls_are_composed(
        templates: dict[str, dict[str, Any]]) -> None:
    secrets = resources(templates, "AWS::SecretsManager::Secret", "data")
    names = {props["Name"]: props for props in secrets.values()}
    needed = {name for process in PROCESSES for name in process.secrets}
    for name in needed:
        assert f"subscription-engine/{name.lower().replace('_', '-')}" in names
    for name in COMPOSED:
        value = text(names[f"subscription-engine/{name.lower().replace('_', '-')}"])
        assert "{{resolve:secretsmanager:" in value  # the password by reference only
    database = text(names["subscription-engine/database-url"])
    replica = text(names["subscription-engine/database-replica-urls"])
    assert "PostgresReplica" in replica and "PostgresReplica" not in database
    assert "sslmode=" in database and "sslmode=" in replica
    assert "rediss://" in text(names["subscription-engine/redis-url"])


def test_the_replica_is_wired_to_database_replica_urls(
        templates: dict[str, dict[str, Any]]) -> None:
    """The API reads through the replica: its task gets the secret composed from the
    replica's endpoint, and the engine knows the setting."""
    assert "database_replica_urls" in Config.__dataclass_fields__
    secrets = resources(templates, "AWS::SecretsManager::Secret", "data")
    (replica_url,) = [rid for rid, props in secrets.items()
                      if props["Name"] == "subscription-engine/database-replica-urls"]
    tasks = {props["Family"]: props
             for props in resources(templates, "AWS::ECS::TaskDefinition").values()}
    (api,) = tasks["subscription-engine-api"]["ContainerDefinitions"]
    (value,) = [s["ValueFrom"] for s in api["Secrets"] if s["Name"] == "DATABASE_REPLICA_URLS"]
    assert replica_url in text(value)


def test_logs_go_to_groups_with_retention(templates: dict[str, dict[str, Any]]) -> None:
    groups = resources(templates, "AWS::Logs::LogGroup")
    assert groups and all(props.get("RetentionInDays") for props in groups.values())
    names = {props.get("LogGroupName") for props in groups.values()}
    assert "/ecs/subscription-engine" in names
    assert "/aws/rds/instance/subscription-engine/postgresql" in names


# --- data ------------------------------------------------------------------------------------

def test_postgres_is_multi_az_encrypted_tls_only_backed_up_and_protected(
        t: dict[str, Template], templates: dict[str, dict[str, Any]]) -> None:
    data = t["data"]
    data.has_resource_properties("AWS::RDS::DBInstance", {
        "Engine": "postgres", "MultiAZ": True, "StorageEncrypted": True,
        "DeletionProtection": True, "PubliclyAccessible": False,
        "BackupRetentionPeriod": Settings().db_backup_days})
    data.has_resource_properties("AWS::RDS::DBParameterGroup", {
        "Parameters": {"rds.force_ssl": "1"}})
    (replica,) = [p for p in resources(templates, "AWS::RDS::DBInstance").values()
                  if "SourceDBInstanceIdentifier" in p]
    assert replica["DeletionProtection"] is True
    assert "PostgresParameters" in text(replica["DBParameterGroupName"])
    assert "StorageEncrypted" not in replica  # inherited from the encrypted primary


def test_redis_is_multi_az_with_tls_and_auth(t: dict[str, Template]) -> None:
    t["data"].has_resource_properties("AWS::ElastiCache::ReplicationGroup", {
        "MultiAZEnabled": True, "AutomaticFailoverEnabled": True, "NumCacheClusters": 2,
        "TransitEncryptionEnabled": True, "TransitEncryptionMode": "required",
        "AtRestEncryptionEnabled": True,
        "AuthToken": Match.object_like({"Fn::Join": Match.any_value()})})


def test_kafka_uses_tls_and_iam_only(t: dict[str, Template]) -> None:
    t["data"].has_resource_properties("AWS::MSK::Cluster", {
        "NumberOfBrokerNodes": 3,
        "ClientAuthentication": {"Sasl": {"Iam": {"Enabled": True}},
                                 "Unauthenticated": {"Enabled": False}},
        "EncryptionInfo": {"EncryptionInTransit": {"ClientBroker": "TLS", "InCluster": True}},
    })
    t["data"].has_resource_properties("AWS::MSK::Configuration", {
        "ServerProperties": Match.string_like_regexp("min.insync.replicas=2")})


# --- IAM -------------------------------------------------------------------------------------

def _statements(templates: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for rid, props in resources(templates, "AWS::IAM::Policy").items():
        for statement in props["PolicyDocument"]["Statement"]:
            yield rid, statement
    for rid, props in resources(templates, "AWS::IAM::Role").items():
        for policy in props.get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                yield rid, statement


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_iam_names_its_actions_and_resources(templates: dict[str, dict[str, Any]]) -> None:
    for rid, statement in _statements(templates):
        assert statement["Effect"] == "Allow", rid
        actions = _list(statement["Action"])
        assert not [a for a in actions if "*" in a], f"{rid}: wildcard action {actions}"
        if "*" in _list(statement["Resource"]):
            assert actions == ["ecr:GetAuthorizationToken"], f"{rid}: Resource * for {actions}"
    managed = {rid: props["ManagedPolicyArns"]
               for rid, props in resources(templates, "AWS::IAM::Role").items()
               if props.get("ManagedPolicyArns")}
    assert set(managed) <= {rid for rid in managed if rid.startswith("AWS679f53fac")}


def _grants(policy: dict[str, Any]) -> dict[str, str]:
    """Each action of a policy, with its resources as text."""
    return {action: text(statement["Resource"])
            for statement in policy["PolicyDocument"]["Statement"]
            for action in _list(statement["Action"])}


def test_task_roles_grant_only_what_each_process_calls(
        templates: dict[str, dict[str, Any]]) -> None:
    policies = resources(templates, "AWS::IAM::Policy", "services")
    task_policies = {rid.split("TaskRole")[0]: _grants(props)
                     for rid, props in policies.items() if "TaskRole" in rid}
    assert set(task_policies) == {"Relay", "Webhooks"}  # the others call no AWS API
    relay, webhooks = task_policies["Relay"], task_policies["Webhooks"]
    assert set(relay) == {
        "kafka-cluster:Connect", "kafka-cluster:DescribeCluster",
        "kafka-cluster:WriteDataIdempotently", "kafka-cluster:CreateTopic",
        "kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"}
    assert set(webhooks) == {
        "kafka-cluster:Connect", "kafka-cluster:DescribeCluster", "kafka-cluster:DescribeTopic",
        "kafka-cluster:ReadData", "kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"}
    for grants in (relay["kafka-cluster:WriteData"], webhooks["kafka-cluster:ReadData"]):
        assert ":topic/" in grants
        assert sorted(re.findall(r"/(billing\.\w+)", grants)) == sorted(
            ["billing.customers", "billing.payments", "billing.subscriptions"])
    assert ":group/" in webhooks["kafka-cluster:AlterGroup"]
    assert webhooks["kafka-cluster:AlterGroup"].count("/webhook-dispatcher") == 1
    (execution,) = [_grants(p) for rid, p in policies.items() if rid.startswith("ExecutionRole")]
    assert set(execution) == {"ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability",
                              "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage",
                              "logs:CreateLogStream", "logs:PutLogEvents",
                              "secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}


# --- alarms, dashboard, scaling --------------------------------------------------------------

ALARMS = {
    "Api5xxRate", "PayLatency", "FailedPaymentRatio", "QueueMessageAgeDefault",
    "OutboxOldestAge", "RelayNotPublishing", "RenewalLag", "ReplicaLag", "ReplicaLagRds",
    "DatabaseCpu", "DatabaseFreeStorage", "RedisMemory001", "RedisMemory002",
    *{f"TasksRestarting{p.name.capitalize()}" for p in SERVICES},
}


def _engine_series(value: Any) -> Iterator[dict[str, Any]]:
    """Every metric stat of the engine's namespace inside an alarm or a scaling policy."""
    if isinstance(value, dict):
        if value.get("Namespace") == NAMESPACE:
            yield value
        for item in value.values():
            yield from _engine_series(item)
    elif isinstance(value, list):
        for item in value:
            yield from _engine_series(item)


def test_alarms_cover_the_issue_and_notify_the_topic(
        templates: dict[str, dict[str, Any]]) -> None:
    alarms = resources(templates, "AWS::CloudWatch::Alarm", "observability")
    names = {props["AlarmName"].removeprefix("subscription-engine-") for props in alarms.values()}
    assert ALARMS <= names, ALARMS - names
    for props in alarms.values():
        assert len(props["AlarmActions"]) == 1 and "Ref" in props["AlarmActions"][0]
        assert props["TreatMissingData"] == "notBreaching"
        assert "Runbook: docs/deploy.md#" in props["AlarmDescription"]
    (topic,) = resources(templates, "AWS::SNS::Topic").values()
    assert "KmsMasterKeyId" in topic
    t = Template.from_json(templates["observability"])
    t.has_resource_properties("AWS::SNS::Subscription", {"Protocol": "email",
                                                         "Endpoint": "ops@example.com"})
    t.resource_count_is("AWS::CloudWatch::Dashboard", 1)


def test_alarms_and_scaling_read_series_the_engine_really_writes(
        templates: dict[str, dict[str, Any]]) -> None:
    """Cross-checked against app/telemetry/catalog.py: the metric exists, the dimension set
    is one the emitter writes, every value is one it may take."""
    found = list(_engine_series(templates))
    assert len(found) >= 10
    for series in found:
        metric = BY_NAME[series["MetricName"]]
        dims = {d["Name"]: d["Value"] for d in series.get("Dimensions", [])}
        assert tuple(d for d in ("Service", *metric.dimensions) if d in dims) in \
            dimension_sets(metric), series
        for name, value in dims.items():
            assert value in allowed(metric, name), series
    names = {series["MetricName"] for series in found}
    assert {"HttpRequests", "PayLatency", "PaymentsSettled", "QueueMessageAge",
            "OutboxOldestAge", "EventsPublished", "RenewalLag", "ReplicaLag"} <= names


def test_every_catalog_alarm_is_deployed(templates: dict[str, dict[str, Any]]) -> None:
    alarms = resources(templates, "AWS::CloudWatch::Alarm", "observability")
    deployed = {(p["MetricName"], p["Threshold"]) for p in alarms.values() if "MetricName" in p}
    for metric in BY_NAME.values():
        for alarm in metric.alarms:
            assert (metric.name, alarm.threshold) in deployed, metric.name


def test_api_scales_on_cpu_and_requests_and_workers_on_queue_age(
        t: dict[str, Template], templates: dict[str, dict[str, Any]]) -> None:
    services = t["services"]
    for metric in ("ECSServiceAverageCPUUtilization", "ALBRequestCountPerTarget"):
        services.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": Match.object_like({
                "PredefinedMetricSpecification": Match.object_like(
                    {"PredefinedMetricType": metric})})})
    steps = [p for p in resources(templates, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
             if p["PolicyType"] == "StepScaling"]
    assert steps
    queue_alarms = [p for p in resources(templates, "AWS::CloudWatch::Alarm", "services").values()
                    if p.get("MetricName") == "QueueMessageAge"]
    assert queue_alarms and all(p["Namespace"] == NAMESPACE for p in queue_alarms)
    targets = resources(templates, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert sorted(p["MaxCapacity"] for p in targets.values()) == sorted(
        [Settings().api_max_tasks, Settings().worker_max_tasks])


def test_an_upgrade_migrates_with_the_new_image_while_services_keep_the_old() -> None:
    app = cdk.App(context={"imageTag": "1.0.0", "migrateImageTag": "1.1.0"})
    services = build(app)["services"]
    assert isinstance(services, ServicesStack)
    images = {name: text(services.resolve(task.default_container.image_name))  # type: ignore[union-attr]
              for name, task in services.task_definitions.items()}
    assert ":1.1.0" in images.pop("migrate")
    assert all(":1.0.0" in image for image in images.values()), images


def test_deploy_doc_has_a_runbook_line_for_every_alarm_and_every_setting(
        templates: dict[str, dict[str, Any]]) -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    headings = set(re.findall(r"^#### (\w+)$", doc, flags=re.MULTILINE))
    alarms = {props["AlarmName"].removeprefix("subscription-engine-").lower()
              for props in resources(templates, "AWS::CloudWatch::Alarm", "observability").values()}
    assert alarms - headings == set(), "add a runbook line to docs/deploy.md"
    assert headings - alarms == set(), "docs/deploy.md describes alarms that do not exist"
    table = doc.split("## Settings", 1)[1].split("\n## ", 1)[0]
    for item in fields(Settings):
        assert f"`{context_key(item.name)}`" in table, item.name


def test_context_overrides_the_defaults() -> None:
    app = cdk.App(context={"domain": "pay.acme.test", "desired": '{"api": 4}',
                           "availabilityZones": "us-east-1a,us-east-1b,us-east-1c",
                           "region": "us-east-1", "dbStorageGib": "200"})
    settings = Settings.from_context(app)
    assert settings.domain == "pay.acme.test" and settings.db_storage_gib == 200
    assert settings.desired["api"] == 4 and settings.desired["worker"] == 2
    assert settings.availability_zones == ("us-east-1a", "us-east-1b", "us-east-1c")
