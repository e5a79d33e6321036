"""A real `tsq storage proxy` process in front of a storage URL, on a free localhost port: `with
storage_proxy(url) as grpc_url: ...`. The proxy is stopped with SIGTERM at the end and must exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pg import _free_port

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def storage_proxy(url: str, threads: int = 10) -> Iterator[str]:
    from optuna.storages import GrpcStorageProxy

    port = _free_port()
    cmd = [sys.executable, "-m", "tsq", "storage", "proxy", "--port", str(port), "--threads", str(threads)]
    # the database URL (with its password) travels in the environment, as documented
    env = {**os.environ, "TSQ_STORAGE": url}
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        GrpcStorageProxy(host="127.0.0.1", port=port).wait_server_ready(timeout=60)
        yield f"grpc://127.0.0.1:{port}"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0 and "storage proxy: stopped" in out, out
