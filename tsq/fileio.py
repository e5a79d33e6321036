"""File helpers: atomic writes (readers see the old file or the whole new one), content hashes, and the
per-file checksums that shipped and imported models are recorded and verified with."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over `path`."""
    payload = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.", suffix=".part")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; a report is meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def replace_folder(target: Path) -> Iterator[Path]:
    """A new empty folder beside `target` to fill; when the block ends without an error it takes `target`'s
    place (a killed build never leaves a half folder there), else it is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes folders private; models are meant to be shared
        if target.exists():
            old = target.with_name(f".{target.name}-old-{os.getpid()}")
            target.rename(old)
            shutil.rmtree(old)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def hash_files(paths: Iterable[Path]) -> str:
    """SHA-256 (hex) over each file's name and bytes, in the order given: a content identity for a folder."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of one file's bytes; "" when it cannot be read (missing)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def record_checksums(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """{name: sha256} of the named files in `folder`: what `checksum_mismatch` verifies later."""
    return {name: sha256_file(folder / name) for name in sorted(names)}


# Folders whose files matched their record, by file stamps: hashing a model's weights at every stage of every
# trial would add up over a sweep; a touched file (size or mtime) is hashed again.
_verified: set[tuple[str, tuple[tuple[str, int, int], ...]]] = set()


def checksum_mismatch(folder: Path, files: dict[str, str]) -> tuple[str, str, str] | None:
    """(name, got, want) of the first file of `folder` whose SHA-256 differs from `files` (got "" when the
    file is missing); None when every file matches."""
    stamp = tuple(sorted((name, *_stamp(folder / name)) for name in files))
    if (str(folder), stamp) in _verified:
        return None
    for name, want in sorted(files.items()):
        got = sha256_file(folder / name)
        if got != want:
            return name, got, want
    _verified.add((str(folder), stamp))
    return None


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)
