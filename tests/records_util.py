"""A fast seam for report and CLI tests: a real Optuna study (SQLite in a temporary folder, or in memory)
built from synthetic `TrialRecord`s and a `StudyRecord`, written through `tsq.records` as the runner writes
them, with no model and no trial run."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
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


def noisy_records(
    path: Path, accuracy: float, length: float, seed: int, steps: Callable[[int], int] = lambda i: 3
) -> str:
    """Per-response records of 40 problems x 4 samples whose lengths vary by problem: alike for every result
    (difficulty) and by the result's own noise (`seed`, SD 3 tokens, centred so that the mean length is
    exactly `length` + the mean difficulty); gaps between trials then have a known size and a nonzero SE.
    `steps(i)`: problem i's thinking steps. Returns the path written, as a string (a record's `records`)."""
    n_problems, n_samples = 40, 4
    difficulty = np.random.default_rng(0).normal(0, 8, n_problems)
    own = np.random.default_rng(seed).normal(0, 3, n_problems)
    own -= own.mean()
    rows = [
        {"problem_id": f"p{i:02d}", "sample": j, "n_tokens": float(length + difficulty[i] + own[i]),
         "correct": (j * n_problems + i) < accuracy * n_problems * n_samples, "finish_reason": "stop",
         "truncated": False, "difficulty": 1 + i % 3, "steps": steps(i)}
        for i in range(n_problems) for j in range(n_samples)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
