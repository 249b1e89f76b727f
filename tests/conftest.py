"""Shared fixtures: the embedded broker, unique names, topics."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, Iterator

import pytest

from agentstream.service.broker import EmbeddedBroker, ensure_topics

_names = itertools.count()


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh embedded broker per test module: its memory storage only grows (BROKER.md)."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names (topics, app ids) unique within the session: ``unique_name("orders")``."""
    test = request.node.name.split("[")[0].removeprefix("test_")[:40]

    def make(base: str = "t") -> str:
        return f"{base}-{test}-{os.getpid()}-{next(_names)}"

    return make


@pytest.fixture
def topic_factory(
    broker: EmbeddedBroker, unique_name: Callable[[str], str]
) -> Callable[..., Awaitable[str]]:
    """Create a uniquely named topic on the module's broker: ``await topic_factory(4)``."""

    async def create(partitions: int = 1, base: str = "topic") -> str:
        name = unique_name(base)
        await ensure_topics(broker.bootstrap, {name: partitions})
        return name

    return create
