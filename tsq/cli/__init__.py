"""The `tsq` command line (Typer)."""
