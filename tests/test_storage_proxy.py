"""`tsq storage proxy` (Optuna's gRPC storage proxy) in front of a study's database: URLs, heartbeats through
the proxy (a killed worker's trial goes stale and is retried; a live one is left alone), several real
workers through it on PostgreSQL, and the database connections they hold with and without it, counted in
pg_stat_activity. Also: a worker inside a Slurm job with no storage given is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pg import PgServer, postgres_server  # noqa: F401  (session fixture)
from proxy import storage_proxy
from test_concurrency import _check_study, _run_workers, shared  # noqa: F401  (module fixture)

from tsq.config.space import HeartbeatSpec
from tsq.errors import UserError
from tsq.study.storage import open_storage, parse_storage_url

REPO = Path(__file__).resolve().parents[1]


def test_proxy_urls() -> None:
    storage = parse_storage_url("grpc://proxy.example:13000")
    assert (storage.kind, storage.url, storage.supports_heartbeat) == (
        "grpc",
        "grpc://proxy.example:13000",
        True,
    )
    for bad in ("grpc://proxy.example", "grpc://:13000", "grpc://h:port", "grpc://h:13000/db"):
        with pytest.raises(UserError, match="a storage proxy URL is grpc://HOST:PORT"):
            parse_storage_url(bad)


def test_no_proxy_there_is_one_line() -> None:
    with pytest.raises(UserError) as err:
        open_storage(parse_storage_url("grpc://127.0.0.1:1"))
    assert str(err.value) == "storage grpc://127.0.0.1:1: cannot open (no storage proxy answers there)"


def test_a_worker_under_slurm_needs_a_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without this, each array task would run a study of its own in a SQLite file of its own."""
    monkeypatch.delenv("TSQ_STORAGE", raising=False)
    env = {**os.environ, "SLURM_JOB_ID": "4242", "TSQ_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "tsq", "sweep", "launch", str(REPO / "sweeps" / "smoke.yaml")]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: storage: none given inside Slurm job 4242; "
        "set TSQ_STORAGE to the study's shared postgresql:// URL (docs/cluster.md), "
        "or pass --storage sqlite:///FILE.db for a study of this job's own"
    ]
    assert not (tmp_path / "studies.db").exists()
    monkeypatch.setenv("SLURM_JOB_ID", "4242")  # a storage given is used as given
    assert parse_storage_url(f"sqlite:///{tmp_path / 's.db'}").kind == "sqlite"


_WORKER = """
import sys, time, optuna
from tsq.config.space import HeartbeatSpec
from tsq.study.storage import open_storage, parse_storage_url
storage = open_storage(parse_storage_url(sys.argv[1]), HeartbeatSpec(interval=1, grace_period=4, max_retry=1))
study = optuna.load_study(study_name="beat", storage=storage)
study.optimize(lambda t: (t.suggest_float("x", 0, 1), time.sleep(600))[0], n_trials=1)
"""


@pytest.mark.slow  # waits out heartbeat grace periods (~20 s); the proxy's other tests stay in the fast loop
def test_heartbeats_through_the_proxy(tmp_path: Path) -> None:
    """A worker that beats keeps its trial past the grace period; killed, its trial is failed and re-queued
    by the next worker's stale check, as on PostgreSQL. Optuna's proxy client has no heartbeat: its trials
    stayed RUNNING forever."""
    heartbeat = HeartbeatSpec(interval=1, grace_period=4, max_retry=1)
    with storage_proxy(f"sqlite:///{tmp_path / 'beat.db'}") as url:
        study = optuna.create_study(
            study_name="beat", storage=open_storage(parse_storage_url(url), heartbeat)
        )
        worker = subprocess.Popen([sys.executable, "-c", _WORKER, url], cwd=REPO)
        try:
            _wait_for(lambda: [t.state for t in study.get_trials()] == [TrialState.RUNNING], 120)
            time.sleep(8)  # twice the grace period: a live worker's beats keep its trial
            optuna.storages.fail_stale_trials(study)
            assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=60)
            time.sleep(6)
            optuna.storages.fail_stale_trials(study)
        finally:
            worker.kill()
        trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].params and trials[1].params == trials[0].params
    assert trials[1].system_attrs["failed_trial"] == 0


def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


@contextmanager
def _connections(server: PgServer, database: str) -> Iterator[list[int]]:
    """Samples, every 0.2 s, how many connections the server holds to `database` (this sampler's own not
    counted); the list fills while the block runs."""
    import psycopg2

    counts: list[int] = []
    stop = threading.Event()
    conn = psycopg2.connect(
        host=server.host, port=server.port, user=server.user, password=server.password, dbname="postgres"
    )
    conn.autocommit = True

    def sample() -> None:
        with conn.cursor() as cur:
            while not stop.wait(0.2):
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,))
                counts.append(cur.fetchone()[0])

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join()
        conn.close()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(1800)  # two sweeps of 3 trials: 7 min on this 2-core machine under load
def test_workers_through_the_proxy_share_its_connections(
    shared: dict[str, Path],  # noqa: F811
    postgres_server: PgServer,  # noqa: F811
) -> None:
    """The same 3 workers and 3 trials, straight on PostgreSQL and through one proxy: each run finishes with
    exactly n_trials COMPLETE trials (test_concurrency's checks); the connections the database holds at
    most are counted for each."""
    n_workers, threads, held = 3, 2, {}
    for via in ("direct", "proxy"):
        url = postgres_server.new_database()
        database = url.rsplit("/", 1)[1]
        with _connections(postgres_server, database) as counts:
            if via == "direct":
                name, pids = _run_workers(shared, url, n_workers=n_workers, n_trials=3)
            else:
                with storage_proxy(url, threads=threads) as grpc_url:
                    name, pids = _run_workers(shared, grpc_url, n_workers=n_workers, n_trials=3)
        study = optuna.load_study(
            study_name=name, storage=url.replace("postgresql://", "postgresql+psycopg2://")
        )
        _check_study(study, 3, pids)
        held[via] = max(counts)
    print(json.dumps({"workers": n_workers, "proxy_threads": threads, "max_db_connections": held}))
    # measured: direct 12 (4 per worker) in 3 runs; proxy 2 or 3 with --threads 2 (one connection more than
    # the threads at times: the proxy's own, opened at its start)
    assert held["proxy"] <= threads + 1 < n_workers * 4 <= held["direct"]
