"""The front of inv: the Typer app, settings, output formats, import and export."""

import os

# inv uses no pydantic plugins; without this, building the settings model scans every
# installed package's entry points, a noticeable part of each command's start-up.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

__all__: list[str] = []
