"""Staged evaluation with an early stop (tsq/method/early_stop.py, docs/method.md "Statistics").

The stages and the test against hand-computed values; the test's behaviour on simulated trials (a collapsed
trial stops at stage 1, a trial at the baseline never stops, trials exactly at the constraint's boundary are
stopped in at most 5% of evaluations on average, and in at most 10% in all but 1% of studies, each study
comparing its trials with its one baseline draw); stopped trials through the real Optuna objective with TPE,
NSGA-II and GP (COMPLETE, infeasible, off the front); `--no-early-stop` and `tsq trial run` (no early stop);
and, on the tiny test model, that the staged evaluation draws exactly the full evaluation's responses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from early_stop_sim import per_study_false_stops, simulate, sums_of
from optuna.trial import TrialState
from pydantic import ValidationError
from typer.testing import CliRunner

from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from objectives.tokensqueeze.config import TrialParams
from tsq.compat.optuna import feasibility_value
from tsq.config.pipeline import EvaluationSpec
from tsq.engines.evaluate import compare, intervals
from tsq.errors import UserError
from tsq.fileio import write_atomic
from tsq.method.early_stop import (
    LEVEL,
    Look,
    baseline_error_sd,
    check_fractions,
    look,
    look_line,
    look_threshold,
    merge_sums,
    run_stages,
    stage_order,
    stage_problems,
    stage_sizes,
    stop_record,
)
from tsq.method.metrics import SUM_FIELDS, ProblemSums, metric_values
from tsq.recipe import FunctionRecipe, TrialContext, TrialResult, load_spec

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 128


# -- stages ------------------------------------------------------------------------------------------------


def test_stage_sizes_by_hand() -> None:
    assert stage_sizes(100, [0.25, 0.5, 1.0]) == [25, 50, 100]
    assert stage_sizes(12, [0.25, 0.5, 1.0]) == [3, 6, 12]
    assert stage_sizes(10, [0.25, 0.5, 1.0]) == [3, 5, 10]  # ⌈2.5⌉ = 3
    assert stage_sizes(2, [0.25, 0.5, 1.0]) == [1, 2]  # ⌈0.5⌉ = 1 = ⌈0.25·2⌉: the repeat is dropped
    assert stage_sizes(7, [1.0]) == [7]


def test_stages_are_nested_prefixes_of_one_seeded_order() -> None:
    ids = [f"p{i:02d}" for i in range(40)]
    stages = stage_problems(ids, [0.25, 0.5, 1.0], seed=3)
    assert [len(s) for s in stages] == [10, 20, 40]
    assert stages[0] == stages[1][:10] and stages[1] == stages[2][:20]
    assert sorted(stages[-1]) == ids
    assert stage_problems(list(reversed(ids)), [0.25, 0.5, 1.0], seed=3) == stages  # load order is irrelevant
    assert stage_order(ids, seed=4) != stage_order(ids, seed=3)
    assert stages[0] != ids[:10]  # shuffled: the first stage is not the first problems in id order


@pytest.mark.parametrize("fractions", [[], [0.5], [0.5, 0.25, 1.0], [0.0, 1.0], [0.5, 1.5], [0.5, 0.5, 1.0]])
def test_bad_stages_are_refused(fractions: list[float]) -> None:
    with pytest.raises(ValueError, match="stages"):
        check_fractions(fractions)
    with pytest.raises(ValidationError, match="stages"):
        EvaluationSpec(stages=fractions)


def test_bad_stages_in_a_spec_file_name_the_field(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    raw["evaluation"]["stages"] = [0.5, 0.25, 1.0]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match="evaluation"):
        load_spec(path)


def test_merge_sums() -> None:
    a, b = sums_of(["b", "d"], [1, 2], 4), sums_of(["a", "c"], [3, 0], 4)
    merged = merge_sums(a, b)
    assert merged.problem_ids == ("a", "b", "c", "d")
    assert merged.sums[:, SUM_FIELDS.index("correct")].tolist() == [3, 1, 0, 2]
    with pytest.raises(ValueError):
        merge_sums(a, a)


# -- the test, by hand -------------------------------------------------------------------------------------


def test_look_by_hand() -> None:
    from scipy.stats import t

    ids = ["a", "b", "c", "d"]
    base = sums_of(ids, [8, 8, 4, 4], 8)
    new = sums_of(ids, [6, 8, 2, 4], 8)
    # x = [-0.25, 0, -0.25, 0]: mean -0.125, sd √(4·0.125²/3) = 0.144338, se 0.072169
    # the baseline's error: b = [1, 1, 0.5, 0.5], Σ b(1 − b)/7 = 0.5/7, σ_b = √(0.5/7)/4 = 0.0668153
    # the rest: σ_t = √(0.072169² − 0.0668153²) = 0.0272772; q_b = t(0.995, 3) (risk 0.01 over 2 looks)
    seen = look(base, new, 0.05, stage=1, n_stages=3, n_problems=8)
    assert seen.accuracy_change == pytest.approx(-0.125)
    assert seen.se == pytest.approx(0.0721688, abs=1e-6)
    assert seen.baseline_se == pytest.approx(0.0668153, abs=1e-6)
    assert baseline_error_sd(base, ids) == pytest.approx(0.0668153, abs=1e-6)
    assert seen.trial_se == pytest.approx(0.0272772, abs=1e-6)
    excess = -0.125 + 0.05 + t.ppf(0.995, 3) * 0.0668153
    assert seen.statistic == pytest.approx(excess / 0.0272772, rel=1e-5)
    assert seen.df == 3
    assert seen.p_value == pytest.approx(t.cdf(excess / 0.0272772, 3), abs=1e-6)
    assert seen.threshold == pytest.approx(0.05)  # α = 0.10 over 2 looks that can stop
    assert seen.upper_bound == pytest.approx(excess - 0.05 + t.ppf(0.95, 3) * 0.0272772, abs=1e-6)
    assert not seen.stop and seen.problems == 4 and seen.of == 8
    # every problem -0.5: no spread, so the sign of the excess decides (p = 0)
    assert look(base, sums_of(ids, [4, 4, 0, 0], 8), 0.05, 1, 3, 8).stop
    # x = [-0.75, -0.5, -0.5, -0.5]: mean -0.5625, se 0.0625 < σ_b, so σ_t = 0 and the sign of
    # -0.5625 + 0.05 + q_b·σ_b = -0.122 decides: stop
    stopped = look(base, sums_of(ids, [2, 4, 0, 0], 8), 0.05, 1, 3, 8)
    assert stopped.accuracy_change == pytest.approx(-0.5625) and stopped.trial_se == 0.0
    assert stopped.p_value == 0.0 and stopped.stop and stopped.upper_bound < -0.05
    # the same changes against a baseline of 4 × the samples (32 per problem): σ_b halves (√(0.5/31)/4
    # = 0.0317500) and the first case is tested against far less of the baseline's own noise
    wide = look(sums_of(ids, [32, 32, 16, 16], 32), new, 0.05, 1, 3, 8)
    assert wide.baseline_se == pytest.approx((0.5 / 31) ** 0.5 / 4, abs=1e-7)


def test_look_edges() -> None:
    base = sums_of(["a", "b", "c"], [8, 8, 8], 8)
    collapsed = sums_of(["a", "b", "c"], [0, 1, 0], 8)
    # the last stage never stops a trial: the full evaluation's point value decides feasibility there
    last = look(base, collapsed, 0.05, stage=3, n_stages=3, n_problems=3)
    assert not last.stop and last.threshold is None and last.p_value is not None
    assert look(base, collapsed, 0.05, stage=1, n_stages=3, n_problems=3).stop
    # one problem: no spread to test against
    one = look(base, sums_of(["a"], [0], 8), 0.05, stage=1, n_stages=3, n_problems=3)
    assert not one.stop and one.p_value is None
    # every problem changed alike, by exactly the allowed drop: not a violation
    base4 = sums_of(["a", "b"], [4, 4], 4)
    assert not look(base4, sums_of(["a", "b"], [3, 3], 4), 0.25, 1, 2, 2).stop
    assert look_threshold(1) is None and look_threshold(3) == pytest.approx(LEVEL / 2)
    json.dumps(last.to_json())  # what the trial's user attr stores


def test_run_stages_samples_each_problem_once_and_stops_at_the_first_stop() -> None:
    ids = [f"p{i:02d}" for i in range(20)]
    base = sums_of(ids, [8] * 20, 8)
    asked: list[list[str]] = []

    def evaluate_more(added: Sequence[str]) -> ProblemSums:
        asked.append(list(added))
        return sums_of(list(added), [2] * len(added), 8)  # a collapsed trial: 25% where the baseline has 100%

    stages = stage_problems(ids, [0.25, 0.5, 1.0], seed=0)
    looks = run_stages(base, stages, evaluate_more, 0.05)
    assert len(looks) == 1 and looks[0].stop and asked == [stages[0]]
    record = stop_record(looks)
    assert record["stopped"] and record["stage"] == 1 and record["problems"] == 5 and record["of"] == 20
    assert record["looks"][0]["p_value"] < record["looks"][0]["threshold"]

    asked.clear()

    def same_as_baseline(added: Sequence[str]) -> ProblemSums:
        asked.append(list(added))
        return sums_of(list(added), [8] * len(added), 8)

    fine = run_stages(base, stages, same_as_baseline, 0.05)
    assert [lk.stage for lk in fine] == [1, 2, 3] and not any(lk.stop for lk in fine)
    assert sorted(p for a in asked for p in a) == ids  # every problem sampled once, in the stages' order
    with pytest.raises(ValueError, match="extend"):
        run_stages(base, [ids[:5], ids[10:20]], same_as_baseline, 0.05)


# -- the test on simulated trials (tests/early_stop_sim.py) ----------------------------------------------


def test_a_clearly_collapsed_trial_stops_at_stage_1() -> None:
    # -30 points against a 5-point allowance (the tiny world measured -8 to -16 at β 0.1; worse exists):
    # always stopped, nearly always at the first look (a lucky baseline draw can put it off to the second)
    stages = [simulate(seed, -0.30) for seed in range(200)]
    assert set(stages) <= {1, 2} and stages.count(1) >= 196, stages.count(1)


def test_a_trial_at_the_baseline_never_stops() -> None:
    ids = [f"p{i:03d}" for i in range(100)]
    rng = np.random.default_rng(0)
    base = sums_of(ids, rng.binomial(8, 0.7, 100), 8)
    # the baseline itself: zero change on every problem
    assert not any(lk.stop for lk in run_stages(base, stage_problems(ids, [0.25, 0.5, 1.0], 0),
                                                 lambda added: base.select(sorted(added)), 0.05))  # fmt: skip
    # trials whose true accuracy equals the baseline's, drawn anew: none of 2000 is stopped
    assert sum(simulate(seed, 0.0) > 0 for seed in range(2000)) == 0


@pytest.mark.parametrize("concentrated", [False, True])
def test_false_stops_at_the_boundary_are_at_most_5_percent(concentrated: bool) -> None:
    # true change exactly -max_accuracy_drop: H0 holds, so every stop is a false stop
    stops = [simulate(seed, -0.05, concentrated=concentrated) for seed in range(2000)]
    rate = sum(s > 0 for s in stops) / len(stops)
    assert rate <= 0.05, rate  # the guarantee of the test before the per-study one, kept (measured: under 1%)
    # not vacuously (a test that never stops meets the bound): 10 points beyond the allowance are stopped in
    # most evaluations when every problem loses alike (measured 218 of 300) and in some when a quarter of the
    # problems carries the loss at 4x, clipped at 0 (74 of 300); the per-study bound costs this power: the
    # test before it stopped 287 and 153
    stopped = sum(simulate(seed, -0.15, concentrated=concentrated) > 0 for seed in range(300))
    assert stopped > (180 if not concentrated else 50), stopped


@pytest.mark.slow  # 80 simulated studies (~20 s); the per-trial boundary tests above stay in the fast loop
def test_false_stops_at_the_boundary_hold_per_study() -> None:
    # Every trial of a study is tested against the study's one baseline draw: a lucky baseline makes every
    # trial look worse. Over 80 simulated studies of 80 boundary trials each, no study may see more than
    # 10% false stops (with a per-trial baseline the rate was 5% on average, but over 10% in ~11% of
    # studies, 9 of these 80)
    rates = per_study_false_stops(80, 80, seed=1)
    assert (rates > LEVEL).sum() == 0, sorted(rates)[-5:]
    assert rates.mean() <= 0.05


# -- stopped trials in a real Optuna study -----------------------------------------------------------------

N_PROBLEMS, N_SAMPLES = 40, 4


def _records(ids: Sequence[str], accuracy: float, length: int) -> list[dict]:
    rows = []
    for pid in ids:
        k = int(pid[1:])
        for j in range(N_SAMPLES):
            correct = ((7 * k + 3 * j) % 20) / 20 < accuracy  # shared difficulty: problem k, sample j
            rows.append({"problem_id": pid, "sample": j, "n_tokens": length + k % 5, "correct": correct,
                         "finish_reason": "stop", "truncated": False, "difficulty": 1,
                         "steps": 2})  # fmt: skip
    return rows


def _staged_trial(spec: Spec, params: TrialParams, ctx: TrialContext) -> TrialResult:
    """A trial program whose evaluation is synthetic but staged by tsq.method.early_stop, as the default
    program's: α ≥ 0.5 collapses accuracy from 70% to 20% (and is shorter, so it would be on an unconstrained
    front)."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    ids = [f"p{i:02d}" for i in range(N_PROBLEMS)]
    accuracy, length = (0.2, 10) if params.alpha >= 0.5 else (0.7, 40 - int(10 * params.eta))
    base_rows = _records(ids, 0.7, 40)
    base = ProblemSums.from_records(base_rows, BUDGET)
    rows: list[dict] = []

    def evaluate_more(added: Sequence[str]) -> ProblemSums:
        rows.extend(_records(added, accuracy, length))
        return ProblemSums.from_records(_records(added, accuracy, length), BUDGET)

    stats: dict = {}
    if ctx.early_stop_max_drop is None:
        evaluate_more(ids)
    else:
        stages = stage_problems(ids, spec.evaluation.stages, spec.evaluation.seed)
        stats["early_stop"] = stop_record(run_stages(base, stages, evaluate_more, ctx.early_stop_max_drop))
    new = ProblemSums.from_records(rows, BUDGET)
    path, base_path = ctx.out_dir / "records.jsonl", ctx.out_dir / "baseline_records.jsonl"
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    write_atomic(base_path, "".join(json.dumps(r) + "\n" for r in base_rows))
    metrics = {**metric_values(new, base), **intervals(new, spec.evaluation)}
    metrics.update(compare(base, new, spec.evaluation), n_problems=len(new.problem_ids))
    return TrialResult(
        params={"alpha": params.alpha, "epsilon": params.epsilon, "lambda": params.lam, "eta": params.eta},
        metrics=metrics,
        baseline={**metric_values(base), **intervals(base, spec.evaluation), "budget": BUDGET},
        budget_curve=[],
        baseline_budget_curve=[],
        adapter_dir=ctx.out_dir,
        records=path,
        baseline_records=base_path,
        stats={**stats, "pairs": 0, "training": {"steps": 0}},  # what `tsq trial run` prints
    )


