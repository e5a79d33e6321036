"""Points of the search space and the spec: apply a trial's sampled values to the spec (each knob lands where
`tsq.config.knobs.KNOBS` says, validated like a loaded spec), and the default point (trial 0)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from tsq.config.knobs import KNOBS, default_value
from tsq.config.space import contains
from tsq.config.spec import Spec


def _set(section: BaseModel, path: tuple[str, ...], value: Any) -> BaseModel:
    head, *rest = path
    new = _set(getattr(section, head), tuple(rest), value) if rest else value
    return section.model_copy(update={head: new})


def apply_params(spec: Spec, values: Mapping[str, Any]) -> Spec:
    """A copy of `spec` with each searchable parameter in `values` set; raises pydantic's ValidationError
    (field path in the spec's own terms, e.g. `params.alpha`) for an out-of-range value."""
    updated: BaseModel = spec
    for name, value in values.items():
        knob = KNOBS[name]
        updated = _set(updated, knob.path, knob.to_spec(value))
    # model_copy skips validation: round-trip through the schema so bounds and cross-field checks run (the
    # study section is already valid and is not what changed).
    checked = Spec.model_validate(updated.model_dump(by_alias=True, exclude={"study"}))
    return checked.model_copy(update={"study": spec.study})


def default_point(spec: Spec) -> dict[str, Any] | None:
    """The default point of the searched knobs: the paper's value where it fixes one (α 0.2, ε 0.005, η 0.5),
    else the spec's own (λ, β, lr, LoRA rank, the ablation switches); None when one lies outside its range."""
    point = {name: default_value(spec, KNOBS[name]) for name in spec.study.searched}
    if not all(contains(spec.study.searched[n], v) for n, v in point.items()):
        return None
    return point
