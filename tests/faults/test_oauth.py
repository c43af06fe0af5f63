"""``lstm-worker run`` over SASL_SSL with OAUTHBEARER: tokens from an OIDC issuer, validated by Apache Kafka.

The issuer is devtools/oidc_issuer.py (a JWKS and a client-credentials endpoint on loopback, RS256 by openssl);
the broker checks every token with Kafka's ``OAuthBearerValidatorCallbackHandler`` against that JWKS, the
expected issuer and audience, and makes each connection re-authenticate every REAUTH_MS (KIP-368, which
kafka-python 3 implements). Tokens live TOKEN_LIFETIME_S, not the issue's 60 s: three lifetimes of 60 s would
keep one test over three minutes; 20 s exercises the same renewal three times in a minute. Inputs are written
and results read back by librdkafka over PLAINTEXT.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.apache_kafka import ApacheKafka
from devtools.kafka_properties import OAUTH_LISTENER, OAuthValidation
from devtools.oidc_issuer import OidcIssuer
from tests.support.kafka import create_stream, produce, reconcile
from tests.support.ports import free_port
from tests.support.workers import WorkerPool, WorkerProcess, run_worker_once

TOKEN_LIFETIME_S = 20
REAUTH_MS = 8_000
AUDIENCE = "kafka"
STREAM_DOCUMENTS = 1_000
START_UP_LIMIT_S = 30


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcIssuer]:
    with OidcIssuer(tmp_path_factory.mktemp("oidc"), token_lifetime_s=TOKEN_LIFETIME_S, audience=AUDIENCE) as running:
        yield running


@pytest.fixture(scope="module")
def kafka(issuer: OidcIssuer) -> Iterator[ApacheKafka]:
    with ApacheKafka(oauth=OAuthValidation(issuer.jwks_url, issuer.issuer, AUDIENCE, REAUTH_MS)) as running:
        yield running


def oauth_flags(kafka: ApacheKafka, issuer: OidcIssuer, directory: Path, token_url: str | None = None) -> tuple:
    secret = directory / "client-secret"
    secret.write_text(issuer.client_secret + "\n")
    return ("--security-protocol", "SASL_SSL", "--sasl-mechanism", "OAUTHBEARER",
            "--sasl-oauth-token-url", token_url or issuer.token_url, "--sasl-oauth-client-id", issuer.client_id,
            "--sasl-oauth-client-secret-file", str(secret), "--sasl-oauth-audience", AUDIENCE,
            "--sasl-oauth-scope", "kafka.read kafka.write", "--ssl-cafile", str(kafka.tls.ca_cert))


def failed_authentications(kafka: ApacheKafka) -> int:
    return kafka.log_file.read_text().count("Failed authentication")


def stream(kafka: ApacheKafka, topic: str, count: int) -> list[str]:
    create_stream(kafka.bootstrap_servers, topic)
    return [f"k{i}" for i in range(count)]


def records(keys: list[str], texts: list[str]) -> list[tuple[str, bytes]]:
    return [(key, json.dumps({"text": texts[i % len(texts)]}).encode()) for i, key in enumerate(keys)]


def test_stream_across_three_token_lifetimes(kafka: ApacheKafka, issuer: OidcIssuer, workers: WorkerPool,
                                             real_texts: list[str], unique_name: str, tmp_path: Path) -> None:
    topic = f"{unique_name}-in"
    keys = stream(kafka, topic, STREAM_DOCUMENTS)
    refused_before, issued_before = failed_authentications(kafka), issuer.issued
    worker = workers.start(kafka.listeners[OAUTH_LISTENER], topic, f"{unique_name}-group",
                           *oauth_flags(kafka, issuer, tmp_path))
    worker.wait_ready()
    started = time.monotonic()
    # Spread over more than three token lifetimes, so that records arrive on connections whose tokens were renewed.
    produce(kafka.bootstrap_servers, topic, records(keys, real_texts), pace_s=3.3 * TOKEN_LIFETIME_S / len(keys))
    result = reconcile(kafka.bootstrap_servers, topic, keys, timeout=120)

    assert time.monotonic() - started >= 3 * TOKEN_LIFETIME_S
    assert result.lost(keys) == [], worker.log()
    assert sum(result.dead.values()) == 0 and result.duplicates() == 0
    # Each token was fetched at an authentication (new connection or re-authentication) and accepted by the
    # broker's validator: at least one per lifetime, none refused.
    assert issuer.issued - issued_before >= 3
    assert failed_authentications(kafka) == refused_before
    assert all(request.get("audience") == AUDIENCE and request.get("scope") == "kafka.read kafka.write"
               for request in issuer.requests)
    assert worker.terminate() == 0, worker.log()


def test_token_endpoint_failing_while_running_is_not_ready_then_recovers(
        kafka: ApacheKafka, issuer: OidcIssuer, workers: WorkerPool, real_texts: list[str], unique_name: str,
        tmp_path: Path) -> None:
    topic = f"{unique_name}-in"
    keys = stream(kafka, topic, 300)
    worker = workers.start(kafka.listeners[OAUTH_LISTENER], topic, f"{unique_name}-group",
                           *oauth_flags(kafka, issuer, tmp_path))
    worker.wait_ready()
    produce(kafka.bootstrap_servers, topic, records(keys, real_texts)[:100])
    issuer.failing = True
    try:
        # The cached token serves until it expires; the next authentication after that fails.
        status, body = wait_not_ready(worker, timeout=3 * TOKEN_LIFETIME_S)
        assert status == 503 and "cannot authenticate" in body and "503" in body, body
        produce(kafka.bootstrap_servers, topic, records(keys, real_texts)[100:])
        assert worker.alive(), worker.log()
    finally:
        issuer.failing = False
    worker.wait_ready(timeout=90)
    result = reconcile(kafka.bootstrap_servers, topic, keys, timeout=120)
    assert result.lost(keys) == [], worker.log()
    assert sum(result.dead.values()) == 0
    assert worker.terminate() == 0, worker.log()


def wait_not_ready(worker: WorkerProcess, timeout: float) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = worker.get("/readyz")
        if status != 200:
            return status, body
        time.sleep(0.5)
    pytest.fail(f"/readyz stayed 200 for {timeout} s with the token endpoint failing")


@pytest.mark.parametrize("endpoint", ["unreachable", "refusing"])
def test_failing_token_endpoint_at_start_is_one_line(kafka: ApacheKafka, issuer: OidcIssuer, tiny_bundle_dir: Path,
                                                     tmp_path: Path, endpoint: str) -> None:
    token_url = f"http://127.0.0.1:{free_port()}/token" if endpoint == "unreachable" else issuer.token_url
    issuer.failing = endpoint == "refusing"
    try:
        started = time.monotonic()
        result = run_worker_once("--topic", "anything", "--bootstrap-servers", kafka.listeners[OAUTH_LISTENER],
                                 "--model", str(tiny_bundle_dir), *oauth_flags(kafka, issuer, tmp_path, token_url),
                                 timeout=60)
        elapsed = time.monotonic() - started
    finally:
        issuer.failing = False
    assert result.returncode == 2, result.stderr
    assert elapsed < START_UP_LIMIT_S
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "--sasl-oauth-token-url" in errors[0] and token_url in errors[0]
    assert ("Connection refused" in errors[0]) if endpoint == "unreachable" else ("HTTP 503" in errors[0])
