"""Concurrent workers on one study, as separate `tsq sweep launch` processes started at the same moment
(as on separate machines): 2 on SQLite, 2 on an Optuna journal file, 4 on a real PostgreSQL server.

Each run must end with exactly n_trials COMPLETE trials, no RUNNING one, trial numbers 0..n-1 without gaps
or duplicates, and a cache every worker agrees on. The SQLite run starts on a cold cache, so both workers
want the same self-samples at the same moment: the cache's per-key lock must let one compute each entry
and the other reuse it (summed over workers, sampling misses equal the entries written).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState
from pg import PgServer, postgres_server  # noqa: F401  (session fixture)

from tsq.cache import Cache

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tsq_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One cache for this module's studies: cold for the first run, then warm (stages that do not depend on
    the trial's parameters are shared across studies, as intended)."""
    root = tmp_path_factory.mktemp("concurrency")
    raw = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    raw["cache_dir"] = str(root / "cache")
    # No worker dies here, so no short grace period: smoke.yaml's 6 s let a loaded 2-core machine's late
    # heartbeats hand a live worker's trial to its peer (which the worker survives, tests/test_storage.py, but
    # the trial then runs twice, which these counts do not expect).
    raw["study"]["heartbeat"] = {"interval": 5, "grace_period": 120, "max_retry": 3}
    spec = root / "smoke.yaml"
    spec.write_text(yaml.safe_dump(raw))
    return {"root": root, "spec": spec, "cache": root / "cache", "home": tsq_home}


def _run_workers(shared: dict[str, Path], url: str, n_workers: int, n_trials: int) -> tuple[str, list[int]]:
    """Start `n_workers` launches of one new study at once; returns the study name and worker pids."""
    name = f"conc-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "tsq", "sweep", "launch", str(shared["spec"]), "--study", name]
    cmd += ["--n-trials", str(n_trials), "--tracker", "none", "--no-summary"]
    # The URL goes through the environment, as a password should; the workers race to create the study.
    env = {**os.environ, "TSQ_HOME": str(shared["home"]), "TSQ_STORAGE": url, "TSQ_NO_PROGRESS": "1"}
    logs = [shared["root"] / f"{name}-{i}.log" for i in range(n_workers)]
    procs = []
    # Separate launches, as on separate machines: no worker index; the ones that join the study salt their
    # sampler seed with host and process, so they must not propose the same points.
    for log in logs:
        with log.open("wb") as fh:
            procs.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO))
    try:
        codes = [p.wait(timeout=1200) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for code, log in zip(codes, logs, strict=True):
        assert code == 0, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text()
    return name, [p.pid for p in procs]


def _check_study(study: optuna.Study, n_trials: int, pids: list[int]) -> list[FrozenTrial]:
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] == n_trials, states
    assert states[TrialState.RUNNING] == 0, states
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # no duplicates, no gaps
    assert {t.user_attrs["worker_pid"] for t in trials} <= set(pids)
    # two trials must not be told apart only by the worker that ran them: each point is its own (a surplus
    # trial, tsq.study.slots, is FAIL with no point)
    points = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
    assert len(set(points)) == len(points), points
    return trials


def _samples_computed(trials: list[FrozenTrial]) -> tuple[int, int]:
    """(misses, hits) of the samples stage summed over workers (a worker's counts accumulate over its trials,
    so its last complete trial holds its totals)."""
    last: dict[int, dict] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.COMPLETE:
            last[t.user_attrs["worker_pid"]] = t.user_attrs["stats"]["cache"].get("samples", {})
    return sum(c.get("misses", 0) for c in last.values()), sum(c.get("hits", 0) for c in last.values())


def _check_cache(root: Path) -> int:
    cache = Cache(root)
    entries = list(cache.entries())
    for entry in entries:
        assert cache.read_bytes(entry.stage, entry.key) is not None, entry.path
    assert cache.stats["corrupt"] == 0
    return len(entries)


def test_two_sqlite_workers_share_a_cold_cache(shared: dict[str, Path]) -> None:
    url = f"sqlite:///{shared['root'] / 'two.db'}"
    name, pids = _run_workers(shared, url, n_workers=2, n_trials=2)
    trials = _check_study(optuna.load_study(study_name=name, storage=url), 2, pids)
    misses, hits = _samples_computed(trials)
    written = len(list((shared["cache"] / "samples").glob("*.entry")))
    assert misses == written, (misses, written)  # each samples entry computed by exactly one worker
    assert hits >= 1  # the other worker reused what the first wrote
    _check_cache(shared["cache"])
    print(json.dumps({"sqlite": {"trials": len(trials), "samples_misses": misses, "samples_hits": hits}}))


def test_two_journal_workers(shared: dict[str, Path]) -> None:
    path = shared["root"] / "two.journal.log"
    name, pids = _run_workers(shared, f"journal://{path}", n_workers=2, n_trials=2)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))
    _check_study(study, 2, pids)
    _check_cache(shared["cache"])


@pytest.mark.postgres
def test_four_postgres_workers(shared: dict[str, Path], postgres_server: PgServer) -> None:  # noqa: F811
    url = postgres_server.new_database()
    name, pids = _run_workers(shared, url, n_workers=4, n_trials=4)
    study = optuna.load_study(study_name=name, storage=url.replace("postgresql://", "postgresql+psycopg2://"))
    trials = _check_study(study, 4, pids)
    assert len({t.user_attrs["worker_pid"] for t in trials}) >= 2  # the work was shared
    _check_cache(shared["cache"])
