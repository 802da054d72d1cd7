"""The front of inv: the Typer app, settings, output formats, import and export."""

__all__: list[str] = []
