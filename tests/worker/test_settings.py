"""Settings are validated once into a frozen object; bad values are click.BadParameter naming the option."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from worker.classify_command import classify
from worker.run_command import run
from worker.settings import PASSWORD_ENV, build_settings, read_password


def test_defaults_derive_output_and_dlq_topics():
    settings = build_settings(topic="incoming", model=Path("bundle"))
    assert settings.output_topic == "incoming.labels" and settings.dlq_topic == "incoming.dlq"
    assert settings.bootstrap_servers == ("localhost:9092",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.topic = "other"  # type: ignore[misc]


def test_bootstrap_servers_are_split():
    settings = build_settings(topic="t", model=Path("b"), bootstrap_servers="a:1, b:2")
    assert settings.bootstrap_servers == ("a:1", "b:2")


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"batch_size": 0}, "--batch-size"),
        ({"max_wait_ms": -1}, "--max-wait-ms"),
        ({"top_k": 0}, "--top-k"),
        ({"metrics_port": 70000}, "--metrics-port"),
        ({"bootstrap_servers": "localhost"}, "--bootstrap-servers"),
        ({"output_topic": "t"}, "--output-topic"),
        ({"dlq_topic": "t.labels"}, "--dlq-topic"),
        ({"security_protocol": "SASL_SSL"}, "--sasl-mechanism"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
         "--sasl-password-file"),
        ({"sasl_username": "u"}, "--security-protocol"),
        ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "--ssl-cafile"),
        ({"shutdown_timeout_s": 0}, "--shutdown-timeout-s"),
        ({"liveness_timeout_s": 0}, "--liveness-timeout-s"),
        ({"session_timeout_ms": 20_000, "max_poll_interval_ms": 10_000}, "--max-poll-interval-ms"),
        ({"exactly_once": True, "transaction_timeout_ms": 60_000}, "--transaction-timeout-ms"),
        ({"exactly_once": True, "transaction_timeout_ms": 1000}, "--transaction-timeout-ms"),
        ({"transactional_id": "x"}, "--transactional-id"),
    ],
)
def test_bad_values_name_the_option(kwargs, option):
    with pytest.raises(click.BadParameter) as info:
        build_settings(topic="t", model=Path("b"), **kwargs)
    assert info.value.param_hint == option


def test_sasl_settings_keep_the_password_out_of_repr():
    settings = build_settings(topic="t", model=Path("b"), security_protocol="sasl_ssl", sasl_mechanism="scram-sha-512",
                              sasl_username="svc", sasl_password="s3cret")
    config = settings.security.client_config()
    assert config["security_protocol"] == "SASL_SSL" and config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_password"] == "s3cret"
    assert "s3cret" not in repr(settings)


def test_password_comes_from_file_or_env(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    assert read_password(secret, {}) == "from-file"
    assert read_password(None, {PASSWORD_ENV: "from-env"}) == "from-env"
    assert read_password(None, {}) is None
    with pytest.raises(click.BadParameter):
        read_password(tmp_path / "missing", {})


def test_cli_reports_a_bad_option_in_one_line_without_traceback():
    result = CliRunner().invoke(run, ["--topic", "t", "--model", "b", "--batch-size", "0"])
    assert result.exit_code == 2
    assert "--batch-size" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", [run, classify], ids=["run", "classify"])
def test_every_option_has_help_and_an_env_var(command):
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert param.help, param.name
            assert param.envvar and param.envvar.startswith("LSTM_WORKER_") and param.show_envvar, param.name


def test_one_name_per_concept_across_commands():
    """An option both commands have means the same there: same env var, same type, same help."""
    run_options = {p.name: p for p in run.params if isinstance(p, click.Option)}
    for param in classify.params:
        twin = run_options.get(param.name)
        if isinstance(param, click.Option) and twin is not None and param.name != "help":
            assert (param.opts, param.envvar, type(param.type)) == (twin.opts, twin.envvar, type(twin.type))
            if param.name != "batch_size":  # records per batch in both; the defaults differ (stream vs file)
                assert (param.help, param.default) == (twin.help, twin.default), param.name


def test_exactly_once_timing_is_derived_from_the_transaction_timeout():
    settings = build_settings(topic="t", model=Path("b"), exactly_once=True, transactional_id="w-0",
                              transaction_timeout_ms=30_000, max_poll_interval_ms=60_000)
    assert 3 * settings.flush_timeout_s <= settings.transaction_timeout_ms / 1000 < settings.max_poll_interval_ms / 1000
    assert settings.send_block_ms <= settings.flush_timeout_s * 1000


def test_default_transactional_id_is_host_and_slot():
    settings = build_settings(topic="t", model=Path("b"), group_id="g", exactly_once=True, host_slot=1)
    assert settings.transactional_id.startswith("g-") and settings.transactional_id.endswith("-1")
    other = build_settings(topic="t", model=Path("b"), group_id="g", exactly_once=True, host_slot=0)
    assert other.transactional_id != settings.transactional_id


def test_env_vars_configure_the_command(monkeypatch):
    monkeypatch.setenv("LSTM_WORKER_TOPIC", "t")
    monkeypatch.setenv("LSTM_WORKER_MODEL", "b")
    monkeypatch.setenv("LSTM_WORKER_TOP_K", "-3")
    result = CliRunner().invoke(run, [])
    assert result.exit_code == 2 and "--top-k" in result.output
