"""The OAUTHBEARER token provider against a real token endpoint on loopback (devtools/oidc_issuer.py).

Tokens live 2 s, so renewal at 80% of the lifetime, the cached token while the endpoint fails, and the
failure once it expired all show within a few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from devtools.oidc_issuer import OidcIssuer
from worker.oauth_token import RETRY_AFTER_S, ClientCredentialsTokenProvider, OidcClientCredentials, TokenEndpointError
from worker.settings import build_settings

LIFETIME_S = 2


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[OidcIssuer]:
    with OidcIssuer(tmp_path, token_lifetime_s=LIFETIME_S) as running:
        yield running


def provider_of(issuer: OidcIssuer, secret: str | None = None) -> ClientCredentialsTokenProvider:
    return ClientCredentialsTokenProvider(OidcClientCredentials(
        issuer.token_url, issuer.client_id, secret or issuer.client_secret, scope="kafka", audience="kafka"))


def test_token_is_cached_renewed_before_expiry_and_kept_while_the_endpoint_fails(issuer: OidcIssuer) -> None:
    provider = provider_of(issuer)
    first = provider.token()
    assert provider.token() == first and issuer.issued == 1
    assert issuer.requests[0] == {"grant_type": "client_credentials", "client_id": issuer.client_id,
                                  "scope": "kafka", "audience": "kafka"}
    time.sleep(0.85 * LIFETIME_S)  # past 80% of the lifetime, before its end
    second = provider.token()
    assert second != first and issuer.issued == 2

    issuer.failing = True
    time.sleep(0.85 * LIFETIME_S)
    assert provider.token() == second and provider.problem is None  # renewal failed, the token still valid
    time.sleep(0.3 * LIFETIME_S + RETRY_AFTER_S)  # now expired
    with pytest.raises(TokenEndpointError, match="HTTP 503"):
        provider.token()
    assert "HTTP 503" in provider.problem

    issuer.failing = False
    time.sleep(RETRY_AFTER_S)
    assert provider.token() not in (first, second) and provider.problem is None


def test_wrong_secret_names_the_endpoint_and_the_status(issuer: OidcIssuer) -> None:
    with pytest.raises(TokenEndpointError) as caught:
        provider_of(issuer, secret="wrong").token()
    assert str(caught.value).startswith(f"token endpoint {issuer.token_url} answered HTTP 401")


def oauth_settings(**options: str | None) -> None:
    build_settings(topic="in", model=Path("m"), security_protocol="SASL_SSL", **options)


def test_oauthbearer_needs_the_endpoint_and_the_client() -> None:
    with pytest.raises(click.BadParameter, match="required with --sasl-mechanism OAUTHBEARER") as caught:
        oauth_settings(sasl_mechanism="OAUTHBEARER", sasl_oauth_client_id="c", sasl_oauth_client_secret="s")
    assert caught.value.param_hint == "--sasl-oauth-token-url"
    with pytest.raises(click.BadParameter, match="http"):
        oauth_settings(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_url="idp/token", sasl_oauth_client_id="c",
                       sasl_oauth_client_secret="s")


def test_oauth_options_without_oauthbearer_are_refused() -> None:
    with pytest.raises(click.BadParameter, match="only used with --sasl-mechanism OAUTHBEARER"):
        oauth_settings(sasl_mechanism="SCRAM-SHA-512", sasl_username="u", sasl_password="p",
                       sasl_oauth_token_url="http://idp/token")


def test_oauthbearer_settings_give_kafka_python_one_shared_provider() -> None:
    settings = build_settings(topic="in", model=Path("m"), security_protocol="SASL_SSL", sasl_mechanism="oauthbearer",
                              sasl_oauth_token_url="https://idp/token", sasl_oauth_client_id="c",
                              sasl_oauth_client_secret="s")
    config = settings.security.client_config()
    assert config["sasl_mechanism"] == "OAUTHBEARER" and "sasl_plain_password" not in config
    assert config["sasl_oauth_token_provider"] is settings.security.client_config()["sasl_oauth_token_provider"]
    assert "client_secret" not in repr(settings)
