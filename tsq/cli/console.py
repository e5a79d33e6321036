"""The console the commands print their tables to."""

from __future__ import annotations

import os
import sys

from rich.console import Console

# Off a terminal (a pipe, a log file, CI) rich falls back to 80 columns and truncates the trial tables;
# a log has no width to respect, so print them whole. COLUMNS still wins when set.
PIPE_WIDTH = 160


def make_console() -> Console:
    if sys.stdout.isatty() or "COLUMNS" in os.environ:
        return Console()
    return Console(width=PIPE_WIDTH)
