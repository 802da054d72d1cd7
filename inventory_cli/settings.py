"""Settings: flags, then `INV_*` environment variables, then a TOML file, then defaults.

The TOML file is `INV_CONFIG` (or `--config`), else `./inv.toml`, else `config.toml` in
the user's config folder (`~/.config/inv/` on Linux).  Its keys are the field names
below (`backend = "postgres"`); a relative `file` in it is relative to the TOML file.
Secrets are `SecretStr`: they print as `**********`.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from pathlib import Path
from typing import Any

import typer
from pydantic import Field, SecretStr
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from backends import ConfigurationError

__all__ = ["Settings", "config_path", "load_settings"]


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
    kafka_partitions: int = Field(6, ge=1)
    kafka_group: str = "inv-workers"
    kafka_timeout: float = Field(10.0, gt=0)
    kafka_session_timeout_ms: int = Field(10000, ge=100)
    wait_timeout: float = Field(30.0, gt=0)
    cache_ttl: int = Field(300, ge=1)
    cache_prefix: str = "inv"
    worker_batch_size: int = Field(1000, ge=1)
    worker_batch_ms: int = Field(50, ge=1)
    url: str | None = None
    token: SecretStr | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = InitSettingsSource(settings_cls, init_kwargs=_toml_values)
        return (init_settings, env_settings, toml)

    def who(self) -> str:
        """The actor audit entries name: the setting, else the OS user."""
        if self.actor:
            return self.actor
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return "unknown"


# The TOML values for the Settings being built (set by load_settings just before).
_toml_values: dict[str, Any] = {}


def config_path(explicit: Path | None = None) -> Path | None:
    """The TOML file to read: the flag, INV_CONFIG, ./inv.toml, or the user's one."""
    if explicit is not None:
        return explicit
    env = os.environ.get("INV_CONFIG")
    if env:
        return Path(env)
    local = Path("inv.toml")
    if local.is_file():
        return local
    user = Path(typer.get_app_dir("inv")) / "config.toml"
    return user if user.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigurationError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None
    file = data.get("file")
    if isinstance(file, str) and not Path(file).expanduser().is_absolute():
        data["file"] = str(path.parent / file)
    return data


def load_settings(config: Path | None = None, **flags: Any) -> Settings:
    """Build the settings; flags given as None fall through to the other sources."""
    global _toml_values
    path = config_path(config)
    _toml_values = _read_toml(path) if path is not None else {}
    given = {key: value for key, value in flags.items() if value is not None}
    try:
        settings = Settings(**given)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        where = f" (config file {path})" if path is not None else ""
        raise ConfigurationError(f"bad settings{where}: {problems}") from None
    finally:
        _toml_values = {}
    settings.file = settings.file.expanduser()
    return settings
