"""Create or resume a study: check an existing one matches the spec, record its settings, enqueue the
default point (trial 0)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import warnings
from typing import Any

import optuna

from tsq.config.space import StudySpec
from tsq.config.spec import Spec
from tsq.errors import UserError
from tsq.records import StudyRecord, write_study_record
from tsq.study.params import default_point
from tsq.study.sampler import build_sampler
from tsq.study.storage import StorageURL, open_storage


def study_name_of(spec: Spec, override: str | None = None) -> str:
    return override or spec.study.name or spec.name


def search_space_record(study: StudySpec) -> dict[str, Any]:
    """The search space as JSON (each range's settings, each fixed value), as stored with the study."""
    return json.loads(
        json.dumps(
            {
                name: entry.model_dump(mode="json") if name in study.searched else {"fixed": entry}
                for name, entry in sorted(study.search.items())
            }
        )
    )


def check_compatible(spec: Spec, storage: optuna.storages.BaseStorage, name: str) -> None:
    """An existing study of this name must optimise the same objectives, in the same directions, over the
    same search space; checked before anything is written, so a refused launch leaves the storage as it was.
    """
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return  # a new study
    record = StudyRecord.from_storage(storage, study_id)
    recorded = record.objectives
    if recorded is not None and list(recorded) != spec.study.metrics:
        raise UserError(
            f"study {name}: it optimises {recorded}, the spec asks for {spec.study.metrics}; "
            "use another study name (--study) or the original objectives"
        )
    directions = [d.name.lower() for d in storage.get_study_directions(study_id)]
    if directions != spec.study.directions:
        raise UserError(
            f"study {name}: its directions are {directions}, the spec asks for {spec.study.directions}; "
            "use another study name (--study) or the original directions"
        )
    space, wanted = record.search_space, search_space_record(spec.study)
    if space is None and record.searched is not None:  # recorded before search_space was: names only
        space, wanted = sorted(record.searched), sorted(spec.study.searched)
    if space is not None and space != wanted:
        differ = sorted(
            k for k in {*space, *wanted} if not isinstance(space, dict) or space.get(k) != wanted.get(k)
        )
        raise UserError(
            f"study {name}: the spec's search space differs from the study's (in {', '.join(differ)}); "
            "use another study name (--study) or the original search space"
        )


def create_or_load(
    spec: Spec, storage: StorageURL, name: str, worker_index: int | None = None
) -> optuna.Study:
    """Create the study (or load it, on a relaunch), check it matches the spec, enqueue the default point.

    `worker_index` is set for the workers `--workers K` starts here. A launch without one that joins an
    existing study (another machine, or a second terminal) salts its sampler seed with its host and process,
    so launches that join at the same moment never propose the very same points.
    """
    opened = open_storage(storage, spec.study.heartbeat)
    check_compatible(spec, opened, name)
    try:
        study = optuna.create_study(study_name=name, storage=opened, directions=spec.study.directions)
        created = True
    except optuna.exceptions.DuplicatedStudyError:  # a relaunch, or another worker won the race to create
        study = optuna.load_study(study_name=name, storage=opened)
        created = False
    if worker_index is None:
        worker_index = 0 if created else _process_salt()
    study.sampler = build_sampler(spec.study, 1000 * worker_index + len(study.get_trials(deepcopy=False)))
    if study.metric_names is None:  # new, or stored before tsq named objectives (dashboards showed 0, 1)
        with warnings.catch_warnings():  # public API since Optuna 3.2, still flagged "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(spec.study.metrics)
    recorded = StudyRecord.from_study(study)
    settings: dict[str, Any] = {}
    if recorded.front is None:  # what the report needs to judge the front with its noise
        constraint = spec.study.constraint
        settings.update(
            front=spec.study.front.model_dump(),
            effects=spec.study.effects.model_dump(),  # the effects report's family
            constraint=None if constraint is None else constraint.model_dump(),
            sampler=spec.study.sampler.model_dump(),
        )
    if recorded.objectives is None:
        settings.update(
            objectives=spec.study.metrics,
            searched=sorted(spec.study.searched),
            search_space=search_space_record(spec.study),
            spec_name=spec.name,
        )
    if settings:
        write_study_record(study, StudyRecord(**settings))
    # Only the worker that created the study enqueues: workers starting together would each see no trials
    # and enqueue the default point once each (the storage's unique study name makes one of them the creator).
    if created and spec.study.enqueue_defaults:
        point = default_point(spec)
        if point is not None:
            study.enqueue_trial(point, skip_if_exists=True)
    return study


def _process_salt() -> int:
    digest = hashlib.sha256(f"{socket.gethostname()}:{os.getpid()}".encode()).digest()
    return 1 + int.from_bytes(digest[:3], "big")
