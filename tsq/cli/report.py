"""`tsq report pareto`, `tsq report effects`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tsq.cli.sweep import SpecArg, StorageOpt, StudyOpt, study_of

app = typer.Typer(
    help="Export reports of a study: the accuracy/token Pareto front; each knob's effect over seeds.",
    no_args_is_help=True,
)


@app.command()
def pareto(
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    spec: SpecArg = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Write pareto.csv, pareto.html (interactive, offline), pareto.md (paper-style table), pareto.png."""
    from tsq.report.pareto import write_report
    from tsq.study.storage import load_study, scrub_argv

    scrub_argv(sys.argv)
    files = write_report(
        load_study(storage, study_of(spec, study)), out, spec=None if spec is None else str(spec)
    )
    for path in files.values():
        typer.echo(str(path))


@app.command()
def effects(
    study: Annotated[
        list[str] | None,
        typer.Option(
            "--study", help="study name; repeat for several studies (default: the storage's only one)"
        ),
    ] = None,
    storage: StorageOpt = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            help="the knob value every arm is compared with (default: a categorical knob's first choice; "
            "a numeric knob compares its last value with its first)",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="also write the report to this .md file")] = None,
) -> None:
    """Each knob's effect in a replicated grid study: arms, their means over seeds, and contrasts.

    An arm is one configuration on the eval split: a trial, its `tsq sweep confirm` replicates and any
    trial with the same params; n is its number of seeds. Values are means over seeds with 95% intervals
    that hold seed noise (training and sampling seeds) as well as evaluation noise, overall and by
    difficulty level (depth). A contrast is an arm's mean minus the reference arm's with its 95% t interval,
    the SE from the between-seed SD pooled over the study's arms (the arms share their eval problems, so
    problem difficulty cancels). Verdicts: better / worse / equivalent within ±margin (two one-sided tests) /
    undecided, Holm-adjusted across the study's primary family (study.effects; default each arm on each
    objective), every other contrast exploratory; a contrast with a single seed on either side is
    "unreplicated" (run `tsq sweep confirm SPEC --top K --replicates R` first).
    """
    from tsq.fileio import write_atomic
    from tsq.report.effects import study_effects
    from tsq.report.effects_markdown import render_report
    from tsq.study.storage import load_study, scrub_argv

    scrub_argv(sys.argv)
    names: list[str | None] = list(study) if study else [None]
    text = render_report([study_effects(load_study(storage, name), reference) for name in names])
    typer.echo(text, nl=False)
    if out is not None:
        write_atomic(out, text)
        typer.echo(f"wrote {out}", err=True)
