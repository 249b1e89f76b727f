"""The service layer: the Kafka worker, its topics and tables, web endpoints and the CLI."""

from agentstream.service.app import AgentApp

__all__ = ["AgentApp"]
