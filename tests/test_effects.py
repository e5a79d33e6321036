"""`tsq report effects`: arms of a replicated grid study, their means over seeds (overall and by difficulty
level) and the contrasts between arms, against hand-computed values. The studies are real Optuna studies
(in memory, or SQLite for the CLI) whose trials carry known records (`records_util`) and per-response
records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from records_util import add_trial, make_study
from typer.testing import CliRunner

from tsq.cli.main import app
from tsq.errors import UserError
from tsq.method.stats import aggregate_replicates, holm, pooled_sd, t_test, tost
from tsq.records import Replicate, StudyRecord, TrialRecord
from tsq.report.data import study_data
from tsq.report.effects import contrast_se, study_effects, verdict
from tsq.report.effects_markdown import render_report

T2, T4 = 4.302652729749464, 2.7764451051977987  # Student's t 0.975 quantile at 2 and 4 degrees of freedom


def F4_SF(t: float) -> float:
    """P(T > t) for Student's t at 4 degrees of freedom, in closed form: the CDF is
    1/2 + (3/8)·u·(1 − t²/(12·(1 + t²/4))), u = t/√(1 + t²/4)."""
    u = t / (1 + t * t / 4) ** 0.5
    return 0.5 - (3 / 8) * u * (1 - t * t / (12 * (1 + t * t / 4)))


VARIANT = CategoricalDistribution(["b", "a", "c"])  # the spec's choice order: b is the reference


def _records(path: Path, level1: tuple[int, int], level2_tokens: int = 30) -> str:
    """Two responses at depth 1 (`level1` = (correct count, tokens of each)) and one correct at depth 2."""
    correct, tokens = level1
    rows = [(1, j < correct, tokens) for j in range(2)] + [(2, True, level2_tokens)]
    path.write_text("".join(
        json.dumps({"problem_id": f"p{i}", "sample": 0, "n_tokens": n, "correct": ok, "finish_reason": "stop",
                    "truncated": False, "difficulty": d, "steps": 2}) + "\n"
        for i, (d, ok, n) in enumerate(rows)
    ))  # fmt: skip
    return str(path)


# (variant, accuracy, len_all, extra record fields, depth 1 (correct of 2, tokens)), by trial number
TRIALS: list[tuple[str, float, float, dict[str, Any], tuple[int, int] | None]] = [
    ("b", 0.5, 100.0, {}, (2, 10)),  # 0: original
    ("a", 0.7, 105.0, {}, (1, 20)),  # 1: original
    ("b", 0.6, 110.0, {"replicate": Replicate(0, 1, "eval")}, (1, 12)),  # 2
    ("b", 0.7, 120.0, {"replicate": Replicate(0, 2, "eval")}, (2, 14)),  # 3
    ("b", 0.1, 500.0, {"replicate": Replicate(0, 1, "test")}, None),  # 4: held-out split, not an arm member
    ("a", 0.8, 115.0, {}, (1, 20)),  # 5: the grid point run again: same arm
    ("a", 0.9, 95.0, {"replicate": Replicate(1, 1, "eval")}, (2, 26)),  # 6
    ("a", 0.0, 1.0, {"early_stop": {"stopped": True}}, None),  # 7: stopped early: left out
    ("c", 0.5, 90.0, {}, (0, 40)),  # 8: one seed only
]


def _study(folder: Path, storage: str | None = None, name: str = "sel") -> optuna.Study:
    record = StudyRecord(objectives=["accuracy", "len_all"],
                         baseline={"accuracy": 0.5, "len_all": 100.0, "budget": 64})  # fmt: skip
    study = make_study(storage, record, name=name)
    for number, (variant, acc, length, extra, level1) in enumerate(TRIALS):
        metrics = {"accuracy": acc, "len_all": length, "accuracy_delta": acc - 0.5,
                   "token_reduction": 1 - length / 100}  # fmt: skip
        trial = TrialRecord(
            params={"variant": variant},
            distributions={"variant": VARIANT},
            values=(acc, length),
            metrics=metrics,
            records=None if level1 is None else _records(folder / f"t{number}.jsonl", level1),
            **extra,
        )
        add_trial(
            study, trial, grid_id=number
        )  # a grid point, as Optuna's GridSampler marks it: not selected
    add_trial(study, TrialRecord(state=TrialState.FAIL))
    return study


def test_arms_pool_originals_eval_replicates_and_repeated_grid_points(tmp_path: Path) -> None:
    effects = study_effects(_study(tmp_path))
    assert effects.knobs == ["variant"]
    assert [(a.params["variant"], a.trials) for a in effects.arms] == [
        ("b", (0, 2, 3)),
        ("a", (1, 5, 6)),
        ("c", (8,)),
    ]
    b, a, c = effects.arms
    # b: accuracy 0.5, 0.6, 0.7 -> mean 0.6, SD 0.1, t interval at df 2: 0.6 ± 4.3027 * 0.1/√3
    acc = b.estimates["accuracy"]
    assert (acc.mean, acc.n, acc.sd_seed, acc.se) == pytest.approx((0.6, 3, 0.1, 0.1 / 3**0.5))
    assert (acc.lo, acc.hi) == pytest.approx((0.6 - T2 * 0.1 / 3**0.5, 0.6 + T2 * 0.1 / 3**0.5))
    assert a.estimates["len_all"].mean == pytest.approx(105.0) and a.estimates[
        "len_all"
    ].sd_seed == pytest.approx(10)
    assert a.estimates["accuracy_delta"].mean == pytest.approx(0.3)
    assert "tokens_per_step" not in b.estimates  # no trial stored it
    # the between-seed SD pooled over b and a (c has one seed): √((2·0.01 + 2·0.01)/4) = 0.1 at df 4
    assert effects.seed_sd["accuracy"] == pytest.approx((0.1, 4))
    assert effects.seed_sd["len_all"] == pytest.approx((10.0, 4))
    # c's single seed borrows it: 0.5 ± t(4) · 0.1
    assert (c.estimates["accuracy"].lo, c.estimates["accuracy"].hi) == pytest.approx(
        (0.5 - T4 * 0.1, 0.5 + T4 * 0.1)
    )
    assert any("stopped early" in n and "[7]" in n for n in effects.notes)


def test_by_depth_means_over_seeds_with_the_pooled_seed_sd(tmp_path: Path) -> None:
    b, a, c = study_effects(_study(tmp_path)).arms
    # depth 1 accuracy per seed: b 1, 0.5, 1 (mean 5/6, variance 1/12); a 0.5, 0.5, 1 (2/3, 1/12); c 0.
    # Pooled: variance 1/12 at df 4; b's SE √(1/12)/√3 = 1/6; c's (one seed) √(1/12).
    acc_b = b.by_level["accuracy"][1]
    assert (acc_b.mean, acc_b.se) == pytest.approx((5 / 6, 1 / 6))
    assert (acc_b.lo, acc_b.hi) == pytest.approx((5 / 6 - T4 / 6, 5 / 6 + T4 / 6))
    assert a.by_level["accuracy"][1].mean == pytest.approx(2 / 3)
    assert (c.by_level["accuracy"][1].mean, c.by_level["accuracy"][1].se) == pytest.approx(
        (0.0, (1 / 12) ** 0.5)
    )
    # depth 1 Len-A per seed: b 10, 12, 14 (variance 4); a 20, 20, 26 (mean 22, variance 12): pooled 8
    len_a = a.by_level["len_all"][1]
    assert (len_a.mean, len_a.se) == pytest.approx((22.0, (8 / 3) ** 0.5))
    # depth 2: every seed has one correct 30-token response: no spread, a zero-width interval
    assert (b.by_level["accuracy"][2].lo, b.by_level["len_all"][2].hi) == (1.0, 30.0)


def test_categorical_contrasts_against_the_first_choice_or_the_named_reference(tmp_path: Path) -> None:
    study = _study(tmp_path)
    contrasts = study_effects(study).contrasts
    by = {(c.value, c.metric): c for c in contrasts if c.level is None}
    assert {(c.value, c.reference) for c in by.values()} == {("a", "b"), ("c", "b")}
    # by depth: depth-1 accuracy a − b = 2/3 − 5/6, SE from the pooled depth-1 seed variance 1/12, df 4;
    # exploratory: its p is unadjusted
    d1 = next(c for c in contrasts if (c.value, c.metric, c.level) == ("a", "accuracy", 1))
    assert (d1.diff, d1.se, d1.df, d1.primary) == pytest.approx(
        (-1 / 6, (1 / 12) ** 0.5 * (2 / 3) ** 0.5, 4, 0)
    )
    assert d1.p == pytest.approx(t_test(-1 / 6, d1.se, 4)) and d1.verdict == "undecided"
    # a − b: accuracy +0.2, SE 0.1·√(1/3 + 1/3) = 0.0816, t 2.449 at df 4: p 0.0704, which beyond 2 SE was
    # called an effect; Holm over the family (a − b on accuracy and Len-A; c has one seed) doubles it: 0.141
    acc, length = by["a", "accuracy"], by["a", "len_all"]
    assert (acc.diff, acc.se, acc.df) == pytest.approx((0.2, 0.1 * (2 / 3) ** 0.5, 4))
    assert acc.primary and length.primary and acc.p == pytest.approx(2 * 2 * F4_SF(0.2 / acc.se))
    assert acc.verdict == "undecided"
    assert (length.diff, length.se) == pytest.approx((-5.0, 10 * (2 / 3) ** 0.5))
    assert length.p == pytest.approx(2 * F4_SF(5.0 / length.se))  # 0.573 > 0.141: unchanged by Holm
    assert length.verdict == "undecided"
    assert (by["c", "accuracy"].se, by["c", "accuracy"].verdict) == (None, "unreplicated")  # c has one seed
    assert ("a", "tokens_per_step") not in by
    against_a = study_effects(study, reference="a").contrasts
    assert {(c.value, c.reference) for c in against_a} == {("b", "a"), ("c", "a")}
    assert next(c for c in against_a if c.value == "b" and c.metric == "accuracy").diff == pytest.approx(-0.2)
    with pytest.raises(UserError, match="--reference z: no arm has variant = z"):
        study_effects(study, reference="z")
    # an equivalence margin of 50 points: TOST p = P(T ≤ (0.2 − 0.5)/0.0816) = 0.0107 at df 4 (the lower
    # test; the upper one, P(T ≥ 0.7/0.0816), is far smaller)
    wide = study_effects(study, margins={"accuracy": 0.5}).contrasts
    acc_wide = next(c for c in wide if (c.value, c.metric, c.level) == ("a", "accuracy", None))
    assert acc_wide.p_equiv == pytest.approx(F4_SF(0.3 / acc.se))
    assert acc_wide.verdict == "equivalent within ±50.0 pts"


def test_verdicts_hold_their_level_at_low_degrees_of_freedom() -> None:
    # two arms of 3 seeds (df 4), accuracy 2.2 SE apart: "> 2 SE" called it an effect, but at 4 df
    # P(|T| > 2.2) = 0.093 > 0.05: undecided. 4 SE apart it is an effect (p 0.016), and with one contrast
    # in the family Holm leaves it as it is.
    def study(gap_in_se: float) -> optuna.Study:
        s = optuna.create_study(directions=["maximize"])
        s.set_user_attr("objectives", ["accuracy"])
        se = 0.1 * (2 / 3) ** 0.5  # seed SD 0.1 in each arm
        for alpha, shift in ((0.2, 0.0), (0.8, gap_in_se * se)):
            for acc in (0.5, 0.6, 0.7):
                s.add_trial(optuna.trial.create_trial(
                    params={"alpha": alpha}, distributions={"alpha": FloatDistribution(0.0, 1.0)},
                    values=[acc + shift], user_attrs={"accuracy": acc + shift, "len_all": 50.0},
                    system_attrs={"grid_id": 0}))  # fmt: skip
        return s

    close = next(c for c in study_effects(study(2.2)).contrasts if c.metric == "accuracy")
    assert close.df == 4 and close.p == pytest.approx(2 * F4_SF(2.2)) and close.verdict == "undecided"
    far = next(c for c in study_effects(study(4.0)).contrasts if c.metric == "accuracy")
    assert far.p == pytest.approx(2 * F4_SF(4.0)) and far.verdict == "better"
    assert far.interval() == pytest.approx((far.diff - T4 * far.se, far.diff + T4 * far.se))
    # Len-A is not an objective of this study: exploratory, unadjusted
    assert not next(c for c in study_effects(study(4.0)).contrasts if c.metric == "len_all").primary


def test_the_original_of_a_picked_trial_is_left_out_of_its_arm() -> None:
    # a TPE-like study (no grid_id): trial 0 was picked and confirmed at two fresh seeds; its own lucky run
    # (0.9) must not enter its arm, whose mean is the fresh seeds' 0.6
    study = optuna.create_study(directions=["maximize"])
    study.set_user_attr("objectives", ["accuracy"])
    dist = {"alpha": FloatDistribution(0.0, 1.0)}
    for acc, alpha, extra in ((0.9, 0.2, {}), (0.5, 0.8, {}), (0.55, 0.2, {"replicate_of": 0}),
                              (0.65, 0.2, {"replicate_of": 0})):  # fmt: skip
        study.add_trial(optuna.trial.create_trial(params={"alpha": alpha}, distributions=dist, values=[acc],
                                                  user_attrs={"accuracy": acc, **extra}))  # fmt: skip
    effects = study_effects(study)
    low = next(a for a in effects.arms if a.params["alpha"] == 0.2)
    assert low.trials == (2, 3) and low.estimates["accuracy"].mean == pytest.approx(0.6)
    assert any("picked by the sweep" in n and "[0]" in n for n in effects.notes)


def _numeric_study(values: list[float], extra_knob: bool = False) -> optuna.Study:
    study = optuna.create_study(study_name="alpha", directions=["maximize"])
    for i, alpha in enumerate(values):
        params: dict[str, Any] = {"alpha": alpha, **({"eta": float(i)} if extra_knob else {})}
        dists = {name: FloatDistribution(0.0, 5.0) for name in params}
        attrs = {"accuracy": 0.4 + alpha, "len_all": 50.0}
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=dists, values=[0.5], user_attrs=attrs)
        )
    return study


def test_a_numeric_knob_compares_the_ends_of_its_range_and_one_seed_is_unreplicated() -> None:
    effects = study_effects(_numeric_study([0.3, 0.1, 0.2]))
    assert [a.params["alpha"] for a in effects.arms] == [0.1, 0.2, 0.3]
    acc = next(c for c in effects.contrasts if c.metric == "accuracy" and c.level is None)
    assert (acc.value, acc.reference, acc.diff) == pytest.approx((0.3, 0.1, 0.2))
    assert {c.verdict for c in effects.contrasts} == {"unreplicated"}
    assert any("no arm has two seeds" in n for n in effects.notes)
    assert any("no per-response records for trials [1, 2, 0]" in n for n in effects.notes)
    around = study_effects(_numeric_study([0.3, 0.1, 0.2]), reference="0.20")
    assert {(c.value, c.reference) for c in around.contrasts} == {(0.1, 0.2), (0.3, 0.2)}
    two = study_effects(_numeric_study([0.3, 0.1], extra_knob=True))
    assert two.knobs == ["alpha", "eta"] and not two.contrasts
    assert any("differ in 2 knobs (alpha, eta)" in n for n in two.notes)


def test_verdict_tests_holm_contrast_se_and_the_pooled_sd() -> None:
    assert verdict(0.2, 0.01, None, "maximize") == "better"
    assert verdict(-5.0, 0.01, None, "minimize") == "better"  # shorter is better
    assert verdict(0.2, 0.2, 0.01, "maximize", "5.0 pts") == "equivalent within ±5.0 pts"
    assert verdict(0.2, 0.2, 0.2, "maximize", "5.0 pts") == "undecided"
    assert verdict(0.2, None, None, "maximize") == "unreplicated"
    # t test and TOST by hand at 4 df: diff 0.1, SE 0.05: t 2, p = 2·P(T > 2) = 0.1161; TOST with margin
    # 0.2: max(P(T > 6), P(T < −2)) = P(T > 2) = 0.0581; diff 0: P(T > 4) = 0.0081
    assert t_test(0.1, 0.05, 4) == pytest.approx(2 * F4_SF(2.0))
    assert tost(0.1, 0.05, 4, 0.2) == pytest.approx(F4_SF(2.0))
    assert tost(0.0, 0.05, 4, 0.2) == pytest.approx(F4_SF(4.0))
    with pytest.raises(ValueError):
        tost(0.0, 0.05, 4, 0.0)
    # Holm: sorted 0.01, 0.02, 0.04 times 3, 2, 1 -> 0.03, 0.04, 0.04 (monotone), back in input order
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([]) == []
    assert contrast_se(2.0, 2, 8) == pytest.approx(2 * (1 / 2 + 1 / 8) ** 0.5)
    assert contrast_se(2.0, 1, 8) is None and contrast_se(None, 3, 3) is None
    assert pooled_sd([(3, 1.0), (2, 2.0), (1, 5.0), (4, None)]) == pytest.approx((2**0.5, 3))  # √((2+4)/3)
    assert pooled_sd([(1, 1.0)]) is None
    one = aggregate_replicates([1.0], sd_seed=2.0, sd_dof=4)  # a given SD with its dof: the t quantile
    assert (one.se, one.hi) == pytest.approx((2.0, 1.0 + T4 * 2.0))


def test_cli_prints_and_writes_the_report_and_a_missing_study_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    _study(tmp_path, storage=url, name="sel")
    _study(tmp_path, storage=url, name="sel2")
    out = tmp_path / "effects.md"
    result = CliRunner().invoke(
        app, ["report", "effects", "--study", "sel", "--study", "sel2", "--storage", url, "--out", str(out)]
    )
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    text = out.read_text()
    assert text in result.output and text.count("## Study `sel") == 2
    assert "| b | 3 | 60.0% [35.2%, 84.8%] | 110.0 [85.2, 134.8] |" in text  # 0.6 ± 4.303·0.0577, 110 ± 24.8
    # +0.2 ± t(4)·0.0816 = ±0.2267; Holm-adjusted p 0.141; Len-A -5 ± 22.7, p 0.573
    assert (
        "| variant a − b | Acc (%) | all | primary | +20.0 pts [-2.7, +42.7] | 4 | 0.141 |  | undecided |"
        in text
    )
    assert (
        "| variant a − b | Len-A (tokens) | all | primary | -5.0 [-27.7, +17.7] | 4 | 0.573 |  | undecided |"
        in text
    )
    assert "| variant c − b | Acc (%) | all | primary | -10.0 pts |  |  |  | unreplicated |" in text
    # the family: a − b on Acc and Len-A (c − b has no SE); exploratory: a − b by depth (4) and on
    # tokens/step (not stored); Len-A at d1 passes: 22 − 12 = 10 tokens, SE √8·√(2/3) = 2.31, p 0.012
    assert (
        "- primary family: 2 replicated contrasts on Acc, Len-A (Holm across them); equivalence margins: none"
        in text
    )
    assert "- exploratory: 1 of 4 pass their unadjusted test; were no knob to matter, about 0.2 would" in text
    assert render_report([study_effects(optuna.load_study(study_name="sel", storage=url))]) in result.output
    command = [sys.executable, "-m", "tsq", "report", "effects", "--study", "nope", "--storage", url]
    missing = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and missing.stderr.startswith("error: --study nope: no such study")
    assert len(missing.stderr.strip().splitlines()) == 1 and not missing.stdout


def test_the_spec_declares_the_family_and_margins_and_the_study_records_them() -> None:
    from pydantic import ValidationError

    from tsq.config.space import StudySpec
    from tsq.report.effects import effects_settings

    with pytest.raises(ValidationError, match="unknown metric"):
        StudySpec(effects={"primary": ["speed"]})
    with pytest.raises(ValidationError):
        StudySpec(effects={"margins": {"accuracy": 0.0}})  # a margin is positive
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy_delta", "token_reduction"])
    study.set_user_attr("constraint", {"max_accuracy_drop": 0.03})
    # by default: the objectives, a relative one counted in what it changes; accuracy's margin the drop
    assert effects_settings(study_data(study)) == (["accuracy", "len_all"], {"accuracy": 0.03})
    declared = StudySpec(effects={"primary": ["tokens_per_step"], "margins": {"accuracy": 0.05}})
    study.set_user_attr("effects", declared.effects.model_dump())
    assert effects_settings(study_data(study)) == (["tokens_per_step"], {"accuracy": 0.05})
