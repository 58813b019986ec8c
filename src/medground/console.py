"""How every command refuses bad input: one red ``error: ...`` line on stderr and exit status 2 (no traceback)."""

from __future__ import annotations

from typing import NoReturn

import typer

__all__ = ["fail"]


def fail(message: str) -> NoReturn:
    """Print ``error: message`` to stderr and leave the command with exit status 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)
