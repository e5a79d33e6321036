"""Where a study lives: storage URLs, parsed and checked up front, opened with heartbeats.

Accepted (the same strings Optuna and optuna-dashboard take):
- nothing: SQLite at `$TSQ_HOME/studies.db` (one file for every study, so `tsq sweep status` finds them);
- `sqlite:///path/to/file.db` (or a bare path ending in .db / .sqlite / .sqlite3);
- `postgresql://user:password@host:port/db` (also `postgresql+psycopg2://`, `postgres://`) for many workers;
- `mysql+pymysql://...` and other SQLAlchemy URLs Optuna's RDB storage supports;
- Optuna journal files: `journal:///path/to/file.log` (or a bare path ending in .log / .journal);
- `grpc://host:port`: Optuna's gRPC storage proxy (`tsq storage proxy`) in front of one of the above, so
  that many workers share the proxy's few database connections.

Inside a Slurm job (`SLURM_JOB_ID` set) a storage must be given: with the default, every array task would
run a study of its own in a SQLite file of its own.

Passwords never leave this module unmasked: `masked` is what messages, logs and W&B see.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import optuna
from optuna.storages import BaseStorage, JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from tsq.compat.optuna import BeatFromStartRDBStorage, HeartbeatGrpcStorageProxy
from tsq.config.space import HeartbeatSpec
from tsq.errors import UserError
from tsq.paths import tsq_home

log = logging.getLogger(__name__)

StorageKind = Literal["sqlite", "rdb", "journal", "grpc"]
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_JOURNAL_SUFFIXES = (".log", ".journal")


@dataclass(frozen=True)
class StorageURL:
    url: str  # what Optuna gets (password included)
    kind: StorageKind
    masked: str  # safe to print
    path: Path | None = None  # the file, for SQLite and journal storage

    @property
    def supports_heartbeat(self) -> bool:
        return self.kind != "journal"

    def mask_in(self, text: str) -> str:
        """`text` with this URL's password (if any) replaced, for error messages from drivers."""
        password = _password(self.url)
        if not password:
            return text
        return re.sub(rf"(?<![A-Za-z0-9]){re.escape(password)}(?![A-Za-z0-9])", "***", text)


def default_storage_url() -> str:
    return f"sqlite:///{tsq_home() / 'studies.db'}"


def _password(url: str) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password  # type: ignore[return-value]
    except (ArgumentError, ValueError):
        return None


def mask_url(url: str) -> str:
    """The URL with its password replaced by `***` (unparseable URLs are masked after the scheme)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if "://" not in url:
        return url
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}" if "@" in rest else url
    return parsed.render_as_string(hide_password=True)


def parse_storage_url(url: str | None) -> StorageURL:
    """Check a storage URL's form (no connection yet); raises UserError naming the masked URL."""
    url = (url or "").strip()
    if not url and os.environ.get("SLURM_JOB_ID"):
        raise UserError(
            f"storage: none given inside Slurm job {os.environ['SLURM_JOB_ID']}; set TSQ_STORAGE to the "
            "study's shared postgresql:// URL (docs/cluster.md), or pass --storage sqlite:///FILE.db for a "
            "study of this job's own"
        )
    url = url or default_storage_url()
    if url.startswith("grpc://"):
        return _parse_grpc(url)
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:").removeprefix("//")).expanduser()
        if not str(path) or str(path) == ".":
            raise UserError(f"storage {url}: a journal URL needs a file path, e.g. journal:///tmp/study.log")
        return StorageURL(url=url, kind="journal", masked=url, path=path)
    if "://" not in url:
        path = Path(url).expanduser()
        if path.suffix in _JOURNAL_SUFFIXES:
            return StorageURL(url=f"journal:{path}", kind="journal", masked=f"journal:{path}", path=path)
        if path.suffix in _SQLITE_SUFFIXES:
            return parse_storage_url(f"sqlite:///{path.resolve()}")
        raise UserError(
            f"storage {mask_url(url)}: not a storage URL; use sqlite:///FILE.db, postgresql://USER@HOST/DB, "
            "or journal:///FILE.log"
        )
    for short in ("postgres://", "postgresql://"):
        # SQLAlchemy 2.1 maps the bare scheme to psycopg 3; tsq depends on psycopg2 (psycopg2-binary).
        if url.startswith(short):
            url = "postgresql+psycopg2://" + url.removeprefix(short)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    masked = mask_url(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise UserError(f"storage {masked}: malformed storage URL") from None
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise UserError(f"storage {masked}: SQLite storage needs a file, e.g. sqlite:///study.db")
        return StorageURL(url=url, kind="sqlite", masked=masked, path=Path(parsed.database).expanduser())
    if not parsed.host and parsed.get_backend_name() != "postgresql":
        raise UserError(f"storage {masked}: the URL names no host")
    return StorageURL(url=url, kind="rdb", masked=masked)


def _parse_grpc(url: str) -> StorageURL:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = None
    if not parts.hostname or port is None or parts.path.strip("/"):
        raise UserError(f"storage {mask_url(url)}: a storage proxy URL is grpc://HOST:PORT")
    address = f"grpc://{parts.hostname}:{port}"
    return StorageURL(url=address, kind="grpc", masked=address)


def grpc_address(storage: StorageURL) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(storage.url)
    assert storage.kind == "grpc" and parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _open_grpc(storage: StorageURL, heartbeat: HeartbeatSpec | None) -> BaseStorage:
    """A client of `tsq storage proxy`; with `heartbeat`, its trials beat through the proxy (see
    `HeartbeatGrpcStorageProxy`), so a killed worker's trial goes stale and is retried as on PostgreSQL."""
    host, port = grpc_address(storage)
    try:
        import grpc  # noqa: F401  (the proxy's client needs it; Optuna imports it lazily)
    except ImportError:
        hint = "the storage proxy needs grpcio (pip install 'tsq[proxy]')"
        raise UserError(f"storage {storage.masked}: {hint}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        client = HeartbeatGrpcStorageProxy(
            host=host,
            port=port,
            heartbeat_interval=heartbeat.interval if heartbeat else None,
            grace_period=heartbeat.grace_period if heartbeat else 0,
            stale_trial_callback=(
                RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry) if heartbeat else None
            ),
        )
    try:
        client.wait_server_ready(timeout=10)
    except ConnectionError:
        client.close()
        raise UserError(f"storage {storage.masked}: cannot open (no storage proxy answers there)") from None
    return client


