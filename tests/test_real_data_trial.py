"""One whole trial (sample → select → refine → train → evaluate) per real-data schema, on CPU.

Each case writes a small local file in one schema (MATH500 jsonl, GSM8K jsonl with `#### N`, AIME parquet
with the hub dataset's capitalised columns) whose problems are tiny-world questions, and runs `run_trial`
with `data.source` set to that file. The model is the tiny test model given a reasoning model's format (see
`think_model_dir`), so every stage takes the reasoning path: prompts that open `<think>`, answers graded
after `</think>` by the math grader, think-aware step splitting in refinement.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import AddedToken
from transformers import AutoModelForCausalLM, AutoTokenizer

from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from objectives.tokensqueeze.config import TrialParams
from objectives.tokensqueeze.trial import TrialContext, run_trial
from tsq.cache import Cache
from tsq.data.formatting import format_prompt
from tsq.data.loading import load_problem_set
from tsq.data.problems import Problem
from tsq.data.reasoning import THINK_CLOSE, THINK_OPEN, grade_completion, prompt_opens_think
from tsq.data.sources import MATH_INSTRUCTION
from tsq.data.tiny_world import tiny_problem_set
from tsq.engines.generation import backend_from_spec
from tsq.engines.sample import sample_responses, sampling_settings
from tsq.engines.tiny_model import ASSISTANT, BUILD_INFO, CHAT_TEMPLATE

N_PROBLEMS = 20  # eval takes 4 of them, train the other 16
_GENERATION_PROMPT = "{{ '<assistant>' }}"
_USER_CONTENT = "'<user> ' + message['content']"


@pytest.fixture(scope="module")
def think_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny test model with an R1-style chat template whose generation prompt opens `<think>`.

    The tiny model only ever emits its own words: freshly initialised rows from `resize_token_embeddings`
    (random, or the vocabulary's mean) are practically never sampled, so the model would never close a
    think block and every answer would be ungradable (no pairs, TrialFailed). So `<think>` and `</think>`
    are added as ordinary tokens (not special: decoding keeps them, as in R1-distill tokenizers) and their
    rows of the tied embedding copy `<assistant>` and ":". The prompt then ends in `<think>`, which the
    model reads as the `<assistant>` it was trained on, and wherever it would write ":" (its final step is
    "answer : N") it writes ":" or `</think>` with equal probability and carries on as after ":".
    Responses that closed the block are graded on what follows it (the final number); responses that never
    closed it have no answer.

    The template also shows the model only the question, before the blank line: the sources append
    MATH_INSTRUCTION to every question, and all its words but "and" and "answer" are out of the tiny
    vocabulary. As a run of `<unk>`s the model never met in training they derail it (measured: traces
    such as "b </think> not" or "b = 15 \\n\\n b : 11", and chosen traces whose thinking was a single
    one-token step, so refinement had nothing to work on); without them its traces keep their format.
    """
    out = tmp_path_factory.mktemp("think-model")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(BUILD_INFO))
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in (THINK_OPEN, THINK_CLOSE)])
    assert _GENERATION_PROMPT in CHAT_TEMPLATE and _USER_CONTENT in CHAT_TEMPLATE
    tokenizer.chat_template = CHAT_TEMPLATE.replace(_GENERATION_PROMPT, "{{ '" + THINK_OPEN + "' }}").replace(
        _USER_CONTENT, _USER_CONTENT + ".split('\\n\\n')[0]"
    )
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # both new rows are set below
    weight = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight.data_ptr() == weight.data_ptr()  # tied: the copy sets both
    token_id = tokenizer.convert_tokens_to_ids
    with torch.no_grad():
        weight[token_id(THINK_OPEN)] = weight[token_id(ASSISTANT)]
        weight[token_id(THINK_CLOSE)] = weight[token_id(":")]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _math500(problems: Sequence[Problem], folder: Path) -> tuple[Path, list[str]]:
    rows = [
        {
            "problem": p.question,
            "solution": f"Follow the chain one update at a time: the last value is $\\boxed{{{p.answer}}}$.",
            "answer": p.answer,
            "subject": "Prealgebra",
            "level": f"Level {p.difficulty}",
            "unique_id": f"test/prealgebra/{i}.json",
        }
        for i, p in enumerate(problems)
    ]
    return _write_jsonl(folder / "math500.jsonl", rows), [r["unique_id"] for r in rows]


def _gsm8k(problems: Sequence[Problem], folder: Path) -> tuple[Path, list[str]]:
    rows = [
        {"question": p.question, "answer": f"Follow the chain one update at a time.\n#### {p.answer}"}
        for p in problems
    ]
    # GSM8K has no id column: problems are named after the file and the row
    return _write_jsonl(folder / "gsm8k.jsonl", rows), [f"gsm8k-{i}" for i in range(len(rows))]


