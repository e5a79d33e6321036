"""Responses and their steps. Steps are separated by blank lines, as in the paper."""

from __future__ import annotations

from dataclasses import dataclass

STEP_SEPARATOR = "\n\n"
# A reasoning model's thinking block (tsq.data.reasoning handles it; metrics count steps inside it)
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class Response:
    """One sampled response to a problem, graded. JSON-serialisable via dataclasses.asdict."""

    text: str  # the response (reasoning + final answer), without the prompt
    n_tokens: int  # generated tokens, as the model's tokenizer counts them
    correct: bool  # graded; a truncated response (finish_reason "length") is never correct
    finish_reason: str  # "stop" or "length"


def split_steps(text: str) -> list[str]:
    """The non-empty blank-line separated steps of a response."""
    return [s for s in text.split(STEP_SEPARATOR) if s.strip()]


def join_steps(steps: list[str]) -> str:
    return STEP_SEPARATOR.join(steps)
