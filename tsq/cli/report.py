"""`tsq report pareto`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tsq.cli.sweep import StorageOpt, StudyOpt

app = typer.Typer(help="Export reports of a study: the accuracy/token Pareto front.", no_args_is_help=True)


@app.command()
def pareto(
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    study: StudyOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Write pareto.csv, pareto.html (interactive, offline), pareto.md (paper-style table), pareto.png."""
    from tsq.report.pareto import write_report
    from tsq.study.storage import load_study, scrub_argv

    scrub_argv(sys.argv)
    files = write_report(load_study(storage, study), out)
    for path in files.values():
        typer.echo(str(path))
