"""The one module that touches Optuna's private API, checked against the Optuna it was written for.

- `RDBStorage._create_new_trial` (and `FrozenTrial._trial_id`): `BeatFromStartRDBStorage` gives a trial its
  first heartbeat the moment it turns RUNNING. Optuna starts a trial's heartbeat thread only after `ask()`
  has sampled, and its stale check skips RUNNING trials that never beat: a worker killed in that window left
  its trial RUNNING forever, and a relaunch waited on it forever.
- `optuna.storages._rdb.models.TrialModel`: `BeatFromStartRDBStorage` takes up a WAITING trial with one
  conditional UPDATE. Optuna reads the state, then writes RUNNING; SQLite ignores the row lock Optuna asks
  for, so two workers that read together both took up the same enqueued trial, both ran it, and the second
  crashed with "Cannot tell a COMPLETE trial" (3 processes popping 60 enqueued trials from one SQLite file
  took up 10 to 13 of them twice with the stock storage, none with this one).
- `optuna.storages._heartbeat.BaseHeartbeat`: `HeartbeatGrpcStorageProxy` gives workers behind Optuna's gRPC
  storage proxy the heartbeats its client lacks (Optuna's stale check only runs on a `BaseHeartbeat`): without
  them a killed worker's trial stayed RUNNING forever, as on journal storage.
- `optuna._hypervolume.compute_hypervolume`: Optuna's WFG hypervolume, for the report's hypervolume against
  the baseline (Optuna's public `hypervolume` helpers need a study built from the same objectives).
- `optuna.study._constrained_optimization._CONSTRAINTS_KEY` and `Trial._trial_id`: `set_feasibility` writes a
  trial's constraint value as the list under the system attr "constraints", the one place both Optuna and
  optuna-dashboard (0.21) read it. Optuna 5's named `Trial.set_constraint` ("constraints:NAME") is read by
  Optuna alone: the dashboard showed `constraints: []` for every trial. Writing both would give every sampler
  two constraints (Optuna 5 reads the list as constraint "0" beside the named one).

- `optuna.study._optimize` (its logger's name): `quiet_traceback` keeps Optuna from printing a traceback
  for a trial a tsq worker ends on purpose (a surplus trial, `tsq.study.worker`): one line says why.

`check_optuna()` runs before either is used: an Optuna outside `SUPPORTED`, or one whose private names are
gone, fails with one line (`OptunaVersionError`, a `UserError`) instead of an override Optuna never calls.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import GrpcStorageProxy, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from tsq.compat import require_version
from tsq.errors import UserError

# The Optuna releases whose private API below was read and tested (pyproject.toml pins the same range)
SUPPORTED = ">=5.0,<5.1"
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("optuna.storages._rdb.storage", "RDBStorage._create_new_trial"),
    ("optuna.storages._rdb.models", "TrialModel"),
    ("optuna.storages._heartbeat", "BaseHeartbeat"),
    ("optuna._hypervolume", "compute_hypervolume"),
    ("optuna.study._constrained_optimization", "_CONSTRAINTS_KEY"),
    ("optuna.study._optimize", "_logger"),
)


class OptunaVersionError(UserError):
    """The installed Optuna is not one the adapter was written for."""


def check_optuna(version: str | None = None, names: Sequence[tuple[str, str]] = PRIVATE_NAMES) -> None:
    """Raise OptunaVersionError (one line) unless Optuna `version` (default: installed) is in SUPPORTED and
    every private name the adapter uses still exists."""
    version = optuna.__version__ if version is None else version
    hint = require_version("optuna", version, SUPPORTED, OptunaVersionError)
    for module_name, dotted in names:
        try:
            found: object = importlib.import_module(module_name)
            for part in dotted.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError):
            raise OptunaVersionError(f"optuna {version}: {module_name}.{dotted} is missing; {hint}") from None


class BeatFromStartRDBStorage(RDBStorage):
    """RDBStorage whose trials get a first heartbeat the moment they turn RUNNING, and whose WAITING trials
    only one worker can take up (see the module doc)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        check_optuna()
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        trial = super()._create_new_trial(study_id, template_trial)  # the path every caller goes through
        if trial.state == TrialState.RUNNING:
            self._first_beat(trial._trial_id)
        return trial

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state != TrialState.RUNNING or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        changed = self._take_up(trial_id)
        if changed:  # a WAITING (enqueued or retried) trial taken up
            self._first_beat(trial_id)
        return changed

    def _take_up(self, trial_id: int) -> bool:
        """WAITING -> RUNNING as one statement, so that the check and the write cannot interleave with
        another worker's (atomic on SQLite's file lock and under PostgreSQL's row lock alike)."""
        from datetime import datetime

        from optuna.storages._rdb.models import TrialModel
        from sqlalchemy import update

        take = (
            update(TrialModel)
            .where(TrialModel.trial_id == trial_id, TrialModel.state == TrialState.WAITING)
            .values(state=TrialState.RUNNING, datetime_start=datetime.now())
        )
        with self.engine.begin() as connection:
            if connection.execute(take).rowcount == 1:
                return True
        # as Optuna does: False when another worker took it up, UpdateFinishedTrialError when it is finished
        self.check_trial_is_updatable(trial_id, self.get_trial(trial_id).state)
        return False

    def _first_beat(self, trial_id: int) -> None:
        if self.heartbeat_interval is not None:
            self.record_heartbeat(trial_id)


