"""Apache Kafka from Maven Central for tests and development: see :mod:`tools.kafka.launcher`."""

from tools.kafka.launcher import (
    DEFAULT_JVM_OPTIONS,
    KafkaCluster,
    KafkaLaunchError,
    KafkaNode,
    ensure_jars,
    kafka_version,
    missing_tools,
)

__all__ = [
    "DEFAULT_JVM_OPTIONS",
    "KafkaCluster",
    "KafkaLaunchError",
    "KafkaNode",
    "ensure_jars",
    "kafka_version",
    "missing_tools",
]
