"""Storage URLs: parsing, masking, clear one-line errors, and a real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pg import PASSWORD, PgServer, postgres_server  # noqa: F401  (session fixture)
from proxy import storage_proxy
from tqdm import tqdm

from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from tsq.config.space import HeartbeatSpec
from tsq.errors import UserError
from tsq.study.storage import StorageURL, load_study, mask_url, open_storage, parse_storage_url, scrub_argv
from tsq.study.worker import _run_trials


def test_default_is_sqlite_under_tsq_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSQ_HOME", str(tmp_path))
    storage = parse_storage_url(None)
    assert storage.kind == "sqlite" and storage.path == tmp_path / "studies.db"
    open_storage(storage)
    assert (tmp_path / "studies.db").exists()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("sqlite:////tmp/x.db", "sqlite"),
        ("study.db", "sqlite"),
        ("journal:///tmp/s.log", "journal"),
        ("runs/s.log", "journal"),
        ("postgresql://u:pw@db.example:5432/optuna", "rdb"),
        ("postgres://u:pw@db.example/optuna", "rdb"),
    ],
)
def test_kinds(url: str, kind: str) -> None:
    assert parse_storage_url(url).kind == kind


def test_postgres_urls_use_psycopg2_and_hide_the_password() -> None:
    storage = parse_storage_url("postgres://alice:hunter22@db.example:5432/optuna")
    assert storage.url == "postgresql+psycopg2://alice:hunter22@db.example:5432/optuna"
    assert storage.masked == "postgresql+psycopg2://alice:***@db.example:5432/optuna"
    assert storage.mask_in('auth failed for "alice" with hunter22') == 'auth failed for "alice" with ***'
    assert mask_url("mysql+pymysql://u:pw@h/db") == "mysql+pymysql://u:***@h/db"
    argv = ["tsq", "sweep", "status", "--storage", "postgresql://alice:hunter22@h/db"]
    scrub_argv(argv)
    assert "hunter22" not in " ".join(argv)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense", "storage nonsense: not a storage URL"),
        ("sqlite://", "storage sqlite://: SQLite storage needs a file"),
        ("journal:", "storage journal:: a journal URL needs a file path"),
        (
            "postgresql://bob:pw123@127.0.0.1:1/db",
            "storage postgresql+psycopg2://bob:***@127.0.0.1:1/db: cannot open",
        ),
    ],
)
def test_bad_urls_give_one_line(url: str, message: str) -> None:
    with pytest.raises(UserError) as err:
        open_storage(parse_storage_url(url))
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text and "pw123" not in text


def test_journal_storage_holds_a_study(tmp_path: Path) -> None:
    storage = parse_storage_url(str(tmp_path / "j.log"))
    study = optuna.create_study(study_name="j", storage=open_storage(storage))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(load_study(str(tmp_path / "j.log"), None).trials) == 2


@contextmanager
def _storage(kind: str, path: Path) -> Iterator[str]:
    """A SQLite file, or the same behind a real `tsq storage proxy` (its client has no heartbeats)."""
    url = f"sqlite:///{path}"
    if kind == "sqlite":
        yield url
        return
    with storage_proxy(url) as grpc_url:
        yield grpc_url


@pytest.mark.parametrize("kind", ["sqlite", "grpc"])
def test_a_trial_whose_worker_died_before_its_first_heartbeat_still_goes_stale(
    kind: str, tmp_path: Path
) -> None:
    heartbeat = HeartbeatSpec(interval=1, grace_period=1, max_retry=1)
    with _storage(kind, tmp_path / "h.db") as url:
        _died_before_first_heartbeat(open_storage(parse_storage_url(url), heartbeat))


def _died_before_first_heartbeat(storage: optuna.storages.BaseStorage) -> None:
    study = optuna.create_study(study_name="h", storage=storage)
    study.enqueue_trial({"x": 0.5})
    # `ask` without `optimize`: RUNNING trials whose heartbeat thread never started, as when a worker is
    # killed while Optuna samples the parameters (one taken from the queue, one created fresh)
    study.ask()
    study.ask()
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [
        TrialState.FAIL,
        TrialState.FAIL,
        TrialState.WAITING,
        TrialState.WAITING,
    ]


_POP = """
import sys, time, optuna
from tsq.config.space import HeartbeatSpec
from tsq.study.storage import open_storage, parse_storage_url
beat = HeartbeatSpec(interval=5, grace_period=60, max_retry=0)
storage = open_storage(parse_storage_url(sys.argv[1]), beat)
study = optuna.load_study(study_name="q", storage=storage)
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
# Optuna's own pop, the one `optimize` and `ask` call (`ask` would create trials once the queue is empty)
while (trial_id := study._pop_waiting_trial_id()) is not None:
    print(trial_id)
