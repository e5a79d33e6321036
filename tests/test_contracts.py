"""Every shipped spec and every registry entry, through the commands a user runs.

- Each spec in sweeps/ validates and its default point builds a valid trial spec.
- Every categorical knob, searched with `enqueue_defaults`, runs the real program at smoke size through
  launch, status, best and report pareto, with the default point as trial 0 (slow).
- Every objective metric of the registry, as an objective, goes through launch, status, best and report with a
  synthetic program (tests/programs.py): the runner and the report are what is under test there.
- Local workers get disjoint GPUs from the visible set.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import get_args

import optuna
import pytest
import yaml
from programs import env_with_tests_on_path, synthetic_spec
from typer.testing import CliRunner

from objectives.tokensqueeze.config import KNOBS
from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from tsq.cli.main import app
from tsq.devices import gpu_assignment, visible_gpus
from tsq.errors import UserError
from tsq.method.losses import LOSSES
from tsq.method.metrics import objective_metric_names
from tsq.method.refinement import CANDIDATE_FILTERS, CandidateFilter
from tsq.method.select import SELECTION_VARIANTS
from tsq.recipe import load_spec
from tsq.study.params import apply_params, default_point

REPO = Path(__file__).resolve().parents[1]
# every spec the repository ships: the sweeps, and the specs of diagnostics and of the search benchmark
SPECS = sorted(
    [
        *(REPO / "sweeps").glob("*.yaml"),
        *(REPO / "diagnostics").glob("*.yaml"),
        *(REPO / "benchmarks").rglob("*.yaml"),
    ]
)
SMOKE = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
TSQ = [sys.executable, "-m", "tsq"]


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_validates_and_its_default_point_builds(path: Path) -> None:
    spec = load_spec(path)
    point = default_point(spec)  # None: the paper's point lies outside the space, and is not enqueued
    if point is not None:
        trial_spec = apply_params(spec, {**spec.study.fixed, **point})
        for name, value in point.items():  # the point lands where the recipe's knob says
            knob = type(spec).knob(name)
            assert knob is not None
            got = trial_spec
            for key in knob.path:
                got = getattr(got, key)
            assert got == knob.to_spec(value)


def test_registries_are_the_spec_s_vocabulary() -> None:
    assert set(Spec.model_fields["selection"].annotation.model_fields["variant"].annotation.__args__) == set(
        SELECTION_VARIANTS
    )
    assert set(Spec.model_fields["training"].annotation.model_fields["loss"].annotation.__args__) == set(
        LOSSES
    )
    assert set(get_args(CandidateFilter)) == set(CANDIDATE_FILTERS)
    for knob in KNOBS.values():  # every knob's path exists in the spec
        section = Spec()
        for key in knob.path:
            section = getattr(section, key)
    from tsq.engines.tiny_model import TINY_BUILDS

    assert set(TINY_BUILDS) == set(
        Spec.model_fields["model"].annotation.model_fields["tiny_variant"].annotation.__args__
    )


def _run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TSQ, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _commands(spec_path: Path, url: str, study: str, tmp: Path) -> list[tuple[str, ...]]:
    return [
        ("sweep", "launch", str(spec_path), "--storage", url, "--study", study, "--tracker", "none"),
        ("sweep", "status", "--storage", url, "--study", study),
        ("sweep", "best", "--storage", url, "--study", study),
        ("report", "pareto", "--storage", url, "--study", study, "--out", str(tmp / "report")),
    ]


def _user_commands(spec_path: Path, url: str, study: str, tmp: Path, env: dict[str, str]) -> optuna.Study:
    """The commands as a user runs them: each a `tsq` process."""
    for args in _commands(spec_path, url, study, tmp):
        proc = _run(*args, cwd=tmp, env=env)
        assert proc.returncode == 0, f"{args[:2]}: {proc.stderr[-3000:]}"
    assert {p.name for p in (tmp / "report").iterdir()} >= {
        "pareto.csv",
        "pareto.md",
        "pareto.html",
        "pareto.png",
    }
    return optuna.load_study(study_name=study, storage=url)


@pytest.mark.slow
def test_every_categorical_knob_runs_the_real_program_with_the_default_point_first(
    tsq_home: Path, tmp_path: Path
) -> None:
    categorical = {name: k for name, k in KNOBS.items() if k.kind == "categorical"}
    choices = {
        "selection_variant": ["q-dyn", "shortest"],
        "refinement": ["on", "off"],
        "loss": ["dpo", "dpo-l+sft"],
    }
    assert set(categorical) == set(choices), "a new categorical knob needs choices here"
    spec = {**SMOKE, "name": "cats"}
    spec["study"] = {
        **SMOKE["study"],
        "search": {
            **SMOKE["study"]["search"],
            **{n: {"type": "categorical", "choices": c} for n, c in choices.items()},
        },
        # the objective pair of the refinement ablation spec, which crashed the report
        "objectives": [{"metric": "accuracy"}, {"metric": "tokens_per_step"}],
        "enqueue_defaults": True,
    }
    path = tmp_path / "cats.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**env_with_tests_on_path(), "TSQ_HOME": str(tsq_home), "TSQ_NO_PROGRESS": "1"}
    study = _user_commands(path, f"sqlite:///{tmp_path / 'c.db'}", "cats", tmp_path, env)
    first = study.trials[0]
    assert first.params == default_point(load_spec(path))
    assert {first.params[n] for n in choices} == {"q-dyn", "on", "dpo-l+sft"}
    assert study.metric_names == ["accuracy", "tokens_per_step"]


@pytest.mark.parametrize("name", objective_metric_names())
def test_every_objective_metric_goes_through_launch_status_best_and_report(
    name: str, tmp_path: Path, tsq_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objectives = [{"metric": "accuracy"}, {"metric": name}] if name != "accuracy" else [{"metric": name}]
    path = synthetic_spec(
        tmp_path / "m.yaml", "m", 3, objectives=objectives, constraint={"max_accuracy_drop": 0.1}
    )
    monkeypatch.setenv("TSQ_HOME", str(tsq_home))
    monkeypatch.setenv("TSQ_NO_PROGRESS", "1")
    url = f"sqlite:///{tmp_path / 'm.db'}"
    for args in _commands(path, url, "m", tmp_path):  # in-process: the synthetic trials take no time
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == 0, f"{args[:2]}: {result.output}\n{result.exception!r}"
    study = optuna.load_study(study_name="m", storage=url)
    assert study.metric_names == [o["metric"] for o in objectives]
    rows = list(csv.DictReader((tmp_path / "report" / "pareto.csv").open()))
    assert len(rows) == 3 and all(r["p_front"] != "" for r in rows)
    assert all(r[f"{name}_lo"] != "" and r[f"{name}_hi"] != "" for r in rows)  # every metric's interval
    assert (tmp_path / "report" / "records" / "baseline.jsonl").is_file()


def test_gpu_assignment_gives_each_worker_its_own_device() -> None:
    assert gpu_assignment(2, None, ["3", "5"]) == ["3", "5"]
    assert gpu_assignment(2, None, []) == [None, None]  # no GPU: CPU workers
    assert gpu_assignment(2, 0, ["3", "5"]) == ["", ""]  # CPU workers on a GPU node: every GPU hidden
    with pytest.raises(UserError, match="no GPU is visible"):
        gpu_assignment(1, 1, [])
    with pytest.raises(UserError, match="only 2 GPU"):
        gpu_assignment(3, 1, ["3", "5"])
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "3,5"}) == ["3", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


@pytest.mark.slow
def test_spawned_workers_report_disjoint_visible_devices(tmp_path: Path, tsq_home: Path) -> None:
    path = synthetic_spec(tmp_path / "g.yaml", "g", 4, search={"alpha": {"low": 0.05, "high": 0.5}})
    env = {
        **env_with_tests_on_path(),
        "TSQ_HOME": str(tsq_home),
        "TSQ_NO_PROGRESS": "1",
        "CUDA_VISIBLE_DEVICES": "3,5",  # the visible set, as Slurm would set it (no real GPU is touched)
        # each worker's trials wait until both workers run one: whether both take trials must not depend on
        # how fast a spawned worker starts on a loaded machine (a fixed 1.5 s per trial was not always enough)
        "TSQ_TEST_BARRIER": f"{tmp_path / 'barrier'}:2",
    }
    (tmp_path / "barrier").mkdir()
    url = f"sqlite:///{tmp_path / 'g.db'}"
    proc = _run("sweep", "launch", str(path), "--storage", url, "--workers", "2", "--tracker", "none",
                cwd=tmp_path, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = optuna.load_study(study_name="g", storage=url).get_trials()
    by_worker: dict[int, set[str]] = {}
    for t in trials:
        by_worker.setdefault(t.user_attrs["worker_pid"], set()).add(
            t.user_attrs["stats"]["cuda_visible_devices"]
        )
    assert len(by_worker) == 2, "both workers ran trials"
    assert all(len(devices) == 1 for devices in by_worker.values())  # one device per worker, every trial
    assert set.union(*by_worker.values()) == {"3", "5"}  # disjoint: each worker its own
