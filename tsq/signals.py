"""SIGTERM as a normal exit, so `finally` blocks and context managers run: a killed command still closes its
generation backend (a vLLM engine is a child process that would otherwise outlive it)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_received: list[int] = []  # the exit code of a SIGTERM received inside sigterm_as_exit


def _exit(signum: int, _frame: FrameType | None) -> None:
    # Remembered as well as raised: the handler can run inside a weakref callback or a __del__, where Python
    # prints the SystemExit ("Exception ignored in ...") and drops it. A worker cancelled by Slurm lost its
    # SIGTERM that way, ran on with its W&B service gone (Slurm stops every process of the job) and failed
    # 5 trials in a row, the one it was running included, where that one should have been left to a peer.
    _received.append(128 + signum)
    raise SystemExit(128 + signum)


def exit_if_stopping() -> None:
    """Raise the SystemExit of a SIGTERM received in sigterm_as_exit again: Python may have dropped it."""
    if _received:
        raise SystemExit(_received[0])


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises SystemExit(143) (main thread only: signals are delivered there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _received.clear()
