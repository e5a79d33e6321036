"""`tsq sweep launch|confirm|promote|status|best`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import optuna
import typer
from optuna.trial import TrialState
from rich.table import Table

from tsq.cli import check
from tsq.cli.console import make_console
from tsq.recipe import load_spec
from tsq.study.storage import load_study, scrub_argv
from tsq.study.tracking import TrackerKind

if TYPE_CHECKING:  # the report is imported where it is used: `tsq --help` stays fast
    from tsq.records import TrialRecord
    from tsq.report.data import StudyData
    from tsq.report.table import StudyTable

app = typer.Typer(
    help="Launch an Optuna study over α, ε, λ, η; see its state; list its Pareto trials.",
    no_args_is_help=True,
)
app.command("check")(check.check)

StudyOpt = Annotated[
    str | None,
    typer.Option(
        "--study",
        help="study name (default: the spec's study.name, else its name; with no spec given, the storage's "
        "only study)",
    ),
]
# Commands that read a study take its spec as an optional argument, so `--study` is rarely needed.
SpecArg = Annotated[
    Path | None, typer.Argument(help="the sweep spec the study was launched with (names the study)")
]


def study_of(spec: Path | None, study: str | None) -> str | None:
    """The study a reading command means: --study, else the spec's, else None (the storage's only one)."""
    if study is not None or spec is None:
        return study
    from tsq.study.lifecycle import study_name_of

    return study_name_of(load_spec(spec))


StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        envvar="TSQ_STORAGE",
        help="sqlite:///FILE.db (default $TSQ_HOME/studies.db), postgresql://USER:PW@HOST/DB, "
        "journal:///FILE.log, or grpc://HOST:PORT (`tsq storage proxy`)",
    ),
]


TrackerOpt = Annotated[
    TrackerKind, typer.Option("--tracker", help="wandb (offline unless logged in) or none")
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
    gpus_per_worker: Annotated[
        int | None,
        typer.Option(
            "--gpus-per-worker",
            min=0,
            max=1,
            help="GPUs per local worker: 1 gives each worker its own GPU from the visible set (honours "
            "CUDA_VISIBLE_DEVICES), 0 runs them on CPU. Default: 1 where GPUs are visible, else 0. "
            "One trial uses one GPU.",
        ),
    ] = None,
    tracker: TrackerOpt = "wandb",
    summary: Annotated[
        bool,
        typer.Option(
            "--summary/--no-summary",
            help="write the report and the W&B summary run at exit (--no-summary: e.g. for array tasks)",
        ),
    ] = True,
    no_early_stop: Annotated[
        bool,
        typer.Option(
            "--no-early-stop",
            help="evaluate every trial on the whole eval set, even one that a staged test already shows "
            "violating study.constraint (the early stop is on by default when a constraint is set)",
        ),
    ] = False,
) -> None:
    """Create or resume the study and run trials until it holds n_trials complete ones."""
    from tsq.study.launch import launch as run_launch

    scrub_argv(sys.argv)
    kind: TrackerKind = tracker
    loaded = load_spec(spec)
    if no_early_stop:
        loaded = loaded.model_copy(update={"study": loaded.study.model_copy(update={"early_stop": False})})
    result, reports = run_launch(loaded, spec, storage, study, n_trials, workers, kind, gpus_per_worker)
    for i, report in enumerate(reports):
        typer.echo(
            f"worker {i}: ran {report.ran} trials ({report.completed} complete, {report.failed} failed"
            + (f", {report.reclaimed} lost to a peer's stale check" if report.reclaimed else "")
            + (f", {report.surplus} ended as surplus beside a peer's" if report.surplus else "")
            + f"); stopped: {report.stopped_reason}"
        )
    if summary:
        table = _summarise(result, loaded.study.wandb.project, loaded.study.wandb.entity, kind, spec)
        _print_status(result, table, spec)


def _summarise(
    study: optuna.Study, project: str, entity: str | None, kind: TrackerKind, spec: Path
) -> StudyTable | None:
    """The launch's W&B summary run: the per-trial table (each trial's W&B run id, to join the trial runs
    with: feasibility, front membership, p_front, the recommendation), the recommendation section, and the
    plot (the report files land in the study's folder). Returns the study's table (None: no complete
    trial), computed once."""
    from tsq.paths import tsq_home
    from tsq.report.advice import feasible_cell, recommendation_lines
    from tsq.report.data import study_data
    from tsq.report.pareto import estimate_columns, write_report
    from tsq.report.table import table_hypervolume, table_of
    from tsq.study.tracking import Tracker

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None  # nothing to report yet (every trial failed): the status table says why
    out = tsq_home() / "studies" / study.study_name / "report"
    data = study_data(study)
    table = table_of(data, records_dir=out / "records")
    files = write_report(study, out, table=table, spec=str(spec))
    run_ids = {t.number: t.wandb_run_id for t in data.trials}
    rec = table.recommendation
    pick = None if rec is None else rec.pick
    tied = [] if rec is None else rec.tied
    names = estimate_columns()
    columns = ["trial", "wandb_run_id", *table.param_names, *names, "feasible", "pareto", "p_front", "front",
               "recommended"]  # fmt: skip
    rows = [
        [r.number, run_ids.get(r.number), *(r.params.get(p) for p in table.param_names),
         *(r.metrics.get(m) for m in names), feasible_cell(table, r), r.pareto, r.p_front, r.front,
         "recommended" if r.number == pick else "not separable from it" if r.number in tied else ""]
        for r in table.rows
    ]  # fmt: skip
    metrics = {
        "n_complete": len(table.rows),
        "n_pareto": sum(r.pareto for r in table.rows),
        "hypervolume_vs_baseline": table_hypervolume(table),
        "recommended/trial": pick,
        "recommended/run_id": run_ids.get(pick) if pick is not None else None,
        "recommended/not_separable": tied,
        "recommendation": "\n".join(recommendation_lines(table, str(spec))),
        **{
            f"recommended/{k}": v
            for k, v in (table.rows_by_number[pick].params if pick is not None else {}).items()
        },
        **{f"importance/{o}/{k}": v for o, shares in table.importances.items() for k, v in shares.items()},
        **{f"baseline/{k}": v for k, v in table.baseline.items() if isinstance(v, int | float)},
    }
    Tracker(kind, study.study_name, project, entity).summary(columns, rows, metrics, files["pareto.png"])
    typer.echo(f"report: {files['pareto.md'].parent}")
    return table


def _trial_table(
    title: str, trials: list[TrialRecord], data: StudyData, show_error: bool, p_front: dict[int, Any]
) -> Table:
    from tsq.method.metrics import METRICS, distinct_decimals

    metrics = data.record.objectives or [f"value{i}" for i in range(len(data.directions))]
    params = sorted({p for t in trials for p in t.params})
    # enough decimals that two trials apart print apart (tokens per step 8.62 and 8.57 both read "8.6")
    decimals = {
        m: distinct_decimals(m, [t.values[i] for t in trials if t.values]) if m in METRICS else None
        for i, m in enumerate(metrics)
    }
    table = Table(title=title)
    for col in ["#", "state", *params, *metrics, "p_front"] + (["error"] if show_error else []):
        table.add_column(col)
    for t in trials:
        if t.values:
            values = [_estimate(t, m, v, decimals.get(m)) for m, v in zip(metrics, t.values, strict=False)]
        else:
            values = [""] * len(metrics)
        cells = [str(t.number), t.state.name, *(_fmt(t.params.get(p)) for p in params), *values]
        cells.append(_fmt(p_front.get(t.number)))
        if show_error:
            cells.append((t.error or "")[:80])
        table.add_row(*cells)
    return table


def _estimate(trial: TrialRecord, name: str, value: float, decimals: int | None) -> str:
    from tsq.method.metrics import METRICS, format_estimate

    if name not in METRICS:
        return _fmt(value)
    return format_estimate(name, value, trial.interval(name, "lo"), trial.interval(name, "hi"), decimals)


def _print_status(study: optuna.Study, table: StudyTable | None = None, spec: Path | None = None) -> None:
    from tsq.method.stats import FRONT_CLASS_LABELS
    from tsq.report.advice import recommendation_lines
    from tsq.report.data import study_data
    from tsq.report.fidelity import fidelity_check
    from tsq.report.sections import fidelity_lines, importance_markdown, spread_lines
    from tsq.report.table import front_trials, table_hypervolume, table_of

    console = make_console()
    data = study_data(study)
    trials = list(data.trials)
    table = table or table_of(data)
    p_front = {r.number: r.p_front for r in table.rows}
    console.print(_trial_table(f"study {study.study_name}", trials, data, True, p_front))
    counts = {
        s.name: sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)
    }
    console.print("states: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    front = front_trials(data)
    console.print(f"Pareto front so far: trials {[t.number for t in front]}")
    for cls in ("clear", "indistinguishable"):
        members = [r.number for r in table.rows if r.front == cls]
        console.print(f"{FRONT_CLASS_LABELS[cls]} (p_front): trials {members}")
    for line in spread_lines(table):
        console.print(f"front spread in {line}")
    for note in table.notes:
        console.print(f"note: {note}")
    hv = table_hypervolume(table)
    console.print("hypervolume vs baseline: " + ("n/a (no baseline yet)" if hv is None else f"{hv:.4g}"))
    if table.importances:
        console.print("importance (PED-ANOVA) per objective:")
        console.print("\n".join(importance_markdown(table.importances, table.importance_warning,
                                                     table.importance_stability)))  # fmt: skip
    console.print("what to train with:")
    for line in recommendation_lines(table, None if spec is None else str(spec)):
        console.print(line.replace("**", ""), markup=False, highlight=False)
    fidelity = fidelity_check(data, table)
    for line in fidelity_lines(fidelity) if fidelity is not None else []:
        console.print(line.replace("**", ""), markup=False, highlight=False)


@app.command()
def confirm(
    spec: Annotated[Path, typer.Argument(help="the sweep spec the study was launched with")],
    study: StudyOpt = None,
    storage: StorageOpt = None,
    top: Annotated[
        int | None,
        typer.Option("--top", min=1, help="the K trials with the highest p_front (default: the front)"),
    ] = None,
    replicates: Annotated[int, typer.Option("--replicates", min=1, help="new seeds per trial")] = 3,
    split: Annotated[
        Literal["eval", "test"],
        typer.Option("--split", help="eval: the sweep's split; test: the spec's held-out data.test"),
    ] = "eval",
    tracker: TrackerOpt = "wandb",
) -> None:
    """Re-run the front with new training and evaluation seeds, to measure seed noise and the winner's curse.

    Replicates are trials of the same study (user attr replicate_of), do not count toward n_trials and never
    enter the front on their own; the report aggregates them under their original. With --split test they are
    evaluated on data.test, which the sweep never saw, next to what the sweep measured.
    """
    from tsq.paths import tsq_home
    from tsq.report.pareto import write_report
    from tsq.study.confirm import confirm as run_confirm

    scrub_argv(sys.argv)
    loaded = load_spec(spec)
    result, wanted = run_confirm(loaded, storage, study, top, replicates, split, tracker)
    trials = sorted({r.of for r in wanted})
    typer.echo(f"confirmed trials {trials}: {len(wanted)} replicates on the {split} split")
    files = write_report(result, tsq_home() / "studies" / result.study_name / "report", spec=str(spec))
    typer.echo(f"report: {files['pareto.md']}")


@app.command()
def promote(
    spec: Annotated[
        Path, typer.Argument(help="the sweep spec the study was launched with (its study.promote)")
    ],
    study: StudyOpt = None,
    storage: StorageOpt = None,
    top: Annotated[
        int | None,
        typer.Option("--top", min=1, help="the K trials with the highest p_front (default: the whole front)"),
    ] = None,
    controls: Annotated[
        int,
        typer.Option("--controls", min=0, help="trials off the front, drawn at random (seeded), re-run too"),
    ] = 3,
    replicates: Annotated[
        int, typer.Option("--replicates", min=1, help="fresh seeds per point (2 or more: the noise ceiling)")
    ] = 2,
    split: Annotated[
        Literal["eval", "test"],
        typer.Option("--split", help="eval: the sweep's split; test: the spec's held-out data.test"),
    ] = "eval",
    seed: Annotated[int, typer.Option("--seed", help="seed of the controls' draw")] = 0,
    tracker: TrackerOpt = "wandb",
) -> None:
    """Re-run the front, the recommended trial and M controls at the full fidelity of study.promote.

    The promoted runs are trials of the same study linked to their originals (user attr replicate_of, with
    replicate_fidelity: the overlay), never counted as sweep trials; an interrupted promotion resumes when run
    again. The report's section "At full fidelity" says whether the reduced sweep's answer holds.
    """
    from tsq.paths import tsq_home
    from tsq.report.pareto import write_report
    from tsq.study.promote import promote as run_promote

    scrub_argv(sys.argv)
    loaded = load_spec(spec)
    result, roles, wanted = run_promote(
        loaded, str(spec), storage, study, top, controls, replicates, split, seed, tracker
    )
    described = ", ".join(f"{role} {numbers}" for role, numbers in roles.items() if numbers)
    typer.echo(
        f"promoted trials ({described}): {len(wanted)} runs at study.promote's fidelity, {split} split"
    )
    files = write_report(result, tsq_home() / "studies" / result.study_name / "report", spec=str(spec))
    typer.echo(f"report: {files['pareto.md']}")


@app.command()
def status(spec: SpecArg = None, study: StudyOpt = None, storage: StorageOpt = None) -> None:
    """Trial table (states, values, errors), the Pareto front so far, hypervolume vs the baseline."""
    scrub_argv(sys.argv)
    _print_status(load_study(storage, study_of(spec, study)), spec=spec)


@app.command()
def best(spec: SpecArg = None, study: StudyOpt = None, storage: StorageOpt = None) -> None:
    """The Pareto-optimal trials (Optuna's study.best_trials) with their parameters."""
    from tsq.report.data import study_data
    from tsq.report.table import front_trials, table_of

    scrub_argv(sys.argv)
    data = study_data(load_study(storage, study_of(spec, study)))
    p_front = {r.number: r.p_front for r in table_of(data).rows}
    make_console().print(
        _trial_table(f"Pareto trials of {data.name}", front_trials(data), data, False, p_front)
    )
