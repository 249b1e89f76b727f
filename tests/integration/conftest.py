"""The brokers of this tier: each test runs on the embedded broker and on a real Kafka."""

from tests.brokers import broker, kafka_cluster, real_kafka, topic_factory

__all__ = ["broker", "kafka_cluster", "real_kafka", "topic_factory"]
