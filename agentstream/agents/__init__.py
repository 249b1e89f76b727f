"""Ready-made agents built on the toolkit (:mod:`agentstream.llm`)."""

from agentstream.agents.react import ReActAgent

__all__ = ["ReActAgent"]
