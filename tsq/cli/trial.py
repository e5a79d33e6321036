"""`tsq trial run SPEC --alpha A --epsilon E --lambda L --eta H`: one trial, no study."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError
from rich.table import Table

from tsq.cli.baseline import cache_for
from tsq.cli.console import make_console
from tsq.config.space import outside
from tsq.config.spec import TrialParams, load_spec
from tsq.errors import TrialFailed, UserError
from tsq.method.metrics import axis_label, format_estimate
from tsq.signals import sigterm_as_exit

app = typer.Typer(help="Run one TokenSqueeze trial without a study.", no_args_is_help=True)


@app.command("run")
def run(
    spec: Path = typer.Argument(..., help="sweep spec YAML (model, data, stage settings)"),
    alpha: float | None = typer.Option(None, "--alpha", help="α, selection depth (default: spec params)"),
    epsilon: float | None = typer.Option(None, "--epsilon", help="ε, KL threshold of step refinement"),
    lam: float | None = typer.Option(None, "--lambda", help="λ, length margin of DPO-L"),
    eta: float | None = typer.Option(None, "--eta", help="η, weight of the SFT term"),
    out: Path = typer.Option(Path("runs/trial"), "--out", help="folder for metrics.json and adapter/"),
) -> None:
    """Run the spec's trial program (study.program; default: the reduced TokenSqueeze pipeline) once and
    print a paper-style table against the baseline.

    Stages whose inputs do not depend on α, ε, λ, η (self-samples, step candidates with their KL,
    reference log-probs, the baseline) are cached, so a second trial costs one training run plus one
    evaluation.
    """
    from tsq.recipe import TrialContext, load_program, scope_of  # deferred: keeps `tsq --help` fast

    loaded = load_spec(spec)
    given = {"alpha": alpha, "epsilon": epsilon, "lambda": lam, "eta": eta}
    try:
        params = TrialParams.model_validate(
            {**loaded.params.model_dump(by_alias=True), **{k: v for k, v in given.items() if v is not None}}
        )
    except ValidationError as err:  # the spec's own params were validated with it: an option is bad
        first = err.errors()[0]
        raise UserError(f"--{first['loc'][0]} {first['input']}: {first['msg']}") from None
    for name, value in params.model_dump(by_alias=True).items():
        entry = loaded.study.search.get(name)
        if entry is not None and (why := outside(entry, value)):
            typer.echo(
                f"warning: {name} {value:g} is {why}, the spec's search range (study.search.{name}): a sweep "
                "of this spec never runs it",
                err=True,
            )
    program = load_program(loaded.study.program)
    # the spec's search space is the scope, so the trial shares study-wide cache entries with its sweeps
    ctx = TrialContext(cache=cache_for(loaded), out_dir=out, scope=scope_of(loaded.study))
    existed = _paths(out)
    try:
        with sigterm_as_exit():
            result = program(loaded, params, ctx)
    except TrialFailed as err:  # a result, not a crash: the reason, no traceback
        typer.echo(f"trial failed: {err} (tsq sweep check {spec} tells what it can beforehand)", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # Ctrl-C: say what stopped, and leave no empty folders behind
        left = _tidy(out, existed)
        knobs = ", ".join(f"{k}={v:g}" for k, v in params.model_dump(by_alias=True).items())
        typer.echo(
            f"interrupted: the trial of {spec} ({knobs}) stopped before it finished; nothing was recorded "
            f"(no {out / 'metrics.json'})"
            + (f"; left in {out} by the interrupted run: {', '.join(left)}" if left else "")
            + "; finished cache stages are kept, so a rerun starts after them",
            err=True,
        )
        raise typer.Exit(130) from None
    console = make_console()
    console.print(comparison_table(result.baseline, result.metrics, result.params))
    r = result.stats
    console.print(
        "intervals: 95%, bootstrap over eval problems (changes paired with the baseline); an interval that "
        f"contains 0 is no measurable effect · {r['pairs']} pairs · training steps {r['training']['steps']}"
    )
    console.print(f"wrote {out / 'metrics.json'}, {result.records} and {result.adapter_dir}")


def _paths(root: Path) -> set[Path]:
    return {root, *root.rglob("*")} if root.is_dir() else set()


def _tidy(root: Path, existed: set[Path]) -> list[str]:
    """Remove the empty folders under `root` (itself included) that the run made; returns what else it left
    directly in `root` (e.g. an adapter trained before the interrupt)."""
    made = sorted((p for p in _paths(root) - existed if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for folder in made:
        if not any(folder.iterdir()):
            folder.rmdir()
    new = [p for p in root.iterdir() if p not in existed] if root.is_dir() else []
    return sorted(p.name + ("/" if p.is_dir() else "") for p in new)


# The absolute metrics the table shows, and the relative metric that is each one's change
ROWS = {
    "accuracy": "accuracy_delta",
    "len_correct": "len_correct_reduction",
    "len_all": "token_reduction",
    "auc": "auc_delta",
    "steps_per_response": None,
    "tokens_per_step": None,
}


def comparison_table(base: dict, new: dict, params: dict[str, float]) -> Table:
    label = ", ".join(f"{k}={v:g}" for k, v in params.items())
    table = Table(title=f"TokenSqueeze trial ({label}) vs baseline")
    for column in ("metric", "baseline", "trial", "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, change in ROWS.items():
        table.add_row(
            axis_label(name, base.get("budget")),
            _estimate(base, name),
            _estimate(new, name),
            "" if change is None else f"{_estimate(new, change)} ({axis_label(change)})",
        )
    return table


def _estimate(values: dict, name: str) -> str:
    return format_estimate(name, values.get(name), values.get(f"{name}_lo"), values.get(f"{name}_hi"))
