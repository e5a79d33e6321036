"""`tsq trial run SPEC --alpha A --epsilon E --lambda L --eta H`: one trial, no study."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from tsq.cli.baseline import cache_for
from tsq.cli.console import make_console
from tsq.signals import sigterm_as_exit
from tsq.spec import TrialParams, load_spec

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
    from tsq.program import TrialContext, load_program, scope_of  # deferred: keeps `tsq --help` fast

    loaded = load_spec(spec)
    given = {"alpha": alpha, "epsilon": epsilon, "lambda": lam, "eta": eta}
    params = TrialParams.model_validate(
        {**loaded.params.model_dump(by_alias=True), **{k: v for k, v in given.items() if v is not None}}
    )
    program = load_program(loaded.study.program)
    # the spec's search space is the scope, so the trial shares study-wide cache entries with its sweeps
    ctx = TrialContext(cache=cache_for(loaded), out_dir=out, scope=scope_of(loaded.study))
    with sigterm_as_exit():
        result = program(loaded, params, ctx)
    console = make_console()
    console.print(comparison_table(result.baseline, result.metrics, result.params))
    m, r = result.metrics, result.stats
    console.print(
        f"accuracy delta {100 * m['accuracy_delta']:+.1f} points "
        f"(95% CI {100 * m['accuracy_delta_lo']:+.1f} … {100 * m['accuracy_delta_hi']:+.1f}, "
        "paired bootstrap)"
        f" · {r['pairs']} pairs · training steps {r['training']['steps']}"
    )
    console.print(f"wrote {out / 'metrics.json'} and {result.adapter_dir}")


def comparison_table(base: dict, new: dict, params: dict[str, float]) -> Table:
    label = ", ".join(f"{k}={v:g}" for k, v in params.items())
    table = Table(title=f"TokenSqueeze trial ({label}) vs baseline")
    for column in ("", "Acc", "Len-T", "Len-A", f"AUC@{base['budget']}", "steps", "tokens/step"):
        table.add_column(column, justify="left" if not column else "right")
    keys = ("accuracy", "len_correct", "len_all", "auc", "steps_per_response", "tokens_per_step")
    table.add_row("baseline", *(_fmt(k, base[k]) for k in keys))
    table.add_row("trial", *(_fmt(k, new[k]) for k in keys))
    table.add_row("change", *(_change(k, base[k], new[k]) for k in keys))
    return table


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if key == "accuracy" else f"{value:.3f}" if key == "auc" else f"{value:.1f}"


def _change(key: str, before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "–"
    if key in ("accuracy", "auc"):
        return f"{100 * (after - before):+.1f} pts"
    return f"{100 * (after / before - 1):+.1f}%" if before else "–"
