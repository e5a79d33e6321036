"""Content-addressed, checksummed, atomically written cache.

An entry is one file `<root>/<stage>/<key>.entry` holding a header line with the SHA-256 of the payload,
then the payload bytes (JSON, or safetensors for tensors: never pickle). Writes go to a temporary file in
the same folder and are renamed into place, so a killed process leaves either no entry or a whole one. A
payload whose checksum does not match (truncated, altered) is treated as a miss, deleted and recomputed.
A per-key file lock makes concurrent writers of one key compute it once: the second waits, then reuses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from tsq.fileio import write_atomic

if TYPE_CHECKING:  # torch loads lazily: the CLI's error paths and `tsq --help` must not wait for it
    import torch

log = logging.getLogger(__name__)

_MAGIC = b"tsq-cache-v1 "


def cache_dir_of(spec_cache_dir: str | None) -> Path:
    """The cache root a spec names (`cache_dir`), else the default under $TSQ_HOME."""
    from tsq.paths import default_cache_dir

    return Path(spec_cache_dir).expanduser() if spec_cache_dir else default_cache_dir()


def content_key(**parts: Any) -> str:
    """A stable hash of JSON-serialisable parts (dict order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class EntryInfo:
    stage: str
    key: str
    size: int
    mtime: float
    path: Path


class Cache:
    """Stage results keyed by content. `stats` counts hits and misses (tests read it)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()
        self.stats = {"hits": 0, "misses": 0, "corrupt": 0}
        self.stage_stats: dict[str, dict[str, int]] = {}  # per stage: hits, misses (trial logs show them)

    def _path(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{key}.entry"

    # -- raw bytes -------------------------------------------------------------------------------
    def read_bytes(self, stage: str, key: str) -> bytes | None:
        path = self._path(stage, key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        header, sep, payload = data.partition(b"\n")
        digest = header[len(_MAGIC) :].decode(errors="replace")
        if not (sep and header.startswith(_MAGIC) and hashlib.sha256(payload).hexdigest() == digest):
            self.stats["corrupt"] += 1
            log.warning("cache entry %s is corrupt (checksum mismatch); recomputing it", path)
            path.unlink(missing_ok=True)
            return None
        return payload

    def write_bytes(self, stage: str, key: str, payload: bytes) -> Path:
        path = self._path(stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
        write_atomic(path, header + payload)
        return path

    def lock(self, stage: str, key: str) -> FileLock:
        lock_dir = self.root / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_dir / f"{stage}-{key}.lock"))

    # -- typed helpers ---------------------------------------------------------------------------
    def get_or_compute_json(self, stage: str, key: str, compute: Callable[[], Any]) -> Any:
        """The JSON value under (stage, key); computed once, under a lock, when missing or corrupt."""
        return self._get_or_compute(stage, key, compute, _json_dumps, json.loads)

    def get_json(self, stage: str, key: str) -> Any | None:
        payload = self._read_counted(stage, key)
        return None if payload is None else json.loads(payload)

    def get_tensors(self, stage: str, key: str) -> dict[str, torch.Tensor] | None:
        from safetensors.torch import load as st_load

        payload = self._read_counted(stage, key)
        return None if payload is None else st_load(payload)

    def put_tensors(self, stage: str, key: str, tensors: dict[str, torch.Tensor]) -> None:
        """Write an entry whose miss `get_tensors` counted; concurrent writers write the same value."""
        from safetensors.torch import save as st_save

        self.write_bytes(stage, key, st_save(_contiguous(tensors)))

    def _read_counted(self, stage: str, key: str) -> bytes | None:
        payload = self.read_bytes(stage, key)
        self._count(stage, "misses" if payload is None else "hits")
        return payload

    def _count(self, stage: str, outcome: str) -> None:
        self.stats[outcome] += 1
        counts = self.stage_stats.setdefault(stage, {"hits": 0, "misses": 0})
        counts[outcome] += 1

    def _get_or_compute(self, stage, key, compute, encode, decode):
        payload = self.read_bytes(stage, key)
        if payload is None:
            with self.lock(stage, key):
                payload = self.read_bytes(stage, key)  # another worker may have written it meanwhile
                if payload is None:
                    self._count(stage, "misses")
                    value = compute()
                    self.write_bytes(stage, key, encode(value))
                    return value
        self._count(stage, "hits")
        return decode(payload)

    # -- management (tsq cache ls / clear) -----------------------------------------------------------
    def entries(self, stage: str | None = None) -> Iterator[EntryInfo]:
        if not self.root.exists():
            return
        stages = [stage] if stage else sorted(p.name for p in self.root.iterdir() if p.is_dir())
        for st in stages:
            if st.startswith("."):
                continue
            for path in sorted((self.root / st).glob("*.entry")):
                info = path.stat()
                yield EntryInfo(st, path.stem, info.st_size, info.st_mtime, path)

    def clear(self, stage: str | None = None) -> int:
        """Delete all entries (of one stage, if given); returns how many were removed.

        Temporary files left by writers that were killed mid-write (never read as entries) go too.
        """
        removed = 0
        for entry in list(self.entries(stage)):
            entry.path.unlink(missing_ok=True)
            removed += 1
        for leftover in self.root.glob(f"{stage or '*'}/.tmp-*.part"):
            leftover.unlink(missing_ok=True)
        if stage is None and (self.root / ".locks").exists():
            shutil.rmtree(self.root / ".locks", ignore_errors=True)
        return removed


def _json_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
