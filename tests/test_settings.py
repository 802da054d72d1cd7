"""Settings: flags > INV_* environment > TOML file > defaults, and the errors on bad input."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from backends import ConfigurationError
from inventory_cli.cli import app
from inventory_cli.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No INV_* variable, no ./inv.toml and no user config leak in; returns the cwd."""
    for name in list(os.environ):
        if name.startswith("INV_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def write_toml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def user_config(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".config" / "inv" / "config.toml"


# -- precedence ------------------------------------------------------------------------


class Layer:
    """One setting's value at each level, as TOML text, environment text and a flag."""

    def __init__(
        self,
        field: str,
        default: Any,
        toml: tuple[str, Any],
        env: tuple[str, Any],
        flag: Any,
    ) -> None:
        self.field = field
        self.default = default
        self.toml_text, self.toml_value = toml
        self.env_text, self.env_value = env
        self.flag = flag


LAYERS = {
    "backend": Layer("backend", "json", ('"postgres"', "postgres"), ("kafka", "kafka"), "http"),
    "file": Layer(
        "file",
        Path("inventory.json"),
        ('"/srv/toml/inventory.json"', Path("/srv/toml/inventory.json")),
        ("/srv/env/inventory.json", Path("/srv/env/inventory.json")),
        Path("/srv/flag/inventory.json"),
    ),
    "lock_timeout": Layer("lock_timeout", 30.0, ("5.5", 5.5), ("7.25", 7.25), 0.5),
}


@pytest.mark.parametrize("name", LAYERS)
def test_precedence_flag_env_toml_default(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = LAYERS[name]
    env_name = f"INV_{name.upper()}"
    config = write_toml(tmp_path / "conf" / "inv.toml", f"{name} = {layer.toml_text}\n")

    assert getattr(load_settings(None), name) == layer.default
    assert getattr(load_settings(config), name) == layer.toml_value

    monkeypatch.setenv(env_name, layer.env_text)
    assert getattr(load_settings(None), name) == layer.env_value
    assert getattr(load_settings(config), name) == layer.env_value
    # A flag given as None falls through to the next source.
    assert getattr(load_settings(config, **{name: None}), name) == layer.env_value
    assert getattr(load_settings(config, **{name: layer.flag}), name) == layer.flag

    monkeypatch.delenv(env_name)
    assert getattr(load_settings(config, **{name: layer.flag}), name) == layer.flag
    assert getattr(load_settings(None, **{name: layer.flag}), name) == layer.flag


def test_layers_combine_field_by_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_toml(
        tmp_path / "conf" / "inv.toml",
        'backend = "postgres"\nfile = "/srv/toml.json"\nlock_timeout = 5.0\n',
    )
    monkeypatch.setenv("INV_FILE", "/srv/env.json")
    settings = load_settings(config, lock_timeout=1.5)
    assert (settings.backend, settings.file, settings.lock_timeout) == (
        "postgres",
        Path("/srv/env.json"),
        1.5,
    )


def test_the_toml_file_is_found_flag_then_env_then_cwd_then_user(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(user_config(tmp_path), 'backend = "user"\n')
    assert load_settings(None).backend == "user"
    write_toml(isolated / "inv.toml", 'backend = "local"\n')
    assert load_settings(None).backend == "local"
    env_config = write_toml(tmp_path / "env.toml", 'backend = "from-env-config"\n')
    monkeypatch.setenv("INV_CONFIG", str(env_config))
    assert load_settings(None).backend == "from-env-config"
    flag_config = write_toml(tmp_path / "flag.toml", 'backend = "from-flag-config"\n')
    assert load_settings(flag_config).backend == "from-flag-config"


# -- missing and bad configuration -----------------------------------------------------


def test_config_flag_with_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigurationError, match="does not exist") as caught:
        load_settings(missing)
    assert str(missing) in str(caught.value)


def test_inv_config_naming_a_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "gone.toml"
    monkeypatch.setenv("INV_CONFIG", str(missing))
    with pytest.raises(ConfigurationError) as caught:
        load_settings(None)
    assert str(missing) in str(caught.value)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "broken.toml", 'backend = "json"\nfile = \n')
    with pytest.raises(ConfigurationError, match="TOML") as caught:
        load_settings(config)
    assert str(config) in str(caught.value)
    assert "line 2" in str(caught.value)


def test_unknown_toml_key_is_refused_by_name(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "inv.toml", 'bakend = "postgres"\n')
    with pytest.raises(ConfigurationError) as caught:
        load_settings(config)
    assert "bakend" in str(caught.value)
    assert str(config) in str(caught.value)


def test_bad_lock_timeout_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INV_LOCK_TIMEOUT", "abc")
    with pytest.raises(ConfigurationError, match="lock_timeout"):
        load_settings(None)


def test_bad_lock_timeout_in_toml_names_setting_and_file(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "inv.toml", 'lock_timeout = "soon"\n')
    with pytest.raises(ConfigurationError, match="lock_timeout") as caught:
        load_settings(config)
    assert str(config) in str(caught.value)


# -- the `file` setting ----------------------------------------------------------------


def test_relative_file_in_toml_is_relative_to_the_toml_folder(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    config = write_toml(conf / "inv.toml", 'file = "data/shop.json"\n')
    assert load_settings(config).file.resolve() == (conf / "data" / "shop.json").resolve()


def test_relative_config_path_and_relative_file(tmp_path: Path, isolated: Path) -> None:
    write_toml(isolated / "conf" / "inv.toml", 'file = "shop.json"\n')
    settings = load_settings(Path("conf/inv.toml"))
    assert settings.file.resolve() == (isolated / "conf" / "shop.json").resolve()


def test_relative_file_in_a_user_config_is_relative_to_that_folder(tmp_path: Path) -> None:
    config = write_toml(user_config(tmp_path), 'file = "shop.json"\n')
    assert load_settings(None).file.resolve() == (config.parent / "shop.json").resolve()


def test_relative_file_from_env_or_flag_stays_relative_to_the_cwd(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_toml(tmp_path / "conf" / "inv.toml", 'file = "toml.json"\n')
    monkeypatch.setenv("INV_FILE", "env.json")
    assert load_settings(config).file.resolve() == (isolated / "env.json").resolve()
    flagged = load_settings(config, file=Path("flag.json"))
    assert flagged.file.resolve() == (isolated / "flag.json").resolve()


def test_absolute_and_home_files_in_toml(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "conf" / "inv.toml", 'file = "/srv/shop/inventory.json"\n')
    assert load_settings(config).file == Path("/srv/shop/inventory.json")
    write_toml(config, 'file = "~/shop.json"\n')
    assert load_settings(config).file == tmp_path / "home" / "shop.json"


# -- secrets ---------------------------------------------------------------------------

SECRETS = {
    "INV_DATABASE_URL": "postgresql://inv:hunter2-db@db.example/inv",
    "INV_READ_DATABASE_URLS": "postgresql://ro:hunter2-replica@r1/inv",
    "INV_REDIS_URL": "redis://:hunter2-redis@cache:6379/0",
    "INV_TOKEN": "tok-hunter2-api",
}


def test_secrets_never_show_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(None)
    assert settings.database_url is not None and settings.token is not None
    assert settings.database_url.get_secret_value() == SECRETS["INV_DATABASE_URL"]
    assert settings.token.get_secret_value() == SECRETS["INV_TOKEN"]
    shown = [repr(settings), str(settings), settings.model_dump_json(), f"{settings}"]
    for text in shown:
        assert "hunter2" not in text, text
    assert "**********" in repr(settings)


def test_secrets_from_toml_never_show(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "inv.toml",
        'token = "tok-hunter2-toml"\ndatabase_url = "postgresql://u:hunter2@h/d"\n',
    )
    settings = load_settings(config)
    assert isinstance(settings, Settings)
    assert settings.token is not None
    assert settings.token.get_secret_value() == "tok-hunter2-toml"
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)


def test_a_settings_error_does_not_echo_a_secret(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "inv.toml", 'token = "tok-hunter2-toml"\nlock_timeout = "never"\n'
    )
    with pytest.raises(ConfigurationError) as caught:
        load_settings(config)
    assert "lock_timeout" in str(caught.value)
    assert "hunter2" not in str(caught.value)


# -- through the CLI -------------------------------------------------------------------


def test_cli_unknown_backend_exits_78_with_a_suggestion() -> None:
    result = CliRunner().invoke(app, ["--backend", "postgress", "list"])
    assert result.exit_code == 78, result.output
    assert result.stderr.startswith("Error: "), result.stderr
    assert "postgress" in result.stderr
    assert "Did you mean" in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_cli_unknown_backend_from_the_environment_exits_78(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INV_BACKEND", "jsno")
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 78, result.output
    assert "Did you mean 'json'" in result.stderr, result.stderr


def test_cli_missing_config_file_exits_78(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = CliRunner().invoke(app, ["--config", str(missing), "list"])
    assert result.exit_code == 78, result.output
    assert result.stderr.startswith("Error: ")
    assert str(missing) in result.stderr


def test_cli_invalid_toml_exits_78(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "inv.toml", "backend = [\n")
    result = CliRunner().invoke(app, ["--config", str(config), "list"])
    assert result.exit_code == 78, result.output
    assert result.stderr.startswith("Error: ")
    assert str(config) in result.stderr
    assert "Traceback" not in result.output


def test_cli_uses_the_file_from_toml(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "conf" / "inv.toml", 'file = "data/shop.json"\n')
    (tmp_path / "conf" / "data").mkdir()
    result = CliRunner().invoke(app, ["--config", str(config), "init"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "conf" / "data" / "shop.json").is_file()
    assert not Path("inventory.json").exists()