"""


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_each_enqueued_trial_is_taken_up_by_one_worker(
    kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Workers popping one queue at the same moment (as `tsq sweep launch` processes do with the default point
    and `tsq sweep confirm`'s replicates): each trial goes to exactly one. The stock RDBStorage on SQLite gave
    10 to 13 of these 60 to two workers, who both ran them; the second crashed on "Cannot tell a COMPLETE
    trial"."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'q.db'}"
    else:
        url = request.getfixturevalue("postgres_server").new_database()
    study = optuna.create_study(study_name="q", storage=open_storage(parse_storage_url(url)))
    for x in range(60):
        study.enqueue_trial({"x": x})
    start = time.time() + 4  # every process connected and waiting before the first pop
    procs = [
        subprocess.Popen([sys.executable, "-c", _POP, url, str(start)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    taken = Counter(int(line) for p in procs for line in p.communicate(timeout=120)[0].split())
    assert all(p.returncode == 0 for p in procs)
    assert sorted(taken) == sorted(t._trial_id for t in study.get_trials(deepcopy=False))
    assert max(taken.values()) == 1, [t for t, n in taken.items() if n > 1]


def test_load_study_names_what_exists(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    for name in ("a", "b"):
        optuna.create_study(study_name=name, storage=url)
    with pytest.raises(UserError, match="holds 2 studies"):
        load_study(url, None)
    with pytest.raises(UserError, match=r"no such study .* \(studies: a, b\)"):
        load_study(url, "c")
    assert load_study(url, "b").study_name == "b"


@pytest.mark.postgres
def test_postgres_server_wrong_password_is_masked(postgres_server: PgServer) -> None:  # noqa: F811
    bad = postgres_server.url().replace(PASSWORD, "wrong-pw-123")
    with pytest.raises(UserError) as err:
        open_storage(parse_storage_url(bad))
    assert "cannot open" in str(err.value) and "wrong-pw-123" not in str(err.value)
    good = open_storage(parse_storage_url(postgres_server.new_database()))
    assert optuna.create_study(storage=good).study_name


@pytest.mark.parametrize("kind", ["sqlite", "grpc"])
def test_a_live_worker_whose_trial_a_peer_failed_goes_on(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer's stale check can fail a trial whose worker is alive but late with its heartbeats (an overloaded
    machine): that worker drops the trial and goes on instead of crashing with "Cannot tell a FAIL trial"."""
    with _storage(kind, tmp_path / "w.db") as grpc_or_sqlite:
        _live_worker_goes_on(parse_storage_url(grpc_or_sqlite), caplog)


def _live_worker_goes_on(url: StorageURL, caplog: pytest.LogCaptureFixture) -> None:
    storage = open_storage(url, HeartbeatSpec(interval=1, grace_period=2, max_retry=1))
    study = optuna.create_study(study_name="w", storage=storage)
    study_id = storage.get_study_id_from_name("w")

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 0:  # what a peer's fail_stale_trials does to it, mid-run
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            trial.set_user_attr("stats", {})  # the next write of a live trial then fails
        return x

    with caplog.at_level("WARNING", logger="tsq.study.worker"):
        report = _run_trials(study, objective, Spec(), url, 2, None, tqdm(disable=True))  # type: ignore[arg-type]
    assert (report.reclaimed, report.completed, report.failed) == (1, 2, 0)
    assert [t.state for t in study.get_trials()] == [
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    assert "trial 0 was declared stale by another worker" in caplog.text