def _spec(tmp_path: Path, sampler: str, **study: object) -> Path:
    raw = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    raw["cache_dir"] = str(tmp_path / "cache")
    raw["evaluation"]["bootstrap"] = 100
    raw["study"].update({
        "program": "test_early_stop:staged_trial",
        "constraint": {"max_accuracy_drop": 0.05},
        "sampler": {"name": sampler, "seed": 0, **({"population_size": 4} if sampler == "nsga2" else
                                                  {"n_startup_trials": 3})},
        "search": {"alpha": {"low": 0.05, "high": 0.95}, "epsilon": 0.01, "lambda": 1.0,
                   "eta": {"low": 0.0, "high": 1.0}},
        "enqueue_defaults": False,
        **study,
    })  # fmt: skip
    path = tmp_path / f"{sampler}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _stopped(trial: optuna.trial.FrozenTrial) -> bool:
    return bool((trial.user_attrs.get("early_stop") or {}).get("stopped"))


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp"])
def test_samplers_take_stopped_trials_as_complete_and_infeasible(
    sampler: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    from optuna.samplers._tpe.sampler import _get_infeasible_trial_score
    from optuna.samplers.nsgaii._constraints_evaluation import _constrained_dominates
    from optuna.study._constrained_optimization import _get_feasible_trials

    from tsq.study.objective import TrialObjective
    from tsq.study.sampler import build_sampler
    from tsq.study.tracking import Tracker

    spec = load_spec(_spec(tmp_path, sampler))
    study = optuna.create_study(directions=spec.study.directions, sampler=build_sampler(spec.study))
    for alpha in (0.9, 0.2, 0.7, 0.1):  # two collapsing points first, so the model phase meets them
        study.enqueue_trial({"alpha": alpha, "eta": 0.5})
    objective = TrialObjective(spec, Tracker("none", study.study_name, "tsq"), "memory")
    try:
        study.optimize(objective, n_trials=10)
    finally:
        objective.close()
    trials = study.get_trials()
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.user_attrs.get("error") for t in trials]
    stopped = [t for t in trials if _stopped(t)]
    feasible = [t for t in trials if not _stopped(t)]
    assert {t.number for t in stopped} >= {0, 2} and feasible
    for t in stopped:
        record = t.user_attrs["early_stop"]
        assert record["stage"] == 1 and record["problems"] == 10 and record["of"] == N_PROBLEMS
        first = record["looks"][0]
        assert first["p_value"] < first["threshold"] and first["statistic"] is not None and record["test"]
        assert t.user_attrs["n_problems"] == 10  # partial metrics, with their intervals
        assert t.user_attrs["accuracy_lo"] <= t.user_attrs["accuracy"] <= t.user_attrs["accuracy_hi"]
        assert feasibility_value(t) > 0
        assert _get_infeasible_trial_score(t) > 0  # TPE: in the infeasible group
        assert _constrained_dominates(feasible[0], t, study.directions)  # NSGA-II: any feasible one beats it
    for t in feasible:
        assert t.user_attrs["early_stop"]["stage"] == 3 and feasibility_value(t) <= 0
    # GP models the constraint once any trial carries one; the front holds feasible trials only, although
    # the stopped trials' short responses would put them on an unconstrained front
    assert _get_feasible_trials(trials) == feasible
    best = {t.number for t in study.best_trials}
    assert best and not best & {t.number for t in stopped}
    shortest = min(t.user_attrs["len_all"] for t in feasible)
    assert all(t.user_attrs["len_all"] < shortest for t in stopped)  # undominated, were constraints ignored


