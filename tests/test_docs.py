"""Every command has help and appears in the README; CI runs the README's test command."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from inventory_cli.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _commands() -> list[tuple[str, ...]]:
    root = typer.main.get_command(app)
    found: list[tuple[str, ...]] = []
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        subcommands = getattr(command, "commands", None)
        if subcommands:
            found.extend((name, sub) for sub in subcommands)
        else:
            found.append((name,))
    return found


def test_the_app_has_the_grammar_of_the_design() -> None:
    names = {" ".join(c) for c in _commands()}
    assert names >= {
        "init",
        "add",
        "update",
        "edit",
        "remove",
        "transfer",
        "list",
        "show",
        "history",
        "import",
        "export",
        "store add",
        "store list",
        "store remove",
        "report value",
        "report low-stock",
        "report movements",
    }


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_command_has_help_and_is_documented(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.stdout
    root = typer.main.get_command(app)
    target = root
    for part in command:
        target = target.commands[part]  # type: ignore[attr-defined]
    assert target.help, f"inv {' '.join(command)} has no help text"
    assert f"inv {' '.join(command)}" in README, f"inv {' '.join(command)} is not in the README"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in README and "make demo" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()


# -- the README's command table is the CLI's, option for option -------------------------------


def _table_rows() -> dict[str, set[str]]:
    """The README's command table: the command each row names, and the options in it."""
    import re

    section = README.split("### Commands", 1)[1].split("\n\n", 2)[1]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines()[2:]:
        first = line.split(" | ", 1)[0]
        words = re.findall(r"`inv((?: [a-z][a-z-]*)*)", first)[0].split()
        command = " ".join(w for w in words if not w.isupper())
        rows[command] = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line))
    return rows


def _options(command: typer.core.TyperCommand | typer.core.TyperGroup) -> set[str]:
    return {
        opt
        for param in command.params
        for opt in getattr(param, "opts", [])
        if opt.startswith("--") and opt != "--help"
    }


def test_the_readme_table_names_every_command_and_every_option() -> None:
    root = typer.main.get_command(app)
    rows = _table_rows()
    expected = {"": _options(root)}
    for command in _commands():
        target = root
        for part in command:
            target = target.commands[part]  # type: ignore[attr-defined]
        expected[" ".join(command)] = _options(target)
    assert set(rows) == set(expected), "commands in the table and in the app differ"
    for command, options in expected.items():
        assert rows[command] == options, (command or "inv", rows[command] ^ options)


# -- the README's settings table is the Settings model, variable for variable -----------------


def _settings_rows() -> list[tuple[set[str], set[str]]]:
    """(setting names, INV_* variables) of each row of the README's settings table."""
    import re

    section = README.split("## Settings", 1)[1]
    table = section[section.index("\n| setting") + 1 :].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
        names = set(re.findall(r"`([a-z][a-z0-9_]*)`", cells[0].split("(", 1)[0]))
        rows.append((names, set(re.findall(r"`(INV_[A-Z0-9_]+)`", cells[2]))))
    return rows


def test_the_readme_settings_table_names_every_setting_and_its_variable() -> None:
    from backends.settings import Settings

    rows = _settings_rows()
    named = {name for names, _ in rows for name in names}
    assert named == set(Settings.model_fields), set(Settings.model_fields) ^ named
    for names, variables in rows:
        if names:  # a setting's variable is INV_ and its name
            assert variables == {f"INV_{name.upper()}" for name in names}, (names, variables)
        else:  # a row of where settings come from, read before the model exists
            assert variables <= {"INV_SECRETS_DIR", "INV_CONFIG"}, variables
    assert any("INV_SECRETS_DIR" in variables for _, variables in rows)
