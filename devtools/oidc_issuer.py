"""A minimal OIDC issuer on loopback: a JWKS and a client-credentials token endpoint signing RS256 JWTs.

No OIDC provider installs from the registries these machines reach (Keycloak, Dex and the like are
downloads from elsewhere), and neither ``cryptography`` nor PyJWT is a dependency: the key is made and each
token signed by ``openssl``, as :mod:`devtools.kafka_tls` makes the broker's certificates. The broker checks the
tokens with Kafka's own ``OAuthBearerValidatorCallbackHandler`` against ``jwks_url``. A test can make the token
endpoint answer 503 (``failing``) and count the tokens it issued (``issued``).
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from devtools.kafka_jars import KafkaToolError, require_tool

HOST = "127.0.0.1"
KEY_ID = "lstm-worker-test"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _openssl(*args: str, data: bytes | None = None) -> bytes:
    result = subprocess.run([require_tool("openssl", "openssl"), *args], input=data, capture_output=True,
                            check=False)
    if result.returncode != 0:
        raise KafkaToolError(f"openssl {args[0]} failed: {result.stderr.decode().strip().splitlines()[-1:]}")
    return result.stdout


class OidcIssuer:
    """Issues tokens for one client (``client_id`` with ``client_secret``), each living ``token_lifetime_s``."""

    def __init__(self, directory: Path, *, token_lifetime_s: int = 60, audience: str = "kafka",
                 client_id: str = "lstm-worker"):
        directory.mkdir(parents=True, exist_ok=True)
        self.key = directory / "oidc-signing.key"
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(self.key))
        modulus = _openssl("rsa", "-in", str(self.key), "-noout", "-modulus").decode().strip().split("=", 1)[1]
        self._jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": KEY_ID,
                     "n": _b64url(bytes.fromhex(modulus)), "e": _b64url((65537).to_bytes(3, "big"))}
        self.token_lifetime_s = token_lifetime_s
        self.audience = audience
        self.client_id = client_id
        self.client_secret = secrets.token_hex(16)
        self.failing = False  # the token endpoint answers 503 while set
        self.issued = 0
        self.requests: list[dict[str, str]] = []  # the form of every token request, secrets left out
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, 0), self._handler_class())
        self._server.daemon_threads = True
        self.issuer = f"http://{HOST}:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    def sign(self, claims: dict[str, object]) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": KEY_ID}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = _openssl("dgst", "-sha256", "-sign", str(self.key), data=signing_input.encode())
        return f"{signing_input}.{_b64url(signature)}"

    def _token_answer(self, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return 401, {"error": "invalid_client"}
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": self.client_id, "aud": form.get("audience") or self.audience,
                  "iat": now, "exp": now + self.token_lifetime_s, "jti": secrets.token_hex(8)}
        if form.get("scope"):  # Kafka's validator refuses an empty scope claim
            claims["scope"] = form["scope"]
        token = self.sign(claims)
        with self._lock:
            self.issued += 1
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime_s}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:  # quiet: the tests read the counters
                pass

            def _send(self, status: int, body: dict[str, object]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/jwks":
                    self._send(200, {"keys": [issuer._jwk]})
                else:
                    self._send(404, {"error": "not_found"})

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if self.path != "/token":
                    self._send(404, {"error": "not_found"})
                    return
                issuer.requests.append({k: v for k, v in form.items() if k != "client_secret"})
                if issuer.failing:
                    self._send(503, {"error": "temporarily_unavailable"})
                    return
                self._send(*issuer._token_answer(form))

        return Handler

    def start(self) -> OidcIssuer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-issuer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OidcIssuer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
