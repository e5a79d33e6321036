"""`tsq sweep check SPEC [--json]`: which searched knobs can change what a trial computes (the recipe's
check).

A report, so it exits 0 whatever it finds; a bad spec exits 2 with one line (tsq.config.spec.load_spec).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tsq.recipe import load_spec


def check(
    spec: Annotated[Path, typer.Argument(help="sweep spec YAML (sweeps/*.yaml)")],
    as_json: Annotated[
        bool, typer.Option("--json", help='print {"knobs": {name: {state, live, distinct, reason}}}')
    ] = False,
    gpu: Annotated[
        str, typer.Option("--gpu", help="the GPU a vLLM spec's memory plan is for: h100 (80 GB) or h200")
    ] = "h100",
) -> None:
    """Say for each searched knob whether it is live, inert, moot or unknown, before any trial runs, and what
    else the spec's recipe checks (TokenSqueeze: whether selection gives pairs on the cached self-samples,
    and for a spec that samples with vLLM its GPU memory and time plan per stage, from the model's
    config.json: local, cached, or tsq's copy). Reads the spec and the cache only (what a trial or `tsq cache
    warm` left there); never loads, builds or downloads a model.
    """
    from tsq.cache import Cache, cache_dir_of
    from tsq.errors import UserError
    from tsq.recipe import recipe_of

    if gpu not in ("h100", "h200"):
        raise UserError(f"--gpu {gpu}: use h100 or h200")
    loaded = load_spec(spec)
    report = recipe_of(loaded).check(loaded, Cache(cache_dir_of(loaded.cache_dir)), source=str(spec), gpu=gpu)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
        return
    if not report.findings:
        typer.echo("study.search fixes every knob: nothing is searched")
    for finding in report.findings.values():
        typer.echo(finding.line())
        for warning in finding.warnings:
            typer.echo(f"  warning: {warning}")
    for line in report.lines:
        typer.echo(line)
