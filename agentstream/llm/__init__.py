"""The agent toolkit: chat models, tools, embeddings and long-term memory, all durable.

Importing this package gives every agent two built-in actions (see
:mod:`agentstream.llm._actions`): ``chat_model_action`` handles
:class:`ChatRequestEvent` and :class:`ToolResponseEvent`, ``tool_call_action`` handles
:class:`ToolRequestEvent`. Every model call and tool call is a durable call, so a replay
never makes it again. The SDKs are optional extras: ``agentstream[openai]``,
``agentstream[anthropic]``.
"""

from agentstream.api.agent import register_builtin_action
from agentstream.api.context import set_long_term_memory_factory
from agentstream.llm._actions import CHAT_ACTION, TOOL_ACTION, chat_model_action, tool_call_action
from agentstream.llm.anthropic_models import AnthropicChatModel
from agentstream.llm.embeddings import EmbeddingModel
from agentstream.llm.errors import ChatLoopError, ChatModelError, LLMError, OutputValidationError
from agentstream.llm.events import (
    ChatRequestEvent,
    ChatResponseEvent,
    ToolRequestEvent,
    ToolResponseEvent,
)
from agentstream.llm.mcp import MCPServer, MCPServerError, mcp_prompt
from agentstream.llm.memory import LongTermMemory, LongTermMemoryConfig, MemoryItem
from agentstream.llm.messages import ChatMessage, TokenUsage, ToolCall
from agentstream.llm.models import ChatModel, RetryPolicy
from agentstream.llm.openai_models import OpenAIChatModel, OpenAIEmbeddingModel
from agentstream.llm.tools import Tool, tool
from agentstream.llm.vectorstores import QdrantVectorStore, VectorStore, retrieve

__all__ = [
    "AnthropicChatModel",
    "ChatLoopError",
    "ChatMessage",
    "ChatModel",
    "ChatModelError",
    "ChatRequestEvent",
    "ChatResponseEvent",
    "EmbeddingModel",
    "LLMError",
    "LongTermMemory",
    "LongTermMemoryConfig",
    "MCPServer",
    "MCPServerError",
    "MemoryItem",
    "OpenAIChatModel",
    "OpenAIEmbeddingModel",
    "OutputValidationError",
    "QdrantVectorStore",
    "RetryPolicy",
    "TokenUsage",
    "Tool",
    "ToolCall",
    "ToolRequestEvent",
    "ToolResponseEvent",
    "VectorStore",
    "mcp_prompt",
    "retrieve",
    "tool",
]

register_builtin_action(CHAT_ACTION, (ChatRequestEvent, ToolResponseEvent), chat_model_action)
register_builtin_action(TOOL_ACTION, (ToolRequestEvent,), tool_call_action)
set_long_term_memory_factory(LongTermMemory)
