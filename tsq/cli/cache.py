"""`tsq cache ls|clear`: what the content-addressed cache holds, per stage, and removing it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from tsq.cache import Cache
from tsq.cli.console import make_console
from tsq.paths import default_cache_dir

app = typer.Typer(
    help="Warm, inspect or clear the stage cache (samples, step candidates, reference log-probs).",
    no_args_is_help=True,
)

_CACHE_DIR = typer.Option(None, "--cache-dir", help="cache root (default: $TSQ_HOME/cache)")
_STAGE = typer.Option(None, "--stage", help="only this stage")


def _cache(cache_dir: Path | None) -> Cache:
    return Cache(cache_dir if cache_dir is not None else default_cache_dir())


@app.command("warm")
def warm(spec: Path = typer.Argument(..., help="sweep spec YAML")) -> None:
    """Fill the cache with every stage the spec's trials share, before any trial: the baseline, the
    self-samples, the step candidates and the reference pass. Safe to run from many workers at once: one
    lock per spec makes the others wait and then read what the first computed."""
    import tempfile

    from tsq.cache import cache_dir_of
    from tsq.recipe import TrialContext, load_spec, recipe_of, scope_of
    from tsq.signals import sigterm_as_exit

    loaded = load_spec(spec)
    recipe = recipe_of(loaded)
    with tempfile.TemporaryDirectory(prefix="tsq-warm-") as work, sigterm_as_exit():
        ctx = TrialContext(
            cache=Cache(cache_dir_of(loaded.cache_dir)), out_dir=Path(work), scope=scope_of(loaded.study)
        )
        summary = recipe.warm(loaded, ctx)
    table = Table(title=f"cache warmed for {spec}")
    for column in ("stage", "hits", "misses"):
        table.add_column(column)
    for stage, counts in sorted(summary.get("cache", {}).items()):
        table.add_row(stage, str(counts.get("hits", 0)), str(counts.get("misses", 0)))
    make_console().print(table)


@app.command("ls")
def ls(stage: str | None = _STAGE, cache_dir: Path | None = _CACHE_DIR) -> None:
    """Entries and size per stage."""
    cache = _cache(cache_dir)
    totals: dict[str, list[int]] = {}
    for entry in cache.entries(stage):
        count_size = totals.setdefault(entry.stage, [0, 0])
        count_size[0] += 1
        count_size[1] += entry.size
    table = Table(title=f"cache {cache.root}")
    table.add_column("stage")
    table.add_column("entries", justify="right")
    table.add_column("size", justify="right")
    for name, (count, size) in sorted(totals.items()):
        table.add_row(name, str(count), human_size(size))
    if len(totals) > 1:
        table.add_row(
            "total",
            str(sum(c for c, _ in totals.values())),
            human_size(sum(s for _, s in totals.values())),
            end_section=True,
        )
    if totals:
        make_console().print(table)
    else:
        typer.echo(f"cache {cache.root}: empty")


@app.command("clear")
def clear(
    stage: str | None = _STAGE,
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    cache_dir: Path | None = _CACHE_DIR,
) -> None:
    """Delete cached entries (all stages, or one)."""
    cache = _cache(cache_dir)
    what = f"stage {stage!r}" if stage else "all stages"
    n = sum(1 for _ in cache.entries(stage))
    if n and not yes:
        typer.confirm(f"delete {n} entries of {what} under {cache.root}?", abort=True)
    removed = cache.clear(stage)
    typer.echo(f"removed {removed} entries ({what}) from {cache.root}")


def human_size(n_bytes: int) -> str:
    if n_bytes < 1024:
        return f"{n_bytes} B"
    size = n_bytes / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
