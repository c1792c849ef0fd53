"""Review page settings, read once from the environment (README "Configuration")."""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from store.review import MAX_PAGE
from store.scores import DEFAULT_DATABASE_URL

# A session secret shorter than this is guessable enough to forge sessions with.
MIN_SECRET_LENGTH = 32


class ConfigError(Exception):
    """The page cannot start as configured; the message says which setting to fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    # The page runs without the rights to change the schema: `commons-moderation migrate`
    # (or the transformer, SCORE_STORE_MIGRATE) migrates the store.
    review_store_migrate: bool = False
    reviewers_file: Path | None = None
    # None: the policy packaged with `moderation`.
    moderation_policy: Path | None = None
    review_host: str = "127.0.0.1"
    review_port: int = Field(8085, ge=0, le=65535)
    # Links and thumbnails point here; the server itself never fetches from it.
    commons_url: str = "https://commons.wikimedia.org"
    # Special:FilePath redirects to these hosts, so the browser must be allowed to load them.
    commons_upload_hosts: tuple[str, ...] = ("upload.wikimedia.org",)
    review_secret_key: SecretStr | None = None
    # Development only: a per-process session secret and cookies without the Secure flag.
    review_dev: bool = False
    # None: Secure cookies unless review_dev.
    review_secure_cookie: bool | None = None
    review_session_hours: float = Field(12.0, gt=0, le=24 * 30)
    review_page_size: int = Field(25, ge=1, le=MAX_PAGE)
    review_max_body_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)
    review_store_timeout_s: float = Field(10.0, gt=0)

    @field_validator("commons_url")
    @classmethod
    def _check_commons_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "COMMONS_URL must be an http(s) URL, e.g. https://commons.wikimedia.org"
            )
        if parts.query or parts.fragment:
            raise ValueError("COMMONS_URL must not carry a query or fragment")
        return value.rstrip("/")

    @field_validator("commons_upload_hosts")
    @classmethod
    def _check_upload_hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for host in hosts:
            if not host or any(c in host for c in "/;, '\"*"):
                raise ValueError(f"COMMONS_UPLOAD_HOSTS entry {host!r} is not a host[:port]")
        return hosts

    def session_secret(self) -> tuple[str, bool]:
        """The secret that signs session cookies, and whether it was generated for this
        process (sessions then end with it)."""
        if self.review_secret_key is not None:
            secret = self.review_secret_key.get_secret_value()
            if len(secret) < MIN_SECRET_LENGTH:
                raise ConfigError(
                    f"REVIEW_SECRET_KEY has {len(secret)} characters; it needs at least "
                    f"{MIN_SECRET_LENGTH} (e.g. `python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))'`)"
                )
            return secret, False
        if self.review_dev:
            return secrets.token_urlsafe(32), True
        raise ConfigError(
            "REVIEW_SECRET_KEY is not set: sessions are signed with it. Set it to a long "
            "random string, or REVIEW_DEV=true for a per-process secret (development only)"
        )

    @property
    def secure_cookie(self) -> bool:
        return (
            not self.review_dev if self.review_secure_cookie is None else self.review_secure_cookie
        )

    @property
    def image_sources(self) -> tuple[str, ...]:
        """CSP sources thumbnails may load from: Commons and the hosts it redirects to."""
        parts = urlsplit(self.commons_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        return (origin, *(f"{parts.scheme}://{host}" for host in self.commons_upload_hosts))
