"""`tsq sweep check SPEC [--json]`: which searched knobs can change what a trial computes (tsq.study.check).

A report, so it exits 0 whatever it finds; a bad spec exits 2 with one line (tsq.config.spec.load_spec).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tsq.config.spec import load_spec


def check(
    spec: Annotated[Path, typer.Argument(help="sweep spec YAML (sweeps/*.yaml)")],
    as_json: Annotated[
        bool, typer.Option("--json", help='print {"knobs": {name: {state, live, distinct, reason}}}')
    ] = False,
    gpu: Annotated[
        str, typer.Option("--gpu", help="the GPU a vLLM spec's memory plan is for: h100 (80 GB) or h200")
    ] = "h100",
) -> None:
    """Say for each searched knob whether it is live, inert, moot or unknown, before any trial runs.

    Reads the spec and the cache only (self-samples and refinement candidates a trial left there); never
    loads, builds or downloads a model. For a spec that samples with vLLM it also prints the trial program's
    GPU memory and time plan per stage (from the model's config.json: local, cached, or tsq's copy).
    """
    from tsq.cache import Cache, cache_dir_of
    from tsq.errors import UserError
    from tsq.study.check import check_spec, load_cached_inputs, program_check, report_json
    from tsq.study.preflight import selection_preflight

    if gpu not in ("h100", "h200"):
        raise UserError(f"--gpu {gpu}: use h100 or h200")
    loaded = load_spec(spec)
    cache = Cache(cache_dir_of(loaded.cache_dir))
    findings = check_spec(loaded, cache)
    selection = selection_preflight(loaded, load_cached_inputs(loaded, cache))
    plan = program_check(loaded, gpu)  # the program's own check: TokenSqueeze's GPU plan, for vLLM specs
    if as_json:
        report = {
            **report_json(findings),
            "selection": selection.to_json(),
            **({} if plan is None else {"gpu_plan": plan.to_json()}),
        }
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    if not findings:
        typer.echo("study.search fixes every knob: nothing is searched")
    for finding in findings.values():
        typer.echo(finding.line())
        for warning in finding.warnings:
            typer.echo(f"  warning: {warning}")
    for line in selection.lines(str(spec), loaded.sampling.max_new_tokens):
        typer.echo(line)
    for line in [] if plan is None else plan.lines():
        typer.echo(line)
