#!/usr/bin/env bash
# README command (2): set everything up, then lint and run the whole test suite (slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-vllm --with-dev --with-proxy --with-botorch --with-postgres --with-slurm --with-real-model
.venv/bin/ruff check .
.venv/bin/lint-imports   # the import contract in pyproject.toml: layers, no cycles, no plugin imports
# Slurm and the real model were installed above: their tests fail, never skip, when either is missing
# -m "slow or not slow": every test, the slow ones too (plain pytest leaves them out, pyproject.toml's addopts)
TSQ_REQUIRE_SLURM=1 TSQ_REQUIRE_REAL_MODEL=1 .venv/bin/python -m pytest -m "slow or not slow" "$@"
