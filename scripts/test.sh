#!/usr/bin/env bash
# README command (2): set everything up, then lint and run the whole test suite (slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-postgres --with-slurm
.venv/bin/ruff check .
.venv/bin/lint-imports   # the import contract in pyproject.toml: layers, no cycles, no plugin imports
# Slurm was installed above: its test fails, never skips, when the cluster cannot come up (tests/slurm.py)
TSQ_REQUIRE_SLURM=1 .venv/bin/python -m pytest "$@"
