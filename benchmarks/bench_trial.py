"""A cold trial (empty cache) vs a warm one (other α, ε, λ, η; every parameter-free stage cached), then
batched vs one-candidate-at-a-time KL scoring of step rewrites on the same model.

Run:  .venv/bin/python benchmarks/bench_trial.py [SPEC]   (default: sweeps/quickstart.yaml)
Both trials run in one process, one after the other, on the same model, so the ratio is like for like.
The tiny model is built (or found) before timing starts; the cache starts empty.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_refine_kl import kl_scoring, report  # this folder: `python benchmarks/bench_trial.py`

from objectives.tokensqueeze.config import TrialParams
from objectives.tokensqueeze.trial import TrialContext, run_trial
from tsq.cache import Cache
from tsq.engines.models import resolve_model
from tsq.recipe import load_spec


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", nargs="?", default="sweeps/quickstart.yaml")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    resolve_model(spec.model)  # not timed: the model build is a one-off, not part of a trial

    with tempfile.TemporaryDirectory() as tmp:
        timings = []
        for i, params in enumerate(
            [
                TrialParams(alpha=0.2, epsilon=0.005, lam=1.0, eta=0.5),
                TrialParams(alpha=0.3, epsilon=0.02, lam=0.5, eta=0.3),
            ]
        ):
            start = time.perf_counter()
            cache = Cache(Path(tmp) / "cache")  # one cache folder; a fresh object counts this trial's use
            result = run_trial(spec, params, TrialContext(cache=cache, out_dir=Path(tmp) / f"trial{i}"))
            timings.append(time.perf_counter() - start)
            training = result.stats["training"]
            print(f"trial {i}: {timings[-1]:.1f} s, cache use {result.stats['cache']}, pairs with reference "
                  f"log-probs computed: {training['ref_logps_computed_ahead']} ahead, "
                  f"{training['ref_logps_computed']} in training")  # fmt: skip
    cold, warm = timings
    kl = kl_scoring(resolve_model(spec.model), window=spec.refinement.window)
    print(
        f"\ncold trial {cold:.1f} s | warm trial {warm:.1f} s | cold/warm {cold / warm:.2f}x  ({args.spec})"
    )
    print(report(kl, spec.refinement.window))


if __name__ == "__main__":
    main()