def test_no_early_stop_flag_and_trial_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tsq.cli.main import app

    collapsing = {"alpha": {"low": 0.6, "high": 0.95}, "epsilon": 0.01, "lambda": 1.0, "eta": 0.5}
    spec_path = _spec(tmp_path, "tpe", n_trials=1, search=collapsing)
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    runner = CliRunner()
    args = ["sweep", "launch", str(spec_path), "--storage", storage, "--study", "off", "--tracker", "none"]
    done = runner.invoke(app, [*args, "--no-early-stop", "--no-summary"])
    assert done.exit_code == 0, done.output
    study = optuna.load_study(study_name="off", storage=storage)
    [collapsed] = study.trials
    assert collapsed.params["alpha"] >= 0.6 and "early_stop" not in collapsed.user_attrs
    assert collapsed.user_attrs["n_problems"] == N_PROBLEMS  # evaluated on every problem
    assert feasibility_value(collapsed) > 0

    # `tsq trial run` has no constraint to keep: a collapsing point is evaluated on every problem
    out = tmp_path / "trial"
    ran = runner.invoke(app, ["trial", "run", str(spec_path), "--set", "alpha=0.9", "--out", str(out)])
    assert ran.exit_code == 0, ran.output
    assert load_spec(spec_path).study.early_stop  # on in the spec, yet no study, so no early stop
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len({r["problem_id"] for r in rows}) == N_PROBLEMS


