"""`tsq baseline SPEC`."""

from pathlib import Path

import typer


def baseline(spec: Path = typer.Argument(..., help="sweep spec YAML")) -> None:
    """Evaluate the base model on the eval split (cached) and print the metrics table."""
    raise NotImplementedError
