"""`tsq trial run SPEC [--set NAME=VALUE ...]`: one trial of the spec's recipe, no study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError
from rich.table import Table

from tsq.cli.baseline import cache_for
from tsq.cli.console import make_console
from tsq.config.knobs import spec_value
from tsq.config.space import outside
from tsq.config.spec import Spec
from tsq.errors import TrialFailed, UserError
from tsq.method.metrics import axis_label, format_estimate, interval_key
from tsq.recipe import load_spec
from tsq.signals import sigterm_as_exit

app = typer.Typer(help="Run one trial of a spec's recipe without a study.", no_args_is_help=True)


@app.command("run")
def run(
    spec: Path = typer.Argument(..., help="sweep spec YAML (model, data, stage settings)"),
    settings: list[str] = typer.Option(
        [],
        "--set",
        "-s",
        help="a knob of the spec's recipe at a value, NAME=VALUE, repeatable (TokenSqueeze: alpha, epsilon, "
        "lambda, eta, beta, lr, ...; default: the spec's own values)",
    ),
    out: Path = typer.Option(Path("runs/trial"), "--out", help="folder for metrics.json and adapter/"),
) -> None:
    """Run the spec's recipe (study.program; default: the reduced TokenSqueeze pipeline) once and print a
    paper-style table against the baseline, e.g. `tsq trial run sweeps/quickstart.yaml -s alpha=0.5 -s
    eta=0.3`.

    TokenSqueeze caches the stages whose inputs do not depend on its knobs (self-samples, step candidates with
    their KL, reference log-probs, the baseline), so a second trial costs one training run plus one
    evaluation.
    """
    from tsq.recipe import TrialContext, recipe_of, scope_of  # deferred: keeps `tsq --help` fast
    from tsq.study.params import apply_params

    loaded = load_spec(spec)
    given = dict(_setting(loaded, text) for text in settings)
    try:
        trial_spec = apply_params(loaded, given)
    except ValidationError as err:  # the spec's own values were validated with it: a --set is bad
        first = err.errors()[0]
        loc = tuple(map(str, first["loc"]))
        name = next((n for n in given if _path(loaded, n) == loc[: len(_path(loaded, n))]), ".".join(loc))
        raise UserError(f"--set {name}={given.get(name, first['input'])}: {first['msg']}") from None
    for name, value in given.items():
        entry = loaded.study.search.get(name)
        if entry is not None and (why := outside(entry, value)):
            typer.echo(
                f"warning: {name} {value} is {why}, the spec's search range (study.search.{name}): a sweep "
                "of this spec never runs it",
                err=True,
            )
    recipe = recipe_of(loaded)
    # the spec's search space is the scope, so the trial shares study-wide cache entries with its sweeps
    ctx = TrialContext(cache=cache_for(loaded), out_dir=out, scope=scope_of(loaded.study))
    existed = _paths(out)
    try:
        with sigterm_as_exit():
            result = recipe.run(trial_spec, ctx)
    except TrialFailed as err:  # a result, not a crash: the reason, no traceback
        typer.echo(f"trial failed: {err} (tsq sweep check {spec} tells what it can beforehand)", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # Ctrl-C: say what stopped, and leave no empty folders behind
        left = _tidy(out, existed)
        knobs = ", ".join(f"{k}={_fmt(v)}" for k, v in _point(trial_spec, given).items())
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
    console.print(
        "intervals: 95%, bootstrap over eval problems (changes paired with the baseline); an interval that "
        "contains 0 is no measurable effect" + "".join(f" · {line}" for line in _stats_lines(result.stats))
    )
    console.print(f"wrote {out / 'metrics.json'}, {result.records} and {result.adapter_dir}")


def _setting(spec: Spec, text: str) -> tuple[str, Any]:
    """`NAME=VALUE` of `--set`: a knob of the spec's recipe and its value (YAML: 0.5, 4, on, dpo)."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise UserError(f"--set {text}: write NAME=VALUE, e.g. --set alpha=0.5")
    if type(spec).knob(name) is None:
        known = ", ".join(type(spec).knobs)
        raise UserError(f"--set {text}: {name} is not a knob of {spec.study.program} (one of: {known})")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return name, value


def _point(spec: Spec, given: dict[str, Any]) -> dict[str, Any]:
    """The trial's point: each knob the spec's study searches (in its order), then any other one set."""
    names = dict.fromkeys([*spec.study.search, *given])
    return {name: spec_value(spec, knob) for name in names if (knob := type(spec).knob(name)) is not None}


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _path(spec: Spec, name: str) -> tuple[str, ...]:
    knob = type(spec).knob(name)
    return () if knob is None else knob.path


def _stats_lines(stats: dict[str, Any]) -> list[str]:
    """What a TokenSqueeze-like trial says of its pairs and training steps, where it says it."""
    lines = []
    if "pairs" in stats:
        lines.append(f"{stats['pairs']} pairs")
    if "steps" in stats.get("training", {}):
        lines.append(f"training steps {stats['training']['steps']}")
    return lines


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
    table = Table(title=f"trial ({label}) vs baseline")
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
    lo, hi = values.get(interval_key(name, "lo")), values.get(interval_key(name, "hi"))
    return format_estimate(name, values.get(name), lo, hi)