# -- the tiny test model: stages draw exactly the full evaluation's samples --------------------------------


@pytest.mark.slow
def test_staged_evaluation_draws_exactly_the_full_evaluations_responses(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from contextlib import closing

    from objectives.tokensqueeze.trial import evaluate_staged
    from tsq.cache import Cache
    from tsq.engines.evaluate import baseline
    from tsq.engines.generation import backend_from_spec
    from tsq.engines.models import resolve_model

    spec = load_spec(_spec(tmp_path, "tpe"))
    model_path = resolve_model(spec.model)
    with closing(backend_from_spec(spec, model_path)) as backend:
        full = baseline(spec, Cache(tmp_path / "full"), backend=backend)
        staged, record = evaluate_staged(
            spec, model_path, Cache(tmp_path / "staged"), full, 1.0, adapter=None, backend=backend
        )
    assert not record["stopped"] and [lk["problems"] for lk in record["looks"]] == [3, 6, 12]
    assert staged.records() == full.records()  # the union of the stages is the full evaluation
    assert staged.summary == full.summary
    assert math.isclose(staged.summary["accuracy"], full.summary["accuracy"])


def test_a_look_logs_readable_p_values_and_what_decides_at_the_last_stage() -> None:
    def seen(stage: int, p: float | None, threshold: float | None, stop: bool) -> Look:
        return Look(stage, 3, 25 * stage, 100, 0.05, -0.1234, 0.03, 0.01, 0.028, -2.5, 24, p, threshold, None,
                    stop)  # fmt: skip

    assert look_line(seen(1, 0.0001234567890123456, 0.05, True)) == (
        "evaluation stage 1/3: 25 of 100 problems, accuracy change -12.3 pts vs the baseline; p 0.000123, "
        "stop below 0.05: stop"
    )  # it printed "p 0.0001234567890123456 (stop below 0.05)"
    assert look_line(seen(2, 0.4, 0.05, False)).endswith("; p 0.4, stop below 0.05: go on")
    assert look_line(seen(3, 0.4, None, False)).endswith(
        "; p 0.4 (last stage: the full evaluation decides feasibility)"
    )  # it printed "(stop below None)"
    assert look_line(seen(1, None, 0.05, False)).endswith("; not tested (fewer than 2 problems)")


# a plain trial function on TokenSqueeze's spec model (its knobs and sections), loaded by name
staged_trial = FunctionRecipe(_staged_trial, Spec)
