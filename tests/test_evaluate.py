"""Evaluation and `tsq baseline` on the real tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from lora_util import perturbed_lora
from typer.testing import CliRunner

from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from tsq.cache import Cache
from tsq.cli.main import app
from tsq.engines.evaluate import baseline, compare, evaluate, intervals, read_records
from tsq.engines.generation.hf import HFBackend
from tsq.errors import UserError
from tsq.method.metrics import (
    RECORD_FIELDS,
    ProblemSums,
    absolute_metric_names,
    metric_values,
    relative_metric_names,
)
from tsq.recipe import load_spec


@pytest.fixture
def spec_file(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TSQ_HOME", str(tmp_path / "home"))
    raw = {
        "name": "eval-test",
        "model": {"path": str(tiny_model_dir)},
        "data": {"eval": {"n": 6}, "min_steps": 1, "max_steps": 3},
        "evaluation": {"n": 2, "max_new_tokens": 64, "budget": 64, "bootstrap": 200},
        "cache_dir": str(tmp_path / "cache"),
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_baseline_is_cached_and_summarised(spec_file: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    spec: Spec = load_spec(spec_file)
    backend = HFBackend(tiny_model_dir, batch_size=16, progress=False)
    result = baseline(spec, Cache(spec.cache_dir), backend=backend)
    responses = [r for rs in result.responses.values() for r in rs]
    assert len(result.responses) == 6 and len(responses) == 12
    s = result.summary
    assert s["n_responses"] == 12 and s["budget"] == 64
    assert s["accuracy"] == sum(r.correct for r in responses) / 12
    assert s["len_all"] == sum(r.n_tokens for r in responses) / 12
    assert set(s["by_difficulty"]) == {"1", "2", "3"}
    assert baseline(spec, Cache(spec.cache_dir), backend=backend) == result
    assert backend.calls == 1

    adapter = perturbed_lora(tiny_model_dir, tmp_path / "adapter")
    tuned = evaluate(spec, tiny_model_dir, Cache(spec.cache_dir), adapter=adapter, backend=backend)
    assert backend.calls == 2 and tuned.responses != result.responses
    delta = compare(result, tuned, spec.evaluation)
    assert delta["accuracy_delta"] == pytest.approx(tuned.summary["accuracy"] - s["accuracy"])
    assert delta["token_reduction"] == pytest.approx(1 - tuned.summary["len_all"] / s["len_all"])
    assert delta["len_all_reduction"] == delta["token_reduction"]  # the older name, kept
    assert delta["len_all_reduction_hi"] == delta["token_reduction_hi"]
    for name in relative_metric_names():
        if delta[name] is not None:
            assert delta[f"{name}_lo"] <= delta[name] <= delta[f"{name}_hi"], name
    assert compare(result, result, spec.evaluation)["accuracy_delta_hi"] == 0.0  # paired: no width


def test_records_round_trip_and_rebuild_every_metric_with_intervals(
    spec_file: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    spec: Spec = load_spec(spec_file)
    backend = HFBackend(tiny_model_dir, batch_size=16, progress=False)
    result = baseline(spec, Cache(spec.cache_dir), backend=backend)
    records = result.records()
    assert len(records) == 12 and all(tuple(r) == RECORD_FIELDS for r in records)
    assert sorted((r["problem_id"], r["sample"]) for r in records) == sorted(
        (pid, j) for pid in result.responses for j in range(2)
    )
    assert {r["difficulty"] for r in records} == {1, 2, 3}
    path = result.write_records(tmp_path / "export" / "baseline.jsonl")
    assert read_records(path) == records
    # the exported table alone gives the same metrics as the summary, on another machine
    rebuilt = metric_values(ProblemSums.from_records(read_records(path), spec.evaluation.budget))
    for name in absolute_metric_names():
        assert rebuilt[name] == pytest.approx(result.summary[name]), name
    bounds = intervals(result, spec.evaluation)
    for name in absolute_metric_names():
        assert bounds[name] == pytest.approx(result.summary[name])
        if bounds[name] is not None:
            assert bounds[f"{name}_lo"] <= bounds[name] <= bounds[f"{name}_hi"], name
    assert intervals(ProblemSums.from_records(records, spec.evaluation.budget), spec.evaluation) == bounds


def test_read_records_refuses_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read"):
        read_records(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem_id": "p"}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:1: a per-response record lacks sample"):
        read_records(bad)
    bad.write_text("not json\n")
    with pytest.raises(UserError, match=r"bad\.jsonl:1: not a JSON line"):
        read_records(bad)


def test_cli_baseline_prints_the_table_and_writes_json(spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "baseline.json"
    result = CliRunner().invoke(app, ["baseline", str(spec_file), "--json", str(out)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for header in ("Acc", "Len-T", "Len-A", "AUC@64", "tokens/step", "difficulty 3", "CV of Len-A"):
        assert header in result.output
    summary = json.loads(out.read_text())["summary"]
    assert summary["n_responses"] == 12 and 0 <= summary["accuracy"] <= 1


def test_cli_baseline_bad_spec_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("evaluation:\n  budget: -1\n")
    result = CliRunner().invoke(app, ["baseline", str(bad)])
    assert result.exit_code != 0
    assert "evaluation.budget" in str(result.exception) or "evaluation.budget" in result.output
