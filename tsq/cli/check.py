"""`tsq sweep check SPEC [--json]`: which searched knobs can change what a trial computes (tsq.study.check).

A report, so it exits 0 whatever it finds; a bad spec exits 2 with one line (tsq.spec.load_spec).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tsq.spec import load_spec


def check(
    spec: Annotated[Path, typer.Argument(help="sweep spec YAML (sweeps/*.yaml)")],
    as_json: Annotated[
        bool, typer.Option("--json", help='print {"knobs": {name: {state, live, distinct, reason}}}')
    ] = False,
) -> None:
    """Say for each searched knob whether it is live, inert, moot or unknown, before any trial runs.

    Reads the spec and the cache only (self-samples and refinement candidates a trial left there); never
    loads, builds or downloads a model.
    """
    from tsq.cache import Cache, cache_dir_of
    from tsq.study.check import check_spec, report_json

    loaded = load_spec(spec)
    findings = check_spec(loaded, Cache(cache_dir_of(loaded.cache_dir)))
    if as_json:
        typer.echo(json.dumps(report_json(findings), indent=2, ensure_ascii=False))
        return
    if not findings:
        typer.echo("study.search fixes every knob: nothing is searched")
    for finding in findings.values():
        typer.echo(finding.line())
        for warning in finding.warnings:
            typer.echo(f"  warning: {warning}")
