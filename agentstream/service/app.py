"""``AgentApp``: an agent bound to its topics and settings; what ``agentstream worker`` runs.

    app = AgentApp("greeter", agent=Greeter(), input_topic="greeter-in",
                   output_topic="greeter-out")

Topics (created with ``partitions`` partitions when missing; an existing output or
dead-letter topic is used as it is, the others must match):
``input_topic``, ``output_topic``, ``<name>-events`` (internal, co-partitioned with the
input), ``<name>-state-changelog`` (the changelog of every table, co-partitioned) and the
dead-letter topic (``<name>-dead-letters`` unless set).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from agentstream.api.agent import Agent
from agentstream.errors import ConfigurationError
from agentstream.observability.eventlog import EventLoggerConfig
from agentstream.service.layout import layout_topic
from agentstream.service.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["AgentApp"]

_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


class AgentApp:
    """An agent as a Kafka service.

    Args:
        name: the app id: consumer group and prefix of internal topics.
        agent: the agent to run.
        input_topic: keyed input topic.
        output_topic: where outputs go.
        event_log: optional event-log configuration (or the ``event_log`` setting:
            ``--event-log PATH``, ``AGENTSTREAM_EVENT_LOG``).
        samples: sample inputs, ``(key, value)`` pairs, that ``agentstream demo`` sends.
        **settings: any :class:`Settings` field (they override ``AGENTSTREAM_*`` variables).
    """

    def __init__(
        self,
        name: str,
        *,
        agent: Agent,
        input_topic: str,
        output_topic: str,
        event_log: EventLoggerConfig | None = None,
        samples: Iterable[tuple[Any, Any]] | None = None,
        **settings: Any,
    ):
        for label, value in (
            ("name", name),
            ("input_topic", input_topic),
            ("output_topic", output_topic),
        ):
            if not _NAME.match(value):
                raise ConfigurationError(f"AgentApp {label} {value!r}: use letters, digits, ._-")
        if not isinstance(agent, Agent):
            raise ConfigurationError(f"AgentApp agent must be an Agent instance, got {agent!r}")
        self.name = name
        self.agent = agent
        self.input_topic = input_topic
        self.output_topic = output_topic
        self._event_log = event_log
        self.samples: list[tuple[Any, Any]] = []
        for sample in samples or ():
            if not (isinstance(sample, tuple) and len(sample) == 2):
                raise ConfigurationError(f"AgentApp samples are (key, value) pairs, got {sample!r}")
            self.samples.append(sample)
        self._settings = dict(settings)
        self.settings = Settings.load(self._settings)

    def configure(self, **overrides: Any) -> Settings:
        """Settings with ``overrides`` (CLI flags) applied on top; also kept on the app."""
        self.settings = Settings.load({**self._settings, **overrides})
        return self.settings

    @property
    def event_log(self) -> EventLoggerConfig | None:
        """The event log's configuration: the app's own, else a file logger at the
        ``event_log`` setting's path (None: no event log)."""
        if self._event_log is not None:
            return self._event_log
        path = self.settings.event_log
        return None if not path else EventLoggerConfig(path=path)

    @event_log.setter
    def event_log(self, config: EventLoggerConfig | None) -> None:
        self._event_log = config

    @property
    def internal_topic(self) -> str:
        return f"{self.name}-events"

    @property
    def changelog_topic(self) -> str:
        return f"{self.name}-state-changelog"

    @property
    def layout_topic(self) -> str:
        """The app's key layout (written when input partitions are added; see
        :mod:`agentstream.service.layout`)."""
        return layout_topic(self.name)

    @property
    def dead_letter_topic(self) -> str:
        return self.settings.dead_letter_topic or f"{self.name}-dead-letters"

    def topics(self) -> dict[str, int]:
        """Every topic the app uses, with its partition count."""
        n = self.settings.partitions
        return {
            self.input_topic: n,
            self.internal_topic: n,
            self.changelog_topic: n,
            self.output_topic: n,
            self.dead_letter_topic: 1,
            self.layout_topic: 1,
        }

    async def create_topics(self, bootstrap: str, client_kwargs: dict[str, Any]) -> None:
        """Create the app's topics where missing.

        Input, internal events and changelog are co-partitioned. On the embedded broker an
        existing one with another partition count is an error; on Kafka the existing ones
        are used as they are (a grown input topic starts a migration, one with fewer
        partitions than the state is refused when the worker starts) and missing ones are
        created with the state's count. Output and dead letters may be shared with
        others: an existing one is used as it is.
        """
        from agentstream.service.broker import ensure_topics

        topics, s = self.topics(), self.settings
        strict = (self.input_topic, self.internal_topic, self.changelog_topic)
        wanted = {t: topics[t] for t in strict}
        if not s.embedded_broker:  # (its metadata requests create what they name)
            from agentstream.service.layout import topic_counts

            # Existing ones are used as they are: a grown input topic is a migration
            # (agentstream.service.migration), and a missing one is made to match the state.
            existing = await topic_counts(bootstrap, client_kwargs, strict)
            state = existing.get(self.changelog_topic) or existing.get(self.input_topic)
            wanted = {t: state or n for t, n in wanted.items() if t not in existing}
        await ensure_topics(
            bootstrap,
            wanted,
            replication_factor=s.replication_factor,
            client_kwargs=client_kwargs,
            topic_configs={
                self.changelog_topic: {"cleanup.policy": "compact"},
                # Routed events carry their input's event time, which may be older than
                # the retention: stamped on append, they are not deleted before they are read.
                self.internal_topic: {"message.timestamp.type": "LogAppendTime"},
            },
        )
        for topic in (self.output_topic, self.dead_letter_topic):
            try:
                await ensure_topics(
                    bootstrap,
                    {topic: topics[topic]},
                    replication_factor=s.replication_factor,
                    client_kwargs=client_kwargs,
                )
            except ConfigurationError as exc:
                log.info("using existing topic %s as it is: %s", topic, exc)

    def __repr__(self) -> str:
        return f"<AgentApp {self.name} {self.input_topic} -> {self.output_topic}>"
