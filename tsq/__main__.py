"""`python -m tsq` runs the CLI (tests use it to run the CLI in a subprocess)."""

from tsq.cli.main import run

run()
