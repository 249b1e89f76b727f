"""Service settings: flags > AgentApp kwargs > AGENTSTREAM_* environment > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentstream import Agent, AgentApp, ConfigurationError
from agentstream.service.settings import Settings
from agentstream.service.worker import Worker


def test_environment_then_app_kwargs_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSTREAM_BROKER", "kafka://env:9092")
    monkeypatch.setenv("AGENTSTREAM_PARTITIONS", "8")
    monkeypatch.setenv("AGENTSTREAM_DATA_DIR", "/tmp/from-env")
    assert Settings.load().broker == "kafka://env:9092"
    app = AgentApp("a", agent=Agent(), input_topic="in", output_topic="out", partitions=2)
    assert (app.settings.broker, app.settings.partitions) == ("kafka://env:9092", 2)
    assert app.settings.data_dir == Path("/tmp/from-env")
    app.configure(broker="kafka://flag:1,kafka://flag:2")
    assert app.settings.bootstrap_servers == ["flag:1", "flag:2"]
    assert app.settings.partitions == 2


def test_bad_settings_are_refused_clearly() -> None:
    with pytest.raises(ConfigurationError, match="unknown settings"):
        Settings.load({"brokr": "x"})
    with pytest.raises(ConfigurationError, match="fetch_wait_ms"):
        Settings.load({"fetch_wait_ms": 0})
    with pytest.raises(ConfigurationError, match="codec"):
        Settings.load({"output_codec": "xml"})


def test_sasl_and_tls_pass_through_to_the_kafka_clients() -> None:
    settings = Settings.load(
        {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "u",
            "sasl_password": "p",
        }
    )
    assert settings.client_kwargs() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "u",
        "sasl_plain_password": "p",
    }


def test_exactly_once_fails_fast_on_the_embedded_broker() -> None:
    app = AgentApp(
        "eos",
        agent=Agent(),
        input_topic="in",
        output_topic="out",
        processing_guarantee="exactly_once",
        embedded_broker=True,
    )
    with pytest.raises(ConfigurationError, match="embedded"):
        Worker(app)


def test_secrets_are_masked_in_repr_and_str() -> None:
    """Scenario: settings with a SASL password and a broker URL with a password.
    We expect: neither appears in repr() or str() (which logs and errors use); the values
    themselves are intact for the clients."""
    settings = Settings.load(
        {"sasl_password": "hunter2", "broker": "kafka://user:s3cret@host:9092,kafka://b:9"}
    )
    for text in (repr(settings), str(settings), f"{settings}"):
        assert "hunter2" not in text and "s3cret" not in text
        assert "sasl_password='***'" in text and "kafka://user:***@host:9092" in text
    assert settings.sasl_password == "hunter2"
