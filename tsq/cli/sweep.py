"""`tsq sweep launch|status|best`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import optuna
import typer
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from tsq.cli.console import make_console
from tsq.spec import load_spec
from tsq.study.storage import load_study, scrub_argv
from tsq.tracking import TrackerKind

app = typer.Typer(
    help="Launch an Optuna study over α, ε, λ, η; see its state; list its Pareto trials.",
    no_args_is_help=True,
)

StudyOpt = Annotated[
    str | None, typer.Option("--study", help="study name (default: the spec's study.name, else its name)")
]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        envvar="TSQ_STORAGE",
        help="sqlite:///FILE.db (default $TSQ_HOME/studies.db), postgresql://USER:PW@HOST/DB, "
        "or journal:///FILE.log",
    ),
]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


@app.command()
def launch(
    spec: Annotated[Path, typer.Argument(help="sweep spec YAML (sweeps/*.yaml)")],
    study: StudyOpt = None,
    storage: StorageOpt = None,
    n_trials: Annotated[
        int | None,
        typer.Option(
            "--n-trials", min=1, help="target number of COMPLETE trials in the study (not 'n more')"
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="worker processes to run here")] = 1,
    tracker: Annotated[
        str, typer.Option("--tracker", help="wandb (offline unless logged in) or none")
    ] = "wandb",
    summary: Annotated[bool, typer.Option("--summary/--no-summary", hidden=True)] = True,
) -> None:
    """Create or resume the study and run trials until it holds n_trials complete ones."""
    from tsq.errors import UserError
    from tsq.study.launch import launch as run_launch

    scrub_argv(sys.argv)
    if tracker not in ("wandb", "none"):
        raise UserError(f"--tracker {tracker}: use wandb or none")
    kind: TrackerKind = "wandb" if tracker == "wandb" else "none"
    loaded = load_spec(spec)
    result, reports = run_launch(loaded, spec, storage, study, n_trials, workers, kind)
    for i, report in enumerate(reports):
        typer.echo(
            f"worker {i}: ran {report.ran} trials ({report.completed} complete, {report.failed} failed); "
            f"stopped: {report.stopped_reason}"
        )
    if summary:
        _summarise(result, loaded.study.wandb.project, loaded.study.wandb.entity, kind)
        _print_status(result)


def _summarise(study: optuna.Study, project: str, entity: str | None, kind: TrackerKind) -> None:
    """The launch's W&B summary run: Pareto table and plot (the report files land in the study's folder)."""
    from tsq.paths import tsq_home
    from tsq.report.pareto import METRIC_COLUMNS, study_hypervolume, study_table, write_report
    from tsq.tracking import Tracker

    table = study_table(study)
    if not table.rows:
        return
    files = write_report(study, tsq_home() / "studies" / study.study_name / "report")
    columns = ["trial", *table.param_names, *METRIC_COLUMNS, "pareto"]
    rows = [
        [
            r.number,
            *(r.params.get(p) for p in table.param_names),
            *(r.metrics.get(m) for m in METRIC_COLUMNS),
            r.pareto,
        ]
        for r in table.rows
    ]
    metrics = {
        "n_complete": len(table.rows),
        "n_pareto": sum(r.pareto for r in table.rows),
        "hypervolume_vs_baseline": study_hypervolume(study),
        **{f"baseline/{k}": v for k, v in table.baseline.items() if isinstance(v, int | float)},
    }
    Tracker(kind, study.study_name, project, entity).summary(columns, rows, metrics, files["pareto.png"])
    typer.echo(f"report: {files['pareto.md'].parent}")


def _trial_table(title: str, trials: list[FrozenTrial], study: optuna.Study, show_error: bool) -> Table:
    metrics = study.user_attrs.get("objectives") or [f"value{i}" for i in range(len(study.directions))]
    params = sorted({p for t in trials for p in t.params})
    table = Table(title=title)
    for col in ["#", "state", *params, *metrics] + (["error"] if show_error else []):
        table.add_column(col)
    for t in trials:
        values = list(t.values) if t.values else [None] * len(metrics)
        cells = [str(t.number), t.state.name, *(_fmt(t.params.get(p)) for p in params), *map(_fmt, values)]
        if show_error:
            cells.append(str(t.user_attrs.get("error", ""))[:80])
        table.add_row(*cells)
    return table


def _print_status(study: optuna.Study) -> None:
    from tsq.report.pareto import pareto_trials, study_hypervolume

    console = make_console()
    trials = study.get_trials(deepcopy=False)
    console.print(_trial_table(f"study {study.study_name}", trials, study, show_error=True))
    counts = {
        s.name: sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)
    }
    console.print("states: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    front = pareto_trials(study)
    console.print(f"Pareto front so far: trials {[t.number for t in front]}")
    hv = study_hypervolume(study)
    console.print("hypervolume vs baseline: " + ("n/a (no baseline yet)" if hv is None else f"{hv:.4g}"))


@app.command()
def status(study: StudyOpt = None, storage: StorageOpt = None) -> None:
    """Trial table (states, values, errors), the Pareto front so far, hypervolume vs the baseline."""
    scrub_argv(sys.argv)
    _print_status(load_study(storage, study))


@app.command()
def best(study: StudyOpt = None, storage: StorageOpt = None) -> None:
    """The Pareto-optimal trials (Optuna's study.best_trials) with their parameters."""
    from tsq.report.pareto import pareto_trials

    scrub_argv(sys.argv)
    loaded = load_study(storage, study)
    make_console().print(
        _trial_table(f"Pareto trials of {loaded.study_name}", pareto_trials(loaded), loaded, False)
    )
