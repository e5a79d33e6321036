"""tsq.cache on real files and real processes: atomic writes, checksums, one computation per key.

Every check uses the real `Cache` on a temporary folder; the concurrency and crash checks run the cache in
separate Python processes (`python -c`), killed with SIGKILL where a crash is the point.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tsq.cache import Cache, content_key

KEY = content_key(stage="samples", model="tiny", seed=0)

# A cache user in its own process: waits for a start file, then get_or_compute_json of KEY with a compute
# that records its pid in `computed.log` (append mode, so two computations leave two lines) and sleeps.
_WORKER = r"""
import json, os, sys, time
from pathlib import Path
from tsq.cache import Cache
root, key, start, compute_s = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])
while not start.exists():
    time.sleep(0.01)
def compute():
    with open(root.parent / "computed.log", "a") as fh:
        fh.write(f"{os.getpid()}\n")
        fh.flush()
    time.sleep(compute_s)
    return {"value": list(range(1000)), "by": os.getpid()}
cache = Cache(root)
value = cache.get_or_compute_json("samples", key, compute)
print(json.dumps({"by": value["by"], "stats": cache.stats}))
"""

# Writes one large entry, slowly enough (a payload of many MB) to be killed half way.
_BIG_WRITER = r"""
import sys
from pathlib import Path
from tsq.cache import Cache
Cache(Path(sys.argv[1])).write_bytes("samples", sys.argv[2], b"x" * (400 * 1024 * 1024))
"""


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the condition")
        time.sleep(0.005)


def _entry(cache: Cache, key: str = KEY, stage: str = "samples") -> Path:
    return cache.root / stage / f"{key}.entry"


# -- format and round trips --------------------------------------------------------------------------
def test_json_round_trip_computes_once_then_hits(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    calls: list[int] = []
    compute = lambda: calls.append(1) or {"a": [1, 2.5, "x"]}  # noqa: E731
    assert cache.get_or_compute_json("samples", KEY, compute) == {"a": [1, 2.5, "x"]}
    assert Cache(tmp_path).get_or_compute_json("samples", KEY, compute) == {"a": [1, 2.5, "x"]}
    assert calls == [1]
    header = _entry(cache).read_bytes().split(b"\n", 1)[0]
    assert header.startswith(b"tsq-cache-v1 ") and len(header.split()[1]) == 64  # a SHA-256 hex digest


def test_tensor_round_trip_is_safetensors_not_pickle(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    tensors = {"chosen": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(), "ids": torch.tensor([7, 9])}
    cache.put_tensors("ref_logps", KEY, tensors)
    loaded = Cache(tmp_path).get_tensors("ref_logps", KEY)
    assert loaded is not None and set(loaded) == {"chosen", "ids"}
    assert torch.equal(loaded["chosen"], tensors["chosen"]) and torch.equal(loaded["ids"], tensors["ids"])
    payload = _entry(cache, stage="ref_logps").read_bytes().split(b"\n", 1)[1]
    header_len = int.from_bytes(payload[:8], "little")  # safetensors: u64 header length, then JSON
    assert payload[8 : 8 + header_len].startswith(b"{")
    assert not payload.startswith(b"\x80")  # a pickle stream starts with the PROTO opcode


# -- corruption: detected by the checksum, recomputed, never read as valid ---------------------------
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])


def _flip_payload_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # same length, one bit different
    path.write_bytes(bytes(data))


def _alter_header(path: Path) -> None:
    data = path.read_bytes()
    header, payload = data.split(b"\n", 1)
    path.write_bytes(header[:-1] + (b"0" if header[-1:] != b"0" else b"1") + b"\n" + payload)


def _drop_header(path: Path) -> None:
    path.write_bytes(path.read_bytes().split(b"\n", 1)[1])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _replace_payload_keep_header(path: Path) -> None:
    header = path.read_bytes().split(b"\n", 1)[0]
    path.write_bytes(header + b'\n{"value":"forged"}')


CORRUPTIONS = {
    "truncated": _truncate,
    "payload-bit-flip": _flip_payload_byte,
    "header-digest-altered": _alter_header,
    "header-missing": _drop_header,
    "empty-file": _empty,
    "payload-replaced": _replace_payload_keep_header,
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_json_entry_is_detected_and_recomputed(tmp_path: Path, corrupt: Callable) -> None:
    Cache(tmp_path).get_or_compute_json("samples", KEY, lambda: {"value": "original"})
    corrupt(_entry(Cache(tmp_path)))

    cache = Cache(tmp_path)
    assert cache.get_json("samples", KEY) is None  # never read as valid
    assert cache.stats["corrupt"] == 1
    assert not _entry(cache).exists()  # the bad file is gone, not left for the next reader
    assert cache.get_or_compute_json("samples", KEY, lambda: {"value": "recomputed"}) == {
        "value": "recomputed"
    }
    assert Cache(tmp_path).get_json("samples", KEY) == {"value": "recomputed"}


@pytest.mark.parametrize("corrupt", [_truncate, _flip_payload_byte], ids=["truncated", "bit-flip"])
def test_corrupt_tensor_entry_is_a_miss_and_rewritten(tmp_path: Path, corrupt: Callable) -> None:
    Cache(tmp_path).put_tensors("ref_logps", KEY, {"x": torch.ones(64)})
    corrupt(_entry(Cache(tmp_path), stage="ref_logps"))
    cache = Cache(tmp_path)
    assert cache.get_tensors("ref_logps", KEY) is None
    cache.put_tensors("ref_logps", KEY, {"x": torch.zeros(64)})
    value = Cache(tmp_path).get_tensors("ref_logps", KEY)
    assert value is not None and torch.equal(value["x"], torch.zeros(64))
    assert cache.stats == {"hits": 0, "misses": 1, "corrupt": 1}


# -- atomicity: a killed process leaves a whole entry or none ------------------------------------------
def test_writer_killed_mid_write_leaves_no_entry(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    proc = _spawn(_BIG_WRITER, str(root), KEY)
    try:
        # The temporary file exists and is growing: the write is under way.
        _wait_for(lambda: any(p.stat().st_size > 0 for p in (root / "samples").glob(".tmp-*")))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    cache = Cache(root)
    assert not _entry(cache).exists()
    assert list(cache.entries()) == []  # the half-written temporary file is not an entry
    assert cache.get_or_compute_json("samples", KEY, lambda: [1, 2, 3]) == [1, 2, 3]
    assert cache.stats["corrupt"] == 0


def test_worker_killed_while_computing_leaves_no_entry_and_no_stuck_lock(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    start = tmp_path / "start"
    start.touch()
    proc = _spawn(_WORKER, str(root), KEY, str(start), "60")
    try:
        _wait_for(lambda: (tmp_path / "computed.log").exists())  # inside compute(), holding the key's lock
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    cache = Cache(root)
    assert not _entry(cache).exists()
    # The dead process's lock is released by the OS: the next computation does not wait for it.
    began = time.monotonic()
    assert cache.get_or_compute_json("samples", KEY, lambda: "fresh") == "fresh"
    assert time.monotonic() - began < 5


# -- concurrency: two processes, one key ---------------------------------------------------------------
def test_two_processes_compute_one_key_once(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    start = tmp_path / "start"
    procs = [_spawn(_WORKER, str(root), KEY, str(start), "2") for _ in range(2)]
    try:
        time.sleep(1.0)  # both interpreters up and polling for the start file
        start.touch()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    results = [json.loads(out) for out, _ in outputs]
    computed_by = (tmp_path / "computed.log").read_text().split()
    assert len(computed_by) == 1  # one writer won ...
    assert {r["by"] for r in results} == {int(computed_by[0])}  # ... and the other reused its value
    assert sorted((r["stats"]["misses"], r["stats"]["hits"]) for r in results) == [(0, 1), (1, 0)]
    assert Cache(root).get_json("samples", KEY)["by"] == int(computed_by[0])


def test_many_keys_from_two_processes_stay_valid(tmp_path: Path) -> None:
    """Two processes filling the same 40 keys at once: every entry ends up whole and checksummed."""
    code = r"""
import sys
from pathlib import Path
from tsq.cache import Cache, content_key
cache = Cache(Path(sys.argv[1]))
for i in range(40):
    cache.get_or_compute_json("samples", content_key(i=i), lambda i=i: {"i": i, "pad": "y" * 20000})
"""
    root = tmp_path / "cache"
    procs = [_spawn(code, str(root)) for _ in range(2)]
    for p in procs:
        p.communicate(timeout=120)
    assert [p.returncode for p in procs] == [0, 0]
    cache = Cache(root)
    for i in range(40):
        assert cache.get_json("samples", content_key(i=i)) == {"i": i, "pad": "y" * 20000}
    assert cache.stats["corrupt"] == 0
    assert len(list(cache.entries())) == 40
    assert not list((root / "samples").glob(".tmp-*"))  # no stray temporary files after clean exits
