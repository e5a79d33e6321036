"""The recipe boundary (tsq/recipe.py): a spec is validated with its recipe's model, the library reaches knobs
only through that model, a plain trial function is the simplest recipe, and a second real recipe
(objectives/shortest_sft) lives outside tsq/. No model is loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from objectives.shortest_sft import ShortestSFTSpec
from objectives.tokensqueeze.config import TokenSqueezeSpec
from tsq.config.pipeline import PlainSpec
from tsq.errors import UserError
from tsq.recipe import FunctionRecipe, Recipe, load_recipe, load_spec, plain_finding, recipe_of
from tsq.study.params import apply_params, default_point

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def plain_trial(spec, params, ctx):  # a plain trial function, loaded by name below
    raise NotImplementedError


def test_the_default_recipe_is_tokensqueeze_and_fills_its_default_search(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path / "s.yaml", {"name": "s"}))
    assert isinstance(spec, TokenSqueezeSpec) and isinstance(recipe_of(spec), Recipe)
    assert sorted(spec.study.searched) == ["alpha", "epsilon", "eta", "lambda"]
    assert default_point(spec) == {"alpha": 0.2, "epsilon": 0.005, "lambda": 1.0, "eta": 0.5}


def test_a_plain_trial_function_is_a_recipe_whose_knobs_are_its_params(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    path = _write(
        tmp_path / "p.yaml",
        {
            "name": "p",
            "params": {"width": 3},
            "study": {"program": "test_recipe:plain_trial", "search": {"width": {"type": "int", "low": 1,
                      "high": 8}, "mode": {"type": "categorical", "choices": ["a", "b"]}}},
        },
    )  # fmt: skip
    spec = load_spec(path)
    assert isinstance(spec, PlainSpec) and isinstance(recipe_of(spec), FunctionRecipe)
    assert apply_params(spec, {"width": 5, "mode": "b"}).params == {"width": 5, "mode": "b"}
    assert default_point(spec) is None  # `mode` has no value of its own: nothing to enqueue
    assert recipe_of(spec).check(spec, None).findings["width"].state == "live"


def test_a_knob_of_another_recipe_is_refused_in_one_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "s.yaml",
        {"name": "s", "study": {"program": "objectives.shortest_sft:recipe", "search": {"alpha": 0.5}}},
    )
    with pytest.raises(
        UserError, match=r"study\.search\.alpha: not a searchable parameter \(one of: lr, steps\)"
    ):
        load_spec(path)


def test_an_unloadable_recipe_names_the_file_and_study_program(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.yaml", {"name": "s", "study": {"program": "objectives.nope:recipe"}})
    with pytest.raises(UserError, match=r"s\.yaml: study\.program: cannot load objectives\.nope:recipe"):
        load_spec(path)
    with pytest.raises(UserError, match="is not module:object"):
        load_recipe("objectives.tokensqueeze")


def test_the_second_recipe_fixes_its_choices_and_keeps_what_a_spec_sets(tmp_path: Path) -> None:
    spec = load_spec(ROOT / "sweeps" / "shortest-sft.yaml")
    assert isinstance(spec, ShortestSFTSpec)
    assert (spec.selection.variant, spec.refinement.enabled, spec.training.loss) == ("shortest", False, "sft")
    assert spec.training.max_steps == 60 and spec.sampling.n == 16  # the quickstart's, through extends
    assert default_point(spec) == {"lr": 0.001, "steps": 60}
    trial = apply_params(spec, {"lr": 0.0005, "steps": 30})
    assert (trial.training.learning_rate, trial.training.max_steps, trial.training.loss) == (
        0.0005,
        30,
        "sft",
    )
    findings = recipe_of(spec).check(spec, None).findings
    assert {name: f.state for name, f in findings.items()} == {"lr": "live", "steps": "live"}


def test_plain_finding_by_hand() -> None:
    from tsq.config.space import Categorical, FloatRange

    assert plain_finding("x", FloatRange(low=1.0, high=1.0)).state == "inert"
    assert plain_finding("c", Categorical(type="categorical", choices=["a", "b"])).distinct == 2


def test_pure_method_code_imports_no_torch() -> None:
    code = (
        "import sys, tsq.method.select, tsq.method.losses, tsq.method.metrics, tsq.method.stats, "
        "tsq.method.early_stop, tsq.method.refinement, tsq.config.pipeline, tsq.recipe, "
        "objectives.tokensqueeze; "
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_the_second_recipe_runs_check_launch_and_report_end_to_end(tmp_path: Path, monkeypatch) -> None:
    """objectives/shortest_sft on the smoke world: `sweep check`, a two-trial `sweep launch` (real sampling,
    SFT and evaluation on the tiny test model), and `report pareto`; tsq/ holds no line of it."""
    from typer.testing import CliRunner

    from tsq.cli.main import app

    monkeypatch.setenv("WANDB_MODE", "offline")
    spec = _write(
        tmp_path / "sft.yaml",
        {
            "name": "sft-smoke",
            "extends": str(ROOT / "sweeps" / "smoke.yaml"),
            "study": {
                "program": "objectives.shortest_sft:recipe",
                "search": {"lr": {"low": 1e-4, "high": 3e-3, "log": True}, "steps": {"type": "int", "low": 2,
                           "high": 4}},
                "objectives": [{"metric": "accuracy"}, {"metric": "len_all"}],
                "constraint": {"max_accuracy_drop": 1.0},  # every trial feasible: a recommendation
                "sampler": {"name": "random", "seed": 0},
                "n_trials": 2,
            },
        },
    )  # fmt: skip
    runner = CliRunner()
    checked = runner.invoke(app, ["sweep", "check", str(spec)])
    assert checked.exit_code == 0, checked.output
    assert "lr: live" in checked.output and "steps: live: 3 grid values over [2, 4]" in checked.output
    launched = runner.invoke(app, ["sweep", "launch", str(spec), "--tracker", "none"])
    assert launched.exit_code == 0, launched.output
    out = tmp_path / "report"
    reported = runner.invoke(app, ["report", "pareto", str(spec), "--out", str(out)])
    assert reported.exit_code == 0, reported.output
    table = (out / "pareto.csv").read_text().splitlines()
    assert table[0].startswith("trial,lr,steps,") and len(table) >= 2
    assert "--set lr=" in (out / "pareto.md").read_text()  # the recommendation speaks the recipe's knobs
