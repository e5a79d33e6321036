"""TokenSqueeze's spec model: the pipeline sections (tsq/config/pipeline.py), the default trial point
(`params`: α, ε, λ, η) and the knobs a study can search, each declared once here: its name in
`study.search`, where it lives in the spec, its kind, and the value it takes at the default point (trial 0).
Adding a knob is one entry in `KNOBS` (docs/method.md says what α, ε, λ and η do).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import ConfigDict, Field

from tsq.config.knobs import Knob
from tsq.config.pipeline import PipelineSpec
from tsq.config.spec import Section


class TrialParams(Section):
    """One point of the search space: the four TokenSqueeze knobs."""

    alpha: Annotated[float, Field(ge=0, le=1)] = 0.2
    epsilon: Annotated[float, Field(gt=0)] = 0.005
    lam: Annotated[float, Field(ge=0, alias="lambda")] = 1.0
    eta: Annotated[float, Field(ge=0)] = 0.5

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _on_off(enabled: Any) -> str:
    return "on" if enabled else "off"


def _enabled(value: Any) -> Any:
    # "on"/"off" as written in a spec (YAML 1.1 reads bare on/off as booleans); anything else is left for
    # the spec field's own validation to refuse
    return {"on": True, "off": False}.get(value, value) if isinstance(value, str) else value


KNOBS: dict[str, Knob] = {
    k.name: k
    for k in (
        Knob("alpha", ("params", "alpha"), "float", "α: depth selection, q = α·(1 − p)", paper_value=0.2),
        Knob("epsilon", ("params", "epsilon"), "float", "ε: KL bound of step refinement", paper_value=0.005),
        Knob("lambda", ("params", "lam"), "float", "λ: length margin of DPO-L"),
        Knob("eta", ("params", "eta"), "float", "η: weight of the SFT term", paper_value=0.5),
        Knob("beta", ("training", "beta"), "float", "β: DPO temperature"),
        Knob("lr", ("training", "learning_rate"), "float", "LoRA learning rate"),
        Knob("lora_r", ("training", "lora", "r"), "int", "LoRA rank"),
        Knob("selection_variant", ("selection", "variant"), "categorical", "selection ablation (Table 2)"),
        Knob(
            "refinement",
            ("refinement", "enabled"),
            "categorical",
            'refinement "on" / "off" (Table 3)',
            to_spec=_enabled,
            from_spec=_on_off,
        ),
        Knob("loss", ("training", "loss"), "categorical", "training objective (Table 4)"),
    )
}


class TokenSqueezeSpec(PipelineSpec):
    knobs: ClassVar[dict[str, Knob]] = KNOBS
    default_search: ClassVar[dict[str, dict[str, Any]]] = {
        "alpha": {"low": 0.05, "high": 0.5},
        "epsilon": {"low": 1e-4, "high": 0.05, "log": True},
        "lambda": {"low": 0.0, "high": 2.0},
        "eta": {"low": 0.0, "high": 1.0},
    }

    params: TrialParams = TrialParams()
