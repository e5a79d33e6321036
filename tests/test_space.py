"""The spec's study: section: parsing, one-line errors naming the field, grid values, the default point."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from tsq.config.space import Categorical, FloatRange, IntRange, contains, grid_values
from tsq.errors import UserError
from tsq.recipe import load_spec
from tsq.study.params import apply_params, default_point
from tsq.study.sampler import build_sampler


def _load(tmp_path: Path, text: str) -> Spec:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_spec(path)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(UserError) as err:
        _load(tmp_path, text)
    return str(err.value)


def test_defaults_search_the_four_knobs_for_accuracy_and_len_a() -> None:
    study = Spec().study
    assert sorted(study.searched) == ["alpha", "epsilon", "eta", "lambda"]
    assert study.metrics == ["accuracy", "len_all"]
    assert study.directions == ["maximize", "minimize"]
    assert study.sampler.name == "tpe"


def test_ranges_fixed_values_and_extras_parse(tmp_path: Path) -> None:
    spec = _load(
        tmp_path,
        """
study:
  search:
    alpha: {low: 0.1, high: 0.4}
    epsilon: {type: float, low: 0.001, high: 0.05, log: true}
    lambda: 1.5
    eta: {type: categorical, choices: [0.25, 0.5]}
    lora_r: {type: int, low: 4, high: 16, step: 4}
    selection_variant: {type: categorical, choices: [q-fix, q-dyn]}
  objectives: [{metric: auc}, {metric: len_correct, direction: minimize}]
  constraint: {max_accuracy_drop: 0.02}
  sampler: {name: nsga2, seed: 3}
  n_trials: 12
""",
    )
    s = spec.study
    assert s.searched["alpha"] == FloatRange(low=0.1, high=0.4)
    assert s.searched["epsilon"].log is True
    assert isinstance(s.searched["lora_r"], IntRange) and isinstance(s.searched["eta"], Categorical)
    assert s.fixed == {"lambda": 1.5}
    assert s.directions == ["maximize", "minimize"]
    assert s.constraint is not None and s.constraint.max_accuracy_drop == 0.02
    assert isinstance(build_sampler(s), optuna.samplers.NSGAIISampler)


@pytest.mark.parametrize(
    ("study", "expected"),
    [
        (
            "search: {alpha: {low: 0.1, high: 1.5}}",
            "study.search.alpha.high: Input should be less than or equal to 1",
        ),
        ("search: {alpha: {low: 0.1}}", "study.search.alpha.high: Field required"),
        ("search: {alpha: {low: 0.4, high: 0.1}}", "study.search.alpha.low: must be <= high"),
        (
            "search: {epsilon: {low: 0, high: 0.1, log: true}}",
            "study.search.epsilon.low: a log range needs low > 0",
        ),
        ("search: {alpha: {type: flot, low: 0, high: 1}}", "study.search.alpha.type: unknown range type"),
        ("search: {gamma: 1}", "study.search.gamma: not a searchable parameter"),
        ("search: {eta: -1}", "study.search.eta: Input should be greater than or equal to 0"),
        ("search: {lora_r: {low: 4, high: 8}}", "study.search.lora_r.type: this parameter is an integer"),
        (
            "search: {selection_variant: {type: categorical, choices: [q-dyn, longest]}}",
            "study.search.selection_variant.choices.1: Input should be",
        ),
        ("objectives: [{metric: speed}]", "study.objectives.0.metric: unknown metric"),
        ("objectives: [{metric: accuracy, direction: up}]", "study.objectives.0.direction: Input should be"),
        ("sampler: {name: grid}", "study.search.alpha: the grid sampler needs"),
        ("samplr: {name: tpe}", "study.samplr: unknown key"),
        ("heartbeat: {interval: 10, grace_period: 5}", "study.heartbeat.grace_period: must be larger"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, study: str, expected: str) -> None:
    message = _error(tmp_path, "study:\n  " + study + "\n")
    assert message.startswith(f"{tmp_path / 's.yaml'}: {expected}"), message
    assert "\n" not in message


def test_grid_values_and_membership() -> None:
    assert grid_values(FloatRange(low=0.1, high=0.3, step=0.1)) == [0.1, 0.2, 0.3]
    assert grid_values(IntRange(type="int", low=4, high=16, step=4)) == [4, 8, 12, 16]
    assert grid_values(Categorical(type="categorical", choices=["q-fix", "q-dyn"])) == ["q-fix", "q-dyn"]
    assert contains(FloatRange(low=0.1, high=0.3), 0.2)
    assert not contains(FloatRange(low=0.1, high=0.3), 0.35)
    assert not contains(FloatRange(low=0.1, high=0.3, step=0.1), 0.25)
    assert contains(IntRange(type="int", low=4, high=16, step=4), 8)
    assert not contains(Categorical(type="categorical", choices=[0.25]), 0.5)


def test_default_point_is_the_papers_when_inside_the_space(tmp_path: Path) -> None:
    spec = _load(tmp_path, "params: {lambda: 1.2}\n")
    assert default_point(spec) == {"alpha": 0.2, "epsilon": 0.005, "lambda": 1.2, "eta": 0.5}
    outside = _load(tmp_path, "study:\n  search: {alpha: {low: 0.3, high: 0.5}, eta: 0.5}\n")
    assert default_point(outside) is None


def test_apply_params_sets_each_section_and_validates() -> None:
    spec = apply_params(Spec(), {"alpha": 0.3, "lambda": 1.5, "beta": 0.2, "lr": 1e-3, "lora_r": 8})
    assert (spec.params.alpha, spec.params.lam) == (0.3, 1.5)
    assert (spec.training.beta, spec.training.learning_rate, spec.training.lora.r) == (0.2, 1e-3, 8)
    assert apply_params(spec, {"selection_variant": "q-fix"}).selection.variant == "q-fix"
    with pytest.raises(ValueError, match=r"params\.alpha"):
        apply_params(Spec(), {"alpha": 2.0})


def test_outside_says_why_a_value_is_not_one_the_entry_proposes() -> None:
    from tsq.config.space import Categorical, FloatRange, outside

    assert outside(FloatRange(low=0.2, high=1.0), 0.2) is None
    assert outside(FloatRange(low=0.2, high=1.0), 1.5) == "outside [0.2, 1]"
    assert outside(Categorical(type="categorical", choices=[0.2, 0.5]), 0.3) == "not one of [0.2, 0.5]"
    assert outside(0.5, 0.5) is None and outside(0.5, 0.6) == "not the fixed value 0.5"
