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