HEARTBEAT_ATTR = "tsq:heartbeat"


class HeartbeatGrpcStorageProxy(GrpcStorageProxy, BaseHeartbeat):
    """Optuna's gRPC storage proxy client, with heartbeats kept as a trial system attribute (the proxy's API
    has no heartbeat call). A beat is `{"trial_id", "at"}`: the retry of a stale trial copies its system
    attributes, and a beat that names another trial is not this one's. The age of a beat is judged by the
    clock of the worker that looks, so the nodes' clocks must agree to well within `grace_period` (NTP)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        heartbeat_interval: int | None,
        grace_period: int,
        stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None,
    ) -> None:
        check_optuna()
        super().__init__(host=host, port=port)
        self._interval = heartbeat_interval
        self._grace = grace_period
        self._stale_callback = stale_trial_callback

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        if template_trial is None or template_trial.state == TrialState.RUNNING:  # ask() makes RUNNING ones
            self._first_beat(trial_id)
        return trial_id

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING:  # a WAITING trial taken up: beat from its start
            self._first_beat(trial_id)
        return changed

    def _first_beat(self, trial_id: int) -> None:
        if self._interval is not None:
            self.record_heartbeat(trial_id)

    def record_heartbeat(self, trial_id: int) -> None:
        # UpdateFinishedTrialError: a peer failed this trial as stale (late beats); the worker finds out and
        # goes on (tsq.study.worker), this thread must not die with a traceback
        with contextlib.suppress(UpdateFinishedTrialError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, {"trial_id": trial_id, "at": time.time()})

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR) or {}
            # No beat of its own: a trial of a worker on the database itself, judged by its own heartbeats
            # there (or one killed between turning RUNNING and its first beat, a single request later).
            if beat.get("trial_id") == trial._trial_id and now - float(beat["at"]) > self._grace:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._stale_callback


def compute_hypervolume(losses: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume of `losses` (rows: points, all objectives minimised) bounded by `reference`."""
    check_optuna()
    from optuna._hypervolume import compute_hypervolume as wfg

    return float(wfg(losses, reference))


def set_feasibility(trial: optuna.Trial, value: float) -> None:
    """The trial's one constraint value (feasible when <= 0), where samplers, `study.best_trials` and
    optuna-dashboard all read it (module doc)."""
    check_optuna()
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

    trial.storage.set_trial_system_attr(trial._trial_id, _CONSTRAINTS_KEY, [float(value)])


def feasibility_value(trial: FrozenTrial) -> float | None:
    """The constraint value `set_feasibility` wrote, or Optuna's named constraint wrote (studies stored before
    tsq wrote the list); None without one."""
    values = list(trial.constraints.values())
    return float(values[0]) if values else None


class _NoTraceback(logging.Filter):
    def __init__(self, kind: type[BaseException]) -> None:
        super().__init__()
        self.kind = kind

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.kind):
            record.exc_info = record.exc_text = None  # the message already names the error
        return True


def quiet_traceback(kind: type[BaseException]) -> None:
    """Optuna logs a trial that raised `kind` in one line, without the traceback (idempotent)."""
    check_optuna()
    from optuna.study._optimize import _logger

    if not any(isinstance(f, _NoTraceback) and f.kind is kind for f in _logger.filters):
        _logger.addFilter(_NoTraceback(kind))
