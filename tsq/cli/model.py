"""`tsq model` commands."""

from __future__ import annotations

from typing import Annotated

import typer

from tsq.spec import TinyVariant

app = typer.Typer(help="Build the embedded tiny reasoning model (CPU, cached).", no_args_is_help=True)


@app.command("build-tiny")
def build_tiny_command(
    variant: Annotated[
        TinyVariant,
        typer.Option(help="'default' (the embedded CPU model) or 'test' (fast, for the test suite)"),
    ] = "default",
    force: Annotated[bool, typer.Option("--force", help="rebuild even when a matching build exists")] = False,
) -> None:
    """Build (or find) the tiny reasoning model: a few minutes on CPU, cached under $TSQ_HOME/models."""
    from tsq.tiny_model import build_info, build_tiny, build_warning

    path = build_tiny(variant, force=force)
    info = build_info(path)
    size_mb = sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 1e6
    typer.echo(
        f"tiny-{variant}: {path}\n"
        f"  {info['n_parameters'] / 1e6:.2f}M parameters, {size_mb:.1f} MB on disk, "
        f"built in {info['build_seconds']:.0f} s (final loss {info['final_loss']}), settings {info['digest']}"
    )
    if machine := info.get("machine"):  # builds from before the record have none
        typer.echo(f"  built with torch {machine['torch']} on {machine['cpu_capability']} CPU kernels")
    if warning := build_warning(info):
        typer.echo(warning, err=True)
