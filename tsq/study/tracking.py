"""W&B tracking: one run per trial (job_type "trial"), one summary run per launch (job_type "summary").

Offline by default: unless WANDB_MODE is set, runs go online only when the user is logged in (WANDB_API_KEY
or a netrc entry for the W&B host); otherwise they are written under `$WANDB_DIR` (default
`$TSQ_HOME/wandb`) and can be uploaded later with `wandb sync DIR`. `--tracker none` makes every call a no-op.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from tsq.paths import tsq_home

TrackerKind = Literal["wandb", "none"]


def wandb_mode() -> str:
    """WANDB_MODE when set; else "online" for a logged-in user, "offline" for everyone else."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        logged_in = netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        logged_in = False
    return "online" if logged_in else "offline"


def wandb_dir() -> Path:
    return Path(os.environ.get("WANDB_DIR") or tsq_home() / "wandb").expanduser()


class TrialRun:
    """The W&B run of one trial (or nothing, when tracking is off). `log` is the trial's on_log callback."""

    def __init__(self, run: Any | None) -> None:
        self._run = run

    @property
    def run_id(self) -> str | None:
        return None if self._run is None else self._run.id

    def log(self, values: Mapping[str, Any]) -> None:
        if self._run is not None:
            self._run.log(dict(values))

    def finish_ok(
        self,
        summary: Mapping[str, Any],
        config: Mapping[str, Any],
        budget_curve: Sequence[tuple[float, float]],
        baseline_curve: Sequence[tuple[float, float]],
    ) -> None:
        if self._run is None:
            return
        import wandb

        self._run.config.update(dict(config), allow_val_change=True)
        if budget_curve:
            xs = [b for b, _ in budget_curve]
            series = [[a for _, a in budget_curve]]
            keys = ["trial"]
            if baseline_curve and [b for b, _ in baseline_curve] == xs:
                series.append([a for _, a in baseline_curve])
                keys.append("baseline")
            plot = wandb.plot.line_series(
                xs=xs, ys=series, keys=keys, title="accuracy vs token budget", xname="budget (tokens)"
            )
            self._run.log({"eval/accuracy_vs_budget": plot})
        for key, value in summary.items():
            self._run.summary[key] = value
        self._run.finish()

    def finish_failed(self, error: str) -> None:
        if self._run is None:
            return
        self._run.summary["error"] = error
        self._run.finish(exit_code=1)


class Tracker:
    """Creates the W&B runs of one study. With kind "none" nothing is created (and wandb is not imported)."""

    def __init__(self, kind: TrackerKind, study_name: str, project: str, entity: str | None = None) -> None:
        self.kind = kind
        self.study_name = study_name
        self.project = project
        self.entity = entity

    def _init(self, **kwargs: Any) -> Any:
        import wandb

        directory = wandb_dir()
        directory.mkdir(parents=True, exist_ok=True)
        return wandb.init(
            project=self.project,
            entity=self.entity,
            group=self.study_name,
            dir=str(directory),
            mode=wandb_mode(),  # type: ignore[arg-type]
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"),
            **kwargs,
        )

    def trial(self, number: int, config: Mapping[str, Any]) -> TrialRun:
        if self.kind == "none":
            return TrialRun(None)
        run = self._init(
            job_type="trial", name=f"{self.study_name}-trial-{number}", config=self._config(config)
        )
        return TrialRun(run)

    def _config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """`study` is a mapping in every run of the project, its `name` the study's (one W&B column, one
        type: the summary run's config holds the same mapping)."""
        study = config.get("study")
        return {**config, "study": {**(study if isinstance(study, Mapping) else {}), "name": self.study_name}}

    def summary(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        metrics: Mapping[str, Any],
        image: Path | None,
    ) -> str | None:
        """The summary run: the per-trial table (a `wandb_run_id` column joins it with the trial runs), the
        Pareto plot and study-level numbers. Returns its id."""
        if self.kind == "none":
            return None
        import wandb

        run = self._init(job_type="summary", name=f"{self.study_name}-summary", config=self._config({}))
        logged: dict[str, Any] = {
            "pareto/table": wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        }
        if image is not None and image.exists():
            logged["pareto/plot"] = wandb.Image(str(image))
        run.log(logged)
        for key, value in metrics.items():
            run.summary[key] = value
        run_id = run.id
        run.finish()
        return run_id
