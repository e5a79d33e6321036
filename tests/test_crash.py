"""Crash safety with real worker processes: SIGKILL a `tsq sweep launch` worker in each phase of a trial,
relaunch, and check that nothing is lost or corrupt.

One study (sweeps/smoke.yaml, SQLite, a cold cache of its own) is driven through a chain of kills: during
self-sampling, refinement, training, evaluation and right after the trial's report (metrics.json) is written;
a final relaunch then finishes it. The phase is read from the worker's files and log: a held cache lock, the
refinement progress bar, reference log-prob entries, the saved adapter, the report file. Afterwards the study
holds exactly n_trials COMPLETE trials and no RUNNING one, every killed trial is FAIL (and was retried),
every cache entry passes its checksum and decodes, and every complete trial has a whole report and adapter;
a damaged adapter is then refused by evaluation.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import yaml
from filelock import FileLock, Timeout
from optuna.trial import TrialState
from safetensors import SafetensorError
from safetensors.torch import load_file

from tsq.cache import Cache
from tsq.engines.evaluate import evaluate
from tsq.engines.models import resolve_model
from tsq.recipe import load_spec

REPO = Path(__file__).resolve().parents[1]
N_TRIALS = 2
MAX_RETRY = 3  # sweeps/smoke.yaml: study.heartbeat.max_retry
pytestmark = pytest.mark.slow


@dataclass
class Sweep:
    """One study's files: spec (own cold cache), storage, the trials' folders, the workers' logs."""

    spec: Path
    url: str
    name: str
    cache: Path
    trials: Path  # $TSQ_HOME/studies/<name>
    logs: Path
    env: dict[str, str]
    slow_grace_spec: Path  # the same spec with a 30 s heartbeat grace period

    def launch(
        self, log_name: str, *extra: str, spec: Path | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.logs / f"{log_name}.log"
        cmd = [sys.executable, "-m", "tsq", "sweep", "launch", str(spec or self.spec), "--storage", self.url]
        cmd += ["--study", self.name, "--tracker", "none", *extra]
        with log.open("wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        return proc, log

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.url)

    def entries(self, stage: str) -> int:
        return len(list((self.cache / stage).glob("*.entry")))

    def lock_held(self, stage: str) -> bool:
        """Whether some process holds one of the stage's key locks (is computing an entry) right now."""
        for path in (self.cache / ".locks").glob(f"{stage}-*.lock"):
            lock = FileLock(str(path), timeout=0)
            try:
                lock.acquire()
            except Timeout:
                return True
            lock.release()
        return False

    def trial_dirs(self) -> list[Path]:
        return sorted(self.trials.glob("trial-*"))


@pytest.fixture
def sweep(tsq_home: Path, tmp_path: Path) -> Sweep:
    raw = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    raw["cache_dir"] = str(tmp_path / "cache")
    raw["study"]["n_trials"] = N_TRIALS
    assert raw["study"]["heartbeat"]["max_retry"] == MAX_RETRY
    spec = tmp_path / "smoke.yaml"
    spec.write_text(yaml.safe_dump(raw))
    raw["study"]["heartbeat"]["grace_period"] = 30
    slow_grace_spec = tmp_path / "smoke-slow-grace.yaml"
    slow_grace_spec.write_text(yaml.safe_dump(raw))
    home = tsq_home  # the session's TSQ_HOME (caches shared across these tests)
    name = f"crash-{uuid.uuid4().hex[:8]}"
    (tmp_path / "logs").mkdir()
    env = {**os.environ, "TSQ_HOME": str(home), "TSQ_NO_PROGRESS": "1", "WANDB_MODE": "disabled"}
    return Sweep(
        spec, f"sqlite:///{tmp_path / 'crash.db'}", name, tmp_path / "cache", home / "studies" / name,
        tmp_path / "logs", env, slow_grace_spec,
    )  # fmt: skip


@dataclass(frozen=True)
class Seen:
    """What the test sees of a worker: its log so far and the trial folders it created."""

    log: str
    fresh: list[Path]  # trial folders that did not exist when this worker started


def _sampling(s: Sweep, w: Seen) -> bool:
    return s.lock_held("samples") and s.entries("samples") == 0


# logged once the worker asks the engine for every step rewrite in one call
# (tsq.engines.refine.compute_candidates)
REWRITES_SAMPLED = re.compile(r"refinement: sampling \d+ x \d+ step rewrites")


def _refinement(s: Sweep, w: Seen) -> bool:
    return REWRITES_SAMPLED.search(w.log) is not None and s.entries("candidates") == 0


def _training(s: Sweep, w: Seen) -> bool:
    return s.entries("ref_logps") > 0 and not any((d / "adapter").exists() for d in w.fresh)


def _evaluation(s: Sweep, w: Seen) -> bool:
    return any(
        (d / "adapter" / "adapter_model.safetensors").exists() and not (d / "metrics.json").exists()
        for d in w.fresh
    )


def _report(s: Sweep, w: Seen) -> bool:
    return any((d / "metrics.json").exists() for d in w.fresh)


def _running(s: Sweep) -> Callable[[Sweep, Seen], bool]:
    known = {t.number for t in _trials(s)}
    return lambda s, w: any(t.state == TrialState.RUNNING and t.number not in known for t in _trials(s))


# Each phase, with how to tell from outside the worker that it is in that phase now.
PHASES: list[tuple[str, Callable[[Sweep, Seen], bool]]] = [
    ("sampling", _sampling),
    ("refinement", _refinement),
    ("training", _training),
    ("evaluation", _evaluation),
    ("report", _report),
]


def _kill_in_phase(
    s: Sweep, phase: str, seen: Callable[[Sweep, Seen], bool], index: int, *extra: str
) -> dict:
    """Launch a worker, SIGKILL it the moment `seen` holds; returns the trials it left RUNNING."""
    before = {t.number for t in _trials(s)}
    old_dirs = set(s.trial_dirs())
    proc, log = s.launch(f"{index}-{phase}", *extra, spec=s.slow_grace_spec if phase == "running" else None)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(
                    f"the worker exited ({proc.returncode}) before {phase}: {log.read_text()[-3000:]}"
                )
            if seen(s, Seen(log.read_text(errors="replace"), sorted(set(s.trial_dirs()) - old_dirs))):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        else:
            pytest.fail(f"phase {phase} not seen within 600 s")
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    running = [t.number for t in _trials(s) if t.state == TrialState.RUNNING and t.number not in before]
    return {"phase": phase, "killed_trials": running}


def _trials(s: Sweep) -> list[optuna.trial.FrozenTrial]:
    try:
        return s.study().get_trials(deepcopy=False)
    except KeyError:  # the study is not created yet
        return []


def _check_cache(root: Path) -> int:
    """Every entry passes its checksum and decodes; returns how many entries there are."""
    from safetensors.torch import load as st_load

    cache = Cache(root)
    entries = list(cache.entries())
    for entry in entries:
        payload = cache.read_bytes(entry.stage, entry.key)
        assert payload is not None, f"corrupt cache entry {entry.path}"
        if entry.stage == "ref_logps":
            assert st_load(payload)
        else:
            json.loads(payload)
    assert cache.stats["corrupt"] == 0
    return len(entries)


def test_sigkill_in_every_phase_then_relaunch_finishes_with_nothing_lost(sweep: Sweep) -> None:
    kills = []
    for index, (phase, seen) in enumerate(PHASES):
        kills.append(_kill_in_phase(sweep, phase, seen, index))
        _check_cache(sweep.cache)  # after each kill, not only at the end

    proc, log = sweep.launch("final")
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()

    trials = sweep.study().get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == N_TRIALS, states
    assert TrialState.RUNNING not in states, states
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    killed = [n for k in kills for n in k["killed_trials"]]
    assert killed, kills
    by_number = {t.number: t for t in trials}
    # A retry records the chain of trials it repeats; a chain ends after heartbeat.max_retry retries.
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    for number in killed:
        assert by_number[number].state == TrialState.FAIL
        chain = by_number[number].system_attrs.get("retry_history", [])
        assert number in retried or len(chain) >= MAX_RETRY, f"killed trial {number} was not retried"

    n_entries = _check_cache(sweep.cache)
    assert n_entries > 0
    for t in trials:
        if t.state != TrialState.COMPLETE:
            continue
        folder = Path(t.user_attrs["out_dir"])
        report = json.loads((folder / "metrics.json").read_text())
        assert report["metrics"]["accuracy"] == pytest.approx(t.user_attrs["accuracy"])
        assert load_file(folder / "adapter" / "adapter_model.safetensors")
    # A launch that finds the study already done still waits out a dead worker's RUNNING trial (here: one
    # more trial asked for, then killed), so it never returns with a trial stuck RUNNING. Its grace period
    # is longer than a launch's start-up, so the trial is not stale yet when the launch first looks.
    extra = _kill_in_phase(sweep, "running", _running(sweep), len(kills), "--n-trials", str(N_TRIALS + 1))
    assert extra["killed_trials"]
    kills.append(extra)
    proc, log = sweep.launch("settle", spec=sweep.slow_grace_spec)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    settled = sweep.study().get_trials(deepcopy=False)
    assert [t.state for t in settled].count(TrialState.COMPLETE) == N_TRIALS
    assert TrialState.RUNNING not in [t.state for t in settled]
    # A damaged adapter is refused, not evaluated as if it were whole (nor as the base model).
    adapter = Path(next(t for t in settled if t.state == TrialState.COMPLETE).user_attrs["adapter_dir"])
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    spec = load_spec(sweep.spec)
    before = sweep.entries("samples")
    with pytest.raises(SafetensorError):
        evaluate(spec, resolve_model(spec.model), Cache(sweep.cache), adapter=adapter)
    assert sweep.entries("samples") == before
    summary = {"kills": kills, "states": [t.state.name for t in trials], "cache_entries": n_entries}
    print(json.dumps(summary))
