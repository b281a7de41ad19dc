"""The engine's processes on ECS Fargate, built from infra/processes.py, behind an internal
load balancer that API Gateway reaches through a VPC link; autoscaling for the API and workers.
"""

from __future__ import annotations

import aws_cdk as cdk
import jsii
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_applicationautoscaling as autoscaling
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from app.webhooks.dispatcher import GROUP as WEBHOOK_GROUP
from infra.data import TOPICS, DataStack
from infra.metrics import engine_metric
from infra.nag import acknowledge
from infra.network import HTTPS_PORT, NetworkStack
from infra.processes import (
    API_PORT,
    HEALTH_CHECK,
    LOG_GROUP,
    MAX_BUFFER_BYTES,
    NAME,
    PROCESSES,
    SCRATCH,
    Process,
)
from infra.settings import Settings

#: ALB requests per API task per minute before another task starts.
REQUESTS_PER_TASK = 3000


class ServicesStack(cdk.Stack):
    def __init__(self, scope: Construct, id: str, *, settings: Settings,
                 network: NetworkStack, data: DataStack) -> None:
        super().__init__(scope, id, env=settings.env,
                         description="Subscription Engine: ECS services, ALB, API Gateway")
        self.settings, self.network, self.data = settings, network, data
        self.cluster = ecs.Cluster(self, "Cluster", vpc=network.vpc, cluster_name=NAME,
                                   container_insights_v2=ecs.ContainerInsights.ENABLED)
        self.log_group = logs.LogGroup(self, "Logs", log_group_name=LOG_GROUP,
                                       retention=settings.retention,
                                       removal_policy=cdk.RemovalPolicy.RETAIN)
        # Pulls the image, reads the secrets, writes the logs: CDK grants exactly those below.
        self.execution_role = iam.Role(
            self, "ExecutionRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="ECS agent: pull the image, read the tasks' secrets, write logs")
        acknowledge(self.execution_role, "AwsSolutions-IAM5[Resource::*]",
                    "ecr:GetAuthorizationToken has no resource-level permissions; AWS requires "
                    "Resource '*' for it. Every other statement names its resources.")
        self.deployed = {
            "KAFKA_BOOTSTRAP_SERVERS": data.kafka_bootstrap_servers,
            "KAFKA_AWS_REGION": self.region,
            "MAIL_SERVER": f"email-smtp.{self.region}.amazonaws.com",
            "MAIL_DEFAULT_SENDER": settings.mail_sender,
        }
        self.task_definitions = {p.name: self._task_definition(p) for p in PROCESSES}
        self.services = {p.name: self._service(p) for p in PROCESSES if p.desired is not None}
        self._load_balancer()
        self._autoscaling()
        migrate = self.task_definitions["migrate"]
        cdk.CfnOutput(self, "MigrateCommand", description="Run the migrations (one-off task)",
                      value=cdk.Fn.join("", [
                          f"aws ecs run-task --cluster {NAME} --launch-type FARGATE "
                          "--task-definition ", migrate.task_definition_arn,
                          " --network-configuration 'awsvpcConfiguration={subnets=[",
                          cdk.Fn.join(",", network.vpc.select_subnets(
                              subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnet_ids),
                          "],securityGroups=[", network.tasks["migrate"].security_group_id,
                          "],assignPublicIp=DISABLED}'"]))

    def _task_definition(self, process: Process) -> ecs.FargateTaskDefinition:
        role = iam.Role(self, f"{_id(process)}TaskRole",
                        assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                        description=f"{process.name} tasks: only the AWS calls it makes")
        if process.kafka:
            self._grant_kafka(role, process)
        task = ecs.FargateTaskDefinition(
            self, f"{_id(process)}Task", family=process.family, cpu=process.cpu,
            memory_limit_mib=process.memory, execution_role=self.execution_role,
            task_role=role, volumes=[ecs.Volume(name=SCRATCH[0])],
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX))
        check = HEALTH_CHECK
        container = task.add_container(
            process.name, container_name=process.name, essential=True,
            image=ecs.ContainerImage.from_ecr_repository(self.data.repository,
                                                        self._tag(process)),
            command=list(process.command),
            environment={**process.environment,
                         **{name: self.deployed[name] for name in process.deployed}},
            secrets={name: ecs.Secret.from_secrets_manager(self.data.secrets[name])
                     for name in process.secrets},
            readonly_root_filesystem=True,
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix=process.name, log_group=self.log_group,
                mode=ecs.AwsLogDriverMode.NON_BLOCKING,
                max_buffer_size=cdk.Size.bytes(MAX_BUFFER_BYTES)),
            stop_timeout=cdk.Duration.seconds(process.stop_timeout),
            port_mappings=[] if process.port is None else [ecs.PortMapping(
                name="http", container_port=process.port, protocol=ecs.Protocol.TCP,
                app_protocol=ecs.AppProtocol.http)],
            health_check=None if process.port is None else ecs.HealthCheck(
                command=check["command"], interval=cdk.Duration.seconds(check["interval"]),
                timeout=cdk.Duration.seconds(check["timeout"]), retries=check["retries"],
                start_period=cdk.Duration.seconds(check["startPeriod"])),
        )
        container.add_mount_points(ecs.MountPoint(source_volume=SCRATCH[0],
                                                  container_path=SCRATCH[1], read_only=False))
        acknowledge(task, "AwsSolutions-ECS2",
                    "Only non-secret settings are environment variables; every credential "
                    "comes from Secrets Manager (tests/unit/test_deploy_files.py checks).")
        return task

    def _tag(self, process: Process) -> str:
        """The image tag `process` runs: migrations may run a newer one (docs/deploy.md)."""
        if process.desired is None and self.settings.migrate_image_tag:
            return self.settings.migrate_image_tag
        return self.settings.image_tag

    def _grant_kafka(self, role: iam.Role, process: Process) -> None:
        """MSK IAM: connect to the one cluster; the relay creates, describes and writes the
        engine's topics; the webhook dispatcher reads them in its own consumer group."""
        data = self.data
        topics = [data.kafka_arn("topic", topic) for topic in TOPICS]
        if "kafka-publish" in process.uses:
            role.add_to_policy(iam.PolicyStatement(
                actions=["kafka-cluster:Connect", "kafka-cluster:DescribeCluster",
                         "kafka-cluster:WriteDataIdempotently"],
                resources=[data.kafka.attr_arn]))
            role.add_to_policy(iam.PolicyStatement(
                actions=["kafka-cluster:CreateTopic", "kafka-cluster:DescribeTopic",
                         "kafka-cluster:WriteData"],
                resources=topics))
        if "kafka-consume" in process.uses:
            role.add_to_policy(iam.PolicyStatement(
                actions=["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"],
                resources=[data.kafka.attr_arn]))
            role.add_to_policy(iam.PolicyStatement(
                actions=["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"],
                resources=topics))
            role.add_to_policy(iam.PolicyStatement(
                actions=["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"],
                resources=[data.kafka_arn("group", WEBHOOK_GROUP)]))

    def _service(self, process: Process) -> ecs.FargateService:
        return ecs.FargateService(
            self, f"{_id(process)}Service", cluster=self.cluster, service_name=process.family,
            task_definition=self.task_definitions[process.name],
            desired_count=self.settings.desired[process.name],
            security_groups=[self.network.tasks[process.name]],
            vpc_subnets=self.network.task_subnets, assign_public_ip=False,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            min_healthy_percent=100, max_healthy_percent=200,
            health_check_grace_period=(cdk.Duration.seconds(60) if process.port else None),
            propagate_tags=ecs.PropagatedTagSource.SERVICE, enable_ecs_managed_tags=True)

    def _load_balancer(self) -> None:
        settings, network = self.settings, self.network
        certificate = acm.Certificate.from_certificate_arn(self, "Certificate",
                                                           settings.certificate_arn)
        access_logs = s3.Bucket(
            self, "AlbAccessLogs", encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True, block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(90))],
            removal_policy=cdk.RemovalPolicy.RETAIN)
        acknowledge(access_logs, "AwsSolutions-S1",
                    "This bucket holds the load balancer's access logs; logging the accesses "
                    "to the log bucket would need yet another bucket.")
        self.alb = elbv2.ApplicationLoadBalancer(
            self, "Alb", vpc=network.vpc, internet_facing=False,
            vpc_subnets=network.task_subnets, security_group=network.alb,
            drop_invalid_header_fields=True)
        self.alb.log_access_logs(access_logs)
        listener = self.alb.add_listener(
            "Https", port=HTTPS_PORT, protocol=elbv2.ApplicationProtocol.HTTPS, open=False,
            certificates=[elbv2.ListenerCertificate.from_arn(settings.certificate_arn)],
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS)
        self.target_group = listener.add_targets(
            "Api", port=API_PORT, protocol=elbv2.ApplicationProtocol.HTTP,
            targets=[self.services["api"]],
            deregistration_delay=cdk.Duration.seconds(30),
            health_check=elbv2.HealthCheck(
                path="/readyz", healthy_http_codes="200", interval=cdk.Duration.seconds(15),
                timeout=cdk.Duration.seconds(5), healthy_threshold_count=2,
                unhealthy_threshold_count=3))

        link = apigw.VpcLink(self, "VpcLink", vpc=network.vpc, subnets=network.task_subnets,
                             security_groups=[network.vpc_link])
        self.http_api = apigw.HttpApi(
            self, "HttpApi", api_name=NAME, create_default_stage=False,
            description="Subscription Engine API: POST /pay and the rest, to the internal ALB",
            default_integration=integrations.HttpAlbIntegration(
                "Alb", listener, vpc_link=link, secure_server_name=settings.domain))
        domain = apigw.DomainName(self, "Domain", domain_name=settings.domain,
                                  certificate=certificate)
        access_log = logs.LogGroup(self, "ApiAccessLogs", retention=settings.retention,
                                   removal_policy=cdk.RemovalPolicy.RETAIN)
        apigw.HttpStage(
            self, "Stage", http_api=self.http_api, stage_name="$default", auto_deploy=True,
            throttle=apigw.ThrottleSettings(rate_limit=settings.api_rate_limit,
                                            burst_limit=settings.api_burst_limit),
            domain_mapping=apigw.DomainMappingOptions(domain_name=domain),
            access_log_settings=AccessLog(apigw.LogGroupLogDestination(access_log)))
        acknowledge(self.http_api, "AwsSolutions-APIG4",
                    "The engine authorizes every request itself: tenants' API keys (Bearer) "
                    "checked in the API tasks; API Gateway has no copy of them.")
        cdk.CfnOutput(self, "DnsTarget", value=domain.regional_domain_name,
                      description=f"Point {settings.domain} (CNAME or alias) here")

    def _autoscaling(self) -> None:
        settings = self.settings
        api = self.services["api"].auto_scale_task_count(
            min_capacity=settings.desired["api"], max_capacity=settings.api_max_tasks)
        api.scale_on_cpu_utilization("Cpu", target_utilization_percent=60)
        api.scale_on_request_count("Requests", requests_per_target=REQUESTS_PER_TASK,
                                   target_group=self.target_group)
        workers = self.services["worker"].auto_scale_task_count(
            min_capacity=settings.desired["worker"], max_capacity=settings.worker_max_tasks)
        workers.scale_on_metric(
            "QueueAge", adjustment_type=autoscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            metric=engine_metric("QueueMessageAge", "Maximum", cdk.Duration.minutes(1),
                                 Service="scheduler", Queue="default"),
            scaling_steps=[autoscaling.ScalingInterval(upper=10, change=-1),
                           autoscaling.ScalingInterval(lower=30, change=+1),
                           autoscaling.ScalingInterval(lower=120, change=+3)],
            cooldown=cdk.Duration.minutes(2))
        workers.scale_on_cpu_utilization("Cpu", target_utilization_percent=70)


@jsii.implements(apigw.IAccessLogSettings)
class AccessLog:
    """HTTP API access logs to a log group, in API Gateway's default format."""

    def __init__(self, destination: apigw.IAccessLogDestination) -> None:
        self._destination = destination

    @property
    def destination(self) -> apigw.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> None:
        return None


def _id(process: Process) -> str:
    return process.name.capitalize()
