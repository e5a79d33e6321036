"""The Pareto report from a real Optuna study (SQLite) whose trials carry known metrics."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from typer.testing import CliRunner

from tsq.cli.main import app
from tsq.report.pareto import hypervolume, study_hypervolume, write_report

BASELINE = {"accuracy": 0.5, "len_all": 60.0, "len_correct": 50.0, "auc": 0.30}
# (alpha, accuracy, len_all): trials 0 and 1 are the front; 2 is dominated by 1; 3 is short but inaccurate.
POINTS = [(0.1, 0.55, 40.0), (0.2, 0.52, 30.0), (0.3, 0.51, 35.0), (0.4, 0.45, 20.0)]


def _study(url: str, constraint: float | None = None) -> optuna.Study:
    study = optuna.create_study(study_name="rep", storage=url, directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "len_all"])
    study.set_user_attr("baseline", BASELINE)
    for alpha, acc, length in POINTS:
        metrics = {
            "accuracy": acc,
            "len_all": length,
            "len_correct": length - 5,
            "auc": 0.3 + (60 - length) / 200,
            "token_reduction": 1 - length / 60,
            "accuracy_delta": acc - 0.5,
            "accuracy_delta_lo": acc - 0.53,
            "accuracy_delta_hi": acc - 0.47,
        }
        system_attrs = {}
        if constraint is not None:
            system_attrs["constraints:accuracy_drop"] = -(acc - 0.5) - constraint
        study.add_trial(
            optuna.create_trial(
                params={"alpha": alpha},
                distributions={"alpha": FloatDistribution(0.0, 1.0)},
                values=[acc, length],
                user_attrs=metrics,
                system_attrs=system_attrs,
            )
        )
    study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"error": "boom"}))
    return study


def test_hypervolume_against_a_hand_computed_area() -> None:
    # Loss space, reference (-0.5, 60): boxes 0.05x20 and 0.02x30 overlapping 0.02x20 -> 1.0 + 0.6 - 0.4.
    points = [p[1:] for p in POINTS]
    assert hypervolume(points, [0.5, 60.0], ["maximize", "minimize"]) == pytest.approx(1.2)
    assert hypervolume([(0.4, 10.0)], [0.5, 60.0], ["maximize", "minimize"]) == 0.0


def test_report_files_agree_with_optuna(tmp_path: Path) -> None:
    study = _study(f"sqlite:///{tmp_path / 's.db'}")
    files = write_report(study, tmp_path / "out")
    assert sorted(p.name for p in files.values()) == ["pareto.csv", "pareto.html", "pareto.md", "pareto.png"]
    rows = list(csv.DictReader((tmp_path / "out" / "pareto.csv").open()))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2, 3]  # completed trials only
    assert {int(r["trial"]) for r in rows if r["pareto"] == "1"} == {t.number for t in study.best_trials}
    assert set(rows[0]) >= {"alpha", "accuracy", "len_all", "len_correct", "auc", "token_reduction"}
    assert float(rows[1]["token_reduction"]) == pytest.approx(0.5)
    md = (tmp_path / "out" / "pareto.md").read_text()
    assert "| baseline |" in md and "| trial 1 |" in md and "| trial 2 |" not in md
    assert "30.0 (-50.0%)" in md  # trial 1's Len-A vs the baseline's 60
    assert "+2.0 [-1.0, +5.0]" in md  # trial 1's accuracy delta and its interval, in points
    html = (tmp_path / "out" / "pareto.html").read_text()
    assert "<script src=" not in html and len(html) > 1_000_000  # plotly.js is inlined: works offline
    assert (tmp_path / "out" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob(".*.part"))
    assert study_hypervolume(study) == pytest.approx(1.2)


def test_a_constraint_limits_the_front_to_feasible_trials(tmp_path: Path) -> None:
    study = _study(f"sqlite:///{tmp_path / 's.db'}", constraint=0.02)
    write_report(study, tmp_path / "out")
    rows = list(csv.DictReader((tmp_path / "out" / "pareto.csv").open()))
    flagged = {int(r["trial"]) for r in rows if r["pareto"] == "1"}
    assert flagged == {t.number for t in study.best_trials} == {0, 1}  # trial 3 (−5 pts) is infeasible


def test_cli_report_status_best(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    _study(url)
    runner = CliRunner()
    result = runner.invoke(app, ["report", "pareto", "--storage", url, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "pareto.md").exists()
    status = runner.invoke(app, ["sweep", "status", "--storage", url])
    assert status.exit_code == 0 and "FAIL" in status.output and "boom" in status.output
    assert "hypervolume vs baseline: 1.2" in status.output
    best = runner.invoke(app, ["sweep", "best", "--storage", url, "--study", "rep"])
    assert best.exit_code == 0 and "Pareto trials of rep" in best.output
