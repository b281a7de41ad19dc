"""The VPC over three zones and the security groups: only the flows the engine uses.

Public subnets hold the NAT gateways only (API Gateway reaches the internal load balancer
through a VPC link); tasks run in private subnets; PostgreSQL, Redis and Kafka sit in
isolated subnets that have no route out.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.processes import PROCESSES
from infra.settings import Settings

POSTGRES_PORT = 5432
REDIS_PORT = 6379
KAFKA_IAM_PORT = 9098  # MSK's TLS listener with IAM authentication
SMTP_SUBMISSION_PORT = 587
HTTPS_PORT = 443


class NetworkStack(cdk.Stack):
    def __init__(self, scope: Construct, id: str, *, settings: Settings) -> None:
        super().__init__(scope, id, env=settings.env,
                         description="Subscription Engine: VPC and security groups")
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=settings.retention,
                                  removal_policy=cdk.RemovalPolicy.RETAIN)
        self.vpc = ec2.Vpc(
            self, "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(settings.vpc_cidr),
            availability_zones=list(settings.availability_zones),
            nat_gateways=len(settings.availability_zones),
            subnet_configuration=[
                ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC,
                                        cidr_mask=24),
                ec2.SubnetConfiguration(name="Tasks",
                                        subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                                        cidr_mask=20),
                ec2.SubnetConfiguration(name="Data", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED,
                                        cidr_mask=24),
            ],
            flow_logs={"All": ec2.FlowLogOptions(
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))},
        )
        self.task_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.data_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)

        def group(name: str, description: str) -> ec2.SecurityGroup:
            return ec2.SecurityGroup(self, name, vpc=self.vpc, description=description,
                                     allow_all_outbound=False)

        self.vpc_link = group("VpcLinkSg", "API Gateway VPC link to the load balancer")
        self.alb = group("AlbSg", "Internal load balancer in front of the API tasks")
        self.postgres = group("PostgresSg", "RDS PostgreSQL primary and replica")
        self.redis = group("RedisSg", "ElastiCache Redis")
        self.kafka = group("KafkaSg", "MSK brokers")
        self.vpc_link.connections.allow_to(self.alb, ec2.Port.tcp(HTTPS_PORT), "HTTPS to ALB")
        self.tasks: dict[str, ec2.SecurityGroup] = {}
        for process in PROCESSES:
            sg = group(f"{process.name.capitalize()}Sg", f"{process.name} tasks")
            sg.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS_PORT),
                               "HTTPS: payment providers, webhooks, AWS APIs")
            if "postgres" in process.uses:
                sg.connections.allow_to(self.postgres, ec2.Port.tcp(POSTGRES_PORT), "PostgreSQL")
            if "redis" in process.uses:
                sg.connections.allow_to(self.redis, ec2.Port.tcp(REDIS_PORT), "Redis (TLS)")
            if process.kafka:
                sg.connections.allow_to(self.kafka, ec2.Port.tcp(KAFKA_IAM_PORT),
                                        "Kafka (TLS, IAM)")
            if "smtp" in process.uses:
                sg.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(SMTP_SUBMISSION_PORT),
                                   "SMTP submission (STARTTLS)")
            if process.port is not None:
                self.alb.connections.allow_to(sg, ec2.Port.tcp(process.port),
                                              f"ALB to {process.name}")
            self.tasks[process.name] = sg

