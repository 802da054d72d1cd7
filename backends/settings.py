"""Settings every backend is opened with: one typed model, its defaults in one place.

Where the values come from (flags, `INV_*` environment variables, a TOML file) is the
front's business (`inventory_cli.settings.load_settings`); each value is checked here by
the grammar of `backends.values`, so a setting means what the same value means anywhere
else.  Secrets are `SecretStr`: they print as `**********`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import values
from .errors import ValidationError

__all__ = ["DEFAULTS", "Settings", "secret"]

#: The rate limits' defaults: the original design's per address, a busy till's per token.
RATE_ANONYMOUS = "100/hour"
RATE_TOKEN = "1200/minute"
_DEFAULT_RATES = (RATE_ANONYMOUS, RATE_TOKEN)
_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,245}", re.ASCII)


class Settings(BaseSettings):
    """Everything `inv` can be configured with; see the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="INV_", extra="forbid")

    backend: str = "json"
    file: Path = Path("inventory.json")
    actor: str | None = None
    lock_timeout: float = 30.0
    database_url: SecretStr | None = None
    read_database_urls: SecretStr | None = None
    redis_url: SecretStr | None = None
    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = "inventory-events"
    kafka_partitions: int = Field(6, ge=1, le=10000)
    kafka_group: str = "inv-workers"
    kafka_timeout: float = 10.0
    kafka_session_timeout_ms: int = Field(10000, ge=100, le=3_600_000)
    wait_timeout: float = 30.0
    cache_ttl: int = Field(300, ge=1, le=31_536_000)
    cache_prefix: str = "inv"
    worker_batch_size: int = Field(1000, ge=1, le=1_000_000)
    worker_batch_ms: int = Field(50, ge=1, le=3_600_000)
    url: str | None = None
    token: SecretStr | None = None
    http_timeout: float = 30.0
    rate_limit_anonymous: str = RATE_ANONYMOUS
    rate_limit_token: str = RATE_TOKEN
    allowed_networks: str | None = None

    @field_validator("file", mode="before")
    @classmethod
    def _file(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            text = str(value)
            if not text.strip():
                raise ValueError("must not be empty")
            if "\x00" in text:
                raise ValueError("contains a NUL character")
        return value  # a name that is not UTF-8 is still a name on POSIX

    @field_validator("actor", mode="before")
    @classmethod
    def _actor(cls, value: Any) -> Any:
        if value is None or value == "":  # unset: the OS user
            return None
        return _checked(values.actor, value)

    @field_validator("rate_limit_anonymous", "rate_limit_token")
    @classmethod
    def _rate(cls, value: str) -> str:
        if value in _DEFAULT_RATES:
            return value  # every command validates its defaults: no import for them
        try:
            from limits import parse_many
        except ImportError:  # the api extra is not installed: inv serve will say so
            return value
        try:
            if parse_many(value):
                return value
        except ValueError:
            pass
        raise ValueError(f"{value!r} is not a rate limit (for example 100/hour, 20/second)")

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: str | None) -> str | None:
        if value:
            _checked(values.networks, value)
        return value

    @field_validator("lock_timeout", "kafka_timeout", "wait_timeout", "http_timeout", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        return _checked(lambda v: values.seconds(v, field="seconds"), value)

    @field_validator(
        "kafka_partitions",
        "kafka_session_timeout_ms",
        "cache_ttl",
        "worker_batch_size",
        "worker_batch_ms",
        mode="before",
    )
    @classmethod
    def _whole(cls, value: Any) -> Any:
        # ASCII digits, as every number inv takes; the bounds are the fields' own.
        bound = 10**12
        return _checked(
            lambda v: values.integer(v, field="n", minimum=-bound, maximum=bound), value
        )

    @field_validator("kafka_topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        # Kafka's own rule for topic names (its dead-letter topic adds ".dlq").
        if not _TOPIC.fullmatch(value):
            raise ValueError("must be 1-245 of the letters a-z, A-Z, digits, '.', '_' and '-'")
        return value

    @field_validator("kafka_topic", "kafka_group", "cache_prefix", "backend", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _checked(lambda v: values.text(v, field="name", max_length=200), value)
        return value

    @field_validator(
        "database_url",
        "read_database_urls",
        "redis_url",
        "kafka_bootstrap_servers",
        "url",
        "token",
        mode="before",
    )
    @classmethod
    def _plain(cls, value: Any) -> Any:
        if isinstance(value, str):
            _utf8(value)
            if any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise ValueError("contains a control character")
        return value

    def who(self) -> str:
        """The actor audit entries name: the setting, else the OS user."""
        if self.actor:
            return self.actor
        import getpass

        try:
            return values.actor(getpass.getuser())
        except (KeyError, OSError, ValidationError):
            return "unknown"


def secret(value: Any) -> str | None:
    """The text of a setting that may be a `SecretStr`."""
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if getter else value)


def _utf8(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8") from None


def _checked(check: Any, value: Any) -> Any:
    """Run a `backends.values` check as a pydantic validator (its message without the
    field name, which pydantic adds)."""
    try:
        return check(value)
    except ValidationError as exc:
        text = str(exc)
        raise ValueError(text.split(": ", 1)[1] if ": " in text else text) from None


#: The defaults, for constructors used without settings (tests, scripts): one place.
DEFAULTS = Settings.model_construct()
