"""The public names are a contract: they never disappear by accident."""

import agentstream
import agentstream.testing


def test_public_names_are_pinned() -> None:
    assert sorted(agentstream.__all__) == sorted(
        [
            "Action",
            "ActionExecutionError",
            "Agent",
            "AgentApp",
            "AgentStreamError",
            "BrokerError",
            "ConfigurationError",
            "ContextThreadError",
            "DurableExecutionError",
            "Event",
            "InputEvent",
            "MemoryObject",
            "NonDeterministicActionError",
            "OutputEvent",
            "RunnerContext",
            "SerializationError",
            "action",
        ]
    )
    for name in agentstream.__all__:
        assert getattr(agentstream, name) is not None
    for name in ("LocalRunner", "InMemoryActionStateStore", "InputRecord"):
        assert name in agentstream.testing.__all__
        assert getattr(agentstream.testing, name) is not None
