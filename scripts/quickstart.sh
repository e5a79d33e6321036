#!/usr/bin/env bash
# README command (1): set everything up, run the quickstart sweep on CPU on the shipped tiny reasoning model,
# and export the Pareto report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=${WANDB_MODE:-offline}
.venv/bin/tsq sweep launch sweeps/quickstart.yaml "$@"
.venv/bin/tsq report pareto --study quickstart --out reports/quickstart
