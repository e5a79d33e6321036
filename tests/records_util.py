"""A fast seam for report and CLI tests: a real Optuna study (SQLite in a temporary folder, or in memory)
built from synthetic `TrialRecord`s and a `StudyRecord`, written through `tsq.records` as the runner writes
them, with no model and no trial run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from tsq.records import StudyRecord, TrialRecord, write_study_record


def make_study(
    url: str | None,
    record: StudyRecord,
    directions: Sequence[str] = ("maximize", "minimize"),
    name: str = "study",
    metric_names: Sequence[str] | None = None,
) -> optuna.Study:
    """An empty study holding `record` (`url` None: in memory)."""
    study = optuna.create_study(study_name=name, storage=url, directions=list(directions))
    if metric_names is not None:
        study.set_metric_names(list(metric_names))
    write_study_record(study, record)
    return study


def add_trial(
    study: optuna.Study,
    record: TrialRecord,
    constraint: float | None = None,
    grid_id: int | None = None,
) -> None:
    """Add a finished trial: the record's Optuna facts (state, params, distributions, values) and its stored
    fields; `constraint`: its value under the study's constraint (<= 0 feasible), where Optuna reads it;
    `grid_id`: proposed by the grid sampler (Optuna's mark)."""
    system_attrs: dict[str, Any] = {}
    if constraint is not None:
        system_attrs["constraints"] = [constraint]
    if grid_id is not None:
        system_attrs["grid_id"] = grid_id
    study.add_trial(
        optuna.trial.create_trial(
            state=record.state,
            params=record.params,
            distributions=record.distributions,
            values=None if record.state != TrialState.COMPLETE else list(record.values or ()),
            user_attrs=record.to_attrs(),
            system_attrs=system_attrs,
        )
    )
