"""Read W&B offline runs back from disk (the `.wandb` transaction log: a LevelDB-style record log of
protobuf `Record`s), so tests check what `wandb sync` would upload: group, job type, config, summary."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

_BLOCK = 32768
_HEADER = 7  # file header: b":W&B" + magic (2 bytes) + version; record header: crc32 (4) + length (2) + type


@dataclass
class OfflineRun:
    path: Path
    group: str = ""
    job_type: str = ""
    name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history_keys: set[str] = field(default_factory=set)
    exit_code: int | None = None


def _records(path: Path) -> list[pb.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    pos, chunks, out = _HEADER, b"", []
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0:
            break
        chunks += data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (1, 4):  # FULL or LAST fragment
            record = pb.Record()
            record.ParseFromString(chunks)
            out.append(record)
            chunks = b""
    return out


def _key(item: Any) -> str:
    """Items name their key in `key`, or (nested and "/"-style keys) in `nested_key`."""
    return item.key or "/".join(item.nested_key)


def read_run(run_dir: Path) -> OfflineRun:
    (log,) = run_dir.glob("run-*.wandb")
    run = OfflineRun(path=run_dir)
    for record in _records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.group, run.job_type, run.name = (
                record.run.run_group,
                record.run.job_type,
                record.run.display_name,
            )
            run.config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            run.config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            run.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "history":
            run.history_keys.update(_key(i) for i in record.history.item)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def read_runs(wandb_dir: Path, wait_s: float = 30.0) -> list[OfflineRun]:
    """Every offline run under `wandb_dir`, each read once its exit record is on disk: W&B's service process
    writes the log, and under load it may still be writing when `run.finish()` has returned."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        runs = [read_run(d) for d in sorted((wandb_dir / "wandb").glob("offline-run-*"))]
        if all(r.exit_code is not None for r in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)
