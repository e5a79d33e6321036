"""HF-datasets problem sources on local fixture files in each schema (never the hub)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsq.config.spec import DataSpec
from tsq.data.grading import grade_math
from tsq.data.loading import load_problem_set
from tsq.data.sources import (
    MATH_INSTRUCTION,
    DataRef,
    detect_format,
    difficulty_of,
    gsm8k_reference,
    hf_problem_set,
    resolve_split,
)
from tsq.data.tiny_world import tiny_problem_set
from tsq.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _tsq_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSQ_HOME", str(tmp_path / "home"))


def spec(source: Path | str, **kw: object) -> DataSpec:
    return DataSpec.model_validate({"source": str(source), **kw})


def test_math500_schema() -> None:
    data = spec(FIXTURES / "math500.jsonl", eval={"n": 10}, train={"split": str(FIXTURES / "math500.jsonl")})
    problems = {p.id: p for p in hf_problem_set(data, "eval").problems}
    assert len(problems) == 10
    p = problems["test/algebra/5.json"]
    assert p.answer == r"2\sqrt{2}"
    assert p.difficulty == 3
    assert p.question == f"Simplify $\\sqrt{{8}}$.\n\n{MATH_INSTRUCTION}"


@pytest.mark.parametrize(
    ("instruction", "expected"), [("", ""), ("Answer in \\boxed{}.", "\n\nAnswer in \\boxed{}.")]
)
def test_data_instruction_replaces_or_drops_the_default(instruction: str, expected: str) -> None:
    data = spec(FIXTURES / "math500.jsonl", eval={"ids": ["test/algebra/5.json"]}, instruction=instruction)
    (p,) = hf_problem_set(data, "eval").problems
    assert p.question == "Simplify $\\sqrt{8}$." + expected


def test_math_train_schema_takes_answer_from_solution_and_level_string() -> None:
    data = spec(FIXTURES / "math_train.json", eval={"ids": ["math_train-0"]}, train={"n": None})
    train = hf_problem_set(data, "train")
    by_id = {p.id: p for p in train.problems}
    assert "math_train-0" not in by_id  # held out for eval
    assert by_id["math_train-1"].answer == "4"
    assert by_id["math_train-1"].difficulty == 1
    assert by_id["math_train-6"].difficulty is None  # "Level ?"
    assert by_id["math_train-3"].answer == r"(-\infty, 3]"


def test_gsm8k_schema() -> None:
    data = spec(FIXTURES / "gsm8k.jsonl", eval={"n": 2}, train={"n": None})
    train, ev = hf_problem_set(data, "train"), hf_problem_set(data, "eval")
    problems = {p.id: p for p in train.problems + ev.problems}
    assert len(problems) == 6
    assert problems["gsm8k-0"].answer == "18"
    assert problems["gsm8k-5"].answer == "3500"
    assert problems["gsm8k-4"].answer == "2.5"
    assert all(p.difficulty is None for p in problems.values())
    assert train.grader == ev.grader == "math"


def test_aime_parquet_schema() -> None:
    data = spec(FIXTURES / "aime.parquet", eval={"n": 5}, train={"split": str(FIXTURES / "gsm8k.jsonl")})
    ev = hf_problem_set(data, "eval")
    by_id = {p.id: p for p in ev.problems}
    assert set(by_id) == {"2024-I-1", "2024-I-2", "2024-I-3", "2024-I-4", "2024-II-1"}
    assert by_id["2024-I-3"].answer == "210"
    assert grade_math(r"so $\boxed{210}$", by_id["2024-I-3"].answer)


def test_format_detection() -> None:
    assert detect_format(["problem", "solution", "answer", "subject", "level", "unique_id"]) == "math500"
    assert detect_format(["problem", "level", "type", "solution"]) == "math500"
    assert detect_format(["question", "answer"]) == "gsm8k"
    assert detect_format(["id", "problem", "solution", "answer", "url", "year"]) == "aime"
    assert detect_format(["ID", "Problem", "Solution", "Answer"]) == "aime"
    with pytest.raises(UserError, match=r"data.format"):
        detect_format(["text", "label"])


@pytest.mark.parametrize(
    ("value", "expected"), [("Level 3", 3), (3, 3), ("5", 5), ("Level ?", None), (None, None)]
)
def test_difficulty_of(value: object, expected: int | None) -> None:
    assert difficulty_of(value) == expected


def test_gsm8k_reference() -> None:
    assert gsm8k_reference("a\nb = <<1+1=2>>2\n#### 1,024") == "1024"
    assert gsm8k_reference("42") == "42"


def test_same_data_gives_disjoint_seeded_splits() -> None:
    data = spec(FIXTURES / "math500.jsonl", train={"n": 6}, eval={"n": 4}, seed=7)
    train, ev = hf_problem_set(data, "train"), hf_problem_set(data, "eval")
    train_ids, eval_ids = [p.id for p in train.problems], [p.id for p in ev.problems]
    assert len(train_ids) == 6 and len(eval_ids) == 4
    assert not set(train_ids) & set(eval_ids)
    # deterministic, and the eval choice does not depend on the train settings
    assert [p.id for p in hf_problem_set(data, "train").problems] == train_ids
    smaller_train = spec(FIXTURES / "math500.jsonl", train={"n": 2}, eval={"n": 4}, seed=7)
    assert [p.id for p in hf_problem_set(smaller_train, "eval").problems] == eval_ids
    assert [p.id for p in hf_problem_set(smaller_train, "train").problems] == train_ids[:2]
    other_seed = spec(FIXTURES / "math500.jsonl", train={"n": 6}, eval={"n": 4}, seed=8)
    assert [p.id for p in hf_problem_set(other_seed, "eval").problems] != eval_ids
    assert train.fingerprint() != ev.fingerprint()


def test_id_lists_keep_their_order_and_are_checked() -> None:
    ids = ["test/algebra/9.json", "test/prealgebra/1.json"]
    data = spec(FIXTURES / "math500.jsonl", eval={"ids": ids})
    assert [p.id for p in hf_problem_set(data, "eval").problems] == ids
    assert not {p.id for p in hf_problem_set(data, "train").problems} & set(ids)
    with pytest.raises(UserError, match=r"data.eval.ids: unknown problem ids \['nope'\]"):
        hf_problem_set(spec(FIXTURES / "math500.jsonl", eval={"ids": ["nope"]}), "eval")
    clash = spec(FIXTURES / "math500.jsonl", eval={"ids": ids}, train={"ids": ids[:1]})
    with pytest.raises(UserError, match=r"data.train.ids"):
        hf_problem_set(clash, "train")


def test_eval_taking_everything_leaves_no_train() -> None:
    data = spec(FIXTURES / "gsm8k.jsonl", eval={"n": None})
    with pytest.raises(UserError, match=r"data.train: no problems left"):
        hf_problem_set(data, "train")


def test_split_resolution() -> None:
    hub = spec("HuggingFaceH4/MATH-500", eval={"split": "test"}, train={"split": "test"})
    assert (
        resolve_split(hub, "train")
        == resolve_split(hub, "eval")
        == DataRef("HuggingFaceH4/MATH-500", None, "test", local=False)
    )
    gsm = spec("openai/gsm8k", config="main")
    assert resolve_split(gsm, "train") == DataRef("openai/gsm8k", "main", "train", local=False)
    assert resolve_split(gsm, "eval").split == "test"
    with pytest.raises(UserError, match=r"data.eval.split"):
        resolve_split(spec(FIXTURES / "gsm8k.jsonl", eval={"split": "test"}), "eval")
    with pytest.raises(UserError, match=r"data.source: .*missing.jsonl: file not found"):
        resolve_split(spec(FIXTURES / "missing.jsonl"), "eval")


def test_bad_files_are_user_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(UserError, match=r"data.source: cannot load"):
        hf_problem_set(spec(broken), "eval")
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text(json.dumps({"problem": "x", "level": 1, "solution": "no box"}) + "\n")
    with pytest.raises(UserError, match=r"no_answer-0 has no math500 question/answer"):
        hf_problem_set(spec(no_answer), "eval")
    with pytest.raises(UserError, match=r"data.format"):
        hf_problem_set(spec(FIXTURES / "gsm8k.jsonl", format="tiny"), "eval")


def test_load_problem_set_dispatches_on_source() -> None:
    hf = load_problem_set(spec(FIXTURES / "gsm8k.jsonl", eval={"n": 2}), "eval")
    assert hf.grader == "math" and len(hf) == 2
    tiny = load_problem_set(DataSpec(eval={"n": 5}), "eval")
    assert tiny.grader == "exact" and len(tiny) == 5
    defaults = DataSpec()
    assert tiny.problems == tiny_problem_set("eval", 5, 0, defaults.min_steps, defaults.max_steps).problems
    with pytest.raises(UserError, match=r"data\.train: the tiny world takes a count n"):
        load_problem_set(DataSpec(train={"ids": ["tiny-x"]}), "train")


def test_the_held_out_split_is_disjoint_from_eval_and_train() -> None:
    # one local file holds every split: eval draws first, then the held-out test split, then train
    data = spec(FIXTURES / "math500.jsonl", eval={"n": 3}, test={"n": 3}, train={"n": 3})
    ids = {
        split: {p.id for p in load_problem_set(data, split).problems} for split in ("eval", "test", "train")
    }
    assert all(len(v) == 3 for v in ids.values())
    assert not (ids["eval"] & ids["test"]) and not (ids["train"] & (ids["eval"] | ids["test"]))
    # adding a test split leaves the eval problems as they were
    assert ids["eval"] == {
        p.id for p in load_problem_set(spec(FIXTURES / "math500.jsonl", eval={"n": 3}), "eval").problems
    }
    # the tiny world's held-out problems continue the eval draw: eval unchanged, test disjoint from it
    tiny = DataSpec(eval={"n": 8}, test={"n": 8})
    eval_ids = {p.id for p in load_problem_set(tiny, "eval").problems}
    assert eval_ids == {p.id for p in load_problem_set(DataSpec(eval={"n": 8}), "eval").problems}
    assert not eval_ids & {p.id for p in load_problem_set(tiny, "test").problems}
    with pytest.raises(UserError, match=r"data\.test: this spec has no held-out split"):
        load_problem_set(DataSpec(), "test")
