"""TokenSqueeze (docs/method.md) as a tsq recipe: `study.program: objectives.tokensqueeze:recipe`, the
default. Its parts: config.py (spec model and knobs), trial.py (the trial, top to bottom), check.py and
selection_check.py (the knob check), plan.py (the GPU plan)."""

from objectives.tokensqueeze.recipe import TokenSqueeze

recipe = TokenSqueeze()
