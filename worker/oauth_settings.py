"""The OAUTHBEARER options of ``run`` and ``replay`` checked and frozen (worker/oauth_token.py uses them)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import click

from worker.oauth_token import OidcClientCredentials
from worker.settings import _require

# The OAUTHBEARER options: required (the endpoint, the client) and optional (what the token is for).
OAUTH_REQUIRED = {"sasl_oauth_token_url": "--sasl-oauth-token-url", "sasl_oauth_client_id": "--sasl-oauth-client-id",
                  "sasl_oauth_client_secret": "--sasl-oauth-client-secret-file"}
OAUTH_OPTIONAL = {"sasl_oauth_scope": "--sasl-oauth-scope", "sasl_oauth_audience": "--sasl-oauth-audience"}


def read_client_secret(secret_file: Path | None) -> str | None:
    """The OAUTHBEARER client secret from ``--sasl-oauth-client-secret-file``; never a CLI value."""
    if secret_file is None:
        return None
    try:
        return secret_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {secret_file}: {exc.strerror}",
                                 param_hint="--sasl-oauth-client-secret-file") from None


def client_secret_from_file(_context: click.Context, _parameter: click.Parameter, path: Path | None) -> str | None:
    """The click callback of ``--sasl-oauth-client-secret-file``: the option's value becomes the secret."""
    return read_client_secret(path)


def oauth_credentials(mechanism: str | None, oauth: dict[str, Any]) -> OidcClientCredentials | None:
    """The client-credentials settings with OAUTHBEARER; refuses them without it, or a required one missing."""
    given = {key: value for key, value in oauth.items() if value is not None}
    if mechanism != "OAUTHBEARER":
        for key in given:
            _require(False, {**OAUTH_REQUIRED, **OAUTH_OPTIONAL}[key], "only used with --sasl-mechanism OAUTHBEARER")
        return None
    for key, option in OAUTH_REQUIRED.items():
        _require(bool(given.get(key)), option, "required with --sasl-mechanism OAUTHBEARER")
    url = urllib.parse.urlsplit(given["sasl_oauth_token_url"])
    _require(url.scheme in ("http", "https") and bool(url.netloc), "--sasl-oauth-token-url",
             f"must be an http(s) URL, got {given['sasl_oauth_token_url']!r}")
    return OidcClientCredentials(token_url=given["sasl_oauth_token_url"], client_id=given["sasl_oauth_client_id"],
                                 client_secret=given["sasl_oauth_client_secret"],
                                 scope=given.get("sasl_oauth_scope"), audience=given.get("sasl_oauth_audience"))
