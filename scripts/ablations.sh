#!/usr/bin/env bash
# Issue #14's figures: each knob's sensitivity over the quickstart's search range, the paper's three
# ablations (Tables 2-4), η and α at β 0.3 (sweeps/eta-low-beta.yaml, sweeps/alpha-low-beta.yaml)
# and α under SFT alone (sweeps/alpha-sft.yaml), every configuration at 6 seeds (the
# sweep's own + 5 `sweep confirm` replicates: at 3, α's effect and refinement's accuracy change were within
# their noise), and the effects report (`tsq report effects`) in reports/ablations/effects.md. All specs
# extend sweeps/quickstart.yaml, so they share its cached self-samples, candidates and baseline. About two
# hours on 2 cores once the quickstart's cache is warm (216 trials at 60 training steps, ~33 s each on the
# format-9 build, 2026-12-05).
#   bash scripts/ablations.sh            (after scripts/setup.sh; on the shipped tiny model)
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-offline}
tsq=.venv/bin/tsq
specs=(sensitivity-alpha sensitivity-epsilon sensitivity-lambda sensitivity-eta
       paper-ablations-selection paper-ablations-refinement paper-ablations-loss eta-low-beta
       alpha-sft alpha-low-beta)
for name in "${specs[@]}"; do
  spec=sweeps/$name.yaml
  arms=$(.venv/bin/python -c "from tsq.config.spec import load_spec; print(load_spec('$spec').study.n_trials)")
  $tsq sweep launch "$spec" --tracker none
  $tsq sweep confirm "$spec" --top "$arms" --replicates 5 --tracker none
done
mkdir -p reports/ablations
$tsq report effects "${specs[@]/#/--study=}" --out reports/ablations/effects.md
