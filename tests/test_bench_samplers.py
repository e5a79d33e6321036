"""The sampler benchmark's math (benchmarks/search/bench_samplers.py) against hand-computed values, and one
short run of it end to end on a synthetic census."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "search" / "bench_samplers.py"


@pytest.fixture(scope="module")
def bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_samplers", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_samplers"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_hypervolume_by_hand(bench: Any) -> None:
    ref = np.array([0.5, 10.0])
    # boxes from the shortest: (0.6 - 0.5) x (10 - 4) = 0.6, then (0.7 - 0.6) x (10 - 6) = 0.4; (0.55, 8) is
    # dominated, (0.4, 2) lies below the reference's accuracy and (0.9, 12) beyond its length
    points = np.array([[0.7, 6.0], [0.6, 4.0], [0.55, 8.0], [0.4, 2.0], [0.9, 12.0]])
    assert bench.hypervolume(points, ref) == pytest.approx(1.0)
    assert bench.hypervolume(points[3:], ref) == 0.0


def test_reported_front_is_feasible_and_undominated_in_observed_values(bench: Any) -> None:
    observed = np.array([[0.9, 1.0], [0.7, 6.0], [0.6, 4.0], [0.55, 8.0], [0.7, 6.0]])
    feasible = np.array([False, True, True, True, True])
    # 0 would dominate all but is infeasible; 3 is dominated by 1; 1 and 4 tie and both stay (as in Optuna)
    assert bench.reported(observed, feasible).tolist() == [1, 2, 4]


def test_pooled_covariance_by_hand(bench: Any) -> None:
    # residuals (-1,-1), (1,1) and (0,-2), (0,2): scatter [[2,2],[2,2]] + [[0,0],[0,8]] over 2 df
    groups = [np.array([[0.0, 0.0], [2.0, 2.0]]), np.array([[1.0, 0.0], [1.0, 4.0]])]
    cov, df = bench.pooled_covariance(groups)
    assert df == 2 and cov.tolist() == [[1.0, 1.0], [1.0, 5.0]]


def test_stage_noise_is_nested_and_shrinks_with_the_stage(bench: Any) -> None:
    noise = bench.Noise(seed_cov=np.zeros((2, 2)), eval_cov=np.diag([0.01**2, 1.0]))
    rng = np.random.default_rng(0)
    draws = np.array([noise.draw(rng) for _ in range(4000)])  # (draws, stages, objectives)
    sd = draws.std(0)
    # a stage on a fraction f of the problems: sd / sqrt(f) (0.25: 2x, 0.5: sqrt 2 x, 1: 1x)
    assert sd[:, 0] == pytest.approx([0.02, 0.01 * np.sqrt(2), 0.01], rel=0.05)
    assert sd[:, 1] == pytest.approx([2.0, np.sqrt(2), 1.0], rel=0.05)
    # nested: the full evaluation's noise is the mean of the half's and the other half's
    assert np.corrcoef(draws[:, 1, 0], draws[:, 2, 0])[0, 1] == pytest.approx(np.sqrt(0.5), abs=0.05)


def _census(n: int = 24) -> dict[str, Any]:
    """Accuracy falls and length shrinks with alpha; eta does nothing."""
    rng = np.random.default_rng(1)
    points = []
    for i, (alpha, eta) in enumerate(rng.uniform(0, 1, (n, 2))):
        points.append({
            "number": i, "params": {"alpha": float(alpha), "eta": float(eta)},
            "accuracy": 0.75 - 0.3 * alpha + rng.normal(0, 0.01),
            "len_all": 60 - 30 * alpha + rng.normal(0, 1),
            "accuracy_se": 0.02, "len_all_se": 1.0, "accuracy_delta_se": 0.015,
        })  # fmt: skip
    replicates = {"0": [[0.7, 50.0], [0.72, 51.0], [0.69, 49.5]], "1": [[0.6, 40.0], [0.61, 41.0]]}
    return {
        "search": {"alpha": {"low": 0.0, "high": 1.0}, "eta": {"low": 0.0, "high": 1.0}},
        "default": {"alpha": 0.1, "eta": 0.5},
        "max_accuracy_drop": 0.05,
        "baseline": {"accuracy": 0.7, "len_all": 60.0},
        "points": points,
        "replicates": replicates,
    }


@pytest.mark.parametrize("surrogate", ["gp", "splines"])
def test_the_early_stop_stops_clear_violations_only(bench: Any, surrogate: str) -> None:
    world = bench.World.load(surrogate, _census())
    rng = np.random.default_rng(0)
    far = [world.evaluate({"alpha": 1.0, "eta": 0.5}, rng) for _ in range(50)]  # true accuracy ~0.45
    near = [world.evaluate({"alpha": 0.0, "eta": 0.5}, rng) for _ in range(50)]  # ~0.75, feasible
    assert sum(r["stopped"] for r in far) >= 45 and not any(r["stopped"] for r in near)
    assert all(r["constraint"] > 0 for r in far)


@pytest.mark.parametrize("mode", ["sequential", "batch4"])
def test_a_short_run_end_to_end(bench: Any, mode: str) -> None:
    census = _census()
    run = bench.run_one(census, "splines", "tpe", mode, seed=0, n_trials=8)
    trials = run["trials"]
    assert len(trials) == 8 and trials[0]["params"] == census["default"]  # the enqueued default first
    world = bench.World.load("splines", census)
    best = bench.true_front_volume(world, m=10)
    scores = bench.score(run, world, best, budget=8)
    assert 0 < scores["reported"] <= scores["evaluated"] <= 1.0 + 1e-9
    assert 0 <= scores["model"] <= scores["evaluated"]
    again = bench.run_one(census, "splines", "tpe", mode, seed=0, n_trials=8)
    assert [t["observed"] for t in again["trials"]] == [t["observed"] for t in trials]  # reproducible


@pytest.fixture(scope="module")
def check(bench: Any) -> Any:
    path = PATH.with_name("real_check.py")
    spec = importlib.util.spec_from_file_location("real_check", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_front_points_inside_the_reference_box_are_replicated(check: Any) -> None:
    ref = np.array([0.6, 40.0])
    front = np.array([[0.7, 35.0], [0.6, 30.0], [0.8, 40.0], [0.65, 39.9]])  # 1 and 2 on its edges: no volume
    assert check.contributing(front, ref).tolist() == [0, 3]
    assert check.contributing(np.empty((0, 2)), ref).tolist() == []


def test_a_replicated_point_is_the_mean_of_its_fresh_eval_replicates_only(check: Any) -> None:
    def trial(values: list[float], of: int | None = None, index: int = 1, split: str = "eval",
              promoted: bool = False, state: str = "COMPLETE") -> dict[str, Any]:  # fmt: skip
        replicate = None if of is None else {"of": of, "index": index, "split": split, "promoted": promoted}
        return {"state": state, "values": values, "replicate": replicate}

    trials = [
        trial([0.9, 30.0]),  # the original: its own values never enter
        trial([0.7, 34.0], of=0),
        trial([0.6, 36.0], of=0, index=2),
        trial([0.1, 10.0], of=0, index=0, split="test"),  # held-out split, the original's seeds
        trial([0.1, 10.0], of=0, promoted=True),  # at the promoted fidelity
        trial([0.0, 0.0], of=0, index=3, state="FAIL"),
        trial([0.5, 20.0], of=1),
    ]
    assert check.replicated([0, 2], trials).tolist() == [[pytest.approx(0.65), pytest.approx(35.0)]]


def test_an_exported_study_is_scored_on_its_front_measured_and_replicated(check: Any) -> None:
    study = {
        "reference": [0.6, 40.0],
        "front": [0, 1, 2],
        "trials": [
            {"number": 0, "state": "COMPLETE", "values": [0.7, 30.0], "replicate": None},
            {"number": 1, "state": "COMPLETE", "values": [0.8, 35.0], "replicate": None},
            {"number": 2, "state": "COMPLETE", "values": [0.5, 20.0], "replicate": None},  # below the box
            {"number": 3, "state": "COMPLETE", "values": [0.65, 32.0],
             "replicate": {"of": 0, "index": 1, "split": "eval", "promoted": False}},
        ],
    }  # fmt: skip
    # measured: (0.7 - 0.6) x (40 - 30) + (0.8 - 0.7) x (40 - 35) = 1.5; trial 1 has no replicate yet
    assert check.front_volume(study) == (pytest.approx(1.5), 3, None, 2)
    fresh = {"of": 1, "index": 1, "split": "eval", "promoted": False}
    study["trials"].append({"number": 4, "state": "COMPLETE", "values": [0.7, 38.0], "replicate": fresh})
    # replicated: (0.65, 32) and (0.7, 38): 0.05 x 8 + 0.05 x 2 = 0.5
    assert check.front_volume(study) == (pytest.approx(1.5), 3, pytest.approx(0.5), 2)


def test_t_interval_by_hand(check: Any) -> None:
    # mean 2, sd sqrt(2/3) = 0.8165, 4 pairs: half width t(0.975, 3) x sd / 2 = 3.1824 x 0.8165 / 2 = 1.2992
    lo, hi = check.t_interval(np.array([1.0, 2.0, 3.0, 2.0]), 0.95)
    assert (lo, hi) == (pytest.approx(0.7008, abs=1e-4), pytest.approx(3.2992, abs=1e-4))
