"""Evaluation and `tsq baseline` on the real tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from lora_util import perturbed_lora
from typer.testing import CliRunner

from tsq.cache import Cache
from tsq.cli.main import app
from tsq.evaluate import baseline, compare, evaluate
from tsq.generation.hf import HFBackend
from tsq.spec import Spec, load_spec


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
    assert delta["accuracy_delta_lo"] <= delta["accuracy_delta"] <= delta["accuracy_delta_hi"]
    assert delta["len_all_reduction"] == pytest.approx(1 - tuned.summary["len_all"] / s["len_all"])


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
