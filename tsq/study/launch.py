"""`tsq sweep launch`: check the inputs before anything is written, then run one worker here or spawn
`workers` worker processes against the same storage (workers elsewhere join with the same storage URL)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tsq.cache import Cache, cache_dir_of
from tsq.config.spec import Spec
from tsq.devices import gpu_assignment, visible_gpus
from tsq.errors import UserError
from tsq.recipe import recipe_of
from tsq.signals import sigterm_as_exit
from tsq.study.lifecycle import check_compatible, create_or_load, study_name_of
from tsq.study.promote import overlay_of
from tsq.study.storage import StorageURL, open_storage, parse_storage_url
from tsq.study.tracking import TrackerKind
from tsq.study.worker import POLL_S, WorkerReport, run_worker, state_counts

log = logging.getLogger(__name__)


def preflight(spec: Spec, storage: StorageURL, name: str) -> None:
    """Check what a launch needs before anything is written: the recipe's own preflight (TokenSqueeze: the
    model, both problem sets, `training.max_length` against the longest prompt) and the storage (it opens; a
    study of this name must match the spec). A bad input is then one UserError line and exit 2, not a study
    full of failed trials."""
    recipe_of(spec).preflight(spec)
    if storage.path is None or storage.path.exists():  # a new SQLite/journal file is made only by the launch
        check_compatible(spec, open_storage(storage), name)


def warn_before_launch(spec: Spec) -> None:
    """Log the recipe's check: one warning per searched knob that is not live, each finding's warnings, and
    the recipe's own (TokenSqueeze: a GPU plan that does not fit). Spawned workers (TSQ_WORKER_INDEX) skip
    it: the launching process has said it once."""
    if os.environ.get("TSQ_WORKER_INDEX"):
        return
    try:
        report = recipe_of(spec).check(spec, Cache(cache_dir_of(spec.cache_dir)), launch=True)
    except Exception as exc:  # a report must never stop a launch
        log.warning("sweep check: could not check the knobs (%s)", exc)
        return
    for finding in report.findings.values():
        if finding.state != "live":
            log.warning("sweep check: %s", finding.line())
        for warning in finding.warnings:
            log.warning("sweep check: %s", warning)
    for warning in report.launch_warnings:
        log.warning("sweep check: %s", warning)


def launch(
    spec: Spec,
    spec_path: Path,
    storage_url: str | None,
    study_name: str | None,
    n_trials: int | None,
    workers: int,
    tracker_kind: TrackerKind,
    gpus_per_worker: int | None = None,
) -> tuple[optuna.Study, list[WorkerReport]]:
    """`tsq sweep launch`: run `workers` workers (1: in this process) and return the study.

    Each local worker gets its own GPU from the visible set (`tsq.devices.gpu_assignment`), checked before
    anything is written."""
    devices = gpu_assignment(workers, gpus_per_worker, visible_gpus())
    storage = parse_storage_url(storage_url or spec.study.storage)
    name = study_name_of(spec, study_name)
    preflight(spec, storage, name)
    if spec.study.promote is not None:  # a bad full fidelity is said now, not after the sweep
        overlay_of(spec, str(spec_path))
    warn_before_launch(spec)  # `tsq sweep check`'s findings on knobs that cannot matter
    target = n_trials if n_trials is not None else spec.study.n_trials
    if workers <= 1:
        if devices[0] is not None:  # "" hides every GPU (--gpus-per-worker 0)
            os.environ["CUDA_VISIBLE_DEVICES"] = devices[0]  # before anything here touches CUDA
        progress = not os.environ.get("TSQ_NO_PROGRESS")
        report = run_worker(spec, storage, name, target, spec.study.timeout, tracker_kind, progress)
        return optuna.load_study(study_name=name, storage=open_storage(storage)), [report]
    create_or_load(spec, storage, name)  # once, before the workers race to do it
    commands = [
        worker_command(spec_path, storage, name, target, tracker_kind, i, device, spec.study.early_stop)
        for i, device in enumerate(devices)
    ]
    procs = [subprocess.Popen(args, env=env) for args, env in commands]
    with sigterm_as_exit():
        codes = _wait_all(procs, storage, name, target)
    if any(code != 0 for code in codes):
        raise UserError(f"study {name}: worker exit codes {codes}; see the messages above")
    return optuna.load_study(study_name=name, storage=open_storage(storage)), []


def worker_command(
    spec_path: Path,
    storage: StorageURL,
    name: str,
    n_trials: int | None,
    tracker_kind: TrackerKind,
    index: int,
    device: str | None,
    early_stop: bool = True,
    environ: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of local worker `index`; `device` as `gpu_assignment` gives it ("" hides every
    GPU: a CPU worker on a GPU node must not start its engine on GPU 0)."""
    args = [sys.executable, "-c", "from tsq.cli.main import run; run()", "sweep", "launch", str(spec_path)]
    args += ["--study", name, "--workers", "1", "--tracker", tracker_kind, "--no-summary"]
    args += ["--gpus-per-worker", "1" if device else "0"]
    args += [] if early_stop else ["--no-early-stop"]
    if n_trials is not None:
        args += ["--n-trials", str(n_trials)]
    # The URL travels in the environment, not argv: `ps` and W&B's metadata never see a password.
    env = {
        **(os.environ if environ is None else environ),
        "TSQ_STORAGE": storage.url,
        "TSQ_NO_PROGRESS": "1",
        "TSQ_WORKER_INDEX": str(index + 1),
        **({} if device is None else {"CUDA_VISIBLE_DEVICES": device}),
    }
    return args, env


def _wait_all(
    procs: list[subprocess.Popen[bytes]], storage: StorageURL, name: str, target: int | None
) -> list[int]:
    from tqdm import tqdm

    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    bar = tqdm(total=target, desc=f"study {name} ({len(procs)} workers)", unit="trial")
    try:
        while any(p.poll() is None for p in procs):
            bar.n = state_counts(study.get_trials(deepcopy=False))[TrialState.COMPLETE]
            bar.refresh()
            time.sleep(POLL_S)
    except BaseException:  # Ctrl-C or SIGTERM: stop the workers, which close their engines on SIGTERM
        for p in procs:
            p.terminate()  # their RUNNING trials go stale and are retried by the next launch
        for p in procs:
            p.wait()
        raise
    finally:
        bar.n = state_counts(study.get_trials(deepcopy=False))[TrialState.COMPLETE]
        bar.close()
    return [p.returncode for p in procs]
