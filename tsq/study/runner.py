"""The optimize loop: create or resume a normal Optuna study, run trials until the study holds `n_trials`
COMPLETE trials (a target for the whole study, not "n more"), record everything a trial produced.

Robustness: RDB storages run with heartbeats, so a killed worker's RUNNING trial is failed after the grace
period and re-queued (RetryHeartbeatStaleTrialCallback). A trial that raises (TrialFailed, NaN metrics, OOM,
anything) is recorded FAIL with its error in user attrs and the loop goes on; a worker gives up only after
`study.max_consecutive_failures` failures in a row. `workers > 1` starts that many worker processes here,
each running this same loop against the same storage; workers elsewhere join with the same storage URL.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tsq.cache import Cache, cache_dir_of
from tsq.errors import TrialFailed, UserError
from tsq.paths import tsq_home
from tsq.spec import Spec
from tsq.study.params import apply_params
from tsq.study.space import (
    PAPER_DEFAULTS,
    Categorical,
    FloatRange,
    IntRange,
    Range,
    StudySpec,
    contains,
    grid_values,
)
from tsq.study.storage import StorageURL, open_storage, parse_storage_url
from tsq.tracking import Tracker, TrackerKind

log = logging.getLogger(__name__)
# Heartbeats and stale-trial retry are what keep a killed worker's trial from staying RUNNING; Optuna still
# flags that machinery "experimental" on every loop iteration.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module=r"tsq\.study")

PACKAGES = ("tsq", "torch", "transformers", "trl", "peft", "optuna", "wandb", "vllm")
_POLL_S = 2.0


# -- sampler, search space ---------------------------------------------------------------------------
def build_sampler(study: StudySpec, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler. `seed_offset` keeps parallel workers and relaunches from proposing the very same
    points (equal seeds give equal proposals); it is derived from the worker index and the study's size."""
    cfg = study.sampler.model_copy(
        update={"seed": None if study.sampler.seed is None else (study.sampler.seed + seed_offset) % 2**32}
    )
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    if cfg.name == "grid":
        grid = {name: grid_values(entry) for name, entry in study.searched.items()}
        return optuna.samplers.GridSampler(grid, seed=cfg.seed)  # type: ignore[arg-type]
    if cfg.name == "nsga2":
        kw = {} if cfg.population_size is None else {"population_size": cfg.population_size}
        return optuna.samplers.NSGAIISampler(seed=cfg.seed, **kw)
    startup = {} if cfg.n_startup_trials is None else {"n_startup_trials": cfg.n_startup_trials}
    if cfg.name == "gp":
        try:
            import scipy  # noqa: F401  (GPSampler's optimiser)
        except ImportError:
            raise UserError("study.sampler.name: gp needs scipy; rerun scripts/setup.sh") from None
        return optuna.samplers.GPSampler(seed=cfg.seed, **startup)
    return optuna.samplers.TPESampler(seed=cfg.seed, multivariate=True, **startup)


def suggest(trial: optuna.Trial, name: str, entry: Range) -> Any:
    if isinstance(entry, Categorical):
        return trial.suggest_categorical(name, entry.choices)
    if isinstance(entry, IntRange):
        return trial.suggest_int(name, entry.low, entry.high, step=entry.step, log=entry.log)
    assert isinstance(entry, FloatRange)
    return trial.suggest_float(name, entry.low, entry.high, step=entry.step, log=entry.log)


def default_point(spec: Spec) -> dict[str, Any] | None:
    """The paper's defaults (α 0.2, ε 0.005, η 0.5, λ from spec.params) for the searched knobs, plus the
    spec's current value of each searched extra; None when any of them lies outside its range."""
    current = {
        "lambda": spec.params.lam,
        "beta": spec.training.beta,
        "lr": spec.training.learning_rate,
        "lora_r": spec.training.lora.r,
        "selection_variant": spec.selection.variant,
        **PAPER_DEFAULTS,
    }
    point = {name: current[name] for name in spec.study.searched}
    if not all(contains(spec.study.searched[n], v) for n, v in point.items()):
        return None
    return point


