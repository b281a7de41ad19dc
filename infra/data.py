"""What must outlive a release: PostgreSQL (Multi-AZ, plus a read replica), Redis, Kafka, the
image registry and the secrets the tasks read. Everything is encrypted and spoken to over TLS.

The connection URLs the engine reads (DATABASE_URL, DATABASE_REPLICA_URLS, REDIS_URL) are
secrets composed here from the generated passwords (CloudFormation dynamic references, so no
password appears in a template); the others are created empty-handed and filled by the
operator (docs/deploy.md).
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_logs as logs
from aws_cdk import aws_msk as msk
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as sm
from aws_cdk import custom_resources as cr
from constructs import Construct

from app.events.outbox import TOPICS as OUTBOX_TOPICS
from infra.nag import acknowledge
from infra.network import POSTGRES_PORT, REDIS_PORT, NetworkStack
from infra.processes import NAME, PROCESSES, secret_name
from infra.settings import Settings

DATABASE = "subscription_engine"
DB_USER = "engine"
#: TLS always (the server refuses anything else: rds.force_ssl). verify-full needs the RDS
#: CA bundle in the image, which it does not carry yet.
DB_TLS = "sslmode=require"
#: Topics the relay publishes to and creates when missing; the webhook dispatcher reads them.
TOPICS = tuple(sorted(set(OUTBOX_TOPICS.values())))
#: Redis nodes: a primary and a replica in another zone, which takes over automatically.
REDIS_NODES = 2
#: Secrets whose value this stack composes; every other secret the tasks read is set by hand.
COMPOSED = ("DATABASE_URL", "DATABASE_REPLICA_URLS", "REDIS_URL")
#: Characters a generated password may not contain: they would need escaping in a URL.
URL_UNSAFE = " %+~`#$&*()|[]{}:;<>?!'/@\"\\=,^"
ROTATION_REASON = ("Rotated by hand (docs/deploy.md, 'Rotating secrets'): the engine reads "
                   "whole URLs, which a rotation Lambda would not rewrite.")


class DataStack(cdk.Stack):
    def __init__(self, scope: Construct, id: str, *, settings: Settings,
                 network: NetworkStack) -> None:
        super().__init__(scope, id, env=settings.env,
                         description="Subscription Engine: PostgreSQL, Redis, Kafka, ECR, secrets")
        self.settings = settings
        self.repository = ecr.Repository(
            self, "Repository", repository_name=NAME,
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            lifecycle_rules=[
                ecr.LifecycleRule(description="untagged layers of failed pushes",
                                  tag_status=ecr.TagStatus.UNTAGGED,
                                  max_image_age=cdk.Duration.days(7)),
                ecr.LifecycleRule(description="keep the last 50 releases to roll back to",
                                  tag_status=ecr.TagStatus.ANY, max_image_count=50),
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self._postgres(network)
        self._redis(network)
        self._kafka(network)
        self.secrets: dict[str, sm.ISecret] = {**self._composed()}
        for name in sorted({n for p in PROCESSES for n in p.secrets} - set(COMPOSED)):
            secret = sm.Secret(self, _construct_id(name), secret_name=secret_name(name),
                               description=f"{name}: set by the operator (docs/deploy.md)")
            acknowledge(secret, "AwsSolutions-SMG4", ROTATION_REASON)
            self.secrets[name] = secret

    # --- PostgreSQL --------------------------------------------------------------------------

    def _postgres(self, network: NetworkStack) -> None:
        settings = self.settings
        engine = rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_17_9)
        parameters = rds.ParameterGroup(self, "PostgresParameters", engine=engine,
                                        parameters={"rds.force_ssl": "1"})
        instance_type = ec2.InstanceType(settings.db_instance_class)
        for identifier in (NAME, f"{NAME}-replica"):
            # RDS writes its logs here; created first, with a retention.
            logs.LogGroup(self, f"{identifier}-logs", retention=settings.retention,
                          log_group_name=f"/aws/rds/instance/{identifier}/postgresql",
                          removal_policy=cdk.RemovalPolicy.RETAIN)
        common: dict[str, Any] = dict(
            instance_type=instance_type, vpc=network.vpc, vpc_subnets=network.data_subnets,
            security_groups=[network.postgres], parameter_group=parameters,
            deletion_protection=True, iam_authentication=True,
            auto_minor_version_upgrade=True, enable_performance_insights=True,
            cloudwatch_logs_exports=["postgresql"], port=POSTGRES_PORT,
            removal_policy=cdk.RemovalPolicy.SNAPSHOT,
        )
        self.database = rds.DatabaseInstance(
            self, "Postgres", engine=engine, instance_identifier=NAME,
            database_name=DATABASE, multi_az=True, storage_encrypted=True,
            credentials=rds.Credentials.from_generated_secret(
                DB_USER, secret_name=f"{NAME}/postgres-credentials",
                exclude_characters=URL_UNSAFE),
            allocated_storage=settings.db_storage_gib,
            max_allocated_storage=settings.db_max_storage_gib,
            storage_type=rds.StorageType.GP3,
            backup_retention=cdk.Duration.days(settings.db_backup_days),
            copy_tags_to_snapshot=True,
            **common,
        )
        self.replica = rds.DatabaseInstanceReadReplica(
            self, "PostgresReplica", source_database_instance=self.database,
            instance_identifier=f"{NAME}-replica", multi_az=False, **common,
        )
        acknowledge(self.database, "AwsSolutions-RDS11",
                    "The default port is no secret; only the tasks' security groups reach "
                    "the isolated subnets the database sits in.")
        acknowledge(self.replica, "AwsSolutions-RDS11",
                    "The default port is no secret; only the tasks' security groups reach "
                    "the isolated subnets the replica sits in.")
        acknowledge(self.replica, "AwsSolutions-RDS2",
                    "A replica of an encrypted instance is encrypted with the primary's key; "
                    "CloudFormation refuses StorageEncrypted next to SourceDBInstanceIdentifier.")
        acknowledge(self.replica, "AwsSolutions-RDS3",
                    "A single-AZ replica: when it is down the engine reads from the Multi-AZ "
                    "primary (app falls back), so a standby replica would only add cost.")
        acknowledge(self.replica, "AwsSolutions-RDS13",
                    "PostgreSQL read replicas take no automated backups; the Multi-AZ primary "
                    "keeps them.")
        acknowledge(self.database, "AwsSolutions-SMG4", ROTATION_REASON)

    # --- Redis ------------------------------------------------------------------------------

    def _redis(self, network: NetworkStack) -> None:
        self.redis_auth = sm.Secret(
            self, "RedisAuthToken", secret_name=f"{NAME}/redis-auth-token",
            description="ElastiCache AUTH token (REDIS_URL carries it)",
            generate_secret_string=sm.SecretStringGenerator(
                exclude_punctuation=True, password_length=64))
        acknowledge(self.redis_auth, "AwsSolutions-SMG4", ROTATION_REASON)
        subnets = elasticache.CfnSubnetGroup(
            self, "RedisSubnets", description="isolated data subnets",
            subnet_ids=network.vpc.select_subnets(
                subnet_type=ec2.SubnetType.PRIVATE_ISOLATED).subnet_ids)
        self.redis = elasticache.CfnReplicationGroup(
            self, "Redis", replication_group_id=NAME,
            replication_group_description="Dramatiq broker, rate limits and caches",
            engine="redis", engine_version="7.1",
            cache_node_type=self.settings.redis_node_type,
            num_cache_clusters=REDIS_NODES, automatic_failover_enabled=True, multi_az_enabled=True,
            transit_encryption_enabled=True, transit_encryption_mode="required",
            at_rest_encryption_enabled=True,
            auth_token=self.redis_auth.secret_value.unsafe_unwrap(),
            cache_subnet_group_name=subnets.ref,
            security_group_ids=[network.redis.security_group_id],
            port=REDIS_PORT, snapshot_retention_limit=7, auto_minor_version_upgrade=True,
        )
        acknowledge(self.redis, "AwsSolutions-AEC5",
                    "The default port is no secret; only the tasks' security groups reach it.")

    #: ElastiCache names a replication group's members <group id>-001, -002, ...
    @property
    def redis_members(self) -> list[str]:
        return [f"{NAME}-{n:03d}" for n in range(1, REDIS_NODES + 1)]

    # --- Kafka ------------------------------------------------------------------------------

    def _kafka(self, network: NetworkStack) -> None:
        log_group = logs.LogGroup(self, "KafkaLogs", retention=self.settings.retention,
                                  removal_policy=cdk.RemovalPolicy.RETAIN)
        configuration = msk.CfnConfiguration(
            self, "KafkaConfiguration", name=f"{NAME}-kafka",
            server_properties="\n".join([
                "auto.create.topics.enable=false",  # the relay creates its topics, nobody else
                "default.replication.factor=3",
                "min.insync.replicas=2",  # acks=all survives one broker down
                "unclean.leader.election.enable=false",
            ]))
        zones = len(self.settings.availability_zones)
        self.kafka = msk.CfnCluster(
            self, "Kafka", cluster_name=NAME, kafka_version="3.6.0",
            number_of_broker_nodes=zones,
            broker_node_group_info=msk.CfnCluster.BrokerNodeGroupInfoProperty(
                client_subnets=network.vpc.select_subnets(
                    subnet_type=ec2.SubnetType.PRIVATE_ISOLATED).subnet_ids,
                instance_type=self.settings.kafka_instance_type,
                security_groups=[network.kafka.security_group_id],
                storage_info=msk.CfnCluster.StorageInfoProperty(
                    ebs_storage_info=msk.CfnCluster.EBSStorageInfoProperty(
                        volume_size=self.settings.kafka_storage_gib))),
            client_authentication=msk.CfnCluster.ClientAuthenticationProperty(
                sasl=msk.CfnCluster.SaslProperty(iam=msk.CfnCluster.IamProperty(enabled=True)),
                unauthenticated=msk.CfnCluster.UnauthenticatedProperty(enabled=False)),
            encryption_info=msk.CfnCluster.EncryptionInfoProperty(
                encryption_in_transit=msk.CfnCluster.EncryptionInTransitProperty(
                    client_broker="TLS", in_cluster=True)),
            configuration_info=msk.CfnCluster.ConfigurationInfoProperty(
                arn=configuration.attr_arn, revision=1),
            enhanced_monitoring="PER_TOPIC_PER_BROKER",
            logging_info=msk.CfnCluster.LoggingInfoProperty(
                broker_logs=msk.CfnCluster.BrokerLogsProperty(
                    cloud_watch_logs=msk.CfnCluster.CloudWatchLogsProperty(
                        enabled=True, log_group=log_group.log_group_name))),
        )
        # MSK exposes its brokers only through the API: read them once per cluster.
        brokers = cr.AwsCustomResource(
            self, "KafkaBrokers",
            on_update=cr.AwsSdkCall(
                service="Kafka", action="getBootstrapBrokers",
                parameters={"ClusterArn": self.kafka.attr_arn},
                physical_resource_id=cr.PhysicalResourceId.of(self.kafka.attr_arn),
                output_paths=["BootstrapBrokerStringSaslIam"]),
            policy=cr.AwsCustomResourcePolicy.from_sdk_calls(resources=[self.kafka.attr_arn]),
            install_latest_aws_sdk=False,
        )
        acknowledge(
            # The provider Lambda, a singleton named after this UUID.
            self.node.find_child(
                "AWS" + cr.AwsCustomResource.PROVIDER_FUNCTION_UUID.replace("-", "")),
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSLambdaBasicExecutionRole]",
            "The one-shot Lambda that reads MSK's broker list writes only its own logs; "
            "AWS's basic execution policy is exactly that.")
        self.kafka_bootstrap_servers = brokers.get_response_field("BootstrapBrokerStringSaslIam")

    def kafka_arn(self, kind: str, name: str) -> str:
        """The IAM resource of a topic or consumer group of the cluster:
        arn:aws:kafka:<region>:<account>:<kind>/<cluster name>/<cluster uuid>/<name>."""
        # The cluster's own ARN ends in cluster/<cluster name>/<cluster uuid>.
        uuid = cdk.Fn.select(2, cdk.Fn.split("/", self.kafka.attr_arn))
        return self.format_arn(service="kafka", resource=kind,
                               resource_name=f"{NAME}/{uuid}/{name}",
                               arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME)

    # --- connection URLs ---------------------------------------------------------------------

    def _composed(self) -> dict[str, sm.ISecret]:
        assert self.database.secret is not None
        password = self.database.secret.secret_value_from_json("password").unsafe_unwrap()

        def postgres(instance: rds.IDatabaseInstance) -> str:
            return cdk.Fn.join("", [
                f"postgresql+psycopg2://{DB_USER}:", password, "@",
                instance.db_instance_endpoint_address, ":", instance.db_instance_endpoint_port,
                f"/{DATABASE}?{DB_TLS}"])

        urls = {
            "DATABASE_URL": postgres(self.database),
            "DATABASE_REPLICA_URLS": postgres(self.replica),
            "REDIS_URL": cdk.Fn.join("", [
                "rediss://:", self.redis_auth.secret_value.unsafe_unwrap(), "@",
                self.redis.attr_primary_end_point_address, ":",
                self.redis.attr_primary_end_point_port, "/0"]),
        }
        composed: dict[str, sm.ISecret] = {}
        for name, value in urls.items():
            secret = sm.Secret(self, _construct_id(name), secret_name=secret_name(name),
                               description=f"{name}, composed by the stack",
                               secret_string_value=cdk.SecretValue.unsafe_plain_text(value))
            acknowledge(secret, "AwsSolutions-SMG4", ROTATION_REASON)
            composed[name] = secret
        return composed


def _construct_id(setting: str) -> str:
    return "".join(part.capitalize() for part in setting.split("_"))
