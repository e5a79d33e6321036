"""Points of the search space and the spec: apply a trial's sampled values to the spec (each knob lands where
the recipe's spec model says, validated like a loaded spec), and the default point (trial 0)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from tsq.config.knobs import Knob, default_value
from tsq.config.space import contains
from tsq.config.spec import Spec


def _set(section: Any, path: tuple[str, ...], value: Any) -> Any:
    head, *rest = path
    if isinstance(section, dict):  # a free mapping (a plain trial function's params)
        inner = section.get(head)
        return {**section, head: _set(inner, tuple(rest), value) if rest else value}
    new = _set(getattr(section, head), tuple(rest), value) if rest else value
    return section.model_copy(update={head: new})


def knob_of(spec: Spec, name: str) -> Knob:
    knob = type(spec).knob(name)
    if knob is None:  # the spec's validation refuses such a name; a stored study may still hold one
        raise KeyError(f"{name} is not a knob of {spec.study.program}")
    return knob


def apply_params(spec: Spec, values: Mapping[str, Any]) -> Spec:
    """A copy of `spec` with each searchable parameter in `values` set; raises pydantic's ValidationError
    (field path in the spec's own terms, e.g. `params.alpha`) for an out-of-range value."""
    updated: BaseModel = spec
    for name, value in values.items():
        knob = knob_of(spec, name)
        updated = _set(updated, knob.path, knob.to_spec(value))
    # model_copy skips validation: round-trip through the schema so bounds and cross-field checks run (the
    # study section is already valid and is not what changed).
    checked = type(spec).model_validate(updated.model_dump(by_alias=True, exclude={"study"}))
    return checked.model_copy(update={"study": spec.study})


def default_point(spec: Spec) -> dict[str, Any] | None:
    """The default point of the searched knobs: the paper's value where the recipe fixes one (TokenSqueeze:
    α 0.2, ε 0.005, η 0.5), else the spec's own; None when one lies outside its range or is unset."""
    point = {name: default_value(spec, knob_of(spec, name)) for name in spec.study.searched}
    if not all(v is not None and contains(spec.study.searched[n], v) for n, v in point.items()):
        return None
    return point