def _aime(problems: Sequence[Problem], folder: Path) -> tuple[Path, list[str]]:
    rows = [
        {"ID": f"2024-I-{i + 1}", "Problem": p.question, "Solution": "By the chain.", "Answer": int(p.answer)}
        for i, p in enumerate(problems)
    ]
    path = folder / "aime.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path, [r["ID"] for r in rows]


WRITERS: dict[str, Callable[[Sequence[Problem], Path], tuple[Path, list[str]]]] = {
    "math500": _math500,
    "gsm8k": _gsm8k,
    "aime": _aime,
}


def _spec(model_dir: Path, source: Path, cache_dir: Path) -> Spec:
    # sweeps/smoke.yaml's sizes, with 2 training steps and 2 evaluation samples; 16 self-samples of
    # 16 problems: the briefly trained test model answers ~7% of one-step problems right (9 of 128 samples
    # with its own template), and pairs need a problem with a right and a longer wrong answer
    return Spec.model_validate(
        {
            "model": {"path": str(model_dir)},
            "data": {"source": str(source), "train": {"n": 16}, "eval": {"n": 4}},
            "sampling": {"n": 16, "max_new_tokens": 96},
            "evaluation": {"n": 2, "max_new_tokens": 96, "budget": 64, "bootstrap": 200},
            "selection": {"max_pairs": 4},
            "refinement": {"k": 2, "window": 8, "max_step_tokens": 24},
            "training": {"max_steps": 2, "batch_size": 8, "max_length": 256, "lora": {"r": 4, "alpha": 8}},
            "cache_dir": str(cache_dir),
        }
    )


@pytest.mark.slow
@pytest.mark.parametrize("schema", sorted(WRITERS))
def test_trial_on_a_local_file(schema: str, think_model_dir: Path, tmp_path: Path) -> None:
    # one-step questions from the tiny world's train side (the model's easiest): a few right, most wrong
    problems = tiny_problem_set("train", N_PROBLEMS, seed=0, min_steps=1, max_steps=1).problems
    source, ids = WRITERS[schema](problems, tmp_path)
    spec = _spec(think_model_dir, source, tmp_path / "cache")
    cache = Cache(tmp_path / "cache")

    params = TrialParams(alpha=0.5, epsilon=0.02, lam=1.0, eta=0.5)
    result = run_trial(spec, params, TrialContext(cache=cache, out_dir=tmp_path / "trial"))

    for key in ("accuracy", "len_all", "auc"):
        assert math.isfinite(result.metrics[key]), key
        assert math.isfinite(result.baseline[key]), key
    assert 0 <= result.metrics["accuracy"] <= 1 and result.metrics["len_all"] > 0
    saved = json.loads((tmp_path / "trial" / "metrics.json").read_text())
    assert saved["metrics"]["accuracy"] == result.metrics["accuracy"]
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert result.stats["pairs"] > 0 and result.stats["training"]["steps"] == 2
    assert result.stats["refinement"]["enabled"] and result.stats["refinement"]["traces"] > 0

    # The trial's own graded responses (cache hits, no new generation): problems from the file, prompts
    # that open <think>, correctness by the math grader on the part after </think>.
    backend = backend_from_spec(spec, think_model_dir, progress=False)
    graded = []
    for split, section in (("train", spec.sampling), ("eval", spec.evaluation)):
        problem_set = load_problem_set(spec.data, split)
        assert problem_set.grader == "math"
        assert {p.id for p in problem_set.problems} <= set(ids)
        responses = sample_responses(backend, think_model_dir, problem_set, sampling_settings(section), cache)
        for problem in problem_set.problems:
            assert problem.question.endswith(MATH_INSTRUCTION)
            assert prompt_opens_think(format_prompt(backend.tokenizer, problem))
            graded += [(r, problem.answer) for r in responses[problem.id]]
    assert backend.calls == 0
    for r, answer in graded:
        assert r.correct == grade_completion("math", r.text, r.finish_reason, answer, in_think=True)
    correct = [(r, answer) for r, answer in graded if r.correct]
    assert correct and len(correct) < len(graded)
    assert all(THINK_CLOSE in r.text for r, _ in correct)
    # the math grader, not the tiny world's exact one, decides: a boxed answer after </think> with no
    # "answer" word is right for the first and wrong for the second (sampled responses no longer guarantee
    # one such case since samples are seeded per problem and index, so it is checked on a fixed text)
    boxed = "Let me add.\n\n2 + 3 = 5.\n</think>\n\n\\boxed{5}"
    assert grade_completion("math", boxed, "stop", "5", in_think=True)
    assert not grade_completion("exact", boxed, "stop", "5", in_think=True)
