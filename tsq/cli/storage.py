"""`tsq storage proxy`: Optuna's gRPC storage proxy in front of the study's database, for more workers than
the database takes connections (docs/cluster.md, "More tasks than database connections")."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from tsq.cli.sweep import StorageOpt
from tsq.signals import sigterm_as_exit
from tsq.study.storage import parse_storage_url, scrub_argv, serve_proxy

app = typer.Typer(help="Serve a study's storage to many workers.", no_args_is_help=True)


@app.command("proxy")
def proxy(
    storage: StorageOpt = None,
    host: Annotated[
        str, typer.Option("--host", help="address to listen on (0.0.0.0: every interface; no TLS, no auth)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 13000,
    threads: Annotated[
        int, typer.Option("--threads", min=1, help="requests served at once (each may hold a DB connection)")
    ] = 10,
) -> None:
    """Serve --storage (or TSQ_STORAGE) at grpc://HOST:PORT until stopped; workers given
    TSQ_STORAGE=grpc://HOST:PORT share the proxy's connections instead of holding their own."""
    scrub_argv(sys.argv)
    parsed = parse_storage_url(storage)
    typer.echo(f"storage proxy: {parsed.masked} at grpc://{host}:{port} ({threads} threads); Ctrl-C stops it")
    try:
        with sigterm_as_exit():
            serve_proxy(parsed, host, port, threads)
    except (KeyboardInterrupt, SystemExit):
        typer.echo("storage proxy: stopped")
