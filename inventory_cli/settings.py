"""Where settings come from: flags, then `INV_*` environment variables, then a TOML file,
then defaults (the model and its defaults are `backends.settings.Settings`).

Secrets (and any other setting) may also come from files in a secrets folder
(`INV_SECRETS_DIR`, else `/run/secrets`), after the environment and before the TOML file.

The TOML file is `INV_CONFIG` (or `--config`), else `./inv.toml`, else `config.toml` in
the user's config folder (`~/.config/inv/` on Linux), read by pydantic-settings'
`TomlConfigSettingsSource`.  Its keys are the field names (`backend = "postgres"`); a
relative `file` in it is relative to the TOML file.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    TomlConfigSettingsSource,
)

from backends import ConfigurationError, PermissionDenied
from backends.settings import Settings

__all__ = ["Settings", "config_path", "load_settings"]

#: The TOML file of the settings being loaded (set by `load_settings`).
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("inv_config_file", default=None)


class _TomlFile(TomlConfigSettingsSource):
    """The TOML file's values; a relative `file` is made relative to the TOML file."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        data = super()._read_file(file_path)
        file = data.get("file")
        if isinstance(file, str) and file.strip() and not Path(file).expanduser().is_absolute():
            data["file"] = str(Path(file_path).parent / file)
        return data


class _LoadedSettings(Settings):
    """`Settings` read from flags, the environment and the TOML file, in that order."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_FILE.get()
        sources = [init_settings, env_settings, file_secret_settings]
        if path is not None:
            sources.append(_TomlFile(settings_cls, toml_file=path))
        return tuple(sources)


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


def secrets_dir() -> Path | None:
    """Where settings may be read from files, one per setting, named as its variable
    (`INV_DATABASE_URL`, or lower-case), as Docker and Kubernetes mount secrets:
    `INV_SECRETS_DIR`, else `/run/secrets` when it exists."""
    given = os.environ.get("INV_SECRETS_DIR")
    if given:
        path = Path(given)
        if not path.is_dir():
            raise ConfigurationError(f"INV_SECRETS_DIR: {given} is not a folder")
        return path
    default = Path("/run/secrets")
    return default if default.is_dir() else None


def _check_readable(path: Path) -> None:
    """Refuse a config file that is not there or not a file before anything reads it."""
    try:
        if not path.exists():
            raise ConfigurationError(f"config file {path} does not exist")
        if not path.is_file():
            raise ConfigurationError(f"config file {path} is not a file")
        if not os.access(path, os.R_OK):
            raise PermissionDenied(f"cannot read config file {path}: permission denied")
    except (OSError, ValueError) as exc:  # a name too long, a NUL in it
        raise ConfigurationError(f"config file {path}: {exc}") from None


def load_settings(config: Path | None = None, **flags: Any) -> Settings:
    """Build the settings; flags given as None fall through to the other sources."""
    path = config_path(config)
    if path is not None:
        _check_readable(path)
    given = {key: value for key, value in flags.items() if value is not None}
    where = f" (config file {path})" if path is not None else ""
    token = _CONFIG_FILE.set(path)
    try:
        settings = _LoadedSettings(**given, _secrets_dir=secrets_dir())  # type: ignore[call-arg]
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: "
            + str(err["msg"]).removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise ConfigurationError(f"bad settings{where}: {problems}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"config file {path} is not UTF-8 text (byte {exc.start})"
        ) from None
    except PermissionError:
        raise PermissionDenied(f"cannot read config file {path}: permission denied") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    finally:
        _CONFIG_FILE.reset(token)
    settings.file = settings.file.expanduser()
    return settings


def with_changes(settings: Settings, changes: dict[str, Any], *, what: str = "") -> Settings:
    """`settings` with `changes` (flags of one command), checked as any settings are: the
    first problem is a ConfigurationError naming the field, after `what`."""
    try:
        return Settings.model_validate({**dict(settings), **changes})
    except PydanticValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigurationError(f"{what}{error['loc'][0]}: {message}") from None
