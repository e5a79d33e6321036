"""A second recipe, built on TokenSqueeze's parts without touching tsq/: a length-aware SFT baseline.

Each problem's shortest correct self-sample becomes an SFT target (selection `shortest`, refinement off, the
`sft` loss: no preference term, so α, ε, λ and η have nothing to act on); what a study searches is the
training itself: the learning rate and the number of steps. It answers the question every compression
method must beat: how much of the length cut does plain fine-tuning on the model's own shortest correct
answers already give? `study.program: objectives.shortest_sft:recipe` (sweeps/shortest-sft.yaml).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import model_validator

from objectives.tokensqueeze.config import TokenSqueezeSpec
from objectives.tokensqueeze.recipe import TokenSqueeze
from tsq.config.knobs import Knob

KNOBS: dict[str, Knob] = {
    k.name: k
    for k in (
        Knob("lr", ("training", "learning_rate"), "float", "LoRA learning rate"),
        Knob("steps", ("training", "max_steps"), "int", "SFT steps"),
    )
}

# The recipe's fixed choices, applied where the spec (or the spec it extends) does not set them
FIXED = {"selection": {"variant": "shortest"}, "refinement": {"enabled": False}, "training": {"loss": "sft"}}


class ShortestSFTSpec(TokenSqueezeSpec):
    knobs: ClassVar[dict[str, Knob]] = KNOBS
    default_search: ClassVar[dict[str, dict[str, Any]]] = {
        "lr": {"low": 1e-4, "high": 3e-3, "log": True},
        "steps": {"type": "int", "low": 20, "high": 80},
    }

    @model_validator(mode="before")
    @classmethod
    def _fixed_choices(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        out = dict(raw)
        for section, fixed in FIXED.items():
            given = out.get(section) or {}
            if isinstance(given, dict):
                out[section] = {**fixed, **given}
        return out


class ShortestSFT(TokenSqueeze):
    spec_model = ShortestSFTSpec


recipe = ShortestSFT()
