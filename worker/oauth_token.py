"""OAUTHBEARER with the OIDC client-credentials flow: the token kafka-python presents to the broker.

kafka-python asks its ``sasl_oauth_token_provider`` for a token at every SASL authentication: each new
connection and each KIP-368 re-authentication the broker demands (``connections.max.reauth.ms``). One provider
per process (``token_provider``, keyed by the frozen settings) serves the consumer and every producer, so they
share one cached token. It is renewed once REFRESH_AT of its lifetime has passed; when the endpoint fails, the
cached token serves until it expires, and after that each authentication fails (the client reconnects and
asks again) while ``problem`` says why, for /readyz.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from kafka.errors import KafkaConnectionError
from kafka.net.sasl.oauth import AbstractTokenProvider

# Renew when this share of the token's lifetime has passed: early enough that a slow or briefly failing
# endpoint does not leave a connection to authenticate with an expired token.
REFRESH_AT = 0.8
# A failed request is not repeated sooner than this: every authentication asks, and a down endpoint
# should not be hammered by each reconnect.
RETRY_AFTER_S = 1.0


class TokenEndpointError(KafkaConnectionError):
    """The token endpoint gave no usable token; the message is one line naming the endpoint and the cause.

    A connection error to kafka-python: raised inside an authentication, it fails that connection, which the
    client retries, rather than reaching the worker's poll as a fatal error.
    """

    def __str__(self) -> str:  # the message alone: kafka-python's errors prefix their class name
        return str(self.args[0]) if self.args else "no token"


@dataclass(frozen=True)
class OidcClientCredentials:
    """Where and as whom the worker asks for tokens (client-credentials grant, RFC 6749 section 4.4)."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)  # never logged
    scope: str | None = None
    audience: str | None = None
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Token:
    value: str
    obtained_at: float  # time.monotonic()
    lifetime_s: float

    def expired(self, now: float) -> bool:
        return now >= self.obtained_at + self.lifetime_s

    def due(self, now: float) -> bool:
        return now >= self.obtained_at + REFRESH_AT * self.lifetime_s


def request_token(credentials: OidcClientCredentials) -> Token:
    """One client-credentials request; raises TokenEndpointError with the cause on any failure."""
    form = {"grant_type": "client_credentials", "client_id": credentials.client_id,
            "client_secret": credentials.client_secret}
    if credentials.scope:
        form["scope"] = credentials.scope
    if credentials.audience:
        form["audience"] = credentials.audience
    request = urllib.request.Request(credentials.token_url, data=urllib.parse.urlencode(form).encode(),
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              "Accept": "application/json"})
    where = f"token endpoint {credentials.token_url}"
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=credentials.timeout_s) as response:  # noqa: S310 - the user's URL
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").replace("\n", " ").strip()
        raise TokenEndpointError(f"{where} answered HTTP {exc.code} {exc.reason}"
                                 f"{f': {detail}' if detail else ''} (check the client id, the secret file, "
                                 "the scope and the audience)") from None
    except urllib.error.URLError as exc:
        raise TokenEndpointError(f"cannot reach {where}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # a timeout, a reset, or a body that is not JSON
        raise TokenEndpointError(f"{where} gave no JSON answer: {exc}") from None
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise TokenEndpointError(f"{where} answered without an access_token")
    lifetime = body.get("expires_in")
    if not isinstance(lifetime, int | float) or lifetime <= 0:
        raise TokenEndpointError(f"{where} answered without a positive expires_in")
    return Token(token, started, float(lifetime))  # counted from the request: never later than the issuer's clock


class ClientCredentialsTokenProvider(AbstractTokenProvider):
    """kafka-python's token provider: a cached token, renewed before it expires, shared by every client."""

    def __init__(self, credentials: OidcClientCredentials):
        super().__init__()
        self.credentials = credentials
        self._lock = threading.Lock()
        self._token: Token | None = None
        self._failed_at: float | None = None
        self.problem: str | None = None  # the last failure while no valid token was left; None while tokens flow
        self.tokens_obtained = 0

    def token(self) -> str:
        with self._lock:
            now = time.monotonic()
            current = self._token
            if current is not None and not current.due(now):
                return current.value
            if self._failed_at is None or now - self._failed_at >= RETRY_AFTER_S:
                try:
                    self._token = current = request_token(self.credentials)
                    self.tokens_obtained += 1
                    self._failed_at = self.problem = None
                    return current.value
                except TokenEndpointError as exc:
                    self._failed_at = now
                    if current is None or current.expired(now):
                        self.problem = str(exc)
                        raise
            elif current is None or current.expired(now):
                raise TokenEndpointError(self.problem or "no token yet")
            return current.value  # the endpoint failed, the cached token is still valid


@functools.cache
def token_provider(credentials: OidcClientCredentials) -> ClientCredentialsTokenProvider:
    """The one provider of these credentials in this process."""
    return ClientCredentialsTokenProvider(credentials)


def checked_token_provider(credentials: OidcClientCredentials) -> ClientCredentialsTokenProvider:
    """At start: the provider, holding a token, or a StartupError naming the endpoint and the cause (exit 2)."""
    from worker.exceptions import StartupError

    provider = token_provider(credentials)
    try:
        provider.token()
    except TokenEndpointError as exc:
        raise StartupError(f"--sasl-oauth-token-url: {exc}") from None
    return provider
