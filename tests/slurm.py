"""A real one-node Slurm cluster for tests/test_slurm.py: scripts/slurm/local-cluster.sh brings up munged,
slurmctld and slurmd (as root, every file in a temporary folder, free ports) and takes them down at the end.

Slurm absent: the test is skipped with the reason, unless TSQ_REQUIRE_SLURM is set (scripts/test.sh sets it,
after `scripts/setup.sh --with-slurm` installed Slurm), where it fails. Slurm present but a daemon that
cannot start: the test fails with the daemon's log, never skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm" / "local-cluster.sh"


@dataclass(frozen=True)
class SlurmCluster:
    root: Path

    @property
    def env(self) -> dict[str, str]:
        """What a user's login shell would have: the system PATH and the cluster's config, nothing of the
        test's environment (TSQ_HOME, W&B settings), so the job scripts must set what they need."""
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "SLURM_CONF": str(self.root / "slurm.conf"),
        }

    def run(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(args, env=self.env, cwd=cwd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
        return done.stdout


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    missing = [
        b
        for b in ("munged", "slurmctld", "slurmd", "sbatch")
        if shutil.which(b, path="/usr/sbin:/usr/bin") is None
    ]
    if missing:
        reason = f"Slurm absent ({', '.join(missing)}): run scripts/setup.sh --with-slurm"
        if os.environ.get("TSQ_REQUIRE_SLURM"):
            pytest.fail(reason)
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="tsq-slurm-"))
    up = subprocess.run(["bash", str(SCRIPT), "up", str(root)], capture_output=True, text=True, timeout=180)
    try:
        if up.returncode != 0:
            pytest.fail(f"the local Slurm cluster did not start:\n{up.stdout}{up.stderr}", pytrace=False)
        yield SlurmCluster(root)
    finally:
        subprocess.run(["bash", str(SCRIPT), "down", str(root)], timeout=180)
        shutil.rmtree(root, ignore_errors=True)
