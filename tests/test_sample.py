"""Self-sampling on the real tiny model: graded, cached by content, zero model calls on a repeat; each
problem's samples are its own (seeded by its id), whatever problems are sampled with it."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from lora_util import perturbed_lora

from tsq.cache import Cache
from tsq.data.problems import Problem
from tsq.data.reasoning import grade_completion
from tsq.data.tiny_world import tiny_problem_set
from tsq.engines.generation.base import SamplingSettings
from tsq.engines.generation.hf import HFBackend
from tsq.engines.sample import sample_responses

SETTINGS = SamplingSettings(n=2, temperature=1.0, max_new_tokens=64, seed=0)


@pytest.fixture
def backend(tiny_model_dir: Path) -> HFBackend:
    return HFBackend(tiny_model_dir, batch_size=16, progress=False)


def test_samples_are_graded_and_cached(backend: HFBackend, tiny_model_dir: Path, tmp_path: Path) -> None:
    problems = tiny_problem_set("train", 6, seed=1)
    first = sample_responses(backend, tiny_model_dir, problems, SETTINGS, Cache(tmp_path / "cache"))
    assert backend.calls == 1
    assert list(first) == [p.id for p in problems.problems]
    for problem in problems.problems:
        assert len(first[problem.id]) == 2
        for r in first[problem.id]:
            assert r.n_tokens > 0
            assert r.correct == grade_completion("exact", r.text, r.finish_reason, problem.answer)
    # A new Cache object on the same folder (a new process, say): read back, no model call.
    again = sample_responses(backend, tiny_model_dir, problems, SETTINGS, Cache(tmp_path / "cache"))
    assert again == first and backend.calls == 1
    # The key covers the weights, not the path: a copy of the model directory is the same model.
    copy = Path(shutil.copytree(tiny_model_dir, tmp_path / "copy"))
    assert sample_responses(backend, copy, problems, SETTINGS, Cache(tmp_path / "cache")) == first
    assert backend.calls == 1
    # Another seed is another sample.
    sample_responses(backend, tiny_model_dir, problems, replace(SETTINGS, seed=1), Cache(tmp_path / "cache"))
    assert backend.calls == 2


def test_adapter_is_part_of_the_key(backend: HFBackend, tiny_model_dir: Path, tmp_path: Path) -> None:
    problems = tiny_problem_set("train", 3, seed=2)
    cache = Cache(tmp_path / "cache")
    base = sample_responses(backend, tiny_model_dir, problems, SETTINGS, cache)
    adapter = perturbed_lora(tiny_model_dir, tmp_path / "adapter")
    tuned = sample_responses(backend, tiny_model_dir, problems, SETTINGS, cache, adapter=adapter)
    assert backend.calls == 2 and tuned != base
    sample_responses(backend, tiny_model_dir, problems, SETTINGS, cache, adapter=adapter)
    assert backend.calls == 2


def test_truncated_responses_are_wrong_at_their_truncated_length(
    backend: HFBackend, tiny_model_dir: Path, tmp_path: Path
) -> None:
    problems = tiny_problem_set("eval", 4, seed=0, min_steps=3, max_steps=5)
    settings = SamplingSettings(n=2, temperature=1.0, max_new_tokens=4, seed=0)
    out = sample_responses(backend, tiny_model_dir, problems, settings, Cache(tmp_path / "cache"))
    responses = [r for rs in out.values() for r in rs]
    assert responses and all(r.finish_reason == "length" and r.n_tokens == 4 for r in responses)
    assert not any(r.correct for r in responses)


def test_a_problems_samples_do_not_depend_on_the_other_problems(
    backend: HFBackend, tiny_model_dir: Path, tmp_path: Path
) -> None:
    problems = tiny_problem_set("train", 5, seed=4, min_steps=1, max_steps=4)
    together = sample_responses(backend, tiny_model_dir, problems, SETTINGS, Cache(tmp_path / "a"))
    for problem in (problems.problems[0], problems.problems[3]):
        alone = replace(problems, problems=(problem,))
        assert sample_responses(backend, tiny_model_dir, alone, SETTINGS, Cache(tmp_path / "b")) == {
            problem.id: together[problem.id]
        }
    # Two problems with the same question but different ids are two independent draws.
    q = problems.problems[1]
    twins = replace(problems, problems=(q, Problem(id=q.id + "-twin", question=q.question, answer=q.answer)))
    out = sample_responses(backend, tiny_model_dir, twins, SETTINGS, Cache(tmp_path / "c"))
    assert out[q.id] == together[q.id]
    assert [r.text for r in out[q.id]] != [r.text for r in out[q.id + "-twin"]]
