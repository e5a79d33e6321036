"""Math grading: final-answer extraction and math-verify equivalence on the forms real responses take."""

from __future__ import annotations

import threading

import pytest

from tsq.data.grading import (
    extract_boxed,
    extract_exact_answer,
    extract_final_number,
    extract_math_answer,
    grade,
    grade_math,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{5}.", "5"),
        (r"first \boxed{3}, then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),
        (r"\boxed{\left\{ 1, 2 \right\}}", r"\left\{ 1, 2 \right\}"),
        (r"\fbox{7}", "7"),
        (r"The answer is $\boxed 5$.", "5"),
        (r"cut off \boxed{\frac{1}{", None),
        ("no box here", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She pays 3 * 6 = 18 dollars.\n#### 18", "18"),
        ("#### 1,250", "1250"),
        ("#### $42", "42"),
        ("so 2 + 3 = 5 and the total is 12.5 dollars", "12.5"),
        ("it is -4", "-4"),
        ("no digits", None),
    ],
)
def test_extract_final_number(text: str, expected: str | None) -> None:
    assert extract_final_number(text) == expected


def test_box_wins_over_numbers_and_unclosed_box_is_no_answer() -> None:
    assert extract_math_answer(r"x = 3 and y = 4, so \boxed{7} (checked with 9)") == "7"
    assert extract_math_answer(r"we get 12 so \boxed{1") is None
    assert extract_math_answer("3 + 4 = 7") == "7"


@pytest.mark.parametrize(
    ("response", "reference"),
    [
        (r"Thus $\boxed{0.5}$.", r"\frac{1}{2}"),
        (r"\boxed{\dfrac12}", r"\frac{1}{2}"),
        (r"\boxed{1/2}", r"\frac{1}{2}"),
        (r"\boxed{\frac{14}{3}}", r"\frac{14}{3}"),
        (r"\boxed{\sqrt{8}}", r"2\sqrt{2}"),
        (r"\boxed{(x+1)^2}", r"x^2+2x+1"),
        (r"\boxed{(3,\frac{\pi}{2})}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\boxed{-2, 2}", r"2, -2"),
        (r"\boxed{(-\infty,3]}", r"(-\infty, 3]"),
        (r"\boxed{x \in [2,5)}", r"[2,5)"),
        (r"\boxed{5\text{ cm}}", "5"),
        (r"\boxed{90}", r"90^\circ"),
        (r"\boxed{18.90}", r"\$18.90"),
        (r"\boxed{1000}", "1,000"),
        (r"\boxed{C}", r"\text{(C)}"),
        (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}"),
        ("3 cookies each, 6 friends: 3 * 6 = 18.\n#### 18", "18"),
        ("So she has 18 apples left.", "18"),
        (r"\boxed{025}", "25"),  # AIME answers are integers written with leading zeros
    ],
)
def test_equivalent_forms_are_correct(response: str, reference: str) -> None:
    assert grade_math(response, reference)


@pytest.mark.parametrize(
    ("response", "reference"),
    [
        (r"\boxed{4}", "3"),
        (r"\boxed{(-\infty,3)}", r"(-\infty, 3]"),  # open vs closed end
        (r"\boxed{\frac{1}{3}}", "0.333"),
        (r"\boxed{2\sqrt{3}}", r"2\sqrt{2}"),
        (r"\boxed{\text{Bob}}", r"\text{Evelyn}"),
        ("So she has 17 apples left.", "18"),
        (r"the answer is \boxed{1", "1"),  # truncated inside the box
        ("", "1"),
        (r"\boxed{}", "1"),
    ],
)
def test_wrong_or_missing_answers_are_incorrect(response: str, reference: str) -> None:
    assert not grade_math(response, reference)


def test_grade_dispatches_and_exact_grader_is_unchanged() -> None:
    assert grade("math", r"\boxed{\frac{2}{4}}", "0.5")
    assert not grade("math", r"\boxed{3}", "0.5")
    assert grade("exact", "a is 3\n\nanswer : 7", "7")
    assert extract_exact_answer("so the answer is 12") == "12"
    with pytest.raises(ValueError):
        grade("nope", "x", "y")  # type: ignore[arg-type]


def test_grading_works_outside_the_main_thread() -> None:
    # math-verify's default timeout uses signal.alarm, which raises outside the main thread.
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.append(grade_math(r"\boxed{0.25}", r"\frac14")))
    worker.start()
    worker.join()
    assert results == [True]
