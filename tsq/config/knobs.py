"""The knobs a study can search, each declared once: its name in `study.search`, where it lives in the spec,
its kind, and the value it takes at the default point (trial 0).

Spec validation, `apply_params`, the default point, the study scope a trial program plans its caching with,
`tsq sweep check` and the report all read `KNOBS`; adding a knob is one entry here. See docs/method.md for
what α, ε, λ and η do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["float", "int", "categorical"]


def _same(value: Any) -> Any:
    return value


def _on_off(enabled: Any) -> str:
    return "on" if enabled else "off"


def _enabled(value: Any) -> Any:
    # "on"/"off" as written in a spec (YAML 1.1 reads bare on/off as booleans); anything else is left for
    # the spec field's own validation to refuse
    return {"on": True, "off": False}.get(value, value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Knob:
    name: str  # the key in `study.search` and in Optuna's trial params
    path: tuple[str, ...]  # where the value lives in the spec
    kind: Kind  # "categorical": searched by choices (or fixed), never by a numeric range
    help: str
    # The default point's value: the paper's, where the paper fixes one; None = the spec's own value.
    paper_value: float | None = None
    to_spec: Callable[[Any], Any] = _same  # a searched value -> the spec field's value
    from_spec: Callable[[Any], Any] = _same  # the spec field's value -> a searched value


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


def spec_value(spec: Any, knob: Knob) -> Any:
    """The knob's current value in `spec`, in search-space terms (e.g. "on" for refinement.enabled)."""
    value = spec
    for key in knob.path:
        value = getattr(value, key)
    return knob.from_spec(value)


def default_value(spec: Any, knob: Knob) -> Any:
    """The knob's value at the default point: the paper's where it fixes one, else the spec's own."""
    return knob.paper_value if knob.paper_value is not None else spec_value(spec, knob)
