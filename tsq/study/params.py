"""Apply a trial's sampled values to the spec: the four knobs land in `spec.params`, the optional extras
(β, lr, LoRA rank, selection variant) in their own sections. The result is validated like a loaded spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from tsq.spec import Spec
from tsq.study.space import SEARCHABLE


def _set(section: BaseModel, path: tuple[str, ...], value: Any) -> BaseModel:
    head, *rest = path
    new = _set(getattr(section, head), tuple(rest), value) if rest else value
    return section.model_copy(update={head: new})


def apply_params(spec: Spec, values: Mapping[str, Any]) -> Spec:
    """A copy of `spec` with each searchable parameter in `values` set; raises pydantic's ValidationError
    (field path in the spec's own terms, e.g. `params.alpha`) for an out-of-range value."""
    updated: BaseModel = spec
    for name, value in values.items():
        updated = _set(updated, SEARCHABLE[name], value)
    # model_copy skips validation: round-trip through the schema so bounds and cross-field checks run (the
    # study section is already valid and is not what changed).
    checked = Spec.model_validate(updated.model_dump(by_alias=True, exclude={"study"}))
    return checked.model_copy(update={"study": spec.study})
