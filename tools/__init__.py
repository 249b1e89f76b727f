"""Developer tools that are not part of the agentstream package (the real Kafka of the tests)."""
