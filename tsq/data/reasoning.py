"""`<think>…</think>` handling for reasoning models: what is graded, what the steps are, what the length is.

Per docs/method.md and DeepSeek-R1-style outputs:
- length: every generated token counts, thinking included (`Completion.token_ids`); a response cut off at
  `max_new_tokens` counts at its truncated length and is never correct (`grade_completion`).
- graded text: what follows the last `</think>` (the final answer), or the whole text when the model does
  not think (the tiny world, plain instruct models). A response whose thinking never closed has no answer.
- steps: the blank-line separated chunks of the thinking part; without a think block, of the whole text.
  Refinement rewrites only these; the text around them (`<think>` opening, `</think>` and the answer after
  it) is kept verbatim: refinement reassembles `head + join_steps(steps) + tail`.

Chat templates of R1-distilled models end the generation prompt inside the think block ("…<｜Assistant｜>
<think>\\n"), so the completion has a `</think>` but no `<think>`. Pass `in_think=prompt_opens_think(prompt)`
for such completions; without it a completion that never closes its thinking would look like a plain answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from tsq.data.grading import grade
from tsq.data.problems import Grader
from tsq.data.traces import THINK_CLOSE, THINK_OPEN, split_steps


def prompt_opens_think(prompt: str) -> bool:
    """Does the formatted prompt end inside an open think block (the template opened it for the model)?"""
    return prompt.rfind(THINK_OPEN) > prompt.rfind(THINK_CLOSE)


@dataclass(frozen=True)
class ReasoningParts:
    """A response cut into `head + join_steps(steps) + tail`; only the steps are refined."""

    head: str  # "" or "<think>" plus the whitespace after it
    steps: tuple[str, ...]  # blank-line separated reasoning steps
    tail: str  # whitespace, "</think>" and the answer after it; "" without a think block
    thinking: bool  # the steps come from a think block (closed or not)
    closed: bool  # a think block was closed, so there is an answer part (False also without thinking)


def reasoning_parts(text: str, in_think: bool = False) -> ReasoningParts:
    """Split a completion into head, steps and tail (see the module docstring)."""
    open_at = text.find(THINK_OPEN)
    if open_at < 0 and not in_think:
        return ReasoningParts("", tuple(split_steps(text)), "", thinking=False, closed=False)
    body_start = open_at + len(THINK_OPEN) if open_at >= 0 and not in_think else 0
    # the last close, as in response_for_grading: all before it is thinking, all after it is the answer
    close_at = text.rfind(THINK_CLOSE, body_start)
    body_end = close_at if close_at >= 0 else len(text)
    body = text[body_start:body_end]
    core = body.strip()
    lead = body[: len(body) - len(body.lstrip())]
    trail = body[len(body.rstrip()) :] if core else ""
    return ReasoningParts(
        head=text[:body_start] + lead,
        steps=tuple(split_steps(core)),
        tail=trail + text[body_end:],
        thinking=True,
        closed=close_at >= 0,
    )


def response_for_grading(text: str, in_think: bool = False) -> str:
    """The part of a completion that holds the final answer: after the last `</think>`, else all of it.

    A completion whose thinking is still open (truncated, or `in_think` without a close) has no answer: "".
    """
    close_at = text.rfind(THINK_CLOSE)
    if close_at >= 0:
        return text[close_at + len(THINK_CLOSE) :]
    if in_think or THINK_OPEN in text:
        return ""
    return text


def grade_completion(
    grader: Grader, text: str, finish_reason: str, reference: str, in_think: bool = False
) -> bool:
    """Correctness of one completion: a truncated one is wrong, others are graded on their answer part."""
    if finish_reason == "length":
        return False
    return grade(grader, response_for_grading(text, in_think), reference)
