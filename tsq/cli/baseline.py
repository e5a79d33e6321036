"""`tsq baseline SPEC`: the base model's metrics on the eval split (cached), as a table."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import typer
from rich.table import Table

from tsq.cache import Cache, cache_dir_of
from tsq.cli.console import make_console
from tsq.config.spec import Spec
from tsq.recipe import load_spec
from tsq.signals import sigterm_as_exit


def baseline(
    spec: Path = typer.Argument(..., help="sweep spec YAML"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the metrics to this JSON file"),
) -> None:
    """Evaluate the base model on the eval split (cached) and print the metrics table."""
    # deferred: keeps `tsq --help` fast
    from tsq.engines.evaluate import baseline as run_baseline
    from tsq.engines.generation import backend_from_spec
    from tsq.engines.models import resolve_model

    loaded = load_spec(spec)
    with sigterm_as_exit(), closing(backend_from_spec(loaded, resolve_model(loaded.model))) as backend:
        result = run_baseline(loaded, cache_for(loaded), backend=backend)
    console = make_console()
    console.print(metrics_table(result.summary, title=f"baseline · {loaded.name} · {loaded.model.path}"))
    console.print(f"CV of Len-A: {result.summary['len_cv']:.3f}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"spec": str(spec), "summary": result.summary}, indent=2) + "\n")
        console.print(f"wrote {json_out}")


def cache_for(spec: Spec) -> Cache:
    return Cache(cache_dir_of(spec.cache_dir))


def metrics_table(summary: dict, title: str) -> Table:
    """Overall and per-difficulty rows of a `tsq.method.metrics.summarize` result."""
    table = Table(title=title)
    for column in ("", "Acc", "Len-T", "Len-A", f"AUC@{summary['budget']}", "steps", "tokens/step", "n"):
        table.add_column(column, justify="left" if not column else "right")
    rows = [("all", summary)] + [(f"difficulty {k}", v) for k, v in summary["by_difficulty"].items()]
    for label, s in rows:
        table.add_row(
            label,
            f"{100 * s['accuracy']:.1f}%",
            _num(s["len_correct"], ".1f"),
            _num(s["len_all"], ".1f"),
            _num(s["auc"], ".3f"),
            _num(s["steps_per_response"], ".2f"),
            _num(s["tokens_per_step"], ".2f"),
            str(s["n_responses"]),
            end_section=label == "all",
        )
    return table


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)
