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
    for name in (
        "LocalRunner",
        "InMemoryActionStateStore",
        "InputRecord",
        "ScriptedChatServer",
        "ScriptedReply",
        "ScriptedRequest",
    ):
        assert name in agentstream.testing.__all__
        assert getattr(agentstream.testing, name) is not None


def test_toolkit_names_are_pinned() -> None:
    import agentstream.agents
    import agentstream.llm

    for name in (
        "ChatMessage",
        "ChatRequestEvent",
        "ChatResponseEvent",
        "ToolRequestEvent",
        "ToolResponseEvent",
        "OpenAIChatModel",
        "AnthropicChatModel",
        "OpenAIEmbeddingModel",
        "MCPServer",
        "QdrantVectorStore",
        "retrieve",
        "tool",
    ):
        assert name in agentstream.llm.__all__
        assert getattr(agentstream.llm, name) is not None
    assert agentstream.agents.__all__ == ["ReActAgent"]
    assert callable(agentstream.Agent.add_tool) and callable(agentstream.Agent.add_resource)
    assert isinstance(agentstream.RunnerContext.long_term_memory, property)