def open_storage(storage: StorageURL, heartbeat: HeartbeatSpec | None = None) -> BaseStorage:
    """Connect (creating the SQLite/journal file's folder); with `heartbeat`, RUNNING trials of dead workers
    are failed after the grace period and re-queued. Raises UserError with one line when it cannot connect."""
    if storage.kind == "journal":
        assert storage.path is not None
        storage.path.parent.mkdir(parents=True, exist_ok=True)
        if heartbeat is not None:
            log.info("journal storage has no heartbeats: a killed worker's trial stays RUNNING")
        return JournalStorage(JournalFileBackend(str(storage.path)))
    if storage.kind == "grpc":
        return _open_grpc(storage, heartbeat)
    engine_kwargs: dict[str, object]
    if storage.kind == "sqlite":
        assert storage.path is not None
        storage.path.parent.mkdir(parents=True, exist_ok=True)
        # Worker processes share the file: wait for the lock instead of failing with "database is locked".
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
        if storage.url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    hb_kwargs: dict[str, object] = {}
    if heartbeat is not None:
        hb_kwargs = {
            "heartbeat_interval": heartbeat.interval,
            "grace_period": heartbeat.grace_period,
            "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry),
        }
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return BeatFromStartRDBStorage(storage.url, engine_kwargs=engine_kwargs, **hb_kwargs)  # type: ignore[arg-type]
        except (SQLAlchemyError, ImportError) as exc:
            error: Exception = exc
            # Workers that start together on a new database all create its tables and stamp its schema
            # version; the losers of that race find them there. Opening again then just connects.
            lost_race = isinstance(exc, IntegrityError) or "already exists" in str(exc)
            if not lost_race:
                break
            time.sleep(0.5 * (attempt + 1))
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    raise UserError(f"storage {storage.masked}: cannot open ({storage.mask_in(reason)})") from None


def load_study(url: str | None, name: str | None) -> optuna.Study:
    """An existing study; without a name, the storage's only study. UserError names what exists."""
    storage = parse_storage_url(url)
    opened = open_storage(storage)
    names = optuna.get_all_study_names(opened)
    if name is None:
        if len(names) != 1:
            listing = ", ".join(sorted(names)) or "none"
            raise UserError(
                f"--study: {storage.masked} holds {len(names)} studies ({listing}); name one with --study "
                "NAME, or give the spec it was launched with"
            )
        name = names[0]
    if name not in names:
        listing = ", ".join(sorted(names)) or "none"
        raise UserError(f"--study {name}: no such study in {storage.masked} (studies: {listing})")
    return optuna.load_study(study_name=name, storage=opened)


def scrub_argv(argv: list[str]) -> None:
    """Mask URL passwords in the process's argv in place (W&B records argv in its run metadata)."""
    argv[:] = [mask_url(a) if "://" in a else a for a in argv]


def serve_proxy(storage: StorageURL, host: str, port: int, threads: int) -> None:
    """Optuna's gRPC storage proxy for `storage` at host:port, until the process is stopped. Workers pointed
    at grpc://host:port share its database connections (about `threads`: one per request served)."""
    from concurrent.futures import ThreadPoolExecutor

    from optuna.storages import get_storage, run_grpc_proxy_server

    if storage.kind in ("journal", "grpc"):
        raise UserError(f"storage {storage.masked}: the proxy serves a database (postgresql://, sqlite:///)")
    # Optuna's advice: its in-process cache in front of an RDB storage, or the proxy is slow
    opened = get_storage(open_storage(storage))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            run_grpc_proxy_server(opened, host=host, port=port, thread_pool=ThreadPoolExecutor(threads))
        except RuntimeError as exc:  # grpc: "Failed to bind to address"
            raise UserError(f"storage proxy at {host}:{port}: {exc}") from None
