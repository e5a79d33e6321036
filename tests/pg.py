"""A real PostgreSQL server for the multi-worker tests: initdb + pg_ctl from the Debian package into a
temporary folder, on a free localhost port, password auth. Import the fixture in a test module:
`from pg import postgres_server`. Skips (with the reason) only when the server binaries are absent."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "s3cret-pg-pw"


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg2

        name = f"t_{uuid.uuid4().hex[:12]}"
        conn = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        conn.close()
        return self.url(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(
            f"PostgreSQL server binaries absent ({PG_BIN}/initdb): run scripts/setup.sh --with-postgres"
        )
    # Not under pytest's tmp tree: that is private to root, and the server may run as another user.
    root = Path(tempfile.mkdtemp(prefix="tsq-pg-"))
    data, pwfile = root / "data", root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the package's postgres user
        user = "postgres" if shutil.which("runuser") else None
        if user is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        shutil.chown(root, user)
        shutil.chown(pwfile, user)
        prefix = ["runuser", "-u", user, "--"]
    port = _free_port()
    run = lambda *args: subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(str(PG_BIN / "initdb"), "-D", str(data), "-U", "tsq", f"--pwfile={pwfile}", "--auth=scram-sha-256")
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off"
    run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start")
    try:
        yield PgServer("127.0.0.1", port, "tsq", PASSWORD)
    finally:
        subprocess.run(
            [*prefix, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], timeout=60
        )
        shutil.rmtree(root, ignore_errors=True)
