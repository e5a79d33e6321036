#!/usr/bin/env bash
# README command (2): set everything up, then lint and run the whole test suite (slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-postgres
.venv/bin/ruff check .
.venv/bin/lint-imports   # the import contract in pyproject.toml: layers, no cycles, no plugin imports
.venv/bin/python -m pytest "$@"
