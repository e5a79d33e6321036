"""`<think>` handling: graded text, steps, reassembly after refinement, truncation."""

from __future__ import annotations

import pytest

from tsq.data.reasoning import (
    grade_completion,
    prompt_opens_think,
    reasoning_parts,
    response_for_grading,
)
from tsq.data.traces import join_steps

R1_COMPLETION = (  # the template opened <think> in the prompt; the model closes it
    "Let me add 2 and 3.\n\nThat is 5, wait, check: 2 + 3 = 5.\n</think>\n\nThe sum is $\\boxed{5}$."
)
FULL_THINK = "<think>\nFirst, 2 + 3 = 5.\n\nDouble-check: yes.\n</think>\n\n**Answer:** \\boxed{5}"


def test_prompt_opens_think() -> None:
    assert prompt_opens_think("<｜User｜>What is 2+3?<｜Assistant｜><think>\n")
    assert not prompt_opens_think("<|im_start|>assistant\n")
    assert not prompt_opens_think("earlier turn <think>x</think> answer<|im_start|>assistant\n")


def test_graded_text_is_after_the_think_block() -> None:
    assert response_for_grading(R1_COMPLETION, in_think=True) == "\n\nThe sum is $\\boxed{5}$."
    assert response_for_grading(FULL_THINK) == "\n\n**Answer:** \\boxed{5}"
    assert response_for_grading("plain answer 5") == "plain answer 5"


def test_unclosed_thinking_has_no_answer() -> None:
    truncated = "Let me try \\boxed{5} maybe\n\nor"
    assert response_for_grading(truncated, in_think=True) == ""
    assert response_for_grading("<think>\n" + truncated) == ""
    # without the in_think hint the same text reads as a plain (non-reasoning) answer
    assert response_for_grading(truncated) == truncated


def test_steps_are_blank_line_chunks_of_the_thinking() -> None:
    assert reasoning_parts(R1_COMPLETION, in_think=True).steps == (
        "Let me add 2 and 3.",
        "That is 5, wait, check: 2 + 3 = 5.",
    )
    assert reasoning_parts(FULL_THINK).steps == ("First, 2 + 3 = 5.", "Double-check: yes.")
    # no think block (the tiny world): every blank-line chunk is a step
    assert reasoning_parts("a is 3\n\nb is 4\n\nanswer : 7").steps == ("a is 3", "b is 4", "answer : 7")


@pytest.mark.parametrize(
    ("text", "in_think"),
    [
        (R1_COMPLETION, True),
        (FULL_THINK, False),
        ("a is 3\n\nb is 4\n\nanswer : 7", False),
        ("<think>\n\nonly one step that was cut", False),
        ("cut inside the thinking\n\nsecond", True),
        ("<think>\n\n</think>\n\nempty thinking, \\boxed{1}", False),
    ],
)
def test_parts_reassemble_to_the_original(text: str, in_think: bool) -> None:
    parts = reasoning_parts(text, in_think)
    assert parts.head + join_steps(list(parts.steps)) + parts.tail == text  # as refinement reassembles


def test_refined_steps_keep_the_answer_and_tags() -> None:
    parts = reasoning_parts(FULL_THINK)
    assert parts.thinking and parts.closed
    refined = parts.head + join_steps(["2 + 3 = 5.", "Yes."]) + parts.tail
    assert refined == "<think>\n2 + 3 = 5.\n\nYes.\n</think>\n\n**Answer:** \\boxed{5}"


def test_parts_flags() -> None:
    assert not reasoning_parts("a\n\nb").thinking
    open_parts = reasoning_parts("still thinking\n\nmore", in_think=True)
    assert open_parts.thinking and not open_parts.closed and open_parts.tail == ""


def test_grade_completion_truncation_and_answer_part() -> None:
    assert grade_completion("math", R1_COMPLETION, "stop", "5", in_think=True)
    assert not grade_completion("math", R1_COMPLETION, "length", "5", in_think=True)
    assert not grade_completion("math", R1_COMPLETION, "stop", "6", in_think=True)
    # a box inside unfinished thinking is not an answer
    assert not grade_completion("math", "maybe \\boxed{5}\n\nhmm", "stop", "5", in_think=True)
    assert grade_completion("exact", "a is 3\n\nanswer : 7", "stop", "7")
    assert not grade_completion("exact", "a is 3\n\nanswer : 7", "length", "7")
