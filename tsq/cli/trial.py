"""`tsq trial` commands."""

import typer

app = typer.Typer(help="trial commands", no_args_is_help=True)
