#!/usr/bin/env bash
# README command (1): set everything up, run the quickstart sweep on CPU on the shipped tiny reasoning model,
# and write the Pareto report beside the study (under $TSQ_HOME, default ~/.cache/tsq), leaving the committed
# example in reports/quickstart/ untouched. Regenerate that example on purpose with
#   .venv/bin/tsq report pareto sweeps/quickstart.yaml --out reports/quickstart
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=${WANDB_MODE:-offline}
.venv/bin/tsq sweep launch sweeps/quickstart.yaml "$@"
home=$(.venv/bin/python -c "from tsq.paths import tsq_home; print(tsq_home())")
echo "quickstart: the report is $home/studies/quickstart/report/pareto.md (compare reports/quickstart/pareto.md)"
