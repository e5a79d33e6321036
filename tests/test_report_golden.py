"""The rendered reports byte for byte: fixed synthetic studies, stored as tsq wrote them before its record
format had a version (format 1: bare user attrs), rendered to pareto.csv, pareto.md, `sweep status`,
`sweep best` and `report effects`, and compared with the renders in tests/fixtures/report_golden/, made by
the code before the record module and the report split (commit 33ef66e). The same study rewritten in the
current format (through `tsq.records`, as the runner writes it now) renders the same bytes. A refactor of the
reports must leave every byte as it was; a deliberate change of a report regenerates them with
`TSQ_UPDATE_GOLDEN=1 pytest tests/test_report_golden.py`."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from records_util import add_trial, make_study, noisy_records
from typer.testing import CliRunner

from tsq.cli.main import app
from tsq.records import FORMAT, FORMAT_ATTR, StudyRecord, TrialRecord

GOLDEN = Path(__file__).parent / "fixtures" / "report_golden"
BASELINE = {"accuracy": 0.6, "len_all": 60.0, "len_correct": 50.0, "auc": 0.30, "budget": 128,
            "accuracy_lo": 0.55, "accuracy_hi": 0.65, "len_all_lo": 57.0, "len_all_hi": 63.0}  # fmt: skip
# (alpha, accuracy, len_all): a crowded front, one trial off it, one stopped early (trial 6)
POINTS = [(0.60, 31.0), (0.59, 30.6), (0.61, 31.4), (0.585, 30.2), (0.62, 32.0), (0.55, 40.0), (0.50, 28.0)]
# fresh-seed replicates of trials 3 and 1 on the eval split, and of trial 3 on the held-out split (replicate
# 0: the picked adapter itself)
REPLICATES = [(3, 1, "eval", 0.57, 30.9), (3, 2, "eval", 0.565, 31.6), (3, 3, "eval", 0.555, 30.4),
              (1, 1, "eval", 0.59, 30.8), (1, 2, "eval", 0.595, 31.5), (3, 0, "test", 0.56, 30.0),
              (3, 1, "test", 0.55, 31.0), (3, 2, "test", 0.545, 31.2)]  # fmt: skip


def _records(path: Path, accuracy: float, length: float, seed: int) -> str:
    return noisy_records(path, accuracy, length, seed, steps=lambda i: 3 + i % 2)


def _metrics(acc: float, length: float) -> dict[str, float]:
    return {
        "accuracy": acc, "accuracy_lo": acc - 0.04, "accuracy_hi": acc + 0.04, "accuracy_se": 0.02,
        "len_all": length, "len_all_lo": length - 1.5, "len_all_hi": length + 1.5, "len_all_se": 0.75,
        "len_correct": length - 2, "auc": 0.3 + (60 - length) / 200, "tokens_per_step": length / 3.5,
        "token_reduction": 1 - length / 60, "token_reduction_lo": 0.95 - length / 60,
        "token_reduction_hi": 1.05 - length / 60, "accuracy_delta": acc - 0.6,
        "accuracy_delta_se": 0.035 / 1.96, "accuracy_delta_lo": acc - 0.635, "accuracy_delta_hi": acc - 0.565,
    }  # fmt: skip


def _trial(study: optuna.Study, alpha: float, acc: float, length: float, attrs: dict, stopped: bool) -> None:
    value = -(acc - 0.6) - 0.05
    study.add_trial(
        optuna.create_trial(
            params={"alpha": alpha, "variant": "b"},
            distributions={"alpha": FloatDistribution(0.0, 1.0), "variant": CategoricalDistribution(["b"])},
            values=[acc, length],
            user_attrs=attrs,
            system_attrs={"constraints": [max(value, 1e-9) if stopped else value]},
        )
    )


def format1_study(url: str, folder: Path) -> optuna.Study:
    """A study as tsq wrote it before its records had a version (each attr as the runner set it)."""
    study = optuna.create_study(study_name="golden", storage=url, directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "len_all"])
    study.set_user_attr("front", {"clear": 0.9, "possible": 0.1, "resamples": 300, "seed": 0})
    study.set_user_attr("effects", {"primary": [], "margins": {}})
    study.set_user_attr("constraint", {"max_accuracy_drop": 0.05})
    study.set_user_attr("objectives", ["accuracy", "len_all"])
    study.set_user_attr("searched", ["alpha"])
    study.set_user_attr("spec_name", "golden")
    study.set_user_attr("baseline", BASELINE)
    folder.mkdir(parents=True, exist_ok=True)
    base = _records(folder / "baseline.jsonl", 0.6, 60.0, 1)
    for number, (acc, length) in enumerate(POINTS):
        stopped = number == 6
        attrs = {
            **_metrics(acc, length),
            "records": _records(folder / f"t{number}.jsonl", acc, length, number + 2),
            "baseline_records": base,
            "baseline": BASELINE,
            "out_dir": str(folder / f"trial-{number}"),
            "worker_pid": 4242,
            "wandb_run_id": f"run{number}",
            "git_commit": "b01a9c6bfc1982cddc19db0c3a2ab856bb1fc3a8" if number < 5 else "5bd05a7-dirty",
            "versions": {"tsq": "0.1.0", "torch": "2.13.0+cpu"},
            "cache_keys": {"model": "5ab0238e8d2dd5a35d1a3a65b9e9e6f6"},
            **({"early_stop": {"stopped": True, "stage": 1}} if stopped else {}),
        }
        _trial(study, 0.1 + number / 10, acc, length, attrs, stopped)
    for k, (of, index, split, acc, length) in enumerate(REPLICATES):
        attrs = {
            **_metrics(acc, length),
            "auc": 0.3 + (60 - length) / 200 + 0.01 * (k % 3),  # not a linear function of Len-A
            "replicate_of": of,
            "replicate": index,
            "split": split,
            "replicate_seeds": {"training": 7919 * index, "evaluation": 7919 * index},
            "records": _records(folder / f"r{k}.jsonl", acc, length, 20 + k),
        }
        _trial(study, 0.1 + of / 10, acc, length, attrs, False)
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, user_attrs={"error": "TrialFailed: boom"}))
    return study


def current_format_study(url: str, old: optuna.Study) -> optuna.Study:
    """`old` read through the record module and written back as the runner writes records now."""
    study = make_study(url, StudyRecord.from_study(old), name=old.study_name, metric_names=old.metric_names)
    for t in old.trials:
        add_trial(study, TrialRecord.from_trial(t), *t.system_attrs.get("constraints", [None]))
    assert study.user_attrs[FORMAT_ATTR] == study.trials[0].user_attrs[FORMAT_ATTR] == FORMAT
    return study


def _renders(url: str, tmp_path: Path) -> dict[str, str]:
    runner = CliRunner()
    out: dict[str, str] = {}
    result = runner.invoke(app, ["report", "pareto", "--storage", url, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    for name in ("pareto.csv", "pareto.md"):
        out[name] = (tmp_path / "r" / name).read_text()
    for command in ("status", "best"):
        result = runner.invoke(app, ["sweep", command, "--storage", url], env={"COLUMNS": "220"})
        assert result.exit_code == 0, result.output
        out[f"{command}.txt"] = result.output
    result = runner.invoke(app, ["report", "effects", "--storage", url])
    assert result.exit_code == 0, result.output
    out["effects.md"] = result.output
    return out


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_reports_render_byte_for_byte_as_before(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'golden.db'}"
    old = format1_study(url, tmp_path / "runs")
    renders = _renders(url, tmp_path)
    if os.environ.get("TSQ_UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in renders.items():
            (GOLDEN / name).write_text(text)
    for name, text in renders.items():
        assert text == (GOLDEN / name).read_text(), name
    current = f"sqlite:///{tmp_path / 'current.db'}"
    current_format_study(current, old)
    assert _renders(current, tmp_path) == renders
