#!/usr/bin/env bash
# README command (2): set everything up, then lint and run the whole test suite (slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-postgres
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
