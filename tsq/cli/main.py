"""Entry point: `tsq --help` lists the commands. User errors exit 2 with one line, never a traceback."""

from __future__ import annotations

import logging
import sys

import typer

from tsq.cli import baseline, cache, model, report, storage, sweep, trial
from tsq.compat.typer import plain_flags
from tsq.errors import UserError

plain_flags()  # `--help` without a `<bool>` type label

app = typer.Typer(
    name="tsq",
    help=(
        "Tune TokenSqueeze (α, ε, λ, η) with Optuna sweeps.\n\n"
        "Start here:  tsq baseline sweeps/quickstart.yaml  →  "
        "tsq sweep launch sweeps/quickstart.yaml  →  tsq report pareto sweeps/quickstart.yaml --out report"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(sweep.app, name="sweep")
app.add_typer(report.app, name="report")
app.add_typer(trial.app, name="trial")
app.add_typer(cache.app, name="cache")
app.add_typer(model.app, name="model")
app.add_typer(storage.app, name="storage")
app.command("baseline")(baseline.baseline)


def run() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
