"""Grading: is a response's final answer the reference answer?

`exact` (the tiny world): the final answer is the first token after the last "answer" word of the response
("... \n\n answer : 7" or "so the answer is 7"), compared as a string. `math` (MATH500, GSM8K, AIME): see
`grade_math`.
"""

from __future__ import annotations

import re

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


def grade_math(response_text: str, reference_answer: str) -> bool:
    raise NotImplementedError("math-verify grading arrives with the real-data work")