# -- provenance --------------------------------------------------------------------------------------
def provenance() -> dict[str, Any]:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    commit = None
    try:
        repo = Path(__file__).resolve().parents[2]
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        commit = out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (an installed wheel): the versions identify the code
    return {"versions": versions, "git_commit": commit}


def _json_safe(value: Any) -> Any:
    """User attrs must be JSON: paths become strings, tuples lists, NaN None."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- the objective -----------------------------------------------------------------------------------
def load_program(path: str) -> tuple[Callable[..., Any], type]:
    """`module:function`, e.g. `objectives.tokensqueeze:run_trial`; the module also provides the
    `TrialContext` class the function takes (its own, or imported from objectives.tokensqueeze)."""
    module_name, _, func_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, func_name), module.TrialContext
    except (ImportError, AttributeError) as exc:
        raise UserError(f"study.program: cannot load {path} ({exc})") from None


class TrialObjective:
    """Optuna objective: sample → apply to the spec → run the trial program → record and return values."""

    def __init__(self, spec: Spec, tracker: Tracker, storage_masked: str) -> None:
        self.spec = spec
        self.tracker = tracker
        self.storage_masked = storage_masked
        self.program, self.context_cls = load_program(spec.study.program)
        self.cache = Cache(cache_dir_of(spec.cache_dir))
        self.provenance = provenance()

    def _fixed_settings(self) -> dict[str, Any]:
        settings = self.spec.model_dump(mode="json", by_alias=True, exclude={"study"})
        study = self.spec.study.model_dump(mode="json", exclude={"search", "storage"})
        return {
            **settings,
            "study": {**study, "storage": self.storage_masked, "fixed": self.spec.study.fixed},
        }

    def __call__(self, trial: optuna.Trial) -> list[float]:
        study_cfg = self.spec.study
        values = {name: suggest(trial, name, entry) for name, entry in study_cfg.searched.items()}
        trial_spec = apply_params(self.spec, {**study_cfg.fixed, **values})
        out_dir = tsq_home() / "studies" / trial.study.study_name / f"trial-{trial.number}"
        out_dir.mkdir(parents=True, exist_ok=True)
        run = self.tracker.trial(
            trial.number, {**values, "trial_number": trial.number, **self._fixed_settings()}
        )
        trial.set_user_attr("out_dir", str(out_dir))
        trial.set_user_attr("worker_pid", os.getpid())
        if run.run_id:
            trial.set_user_attr("wandb_run_id", run.run_id)
        try:
            ctx = self.context_cls(
                cache=self.cache, out_dir=out_dir, on_log=run.log, trial_number=trial.number
            )
            result = self.program(trial_spec, trial_spec.params, ctx)
            objective_values = [result.metrics.get(m) for m in study_cfg.metrics]
            bad = [m for m, v in zip(study_cfg.metrics, objective_values, strict=True) if not _finite(v)]
            if bad:
                raise TrialFailed(f"objective metric(s) {', '.join(bad)} missing or not finite")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("error", error[:2000])
            trial.set_user_attr("traceback", "".join(traceback.format_exception(exc))[-4000:])
            run.finish_failed(error[:500])
            log.warning("trial %d failed: %s", trial.number, error)
            raise
        self._record(trial, result, run.run_id)
        run.finish_ok(
            summary={**result.metrics, **{f"baseline/{k}": v for k, v in result.baseline.items()}},
            config={"cache_keys": result.cache_keys, "seeds": result.seeds},
            budget_curve=result.budget_curve,
            baseline_curve=result.baseline_budget_curve,
        )
        return [float(v) for v in objective_values]

    def _record(self, trial: optuna.Trial, result: Any, run_id: str | None) -> None:
        attrs: dict[str, Any] = {
            **result.metrics,
            "baseline": result.baseline,
            "budget_curve": result.budget_curve,
            "cache_keys": result.cache_keys,
            "seeds": result.seeds,
            "stats": result.stats,
            "adapter_dir": result.adapter_dir,
            **self.provenance,
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, _json_safe(value))
        if "baseline" not in trial.study.user_attrs:
            trial.study.set_user_attr("baseline", _json_safe(result.baseline))
        constraint = self.spec.study.constraint
        if constraint is not None:
            drop = float(result.metrics["accuracy_delta"])
            # Feasible (<= 0) when accuracy >= baseline accuracy - max_accuracy_drop.
            trial.set_constraint("accuracy_drop", -drop - constraint.max_accuracy_drop)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


# -- study lifecycle ---------------------------------------------------------------------------------
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
    attrs = storage.get_study_user_attrs(study_id)
    recorded = attrs.get("objectives")
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
    space, wanted = attrs.get("search_space"), search_space_record(spec.study)
    if space is None and "searched" in attrs:  # a study recorded before search_space was: names only
        space, wanted = sorted(attrs["searched"]), sorted(spec.study.searched)
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
    if study.user_attrs.get("objectives") is None:
        study.set_user_attr("objectives", spec.study.metrics)
        study.set_user_attr("searched", sorted(spec.study.searched))
        study.set_user_attr("search_space", search_space_record(spec.study))
        study.set_user_attr("spec_name", spec.name)
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


@dataclass
class WorkerReport:
    ran: int = 0
    completed: int = 0
    failed: int = 0
    stopped_reason: str = ""


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def run_worker(
    spec: Spec,
    storage: StorageURL,
    name: str,
    n_trials: int | None,
    timeout: float | None,
    tracker_kind: TrackerKind,
    progress: bool = True,
) -> WorkerReport:
    """One worker: run trials of the study until it holds n_trials COMPLETE trials, the timeout passes, or
    too many trials fail in a row. Safe to run in many processes at once against one storage."""
    from tqdm import tqdm

    index = os.environ.get("TSQ_WORKER_INDEX")
    study = create_or_load(spec, storage, name, None if index is None else int(index))
    tracker = Tracker(tracker_kind, name, spec.study.wandb.project, spec.study.wandb.entity)
    objective = TrialObjective(spec, tracker, storage.masked)
    report = WorkerReport()
    deadline = None if timeout is None else time.monotonic() + timeout
    finished: list[FrozenTrial] = []
    bar = tqdm(total=n_trials, desc=f"study {name}", unit="trial", disable=not progress)
    bar.update(_counts(study)[TrialState.COMPLETE])
    consecutive_failures = 0
    while True:
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL, then re-queued as WAITING
        counts = _counts(study)
        bar.n = counts[TrialState.COMPLETE]
        bar.refresh()
        done = n_trials is not None and counts[TrialState.COMPLETE] >= n_trials
        # Done, but a trial is still RUNNING: a peer's, or a killed worker's that goes stale within the grace
        # period. Wait for it to end or be failed, so a finished launch never leaves one stuck RUNNING.
        settling = done and counts[TrialState.RUNNING] > 0 and storage.supports_heartbeat
        if done and not settling:
            report.stopped_reason = f"the study holds {counts[TrialState.COMPLETE]} complete trials"
            break
        if deadline is not None and time.monotonic() >= deadline:
            report.stopped_reason = "timeout"
            break
        if settling:
            time.sleep(_POLL_S)
            continue
        busy = counts[TrialState.COMPLETE] + counts[TrialState.RUNNING]
        if n_trials is not None and busy >= n_trials and counts[TrialState.WAITING] == 0:
            time.sleep(_POLL_S)  # the last trials are running elsewhere: start one only if one of them fails
            continue
        study.optimize(
            objective,
            n_trials=1,
            catch=(Exception,),
            callbacks=[lambda _study, frozen: finished.append(frozen)],
            gc_after_trial=True,
        )
        if not finished:  # the grid sampler has no point left
            report.stopped_reason = "the grid is exhausted"
            break
        last = finished.pop()
        report.ran += 1
        if last.state == TrialState.COMPLETE:
            report.completed += 1
            consecutive_failures = 0
        else:
            report.failed += 1
            consecutive_failures += 1
            if consecutive_failures >= spec.study.max_consecutive_failures:
                report.stopped_reason = (
                    f"{consecutive_failures} trials failed in a row (last: {last.user_attrs.get('error')})"
                )
                break
    bar.close()
    return report


def preflight(spec: Spec, storage: StorageURL, name: str) -> None:
    """Check what a launch needs before anything is written: the model, both problem sets, the storage (it
    opens; a study of this name must match the spec) and the trial program (a slow import: last). A bad
    input is then one UserError line and exit 2, not a study full of failed trials."""
    from tsq.data.problems import load_problem_set
    from tsq.models import resolve_model

    resolve_model(spec.model)
    load_problem_set(spec.data, "train")
    load_problem_set(spec.data, "eval")
    if storage.path is None or storage.path.exists():  # a new SQLite/journal file is made only by the launch
        check_compatible(spec, open_storage(storage), name)
    load_program(spec.study.program)


def launch(
    spec: Spec,
    spec_path: Path,
    storage_url: str | None,
    study_name: str | None,
    n_trials: int | None,
    workers: int,
    tracker_kind: TrackerKind,
) -> tuple[optuna.Study, list[WorkerReport]]:
    """`tsq sweep launch`: run `workers` workers (1: in this process) and return the study."""
    storage = parse_storage_url(storage_url or spec.study.storage)
    name = study_name_of(spec, study_name)
    preflight(spec, storage, name)
    target = n_trials if n_trials is not None else spec.study.n_trials
    if workers <= 1:
        progress = not os.environ.get("TSQ_NO_PROGRESS")
        report = run_worker(spec, storage, name, target, spec.study.timeout, tracker_kind, progress)
        return optuna.load_study(study_name=name, storage=open_storage(storage)), [report]
    create_or_load(spec, storage, name)  # once, before the workers race to do it
    procs = [_spawn_worker(spec_path, storage, name, target, tracker_kind, i) for i in range(workers)]
    codes = _wait_all(procs, storage, name, target)
    if any(code != 0 for code in codes):
        raise UserError(f"study {name}: worker exit codes {codes}; see the messages above")
    return optuna.load_study(study_name=name, storage=open_storage(storage)), []


def _spawn_worker(
    spec_path: Path,
    storage: StorageURL,
    name: str,
    n_trials: int | None,
    tracker_kind: TrackerKind,
    index: int,
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-c", "from tsq.cli.main import run; run()", "sweep", "launch", str(spec_path)]
    args += ["--study", name, "--workers", "1", "--tracker", tracker_kind, "--no-summary"]
    if n_trials is not None:
        args += ["--n-trials", str(n_trials)]
    # The URL travels in the environment, not argv: `ps` and W&B's metadata never see a password.
    env = {
        **os.environ,
        "TSQ_STORAGE": storage.url,
        "TSQ_NO_PROGRESS": "1",
        "TSQ_WORKER_INDEX": str(index + 1),
    }
    return subprocess.Popen(args, env=env)


def _wait_all(
    procs: list[subprocess.Popen[bytes]], storage: StorageURL, name: str, target: int | None
) -> list[int]:
    from tqdm import tqdm

    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    bar = tqdm(total=target, desc=f"study {name} ({len(procs)} workers)", unit="trial")
    try:
        while any(p.poll() is None for p in procs):
            bar.n = _counts(study)[TrialState.COMPLETE]
            bar.refresh()
            time.sleep(_POLL_S)
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()  # their RUNNING trials go stale and are retried by the next launch
        raise
    finally:
        bar.n = _counts(study)[TrialState.COMPLETE]
        bar.close()
    return [p.returncode for p in procs]
