"""Grading: is a response's final answer the reference answer?

`exact` (the tiny world): the final answer is the first token after the last "answer" word of the response
("... \n\n answer : 7" or "so the answer is 7"), compared as a string. `math` (MATH500, GSM8K, AIME): see
`grade_math`.
"""

from __future__ import annotations

import re
import threading

from math_verify import parse, verify

from tsq.data.problems import Grader

_EXACT_ANSWER = re.compile(r"answer\s*(?:is|:|=)?\s*(-?\w+)")


def extract_exact_answer(text: str) -> str | None:
    matches = _EXACT_ANSWER.findall(text)
    return matches[-1] if matches else None


def grade(grader: Grader, response_text: str, reference: str) -> bool:
    if grader == "exact":
        return extract_exact_answer(response_text) == reference.strip()
    if grader == "math":
        return grade_math(response_text, reference)
    raise ValueError(f"unknown grader {grader!r}")


_BOX_COMMANDS = ("\\boxed", "\\fbox")
_GSM8K_FINAL = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def extract_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{…}` (or `\\fbox{…}`), nested braces included; `\\boxed 5` too.

    None when there is no box or the last one is never closed (a response cut off inside its answer).
    """
    start, cmd = max((text.rfind(c), c) for c in _BOX_COMMANDS)
    if start < 0:
        return None
    i = start + len(cmd)
    if i < len(text) and text[i] == " ":  # `\boxed 5`: the argument is the next token
        token = text[i + 1 :].split(maxsplit=1)
        return token[0].rstrip("$.") if token else None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def extract_final_number(text: str) -> str | None:
    """GSM8K convention: the number on a `#### N` line, else the last number in the text; commas dropped."""
    marked = _GSM8K_FINAL.findall(text)
    found = marked or _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def extract_math_answer(text: str) -> str | None:
    """The final answer of a math response: the last box, else (no box at all) the GSM8K final number."""
    if any(cmd in text for cmd in _BOX_COMMANDS):
        return extract_boxed(text)  # an unclosed last box is no answer, not a cue to go hunting for numbers
    return extract_final_number(text)


def _parse_answer(answer: str) -> list[object]:
    # Wrapping in a box sends the answer through math-verify's full LaTeX normalisation (units, \text,
    # \left/\right, percentages, thousands separators) whether it is bare LaTeX or a plain number.
    return parse("\\boxed{" + answer + "}", parsing_timeout=_timeout())


def _timeout() -> int | None:
    # math-verify times out with signal.alarm, which only works in the main thread; elsewhere (a threaded
    # Optuna worker) it must run without a timeout or it raises.
    return 5 if threading.current_thread() is threading.main_thread() else None


def grade_math(response_text: str, reference_answer: str) -> bool:
    """Is the response's final answer (see `extract_math_answer`) equivalent to the reference?

    Equivalence is math-verify's: numeric (1/2 = 0.5 = \\dfrac12), symbolic ((x+1)^2 = x^2+2x+1), sets and
    intervals (open/closed ends matter), units and \\text ignored. The caller passes the part of a reasoning
    model's output after `</think>` (`tsq.data.reasoning.response_for_grading`) and treats a truncated
    response as wrong before grading.
    """
    predicted = extract_math_answer(response_text)
    if predicted is None or not predicted.strip():
        return False
    gold = _parse_answer(reference_answer)
    if not gold:
        return False
    return verify(gold, _parse_answer(predicted), timeout_seconds=_timeout())
