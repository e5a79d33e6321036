"""`tsq sweep` commands."""

import typer

app = typer.Typer(help="sweep commands", no_args_is_help=True)
